"""Greedy, batched, left-padded generation that returns only the continuations, optionally steered per prompt."""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from langneurons.neurons import NeuronSet
from langneurons.stats import ActivationStats
from langneurons.steering import BatchSteering, Steering, SteeringConfig


def generation_settings(
    max_new_tokens: int, stop_strings: Sequence[str], batch_size: int, repetition_penalty: float
) -> dict[str, Any]:
    """Every generation setting, as recorded in results."""
    return {"decoding": "greedy", "max_new_tokens": max_new_tokens, "stop_strings": list(stop_strings),
            "batch_size": batch_size, "padding": "left", "repetition_penalty": repetition_penalty}


class StopOnStrings(StoppingCriteria):
    """Stop each sequence once its new text contains a stop string (cheap: no per-vocabulary tables)."""

    def __init__(self, tokenizer: Any, prompt_length: int, stop_strings: Sequence[str]):
        self.tokenizer, self.prompt_length, self.stop_strings = tokenizer, prompt_length, list(stop_strings)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length :], skip_special_tokens=True)
        done = [any(s in t for s in self.stop_strings) for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    max_new_tokens: int = 40,
    batch_size: int = 32,
    stop_strings: Sequence[str] = (),
    steerings: Sequence[SteeringConfig | None] | None = None,
    neurons: NeuronSet | None = None,
    stats: ActivationStats | None = None,
    repetition_penalty: float = 1.0,
    progress: bool = False,
    bar: tqdm | None = None,
) -> list[str]:
    """Greedy continuations of `prompts` (decoded new tokens, cut at the first stop string).

    Prompts are left-padded into batches; with greedy decoding a prompt gets the same text batched or alone
    (up to floating-point ties). `steerings[i]` (with `neurons`, `stats`) steers prompt i; prompts with
    different settings share a batch (each setting is compiled once; a batch applies all of them at once).
    `repetition_penalty` > 1 divides the scores of tokens already in the sequence (CTRL's rule; deterministic).
    `progress` shows a bar counting prompts; `bar`, an open bar of a larger job, is advanced instead.
    """
    if steerings is not None and len(steerings) != len(prompts):
        raise ValueError("steerings must have one entry (or None) per prompt")
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model.get_input_embeddings().weight.device
    compiled = {_key(c): Steering(model, neurons, stats, c) for c in steerings or [] if c is not None}
    out: list[str] = []
    own = bar is None
    bar = tqdm(total=len(prompts), desc="generate", unit="prompt", disable=not progress) if own else bar
    try:
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            batch = tokenizer(chunk, return_tensors="pt", padding=True).to(device)
            length = batch["input_ids"].shape[1]
            stop = StoppingCriteriaList([StopOnStrings(tokenizer, length, stop_strings)]) if stop_strings else None
            with ExitStack() as stack:
                if steerings is not None and any(c is not None for c in steerings[start : start + batch_size]):
                    rows = [compiled.get(_key(c)) for c in steerings[start : start + batch_size]]
                    stack.callback(BatchSteering(model, rows).remove)
                ids = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=pad_id,
                                     stopping_criteria=stop, top_p=None, top_k=None, temperature=None,
                                     repetition_penalty=repetition_penalty)
            out += [cut(t, stop_strings) for t in tokenizer.batch_decode(ids[:, length:], skip_special_tokens=True)]
            bar.update(len(chunk))
    finally:
        tokenizer.padding_side = side
        if own:
            bar.close()
    return out


def _key(config: SteeringConfig | None) -> str | None:
    return None if config is None else json.dumps(config.to_dict(), sort_keys=True)


def cut(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first stop string, stripped."""
    end = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:end].strip()
