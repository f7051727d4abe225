"""Relevance statistics: how much each neuron contributes to predicting the actual next tokens of a language.

The relevance of neuron `j` of layer `l` on a window is gradient x input at the input of the layer's down
projection (an LRP-epsilon rule at that linear layer, with epsilon -> 0):

    r[l, j] = sum_s a[l, j, s] * d L / d a[l, j, s],   L = sum_t log p(x[t+1] | x[..t])

where `a[l, j, s]` is what the down projection reads from neuron `j` at position `s` (the activation times the
`up` output in gated MLPs; gradient x input is the same there and at the activation's output, since a
product rescales the activation and its gradient inversely), `s` runs over the window's text positions (BOS left
out, as in the activation statistics) and `t` over every predicted token. In a causal LM the activation at `s`
also feeds the predictions of later tokens, so `r` is, summed over the predicted tokens `t`, the relevance of
the neuron (all its positions up to `t`) for `log p` of token `t`. Equivalently, `-r` is the first-order
(Taylor) change of the window's log-likelihood when the neuron is zeroed at every position: the quantity the
masking evaluation measures. One backward pass per batch gives it for every neuron at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from langneurons.core.checks import check_window
from langneurons.core.errors import LangNeuronsError
from langneurons.core.hooks import Hooks
from langneurons.core.lm import HEAD_ELEMENTS, check_head, decoder_body, head_logits, head_weight
from langneurons.core.lrp import attnlrp, check_supported
from langneurons.core.sites import NeuronSites, find_sites
from langneurons.data.corpus import Corpus
from langneurons.data.windows import describe_start, window_prefix
from langneurons.stats.collect import (
    check_collection,
    collection_meta,
    run_collection,
)
from langneurons.stats.sums import PER_LANGUAGE, PER_NEURON, LanguageSums

if TYPE_CHECKING:
    from transformers import PreTrainedModel

KIND = "relevance"
RULES = {
    "grad_x_input": "gradient x input at the down projection's input, of the summed log-probability of the actual "
                    "next tokens",
    "attnlrp": "AttnLRP relevance (Achtibat et al. 2024) at the down projection's input, of the summed logits of "
               "the actual next tokens",
}


@dataclass
class RelevanceStats(LanguageSums):
    """Sums over predicted tokens, per language: `n_tokens` [K], `log_prob` [K] (sum of log p of the actual next
    tokens), `relevance` and `abs_relevance` [K, L, N] (float64 sums of `r` and of `|r|` per position).

    Sums add up exactly, so relevance of shards of a corpus merges with `a + b`.
    """

    KIND: ClassVar[str] = KIND
    LABEL: ClassVar[str] = "relevance"
    COMMAND: ClassVar[str] = "collect --relevance"
    SHAPES: ClassVar[dict[str, str]] = {"n_tokens": PER_LANGUAGE, "log_prob": PER_LANGUAGE,
                                        "relevance": PER_NEURON, "abs_relevance": PER_NEURON}

    languages: list[str]
    n_tokens: torch.Tensor
    log_prob: torch.Tensor
    relevance: torch.Tensor
    abs_relevance: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def mean_relevance(self) -> torch.Tensor:
        """Relevance per predicted token: [K, L, N]."""
        return self._per_token(self.relevance)

    def mean_abs_relevance(self) -> torch.Tensor:
        """Absolute relevance per predicted token: [K, L, N]."""
        return self._per_token(self.abs_relevance)

    def mean_nll(self) -> torch.Tensor:
        """Mean next-token loss (nats) of each language's text: [K]."""
        return -self._per_token(self.log_prob)

    @property
    def rule(self) -> str:
        """The relevance rule ("grad_x_input" for files written before rules existed)."""
        return self.meta.get("collection", {}).get("rule", "grad_x_input")

    def __add__(self, other: RelevanceStats) -> RelevanceStats:
        if self.rule != other.rule:
            raise LangNeuronsError(f"cannot merge relevance of rules '{self.rule}' and '{other.rule}'")
        return super().__add__(other)

    def _summary_columns(self) -> dict[str, torch.Tensor]:
        """Mean next-token loss, and relevance per token summed over all neurons."""
        return {"nll": self.mean_nll(), "relevance": self.mean_relevance().sum((1, 2)),
                "abs_relevance": self.mean_abs_relevance().sum((1, 2))}


def empty_relevance(languages: list[str], n_layers: int, n_neurons: int, meta: dict[str, Any]) -> RelevanceStats:
    """All-zero relevance to accumulate into."""
    return RelevanceStats.zeros(languages, n_layers, n_neurons, meta)


@contextlib.contextmanager
def frozen(model: PreTrainedModel) -> Iterator[None]:
    """Parameters without gradients and modules in eval mode for the duration; both restored afterwards."""
    params = [p for p in model.parameters() if p.requires_grad]
    modes = [(m, m.training) for m in model.modules()]
    try:
        for p in params:
            p.requires_grad_(False)
        model.eval()
        yield
    finally:
        for p in params:
            p.requires_grad_(True)
        for m, mode in modes:
            m.training = mode


class RelevanceRecorder:
    """Hooks that turn one forward and one backward pass per batch into per-neuron relevance sums.

    A hook on each down projection's input keeps it (`a`) and registers a gradient hook on it; the first
    layer's input becomes the leaf of the graph (the model's parameters are frozen while recording), so
    the backward pass stops there. In the backward pass each gradient hook adds `sum_s a * grad` and
    `sum_s |a * grad|` (per window in float32, across windows in float64) and drops `a`.
    """

    def __init__(self, sites: NeuronSites, skip: int, exclude_target: int | None = None,
                 explain_logit: bool = False):
        self.sites, self.skip, self.exclude_target = sites, skip, exclude_target
        self.explain_logit = explain_logit  # backpropagate the target logits (LRP) instead of log-probabilities
        self.acc: dict[str, torch.Tensor] = {}
        self._saved: dict[int, torch.Tensor] = {}
        self._checked = False  # the LM head reproduces the model's logits (checked on the first batch)
        self._hooks: Hooks | None = None

    def _keep(self, layer: int):
        def keep(x: torch.Tensor) -> torch.Tensor | None:
            if not torch.is_grad_enabled():
                return None
            a = x if x.requires_grad else x.detach().requires_grad_()  # nothing before needs a gradient: a leaf
            self._saved[layer] = a
            a.register_hook(self._grad_hook(layer))
            return a

        return keep

    def _grad_hook(self, layer: int):
        def hook(grad: torch.Tensor) -> None:
            a = self._saved.pop(layer).detach()
            r = a[:, self.skip :].float() * grad[:, self.skip :].float()
            self._add(f"r{layer}", torch.stack([r.sum(1), r.abs().sum(1)], 1))

        return hook

    def _add(self, key: str, per_window: torch.Tensor) -> None:
        total = per_window.double().sum(0)
        acc = self.acc.get(key)
        self.acc[key] = total if acc is None else acc.add_(total)

    def __enter__(self) -> RelevanceRecorder:
        self._hooks = Hooks(self.sites)
        for i, down in enumerate(self.sites.downs):
            self._hooks.edit(down, self._keep(i), input=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._hooks is not None:
            self._hooks.close()
            self._hooks = None
        self._saved = {}

    def run(self, model: PreTrainedModel, input_ids: torch.Tensor) -> int:
        """Forward `input_ids` [batch, seq] through the model, backward the summed log-probabilities of the actual
        next tokens (with `explain_logit`: their logits) once, and record relevance; returns the number of
        predicted tokens.

        The LM head runs on `HEAD_ELEMENTS // vocabulary` positions at a time, each chunk's backward going only
        as far as the final hidden states, so memory does not grow with window x vocabulary; then one backward
        pass from the final hidden states through the decoder body.
        """
        if torch.is_inference_mode_enabled():
            raise LangNeuronsError("relevance needs gradients; call it outside torch.inference_mode()")
        if not self._checked:
            with torch.no_grad():
                check_head(model, input_ids[:1, :8])
            self._checked = True
        head = head_weight(model).device  # of a model split over devices: the logits' device
        targets = input_ids[:, 1:].reshape(-1).to(head)
        valid = targets != self.exclude_target if self.exclude_target is not None else torch.ones_like(targets).bool()
        log_prob = torch.zeros(targets.shape, dtype=torch.float32, device=head)
        try:
            with torch.enable_grad():
                hidden = decoder_body(model)(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1]
                states = hidden.detach().requires_grad_()
                flat = states.reshape(len(targets), -1)
                chunk = max(1, HEAD_ELEMENTS // head_weight(model).shape[0])
                for start in range(0, len(targets), chunk):
                    part = slice(start, start + chunk)
                    logits = head_logits(model, flat[part]).float()
                    target = logits.gather(-1, targets[part, None])[:, 0]
                    lp = target - logits.logsumexp(-1)
                    lp = torch.where(valid[part], lp, torch.zeros_like(lp))
                    explained = torch.where(valid[part], target, torch.zeros_like(target)) if self.explain_logit else lp
                    explained.sum().backward()
                    log_prob[part] = lp.detach()
                hidden.backward(states.grad)
        finally:
            self._saved = {}
        self._add("log_prob", log_prob.view(input_ids.shape[0], -1).sum(1)[:, None])
        return int(valid.sum())

    def take(self) -> dict[str, torch.Tensor]:
        """The sums so far on the CPU, by RelevanceStats field name; resets them."""
        n_layers, n = self.sites.n_layers, self.sites.n_neurons
        zero = torch.zeros(2, n, dtype=torch.float64)
        sums = torch.stack([self.acc.get(f"r{i}", zero).cpu() for i in range(n_layers)])
        out = {"relevance": sums[:, 0].contiguous(), "abs_relevance": sums[:, 1].contiguous(),
               "log_prob": self.acc.get("log_prob", torch.zeros(1, dtype=torch.float64)).cpu()[0]}
        self.acc = {}
        return out


def collect_relevance(
    model: PreTrainedModel,
    tokenizer: Any,
    corpus: Corpus,
    max_tokens: int | None = 20_000,
    window: int = 512,
    batch_size: int = 1,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 4,
    split: str = "train",
    progress: bool = True,
    rule: str = "grad_x_input",
) -> RelevanceStats:
    """Relevance of every neuron for the next-token predictions on the `split` documents of each language.

    Windows of `window` tokens (BOS first; BOS positions and BOS targets left out), at most `max_tokens` tokens
    per language, `batch_size` windows per forward and backward pass (each window's logits take vocabulary x
    window floats, hence the small default). With `checkpoint`, progress is saved there after each language and
    every `checkpoint_every` windows, and a rerun with the same arguments resumes. Under torchrun each rank takes
    every world-th window and all ranks return the summed relevance (rank 0 writes the checkpoint).

    `rule`: "grad_x_input" (gradient x input of the log-probabilities, the default) or "attnlrp" (AttnLRP
    relevance of the target logits, `langneurons.core.lrp`; a relevance of the gate x up product channel, which
    the uniform rule splits half and half between the activation and the up projection).
    """
    if rule not in RULES:
        raise LangNeuronsError(f"unknown relevance rule '{rule}'; use one of {', '.join(RULES)}")
    if rule == "attnlrp":
        check_supported(model)
    check_collection(corpus, max_tokens, batch_size, checkpoint_every)
    check_window(model, window)
    sites = find_sites(model)
    prefix = window_prefix(tokenizer)
    settings = {"window": window, "max_tokens": max_tokens, "split": split, "bos_skipped": len(prefix), "rule": rule}
    meta = collection_meta(model, sites, corpus, settings, batch_size, relevance=RULES[rule],
                           start=describe_start(tokenizer))
    relevance = empty_relevance(corpus.languages, sites.n_layers, sites.n_neurons, meta)
    recorder = RelevanceRecorder(sites, skip=len(prefix), exclude_target=prefix[0] if prefix else None,
                                 explain_logit=rule == "attnlrp")
    with frozen(model), attnlrp(model, sites) if rule == "attnlrp" else contextlib.nullcontext():
        return run_collection(model, tokenizer, corpus, recorder, relevance, settings, batch_size=batch_size,
                              checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress,
                              desc="relevance")
