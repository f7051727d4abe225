"""Greedy, batched, left-padded generation that returns only the continuations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm


def generation_settings(max_new_tokens: int, stop_strings: Sequence[str]) -> dict[str, Any]:
    """Every generation setting, as recorded in results."""
    return {"decoding": "greedy", "max_new_tokens": max_new_tokens, "stop_strings": list(stop_strings)}


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 40,
    batch_size: int = 16,
    stop_strings: Sequence[str] = (),
    progress: bool = False,
) -> list[str]:
    """Greedy continuations of `prompts` (decoded new tokens, cut at the first stop string).

    Prompts are left-padded into batches; with greedy decoding a prompt gets the same text batched or alone
    (up to floating-point ties).
    """
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model.get_input_embeddings().weight.device
    out: list[str] = []
    try:
        for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
            batch = tokenizer(list(prompts[start : start + batch_size]), return_tensors="pt", padding=True)
            batch = {k: v.to(device) for k, v in batch.items()}
            ids = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                stop_strings=list(stop_strings) or None, tokenizer=tokenizer if stop_strings else None,
                top_p=None, top_k=None, temperature=None,
            )
            new = ids[:, batch["input_ids"].shape[1] :]
            out += [cut(text, stop_strings) for text in tokenizer.batch_decode(new, skip_special_tokens=True)]
    finally:
        tokenizer.padding_side = side
    return out


def cut(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first stop string, stripped."""
    end = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:end].strip()
