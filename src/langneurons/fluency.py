"""Fluency guards measured on generated text: repetition, emptiness, likelihood under the unsteered model."""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Sequence
from typing import Any

import torch

from langneurons.generation import encode_prompt, resolve_prompt_format

MIN_DISTINCT_BIGRAMS = 0.5  # below this share of distinct token bigrams an output counts as degenerate


def distinct_bigram_share(token_ids: Sequence[int]) -> float:
    """Distinct token bigrams over all bigrams (1.0 for fewer than two tokens)."""
    pairs = list(itertools.pairwise(token_ids))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


# A list marker or speaker label at the start of a line: "B:", "2.", "c)", "-", "*", "Answer:", "答：".
_LINE_LABEL = re.compile(r"^\s*(?:[-*•]+|\(?\w{1,3}[.)）]|\w{1,12}\s?[:：])\s*")


SIMILAR_LINES = 0.8  # lines of 10+ characters this similar (difflib ratio) count as one line repeated


def repeated_lines(text: str) -> bool:
    """Whether the text repeats a line pattern: at least half of its non-empty lines (and at least two) are a line
    and its repeats, once list markers and labels ("B:", "2.", "-") are stripped. A repeat is the same line, the
    same line with a word changed (similarity >= `SIMILAR_LINES`), or, for the last line, its start (a repeat cut
    off by the token limit). `Pancakes\\nB: Pancakes\\nC: Pancakes` passes a distinct-bigram guard, because the
    labels change; this guard catches it."""
    lines = [(_LINE_LABEL.sub("", line, count=1).strip() or line.strip()).casefold() for line in text.splitlines()]
    lines = [line for line in lines if line]
    marked: set[int] = set()
    for j, line in enumerate(lines):
        for i in range(j):
            if _repeats(line, lines[i], last=j == len(lines) - 1):
                marked |= {i, j}
    return len(marked) >= 2 and len(marked) * 2 >= len(lines)


def _repeats(line: str, other: str, last: bool) -> bool:
    """Whether `line` repeats the earlier line `other` (see `repeated_lines`)."""
    if line == other or (last and len(line) >= 4 and other.startswith(line)):
        return True
    return min(len(line), len(other)) >= 10 and difflib.SequenceMatcher(None, line, other).ratio() >= SIMILAR_LINES


def is_fluent(text: str, distinct: float) -> bool:
    """Not empty, no degenerate repetition of token bigrams, and no repeated line pattern."""
    return bool(text.strip()) and distinct >= MIN_DISTINCT_BIGRAMS and not repeated_lines(text)


@torch.inference_mode()
def continuation_nll(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 8,
    prompt_format: str = "auto",
) -> list[float | None]:
    """Mean negative log-likelihood per token of each continuation after its prompt (None for an empty one).

    Run it outside any steering block: the guard asks how plausible the steered text is to the plain model.
    Rows are left-padded (positions counted from each row's first real token) so that every continuation ends
    at the last position, and only the last positions go through the LM head. Prompts are encoded as `generate`
    encodes them (`prompt_format`); after a plain prompt the continuation follows a space, as it was generated.
    """
    chat = resolve_prompt_format(tokenizer, prompt_format) == "chat"
    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float | None] = []
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, cont in zip(prompts[start : start + batch_size], continuations[start : start + batch_size]):
            text = cont.strip() if chat else " " + cont.strip()
            c = tokenizer(text, add_special_tokens=False).input_ids if cont.strip() else []
            rows.append((encode_prompt(tokenizer, prompt, prompt_format), c))
        width = max(len(p) + len(c) for p, c in rows)
        keep = max(len(c) for _, c in rows) + 1
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, c) in enumerate(rows):
            ids[i, width - len(p) - len(c) :] = torch.tensor(p + c)
            mask[i, width - len(p) - len(c) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                       logits_to_keep=keep).logits
        for i, (_, c) in enumerate(rows):
            if not c:
                out.append(None)
                continue
            logp = torch.log_softmax(logits[i, keep - len(c) - 1 : keep - 1].float(), -1)
            out.append(float(-logp.gather(-1, torch.tensor(c, device=logp.device)[:, None]).mean()))
    return out
