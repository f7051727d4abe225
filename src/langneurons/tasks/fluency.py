"""Fluency guards measured on generated text: repetition, emptiness, likelihood under the unsteered model."""

from __future__ import annotations

import difflib
import itertools
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from langneurons.core.distributed import rounds
from langneurons.core.lm import embedding_weight
from langneurons.steering.generation import encode_prompt, resolve_prompt_format

if TYPE_CHECKING:
    from transformers import PreTrainedModel

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
    and its repeats, once list markers and labels ("B:", "2.", "-", up to two of them) are stripped. A repeat is
    the same line, the same line with a word changed (similarity >= `SIMILAR_LINES`), or, for the last line, its
    start: a repeat cut off by the token limit, at least 8 characters and a quarter of the line, or 4 characters
    after a speaker or option label ("B: Il y a" under "Il y a des raisons..."); a bare "Die Sprache" after a long
    line beginning with it may start a new sentence. `Pancakes\\nB: Pancakes\\nC: Pancakes` passes a
    distinct-bigram guard, because the labels change; this guard catches it."""
    lines = [_strip_labels(line) for line in text.splitlines()]
    lines = [(line, labelled) for line, labelled in lines if line]
    marked: set[int] = set()
    for j, (line, labelled) in enumerate(lines):
        for i in range(j):
            if _repeats(line, lines[i][0], cut=j == len(lines) - 1, labelled=labelled):
                marked |= {i, j}
    return len(marked) >= 2 and len(marked) * 2 >= len(lines)


def _strip_labels(line: str) -> tuple[str, bool]:
    """The line without up to two leading labels, casefolded, and whether one was a speaker or option label
    ("B:", "Answer:"; not a bullet or a number)."""
    text, speaker = line.strip(), False
    for _ in range(2):
        match = _LINE_LABEL.match(text)
        if not match or not text[match.end() :].strip():
            break
        speaker = speaker or any(c in match.group() for c in ":：")
        text = text[match.end() :].strip()
    return text.casefold(), speaker


def _repeats(line: str, other: str, cut: bool, labelled: bool) -> bool:
    """Whether `line` repeats the earlier line `other` (see `repeated_lines`); `cut`: it is the last line."""
    if line == other:
        return True
    if cut and other.startswith(line) and len(line) >= (4 if labelled else max(8, len(other) / 4)):
        return True
    return min(len(line), len(other)) >= 10 and difflib.SequenceMatcher(None, line, other).ratio() >= SIMILAR_LINES


def is_fluent(text: str, distinct: float) -> bool:
    """Not empty, no degenerate repetition of token bigrams, and no repeated line pattern."""
    return bool(text.strip()) and distinct >= MIN_DISTINCT_BIGRAMS and not repeated_lines(text)


@torch.inference_mode()
def continuation_nll(
    model: PreTrainedModel, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 8,
    prompt_format: str = "auto", progress: bool = False, desc: str = "score",
) -> list[float | None]:
    """Mean negative log-likelihood per token of each continuation after its prompt (None for an empty one).

    Run it outside any steering block: the guard asks how plausible the steered text is to the plain model.
    Rows are left-padded (positions counted from each row's first real token) so that every continuation ends
    at the last position, and only the last positions go through the LM head. Prompts are encoded as `generate`
    encodes them (`prompt_format`); after a plain prompt the continuation follows a space, as it was generated.
    `progress`: a bar named `desc`.
    """
    chat = resolve_prompt_format(tokenizer, prompt_format) == "chat"
    device = embedding_weight(model).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

    def score(start: int) -> list[float | None]:
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
        scores: list[float | None] = []
        for i, (_, c) in enumerate(rows):
            if not c:
                scores.append(None)
                continue
            logp = torch.log_softmax(logits[i, keep - len(c) - 1 : keep - 1].float(), -1)
            scores.append(float(-logp.gather(-1, torch.tensor(c, device=logp.device)[:, None]).mean()))
        return scores

    # under torchrun the batches are split over ranks and every rank gets all scores
    out: list[float | None] = []
    with tqdm(total=len(prompts), desc=desc, unit="output", disable=not progress) as bar:
        for done in rounds(range(0, len(prompts), batch_size), score):
            for _, scores in done:
                out += scores
                bar.update(len(scores))
    return out
