"""Fluency guards measured on generated text: repetition, emptiness, likelihood under the unsteered model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch

MIN_DISTINCT_BIGRAMS = 0.5  # below this share of distinct token bigrams an output counts as degenerate


def distinct_bigram_share(token_ids: Sequence[int]) -> float:
    """Distinct token bigrams over all bigrams (1.0 for fewer than two tokens)."""
    pairs = list(itertools.pairwise(token_ids))
    return len(set(pairs)) / len(pairs) if pairs else 1.0


def is_fluent(text: str, distinct: float) -> bool:
    """Not empty, and not degenerate repetition."""
    return bool(text.strip()) and distinct >= MIN_DISTINCT_BIGRAMS


@torch.inference_mode()
def continuation_nll(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 16
) -> list[float | None]:
    """Mean negative log-likelihood per token of each continuation after its prompt (None for an empty one).

    Run it outside any steering block: the guard asks how plausible the steered text is to the plain model.
    """
    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float | None] = []
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, cont in zip(prompts[start : start + batch_size], continuations[start : start + batch_size]):
            p = tokenizer(prompt).input_ids
            c = tokenizer(" " + cont.strip(), add_special_tokens=False).input_ids if cont.strip() else []
            rows.append((p, c))
        width = max(len(p) + len(c) for p, c in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, c) in enumerate(rows):  # right padding: positions stay 0.. for every row
            ids[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
        logp = torch.log_softmax(model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), -1)
        for i, (p, c) in enumerate(rows):
            if not c:
                out.append(None)
                continue
            targets = torch.tensor(c, device=logp.device)
            picked = logp[i, len(p) - 1 : len(p) + len(c) - 1].gather(-1, targets[:, None])
            out.append(float(-picked.mean()))
    return out
