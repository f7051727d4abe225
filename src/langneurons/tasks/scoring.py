"""Log-likelihood of continuations: score each option after its context, without lm-evaluation-harness.

A context shared by several options runs once; only the positions that predict option tokens go through the LM
head. Benchmarks run through the harness (`langneurons evaluate lm-eval`); this is the Python API for scoring
one's own continuations, under any steering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from langneurons.core.distributed import rounds
from langneurons.core.errors import LangNeuronsError
from langneurons.core.lm import cached_forward, embedding_weight

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NORMALIZATIONS = ("sum", "token", "char")


def _encode(tokenizer: Any, context: str, option: str) -> tuple[list[int], list[int]]:
    """Token ids of the context (with the tokenizer's special tokens) and of the option that follows it.

    Trailing whitespace of the context moves to the start of the option. The option's ids are those of the joint
    text after the context's ids when the joint tokenization starts with them; otherwise (a merge across the
    boundary) the option is tokenized on its own.
    """
    stripped = context.rstrip()
    option = context[len(stripped) :] + option
    ctx = tokenizer(stripped).input_ids
    joint = tokenizer(stripped + option).input_ids
    if joint[: len(ctx)] == ctx and len(joint) > len(ctx):
        opt = joint[len(ctx) :]
    else:
        opt = tokenizer(option, add_special_tokens=False).input_ids
    if not ctx:
        raise LangNeuronsError("a context is empty and the tokenizer adds no BOS token; give every option a context")
    if not opt:
        raise LangNeuronsError(f"option {option!r} has no tokens; give non-empty options")
    return ctx, opt


@torch.inference_mode()
def option_logprobs(
    model: PreTrainedModel,
    tokenizer: Any,
    contexts: Sequence[str],
    options: Sequence[str],
    batch_size: int = 8,
    normalize: str = "sum",
) -> list[float]:
    """Log-probability of `options[i]` as the continuation of `contexts[i]`, for every i.

    `normalize`: "sum" (total log-probability), "token" (mean per option token) or "char" (total divided by the
    option's characters, lm-eval-harness's acc_norm). Each distinct context runs once: contexts are left-padded
    into a batch (position ids count from each row's first real token) and their cache is copied to every option
    of theirs; the options, right-padded, then run in one pass over that cache. `batch_size` counts options.
    """
    if len(contexts) != len(options):
        raise LangNeuronsError(f"{len(contexts)} contexts but {len(options)} options; pass one option per context")
    if normalize not in NORMALIZATIONS:
        raise LangNeuronsError(f"normalize={normalize!r}; use one of {', '.join(NORMALIZATIONS)}")
    if batch_size < 1:
        raise LangNeuronsError(f"batch_size={batch_size}; use a positive batch size")
    rows = [_encode(tokenizer, c, o) for c, o in zip(contexts, options)]
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, (context, _) in enumerate(rows):
        groups.setdefault(tuple(context), []).append(i)
    batches: list[list[tuple[int, ...]]] = [[]]
    for ctx in sorted(groups, key=len, reverse=True):  # longest first: running out of memory shows at once
        if batches[-1] and sum(len(groups[c]) for c in batches[-1]) + len(groups[ctx]) > batch_size:
            batches.append([])
        batches[-1].append(ctx)
    totals = [0.0] * len(rows)

    def score(batch: list[tuple[int, ...]]) -> list[float]:
        members = [i for ctx in batch for i in groups[ctx]]
        owner = torch.tensor([b for b, ctx in enumerate(batch) for _ in groups[ctx]])
        return _score_batch(model, tokenizer, batch, [rows[i][1] for i in members], owner)

    for done in rounds(batches if groups else [], score):  # under torchrun: batches split over ranks
        for batch, values in done:
            for i, value in zip([i for ctx in batch for i in groups[ctx]], values):
                totals[i] = value
    if normalize == "token":
        return [t / len(row[1]) for t, row in zip(totals, rows)]
    if normalize == "char":
        return [t / max(1, len(c[len(c.rstrip()) :] + o)) for t, c, o in zip(totals, contexts, options)]
    return totals


def _score_batch(model: PreTrainedModel, tokenizer: Any, contexts: Sequence[Sequence[int]],
                 options: Sequence[Sequence[int]], owner: torch.Tensor) -> list[float]:
    """Sum of log p(option tokens) for options[r] after contexts[owner[r]]: one pass over the left-padded contexts
    (keeping their cache and last logits), one over the right-padded options minus their last token."""
    device = embedding_weight(model).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b, ctx in enumerate(contexts):
        ids[b, width - len(ctx) :] = torch.tensor(ctx)
        mask[b, width - len(ctx) :] = 1
    out, cache = cached_forward(model, input_ids=ids.to(device), attention_mask=mask.to(device),
                                position_ids=((mask.cumsum(-1) - 1).clamp(min=0)).to(device), logits_to_keep=1)
    first = _log_softmax(out.logits[:, -1])[owner.to(out.logits.device)]  # [rows, vocab]: each option's first token
    totals = [float(first[r, opt[0]]) for r, opt in enumerate(options)]
    rest = max(len(opt) for opt in options) - 1
    if rest == 0:
        return totals
    cache.batch_select_indices(owner)  # CPU indices select on every device a split model's cache sits on
    opt_ids = torch.full((len(options), rest), pad, dtype=torch.long)
    opt_mask = torch.zeros_like(opt_ids)
    for r, opt in enumerate(options):
        opt_ids[r, : len(opt) - 1] = torch.tensor(opt[:-1])
        opt_mask[r, : len(opt) - 1] = 1
    lengths = torch.tensor([len(contexts[b]) for b in owner.tolist()])
    logits = cached_forward(model, cache, input_ids=opt_ids.to(device),
                            attention_mask=torch.cat([mask[owner], opt_mask], 1).to(device),
                            position_ids=(lengths[:, None] + torch.arange(rest)).to(device))[0].logits
    for r, opt in enumerate(options):
        if len(opt) > 1:
            logp = _log_softmax(logits[r, : len(opt) - 1])
            totals[r] += float(logp.gather(-1, torch.tensor(opt[1:], device=logp.device)[:, None]).sum())
    return totals


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log_softmax over the vocabulary in at least float32."""
    return torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), -1)
