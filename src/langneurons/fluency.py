"""Fluency guards measured on generated text: repetition, emptiness, likelihood under the unsteered model."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

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
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], continuations: Sequence[str], batch_size: int = 8,
    progress: bool = False, desc: str = "score",
) -> list[float | None]:
    """Mean negative log-likelihood per token of each continuation after its prompt (None for an empty one).

    Run it outside any steering block: the guard asks how plausible the steered text is to the plain model.
    Rows are left-padded (positions counted from each row's first real token) so that every continuation ends
    at the last position, and only the last positions go through the LM head. `progress`: a bar named `desc`.
    """
    device = model.get_input_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float | None] = []
    bar = tqdm(total=len(prompts), desc=desc, unit="output", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        rows = []
        for prompt, cont in zip(prompts[start : start + batch_size], continuations[start : start + batch_size]):
            c = tokenizer(" " + cont.strip(), add_special_tokens=False).input_ids if cont.strip() else []
            rows.append((tokenizer(prompt).input_ids, c))
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
        bar.update(len(rows))
    bar.close()
    return out
