"""Packing documents into token windows: the tokenizer's prefix first, then the concatenated documents."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.data.corpus import Corpus


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
    """Token windows (BOS first, via pack_windows/window_prefix) of each language's held-out text."""
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
