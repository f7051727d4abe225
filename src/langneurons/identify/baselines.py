"""Simple baselines: activation-frequency contrast and random neurons matched per layer."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.identify.common import provenance
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats


def frequency_contrast(stats: ActivationStats, per_language: int | Mapping[str, int]) -> NeuronSet:
    """Per language, the neurons with the largest `p_target - max p_other` (and a positive margin)."""
    if len(stats.languages) < 2:
        raise LangNeuronsError("a contrast needs statistics of at least two languages")
    p = stats.activation_probability()
    masks = torch.zeros(p.shape, dtype=torch.bool)
    for k, lang in enumerate(stats.languages):
        size = per_language if isinstance(per_language, int) else per_language.get(lang, 0)
        others = torch.cat([p[:k], p[k + 1 :]]).amax(0)
        margin = (p[k] - others).flatten()
        size = min(size, int((margin > 0).sum()))
        top = torch.sort(margin, descending=True, stable=True).indices[:size]
        masks[k].view(-1)[top] = True
    return NeuronSet(list(stats.languages), masks, provenance(stats, "frequency", per_language=per_language))


def random_like(neurons: NeuronSet, seed: int = 0) -> NeuronSet:
    """Random neurons with the same number per language and layer as `neurons` (a control)."""
    gen = torch.Generator().manual_seed(seed)
    masks = torch.zeros_like(neurons.masks)
    n_neurons = neurons.shape[1]
    for k in range(len(neurons.languages)):
        for layer, count in enumerate(neurons.per_layer()[k].tolist()):
            masks[k, layer, torch.randperm(n_neurons, generator=gen)[:count]] = True
    meta = {**neurons.meta, "method": "random", "settings": {"seed": seed, "matched": neurons.meta.get("method")}}
    return NeuronSet(list(neurons.languages), masks, meta)
