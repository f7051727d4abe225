"""Language-tagged text: the `Corpus` and its held-out rule, and a corpus from in-memory texts.

A `Corpus` maps each language code to a re-iterable, streaming source of documents and splits every
language's documents into a training part and a held-out part by a fixed rule on the document index. The sources
live beside it: `data.files` (text files), `data.hf` (Hugging Face datasets), `data.udhr` (the UDHR); `data.windows`
packs documents into token windows.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langneurons.core.errors import LangNeuronsError, warn

SPLITS = ("train", "heldout", "all")


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
        check_languages(languages)
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


def check_languages(languages: Sequence[str]) -> None:
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


def from_texts(texts: Mapping[str, Sequence[str]], heldout_every: int = 10) -> Corpus:
    """A corpus from in-memory documents: {language: [document, ...]}."""
    check_languages(list(texts))
    for lang, docs in texts.items():
        if isinstance(docs, str) or not isinstance(docs, Sequence):
            raise LangNeuronsError(f"texts[{lang!r}] is not a list of documents; pass {{'en': ['a', 'b']}}")
    sources = {lang: functools.partial(iter, docs) for lang, docs in texts.items()}
    per_language = {lang: {"documents": len(docs)} for lang, docs in texts.items()}
    return Corpus(sources, {"kind": "texts", "per_language": per_language}, heldout_every)
