"""A corpus from text files: a folder of `<lang>.txt` / `<lang>.jsonl` files, or a mapping language -> file."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator, Mapping
from pathlib import Path

from langneurons.core.errors import LangNeuronsError
from langneurons.data.corpus import Corpus, check_languages

TEXT_SUFFIXES = (".txt", ".jsonl")


def text_files(spec: str | Path | Mapping[str, str | Path], heldout_every: int = 10) -> Corpus:
    """A corpus from a folder of `<lang>.txt` / `<lang>.jsonl` files, or from a mapping language -> file.

    .txt: documents are separated by blank lines. .jsonl: one JSON object per line, its "text" field.
    """
    if isinstance(spec, Mapping):
        check_languages(list(spec))
        files = {lang: Path(path) for lang, path in spec.items()}
        for path in files.values():
            if path.suffix not in TEXT_SUFFIXES:
                raise LangNeuronsError(f"{path}: unsupported file type; use .txt or .jsonl")
            if not path.is_file():
                raise LangNeuronsError(f"{path}: no such file; check the path")
    else:
        files = _folder_files(Path(spec))
    readers = {".txt": _read_txt, ".jsonl": _read_jsonl}
    sources = {lang: functools.partial(readers[path.suffix], path) for lang, path in files.items()}
    per_language = {lang: {"path": str(path.resolve())} for lang, path in files.items()}
    return Corpus(sources, {"kind": "text_files", "per_language": per_language}, heldout_every)


def _folder_files(folder: Path) -> dict[str, Path]:
    """The `<lang>.txt` / `<lang>.jsonl` files of `folder`, by language."""
    if folder.is_file():
        raise LangNeuronsError(f"{folder}: a file, not a folder; pass a folder or a mapping {{lang: file}}")
    if not folder.is_dir():
        raise LangNeuronsError(f"{folder}: no such folder; pass a folder of <lang>.txt / <lang>.jsonl files")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix not in TEXT_SUFFIXES or not path.is_file():
            continue
        if path.stem in files:
            raise LangNeuronsError(f"{folder}: two files for language {path.stem!r}; keep one of them")
        files[path.stem] = path
    if not files:
        raise LangNeuronsError(f"{folder}: no <lang>.txt or <lang>.jsonl files found; add one per language")
    return files


def _read_txt(path: Path) -> Iterator[str]:
    """Stream the blank-line separated paragraphs of a UTF-8 text file."""
    paragraph: list[str] = []
    for line in read_lines(path):
        line = line.rstrip()
        if line:
            paragraph.append(line)
        elif paragraph:
            yield "\n".join(paragraph)
            paragraph = []
    if paragraph:
        yield "\n".join(paragraph)


def _read_jsonl(path: Path) -> Iterator[str]:
    """Stream the "text" fields of a JSON-lines file."""
    for number, line in enumerate(read_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise LangNeuronsError(f"{path}:{number}: not valid JSON; write one object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise LangNeuronsError(f'{path}:{number}: no string "text" field; write {{"text": "..."}}')
        yield row["text"]


def read_lines(path: Path) -> Iterator[str]:
    """Stream the lines of a UTF-8 file (split at line ends only, not at U+2028 and the like inside a JSON string),
    turning a decoding error into a LangNeuronsError."""
    try:
        with open(path, encoding="utf-8") as file:
            yield from file
    except UnicodeDecodeError:
        raise LangNeuronsError(f"{path}: not UTF-8 text; convert it to UTF-8") from None
