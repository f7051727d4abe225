"""The language-model head and the next-token loss, computed the same way everywhere.

`decoder_body` is the module that makes the final hidden states, `head_logits` reproduces a family's own logits
from them (the LM head plus soft-capping or scaling), `check_head` guards that, `mean_nll` is the mean next-token
loss per predicted token, and `cached_forward` runs a forward pass that keeps (or continues) a key/value cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from langneurons.core.distributed import rounds
from langneurons.core.errors import LangNeuronsError

# Positions sent through the LM head at once: about 256 MB of float32 logits for a 262k-token vocabulary.
HEAD_ELEMENTS = 2**26


def decoder_body(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder body of `model` (its `base_model`): the module whose forward returns `last_hidden_state`.

    A bare base model is its own body. Some transformers 4 classes (Gemma 3) name a `base_model_prefix` they do not
    have, so `base_model` is the whole language model; their body is then `model.model`.
    """
    body = getattr(model, "base_model", model)
    if body is model and model.get_output_embeddings() is not None:
        body = getattr(model, "model", model)
    return body


def head_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits from final hidden states (after the final norm): the LM head, then what the family's
    own forward does after it (Gemma 2/3 soft-capping, Cohere's logit_scale, Granite's logits_scaling)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = logits / cap
        logits = torch.tanh(logits)
        logits = logits * cap
    scale = getattr(model, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    scaling = getattr(model.config, "logits_scaling", None)
    if scaling is not None:
        logits = logits / scaling
    return logits


def cached_forward(model: torch.nn.Module, cache: Any = None, **inputs: Any) -> tuple[Any, Any]:
    """The model's output for `inputs` with `use_cache=True`, continuing `cache` when given, and the key/value cache
    it returns.

    The cache goes in under the name the model's forward takes and is found in the output by what it is (an object
    with `get_seq_length`): transformers renamed `past_key_values` to `cache` (5.24) and warns on the old name.
    """
    if cache is not None:
        params = inspect.signature(model.forward).parameters
        inputs["cache" if "cache" in params else "past_key_values"] = cache
    out = model(**inputs, use_cache=True)
    kept = next((v for v in out.values() if hasattr(v, "get_seq_length")), None)
    if kept is None:
        raise LangNeuronsError(f"this {model.config.model_type} model returned no key/value cache with use_cache=True; "
                               "it cannot score continuations from a cached context (report it)")
    return out, kept


def check_head(model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    """Raise unless `head_logits` of the decoder body's output equals the model's own logits on `input_ids`
    ([1, T]): a guard against a family that post-processes its logits in a way `head_logits` does not know."""
    hidden = decoder_body(model)(input_ids=input_ids, use_cache=False).last_hidden_state
    ours = head_logits(model, hidden).float()
    theirs = model(input_ids=input_ids, use_cache=False).logits.float().to(ours.device)
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-3, atol=1e-3):
        raise LangNeuronsError(
            f"the LM head of this {model.config.model_type} model does not reproduce its logits from the decoder "
            "body's output; its family post-processes logits in an unsupported way (report it)"
        )


def nll_sum(model: torch.nn.Module, rows: Sequence[Sequence[int]], device: torch.device) -> tuple[float, int]:
    """Summed next-token NLL (float64) and the number of predicted tokens of right-padded `rows`."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    # Causal attention: a row's real positions never see the padding after them.
    hidden = decoder_body(model)(input_ids=ids.to(device), attention_mask=mask.to(device),
                                 use_cache=False).last_hidden_state
    keep = mask[:, 1:].bool()  # position t predicts token t + 1; padding is never a target, the BOS never one
    states = hidden[:, :-1][keep.to(hidden.device)]  # the last layer's device (a split model's last GPU)
    head = model.get_output_embeddings().weight
    targets = ids[:, 1:][keep].to(head.device)  # meet the logits where the LM head makes them
    chunk = max(1, HEAD_ELEMENTS // head.shape[0])
    total = torch.zeros((), dtype=torch.float64, device=head.device)
    for start in range(0, len(targets), chunk):
        logits = head_logits(model, states[start : start + chunk]).float()
        picked = logits.gather(-1, targets[start : start + chunk, None])[:, 0]
        total += (torch.logsumexp(logits, -1) - picked).double().sum()
    return float(total), len(targets)


@torch.inference_mode()
def mean_nll(model: torch.nn.Module, windows: Mapping[str, Sequence[Sequence[int]]], batch_size: int = 8,
             progress: bool = False) -> dict[str, float]:
    """Mean next-token NLL per predicted token of each language's windows (padding excluded, the BOS is never a
    target). Whatever steering is active on `model` (a `steer(...)` block around the call) applies."""
    if batch_size <= 0:
        raise LangNeuronsError(f"batch_size must be positive, got {batch_size}")
    device = model.get_input_embeddings().weight.device
    out: dict[str, float] = {}
    checked = False
    for lang, rows in windows.items():
        rows = [list(r) for r in rows]
        if sum(max(len(r) - 1, 0) for r in rows) == 0:
            raise LangNeuronsError(f"language '{lang}': no token to predict (windows need at least 2 tokens)")
        if not checked:
            first = next(r for r in rows if len(r) > 1)
            check_head(model, torch.as_tensor(first[:8], dtype=torch.long, device=device)[None])
            checked = True
        batches = [batch for start in range(0, len(rows), batch_size)
                   if (batch := [r for r in rows[start : start + batch_size] if len(r) > 1])]
        total, count = 0.0, 0
        bar = tqdm(total=len(batches), desc=f"nll {lang}", unit="batch", disable=not progress, leave=False)
        # under torchrun the batches are split over ranks; sums are added in batch order, as in one process
        for done in rounds(batches, lambda batch: nll_sum(model, batch, device)):
            for _, (s, n) in done:
                total, count = total + s, count + n
            bar.update(len(done))
        bar.close()
        out[lang] = total / count
    return out
