"""CRANE-style identification (Le & Li 2026): neurons relevant to one language's next-token predictions only."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.identify.common import provenance
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.relevance import RelevanceStats

CONTRASTS = ("margin", "mean")


def crane_scores(relevance: RelevanceStats, contrast: str = "margin") -> torch.Tensor:
    """Per language and neuron, how much more relevant the neuron is to that language than to the others:
    [K, L, N] float64, in nats of log-likelihood per token.

    `margin`: `r_k - max_{o != k} r_o` (relevant to language k and to no other), `mean`: `r_k - mean_{o != k} r_o`,
    with `r` the mean relevance per predicted token.
    """
    if contrast not in CONTRASTS:
        raise LangNeuronsError(f"unknown contrast {contrast!r}; use one of {', '.join(CONTRASTS)}")
    if len(relevance.languages) < 2:
        raise LangNeuronsError("a contrast needs relevance of at least two languages")
    r = relevance.mean_relevance()
    scores = torch.empty_like(r)
    for k in range(len(relevance.languages)):
        others = torch.cat([r[:k], r[k + 1 :]])
        scores[k] = r[k] - (others.amax(0) if contrast == "margin" else others.mean(0))
    return scores


def crane(
    relevance: RelevanceStats,
    top_rate: float = 0.01,
    per_language: int | Mapping[str, int] | None = None,
    contrast: str = "margin",
) -> NeuronSet:
    """Language neurons by relevance: per language, the neurons with the largest contrast score (`crane_scores`)
    among those whose relevance for the language is positive and whose score is positive.

    Size per language: `per_language` (a number, or one per language, e.g. another set's counts to match its
    size), else the `top_rate` share of all neurons split evenly over the languages. With `margin` a neuron can
    belong to one language only. Ties are broken by position (layer, then neuron).
    """
    from_rate = per_language is None
    if per_language is None:
        if not 0 < top_rate <= 1:
            raise LangNeuronsError(f"top_rate must be in (0, 1], got {top_rate}")
        per_language = round(top_rate * relevance.n_layers * relevance.n_neurons / len(relevance.languages))
    sizes = {lang: per_language if isinstance(per_language, int) else int(per_language.get(lang, 0))
             for lang in relevance.languages}
    if any(size < 0 for size in sizes.values()):
        raise LangNeuronsError(f"neurons per language must be >= 0, got {sizes}")
    scores = crane_scores(relevance, contrast)
    r = relevance.mean_relevance()
    masks = torch.zeros(scores.shape, dtype=torch.bool)
    for k, lang in enumerate(relevance.languages):
        score = torch.where((r[k] > 0) & (scores[k] > 0), scores[k], torch.full_like(scores[k], -torch.inf))
        flat = score.flatten()
        size = min(sizes[lang], int(torch.isfinite(flat).sum()))
        masks[k].view(-1)[torch.sort(flat, descending=True, stable=True).indices[:size]] = True
    settings: dict[str, Any] = {"contrast": contrast, "per_language": sizes}
    if from_rate:
        settings["top_rate"] = top_rate
    return NeuronSet(list(relevance.languages), masks, provenance(relevance, "crane", **settings))  # type: ignore[arg-type]
