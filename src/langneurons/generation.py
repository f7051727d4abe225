"""Greedy, batched, left-padded generation that returns only the continuations, optionally steered per prompt.

Prompts are texts; how a text becomes tokens is the prompt format, decided here for every generating command:
"plain" puts the text after the tokenizer's own start (`corpus.window_prefix`, the same start as the statistics'
windows), "chat" makes the text the user's message in the tokenizer's chat template with the assistant's turn
opened, and "auto" (the default) is "chat" when the tokenizer has a chat template and "plain" otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import StoppingCriteria, StoppingCriteriaList

from langneurons.corpus import describe_start, window_prefix
from langneurons.errors import LangNeuronsError
from langneurons.neurons import NeuronSet
from langneurons.stats import ActivationStats
from langneurons.steering import BatchSteering, Steering, SteeringConfig

PROMPT_FORMATS = ("auto", "chat", "plain")


def resolve_prompt_format(tokenizer: Any, prompt_format: str = "auto") -> str:
    """"chat" or "plain": `prompt_format`, with "auto" meaning "chat" when the tokenizer has a chat template."""
    if prompt_format not in PROMPT_FORMATS:
        raise LangNeuronsError(f"unknown prompt format {prompt_format!r}; use one of {', '.join(PROMPT_FORMATS)}")
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if prompt_format == "chat" and not has_template:
        raise LangNeuronsError("the tokenizer has no chat template; use --prompt-format plain (or auto)")
    if prompt_format == "auto":
        return "chat" if has_template else "plain"
    return prompt_format


def encode_prompt(tokenizer: Any, text: str, prompt_format: str = "auto") -> list[int]:
    """Token ids of one prompt: the tokenizer's start + `text` ("plain"), or `text` as the user's message in the
    chat template with the assistant's turn opened ("chat"; the template writes its own start tokens)."""
    if resolve_prompt_format(tokenizer, prompt_format) == "plain":
        return window_prefix(tokenizer) + tokenizer(text, add_special_tokens=False).input_ids
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True,
                                             tokenize=False)
    return tokenizer(rendered, add_special_tokens=False).input_ids


def prompt_settings(tokenizer: Any, prompt_format: str = "auto") -> dict[str, Any]:
    """The resolved prompt format and the start of plain prompts and statistics windows, as recorded in results."""
    return {"format": resolve_prompt_format(tokenizer, prompt_format), "requested": prompt_format,
            "start": describe_start(tokenizer)}


def generation_settings(
    max_new_tokens: int, stop_strings: Sequence[str], batch_size: int, repetition_penalty: float,
    prompt: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Every generation setting, as recorded in results (`prompt`: from `prompt_settings`)."""
    out = {"decoding": "greedy", "max_new_tokens": max_new_tokens, "stop_strings": list(stop_strings),
           "batch_size": batch_size, "padding": "left", "repetition_penalty": repetition_penalty}
    return out if prompt is None else {**out, "prompt": prompt}


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
    prompt_format: str = "auto",
) -> list[str]:
    """Greedy continuations of `prompts` (decoded new tokens, cut at the first stop string).

    Each prompt text is encoded by `encode_prompt` in `prompt_format` ("auto", "chat" or "plain").
    Prompts are left-padded into batches; with greedy decoding a prompt gets the same text batched or alone
    (up to floating-point ties). `steerings[i]` (with `neurons`, `stats`) steers prompt i; prompts with
    different settings share a batch (each setting is compiled once; a batch applies all of them at once).
    `repetition_penalty` > 1 divides the scores of tokens already in the sequence (CTRL's rule; deterministic).
    """
    if steerings is not None and len(steerings) != len(prompts):
        raise ValueError("steerings must have one entry (or None) per prompt")
    fmt = resolve_prompt_format(tokenizer, prompt_format)
    encoded = [encode_prompt(tokenizer, p, fmt) for p in prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = model.get_input_embeddings().weight.device
    compiled = {_key(c): Steering(model, neurons, stats, c) for c in steerings or [] if c is not None}
    out: list[str] = []
    for start in tqdm(range(0, len(prompts), batch_size), desc="generate", disable=not progress):
        batch = _left_padded(encoded[start : start + batch_size], pad_id, device)
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
    return out


def _left_padded(rows: Sequence[list[int]], pad_id: int, device: torch.device) -> dict[str, torch.Tensor]:
    """input_ids and attention_mask of token rows, left-padded to the longest."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def _key(config: SteeringConfig | None) -> str | None:
    return None if config is None else json.dumps(config.to_dict(), sort_keys=True)


def cut(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first stop string, stripped."""
    end = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:end].strip()
