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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from langneurons.artifacts import load_tensors, save_tensors
from langneurons.collect import _batches, _close, _flush, _resume, _save, _shard, language_windows
from langneurons.corpus import Corpus, window_prefix
from langneurons.errors import LangNeuronsError
from langneurons.models import model_id, model_revision
from langneurons.sites import NeuronSites, find_sites
from langneurons.tasks.perplexity import _HEAD_ELEMENTS, check_head, head_logits

KIND = "relevance"


@dataclass
class RelevanceStats:
    """Sums over predicted tokens, per language: `n_tokens` [K], `log_prob` [K] (sum of log p of the actual next
    tokens), `relevance` and `abs_relevance` [K, L, N] (float64 sums of `r` and of `|r|` per position).

    Sums add up exactly, so relevance of shards of a corpus merges with `a + b`.
    """

    languages: list[str]
    n_tokens: torch.Tensor
    log_prob: torch.Tensor
    relevance: torch.Tensor
    abs_relevance: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        k = len(self.languages)
        if len(set(self.languages)) != k:
            raise LangNeuronsError(f"duplicate languages in relevance statistics: {self.languages}")
        if self.relevance.dim() != 3 or self.relevance.shape[0] != k or self.n_tokens.shape != (k,) \
                or self.log_prob.shape != (k,) or self.abs_relevance.shape != self.relevance.shape:
            raise LangNeuronsError(
                f"relevance tensors have shapes n_tokens {tuple(self.n_tokens.shape)}, relevance "
                f"{tuple(self.relevance.shape)}, abs_relevance {tuple(self.abs_relevance.shape)}; "
                f"expected [{k}] and [{k}, layers, neurons]"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.relevance.shape)  # type: ignore[return-value]

    @property
    def n_layers(self) -> int:
        return self.shape[1]

    @property
    def n_neurons(self) -> int:
        return self.shape[2]

    @property
    def model_id(self) -> str | None:
        return self.meta.get("model", {}).get("id")

    def index(self, language: str) -> int:
        """Row of `language`; a clear error if these statistics do not have it."""
        if language not in self.languages:
            raise LangNeuronsError(f"no relevance for language '{language}'; these have {', '.join(self.languages)}")
        return self.languages.index(language)

    def _per_token(self, total: torch.Tensor) -> torch.Tensor:
        n = self.n_tokens.to(torch.float64).clamp(min=1)
        return total.to(torch.float64) / n.view(-1, *([1] * (total.dim() - 1)))

    def mean_relevance(self) -> torch.Tensor:
        """Relevance per predicted token: [K, L, N]."""
        return self._per_token(self.relevance)

    def mean_abs_relevance(self) -> torch.Tensor:
        """Absolute relevance per predicted token: [K, L, N]."""
        return self._per_token(self.abs_relevance)

    def mean_nll(self) -> torch.Tensor:
        """Mean next-token loss (nats) of each language's text: [K]."""
        return -self._per_token(self.log_prob)

    def select(self, languages: list[str]) -> RelevanceStats:
        """The statistics of a subset of languages, in the given order."""
        rows = torch.tensor([self.index(lang) for lang in languages], dtype=torch.long)
        return replace(self, languages=list(languages), n_tokens=self.n_tokens[rows], log_prob=self.log_prob[rows],
                       relevance=self.relevance[rows], abs_relevance=self.abs_relevance[rows],
                       meta={**self.meta, "languages": list(languages)})

    def __add__(self, other: RelevanceStats) -> RelevanceStats:
        """Merge: languages in both are summed, the others are carried over."""
        if not isinstance(other, RelevanceStats):
            return NotImplemented
        if self.shape[1:] != other.shape[1:]:
            raise LangNeuronsError(
                f"cannot merge relevance of shape {self.shape[1:]} and {other.shape[1:]}: different models"
            )
        if self.model_id and other.model_id and self.model_id != other.model_id:
            raise LangNeuronsError(f"cannot merge relevance of '{self.model_id}' and '{other.model_id}'")
        languages = self.languages + [lang for lang in other.languages if lang not in self.languages]
        merged = {}
        for name, mine in self.tensors().items():
            out = torch.zeros((len(languages), *mine.shape[1:]), dtype=mine.dtype)
            for part, langs in ((mine, self.languages), (other.tensors()[name], other.languages)):
                out.index_add_(0, torch.tensor([languages.index(lang) for lang in langs], dtype=torch.long), part)
            merged[name] = out
        meta = {**self.meta, "languages": languages, "merged": self.meta.get("merged", 1) + other.meta.get("merged", 1)}
        meta["n_tokens"] = dict(zip(languages, merged["n_tokens"].tolist()))
        return RelevanceStats.from_tensors(languages, merged, meta)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The sums by name."""
        return {"n_tokens": self.n_tokens, "log_prob": self.log_prob, "relevance": self.relevance,
                "abs_relevance": self.abs_relevance}

    @classmethod
    def from_tensors(cls, languages: list[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
                     ) -> RelevanceStats:
        """Build from named tensors as `tensors()` returns them."""
        return cls(list(languages), tensors["n_tokens"].long(), tensors["log_prob"].double(),
                   tensors["relevance"].double(), tensors["abs_relevance"].double(), meta)

    def save(self, path: str | Path) -> None:
        """Write safetensors with the JSON metadata in its header, atomically."""
        meta = {
            **self.meta,
            "languages": self.languages,
            "n_tokens": dict(zip(self.languages, self.n_tokens.tolist())),
            "shape": {"layers": self.n_layers, "neurons": self.n_neurons},
        }
        save_tensors(path, KIND, self.tensors(), meta)

    @classmethod
    def load(cls, path: str | Path) -> RelevanceStats:
        """Load relevance written by `save` (or by `collect_relevance`)."""
        tensors, meta = load_tensors(path, KIND)
        if meta.get("incomplete"):
            raise LangNeuronsError(
                f"{path}: an interrupted collection (done: {meta['incomplete'].get('done', [])}); "
                "run the same collect --relevance command again to resume it"
            )
        missing = {"n_tokens", "log_prob", "relevance", "abs_relevance"} - set(tensors)
        if missing:
            raise LangNeuronsError(f"{path}: lacks tensors {sorted(missing)}; re-create it")
        return cls.from_tensors(meta["languages"], tensors, meta)

    def summary(self) -> list[dict[str, Any]]:
        """One row per language: tokens, mean next-token loss, and relevance per token summed over all neurons."""
        nll, r, a = self.mean_nll(), self.mean_relevance(), self.mean_abs_relevance()
        return [
            {"language": lang, "tokens": int(self.n_tokens[k]), "nll": round(float(nll[k]), 4),
             "relevance": round(float(r[k].sum()), 4), "abs_relevance": round(float(a[k].sum()), 4)}
            for k, lang in enumerate(self.languages)
        ]


def empty_relevance(languages: list[str], n_layers: int, n_neurons: int, meta: dict[str, Any]) -> RelevanceStats:
    """All-zero relevance to accumulate into."""
    k = len(languages)
    return RelevanceStats(list(languages), torch.zeros(k, dtype=torch.long), torch.zeros(k, dtype=torch.float64),
                          torch.zeros(k, n_layers, n_neurons, dtype=torch.float64),
                          torch.zeros(k, n_layers, n_neurons, dtype=torch.float64), meta)


@contextlib.contextmanager
def frozen(model: torch.nn.Module) -> Iterator[None]:
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

    A forward pre-hook on each down projection keeps its input `a` and registers a gradient hook on it; the
    first layer's input becomes the leaf of the graph (the model's parameters are frozen while recording), so
    the backward pass stops there. In the backward pass each gradient hook adds `sum_s a * grad` and
    `sum_s |a * grad|` (per window in float32, across windows in float64) and drops `a`.
    """

    def __init__(self, sites: NeuronSites, skip: int, exclude_target: int | None = None):
        self.sites, self.skip, self.exclude_target = sites, skip, exclude_target
        self.acc: dict[str, torch.Tensor] = {}
        self._saved: dict[int, torch.Tensor] = {}
        self._checked = False  # the LM head reproduces the model's logits (checked on the first batch)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.input_shape: tuple[int, int] = (0, 0)

    def _pre_hook(self, layer: int):
        def hook(_module: torch.nn.Module, args: tuple) -> None:
            if not torch.is_grad_enabled():
                return
            a = args[0]
            if not a.requires_grad:
                a.requires_grad_()  # nothing before this layer needs a gradient: the graph's leaf
            self._saved[layer] = a
            a.register_hook(self._grad_hook(layer))

        return hook

    def _grad_hook(self, layer: int):
        def hook(grad: torch.Tensor) -> None:
            a = self._saved.pop(layer).detach()
            if a.dim() == 2:  # [batch * seq, width] (OPT)
                a, grad = a.view(*self.input_shape, -1), grad.view(*self.input_shape, -1)
            r = a[:, self.skip :].float() * grad[:, self.skip :].float()
            self._add(f"r{layer}", torch.stack([r.sum(1), r.abs().sum(1)], 1))

        return hook

    def _add(self, key: str, per_window: torch.Tensor) -> None:
        total = per_window.double().sum(0)
        acc = self.acc.get(key)
        self.acc[key] = total if acc is None else acc.add_(total)

    def __enter__(self) -> RelevanceRecorder:
        self._handles = [down.register_forward_pre_hook(self._pre_hook(i)) for i, down in enumerate(self.sites.downs)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self._saved = {}

    def run(self, model: torch.nn.Module, input_ids: torch.Tensor) -> int:
        """Forward `input_ids` [batch, seq] through the model, backward the summed log-probabilities of the actual
        next tokens once, and record relevance; returns the number of predicted tokens.

        The LM head runs on `_HEAD_ELEMENTS // vocabulary` positions at a time, each chunk's backward going only
        as far as the final hidden states, so memory does not grow with window x vocabulary; then one backward
        pass from the final hidden states through the decoder body.
        """
        if torch.is_inference_mode_enabled():
            raise LangNeuronsError("relevance needs gradients; call it outside torch.inference_mode()")
        if not self._checked:
            with torch.no_grad():
                check_head(model, input_ids[:1, :8])
            self._checked = True
        self.input_shape = tuple(input_ids.shape)  # type: ignore[assignment]
        targets = input_ids[:, 1:].reshape(-1)
        valid = targets != self.exclude_target if self.exclude_target is not None else torch.ones_like(targets).bool()
        log_prob = torch.zeros(targets.shape, dtype=torch.float32, device=input_ids.device)
        try:
            with torch.enable_grad():
                hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state[:, :-1]
                states = hidden.detach().requires_grad_()
                flat = states.reshape(len(targets), -1)
                chunk = max(1, _HEAD_ELEMENTS // model.get_output_embeddings().weight.shape[0])
                for start in range(0, len(targets), chunk):
                    part = slice(start, start + chunk)
                    logits = head_logits(model, flat[part]).float()
                    lp = logits.gather(-1, targets[part, None])[:, 0] - logits.logsumexp(-1)
                    lp = torch.where(valid[part], lp, torch.zeros_like(lp))
                    lp.sum().backward()
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
    model: torch.nn.Module,
    tokenizer: Any,
    corpus: Corpus,
    max_tokens: int | None = 20_000,
    window: int = 512,
    batch_size: int = 1,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 4,
    split: str = "train",
    progress: bool = True,
) -> RelevanceStats:
    """Relevance of every neuron for the next-token predictions on the `split` documents of each language.

    Windows of `window` tokens (BOS first; BOS positions and BOS targets left out), at most `max_tokens` tokens
    per language, `batch_size` windows per forward and backward pass (each window's logits take vocabulary x
    window floats, hence the small default). With `checkpoint`, progress is saved there after each language and
    every `checkpoint_every` windows, and a rerun with the same arguments resumes. Under torchrun each rank takes
    every world-th window and all ranks return the summed relevance (rank 0 writes the checkpoint).
    """
    if not corpus.languages:
        raise LangNeuronsError("the corpus has no languages; give at least one")
    if max_tokens is not None and max_tokens <= 0:
        raise LangNeuronsError(f"max_tokens must be positive, got {max_tokens}")
    if batch_size <= 0 or checkpoint_every <= 0:
        raise LangNeuronsError("batch_size and checkpoint_every must be positive")
    sites = find_sites(model)
    prefix = window_prefix(tokenizer)
    rank, world = _shard()
    device = model.get_input_embeddings().weight.device
    settings = {"window": window, "max_tokens": max_tokens, "split": split, "bos_skipped": len(prefix)}
    meta = {
        "model": {"id": model_id(model), "revision": model_revision(model)},
        "site": sites.describe(),
        "corpus": corpus.describe(),
        "collection": {**settings, "batch_size": batch_size, "world_size": world,
                       "relevance": "gradient x input at the down projection's input, of the summed log-probability "
                                    "of the actual next tokens"},
    }
    stats = empty_relevance(corpus.languages, sites.n_layers, sites.n_neurons, meta)
    done, resume_lang, resume_windows = _resume(checkpoint, stats, settings, KIND) if checkpoint else ([], None, 0)
    group = batch_size * world
    step = group * max(1, checkpoint_every // group)

    rec = RelevanceRecorder(sites, skip=len(prefix), exclude_target=prefix[0] if prefix else None)
    with rec, frozen(model):
        for k, lang in enumerate(corpus.languages):
            if lang in done:
                continue
            skip_below = resume_windows if lang == resume_lang else 0
            windows, bar = language_windows(tokenizer, corpus, lang, split, window, max_tokens,
                                             f"relevance {lang}", progress and rank == 0)
            n_local, seen = 0, 0
            for batch in _batches(windows, group):
                seen = batch[-1][0] + 1
                mine = [w for i, w in batch if i >= skip_below and i % world == rank]
                if mine:
                    n_local += rec.run(model, torch.stack(mine).to(device))
                bar.update(sum(len(w) - len(prefix) for _, w in batch))
                if checkpoint and seen % step == 0:
                    _flush(rec, stats, k, n_local)
                    n_local = 0
                    if rank == 0:
                        _save(stats, checkpoint, done, partial=(lang, seen))
            _close(bar, lang, max_tokens)
            _flush(rec, stats, k, n_local)
            if stats.n_tokens[k] == 0:
                raise LangNeuronsError(f"no text for language '{lang}' in the {split} split; check the corpus")
            done.append(lang)
            if checkpoint and rank == 0:
                _save(stats, checkpoint, done, partial=None)
    stats.meta["n_tokens"] = dict(zip(stats.languages, stats.n_tokens.tolist()))
    if checkpoint and rank == 0:
        stats.save(checkpoint)
    return stats
