"""LAPE: language activation probability entropy (Tang et al. 2024; unchanged in "Language Arithmetics")."""

from __future__ import annotations

import weakref

import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.identify.common import provenance
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats


def kth_quantile(values: torch.Tensor, rate: float) -> float:
    """The `round(n * rate)`-th smallest value (the reference implementation's quantile)."""
    flat = values.flatten()
    return float(flat.kthvalue(min(len(flat), max(1, round(len(flat) * rate)))).values)


def lape_entropy(p: torch.Tensor) -> torch.Tensor:
    """Entropy over languages of each neuron's normalised activation probability: [K, L, N] -> [L, N]."""
    total = p.sum(0, keepdim=True)
    q = torch.where(total > 0, p / total.clamp(min=torch.finfo(p.dtype).tiny), torch.zeros_like(p))
    return -torch.where(q > 0, q * q.log(), torch.zeros_like(q)).sum(0)


def lape(
    stats: ActivationStats, top_rate: float = 0.01, filter_rate: float = 0.95, bar_rate: float = 0.95
) -> NeuronSet:
    """Language neurons by LAPE.

    1. entropy over languages of the normalised activation probabilities; 2. drop neurons whose probability
    exceeds the `filter_rate` quantile of all probabilities in no language; 3. keep the `top_rate` share of all
    neurons with the lowest entropy; 4. give each kept neuron to every language whose probability exceeds the
    `bar_rate` quantile. Ties in entropy are broken by position (layer, then neuron).
    """
    for name, rate in (("top_rate", top_rate), ("filter_rate", filter_rate), ("bar_rate", bar_rate)):
        if not 0 < rate <= 1:
            raise LangNeuronsError(f"{name} must be in (0, 1], got {rate}")
    if len(stats.languages) < 2:
        raise LangNeuronsError("LAPE compares languages: give statistics of at least two languages")
    p = stats.activation_probability()
    _, n_layers, n_neurons = p.shape
    entropy = lape_entropy(p).flatten()
    tau = kth_quantile(p, filter_rate)
    entropy[(p > tau).sum(0).flatten() == 0] = torch.inf
    k = min(round(n_layers * n_neurons * top_rate), int(torch.isfinite(entropy).sum()))
    order = torch.sort(entropy, stable=True).indices[:k]
    kept = torch.zeros(n_layers * n_neurons, dtype=torch.bool)
    kept[order] = True
    bar = kth_quantile(p, bar_rate)
    masks = (p > bar) & kept.view(1, n_layers, n_neurons)
    meta = provenance(
        stats, "lape", top_rate=top_rate, filter_rate=filter_rate, bar_rate=bar_rate,
        filter_threshold=tau, bar_threshold=bar, selected=k,
    )
    return NeuronSet(list(stats.languages), masks, meta)


_SHARES: dict[int, tuple[weakref.ref, dict[float, NeuronSet]]] = {}


def lape_at_share(stats: ActivationStats, top_rate: float) -> NeuronSet:
    """LAPE with the default thresholds at `top_rate`, computed once per statistics object and share (forcing,
    translation and calibration ask for the same few shares many times)."""
    key = id(stats)
    ref, sets = _SHARES.get(key, (None, {}))
    if ref is None or ref() is not stats:
        sets = {}
        _SHARES[key] = (weakref.ref(stats, lambda _ref: _SHARES.pop(key, None)), sets)
    if top_rate not in sets:
        sets[top_rate] = lape(stats, top_rate=top_rate)
    return sets[top_rate]
