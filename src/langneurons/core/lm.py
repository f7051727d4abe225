"""The language-model head and the next-token loss, computed the same way everywhere.

`decoder_body` is the module that makes the final hidden states, `head_logits` reproduces a family's own logits
from them (the LM head plus soft-capping or scaling), `check_head` guards that, `mean_nll` is the mean next-token
loss per predicted token, and `cached_forward` runs a forward pass that keeps (or continues) a key/value cache.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from tqdm.auto import tqdm

from langneurons.core.distributed import rounds
from langneurons.core.errors import LangNeuronsError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

# Positions sent through the LM head at once: about 256 MB of float32 logits for a 262k-token vocabulary.
HEAD_ELEMENTS = 2**26


def embedding_weight(model: PreTrainedModel) -> torch.Tensor:
    """The input embedding matrix [vocab, hidden]: its device is where input ids go, its width the hidden size."""
    return cast(torch.Tensor, model.get_input_embeddings().weight)


def head_weight(model: PreTrainedModel) -> torch.Tensor:
    """The LM head's matrix [vocab, hidden]: its device is where the logits are made."""
    return cast(torch.Tensor, model.get_output_embeddings().weight)


def decoder_body(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder body of `model` (its `base_model`): the module whose forward returns `last_hidden_state`.

    A bare base model is its own body. Some transformers 4 classes (Gemma 3) name a `base_model_prefix` they do not
    have, so `base_model` is the whole language model; their body is then `model.model`.
    """
    body: torch.nn.Module = getattr(model, "base_model", model)
    head = getattr(model, "get_output_embeddings", None)
    if body is model and head is not None and head() is not None:
        body = getattr(model, "model", model)
    return body


def head_logits(model: PreTrainedModel, hidden: torch.Tensor) -> torch.Tensor:
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


def cached_forward(model: PreTrainedModel, cache: Any = None, **inputs: Any) -> tuple[Any, Any]:
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


def check_head(model: PreTrainedModel, input_ids: torch.Tensor) -> None:
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


def nll_rows(model: PreTrainedModel, rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Summed next-token NLL of each of `rows` (run together, right-padded): float64 [len(rows)] on the CPU."""
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
    head = head_weight(model)
    targets = ids[:, 1:][keep].to(head.device)  # meet the logits where the LM head makes them
    row_of = torch.arange(len(rows))[:, None].expand_as(keep)[keep].to(head.device)
    chunk = max(1, HEAD_ELEMENTS // head.shape[0])
    total = torch.zeros(len(rows), dtype=torch.float64, device=head.device)
    for start in range(0, len(targets), chunk):
        logits = head_logits(model, states[start : start + chunk]).float()
        picked = logits.gather(-1, targets[start : start + chunk, None])[:, 0]
        total.index_add_(0, row_of[start : start + chunk], (torch.logsumexp(logits, -1) - picked).double())
    return total.cpu()


def mean_nll(model: PreTrainedModel, windows: Mapping[str, Sequence[Sequence[int]]], batch_size: int = 8,
             progress: bool = False) -> dict[str, float]:
    """Mean next-token NLL per predicted token of each language's windows (padding excluded, the BOS is never a
    target). Whatever steering is active on `model` (a `steer(...)` block around the call) applies."""
    sums = window_nll(model, windows, batch_size, progress)
    return {lang: sum(sums[lang]) / sum(max(len(r) - 1, 0) for r in rows) for lang, rows in windows.items()}


@torch.inference_mode()
def window_nll(model: PreTrainedModel, windows: Mapping[str, Sequence[Sequence[int]]], batch_size: int = 8,
               progress: bool = False) -> dict[str, list[float]]:
    """Summed next-token NLL of each window of each language (0 for a window with nothing to predict), as
    `mean_nll` computes it; per-window sums let callers bootstrap over windows. Under torchrun the batches are
    split over ranks and every rank gets all sums."""
    if batch_size <= 0:
        raise LangNeuronsError(f"batch_size must be positive, got {batch_size}")
    device = embedding_weight(model).device
    out: dict[str, list[float]] = {}
    checked = False
    for lang, rows in windows.items():
        rows = [list(r) for r in rows]
        if sum(max(len(r) - 1, 0) for r in rows) == 0:
            raise LangNeuronsError(f"language '{lang}': no token to predict (windows need at least 2 tokens)")
        if not checked:
            first = next(r for r in rows if len(r) > 1)
            check_head(model, torch.as_tensor(first[:8], dtype=torch.long, device=device)[None])
            checked = True
        batches = [index for start in range(0, len(rows), batch_size)
                   if (index := [i for i in range(start, min(start + batch_size, len(rows))) if len(rows[i]) > 1])]
        sums = [0.0] * len(rows)
        bar = tqdm(total=len(batches), desc=f"nll {lang}", unit="batch", disable=not progress, leave=False)
        score = lambda index, rows=rows: nll_rows(model, [rows[i] for i in index], device).tolist()  # noqa: E731
        for done in rounds(batches, score):
            for index, values in done:
                for i, v in zip(index, values):
                    sums[i] = v
            bar.update(len(done))
        bar.close()
        out[lang] = sums
    return out
