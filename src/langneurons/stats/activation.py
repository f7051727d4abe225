"""Per-neuron activation statistics per language: mergeable sums, saved as safetensors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.stats.sums import PER_LANGUAGE, PER_LAYER, PER_NEURON, LanguageSums

KIND = "stats"


@dataclass
class ActivationStats(LanguageSums):
    """Sums over tokens, per language: `n_tokens` [K], `over_zero` [K, L, N] (int64), `sum`, `sum_sq` (float64).

    Sums add up exactly, so statistics of shards of a corpus merge with `a + b`.
    """

    KIND: ClassVar[str] = KIND
    LABEL: ClassVar[str] = "statistics"
    COMMAND: ClassVar[str] = "collect"
    SHAPES: ClassVar[dict[str, str]] = {"n_tokens": PER_LANGUAGE, "over_zero": PER_NEURON, "sum": PER_NEURON,
                                        "sum_sq": PER_NEURON, "hidden_sum": PER_LAYER}
    OPTIONAL: ClassVar[tuple[str, ...]] = ("sum_sq", "hidden_sum")
    INTEGER: ClassVar[tuple[str, ...]] = ("n_tokens", "over_zero")

    languages: list[str]
    n_tokens: torch.Tensor
    over_zero: torch.Tensor
    sum: torch.Tensor
    sum_sq: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    hidden_sum: torch.Tensor | None = None  # [K, L, hidden] float64: sums of each decoder layer's output

    def activation_probability(self) -> torch.Tensor:
        """`p[k, l, j]`: share of language k's tokens on which neuron (l, j) fires (> 0)."""
        return self._per_token(self.over_zero)

    def mean_activation(self) -> torch.Tensor:
        """`mu[k, l, j]`: mean activation of neuron (l, j) on language k."""
        return self._per_token(self.sum)

    def mean_hidden(self) -> torch.Tensor:
        """Mean output (residual stream) of each decoder layer per language: [K, L, hidden]."""
        if self.hidden_sum is None:
            raise LangNeuronsError("these statistics have no hidden-state means; collect with hidden=True (--hidden)")
        return self._per_token(self.hidden_sum)

    def variance(self) -> torch.Tensor:
        """Population variance of each neuron's activation per language (needs `sum_sq`)."""
        if self.sum_sq is None:
            raise LangNeuronsError("these statistics have no sum_sq; collect with track_sq=True")
        mu = self.mean_activation()
        return (self._per_token(self.sum_sq) - mu * mu).clamp(min=0)

    def _summary_columns(self) -> dict[str, torch.Tensor]:
        """Mean firing rate and mean activation over all neurons."""
        return {"mean_p": self.activation_probability().mean((1, 2)),
                "mean_activation": self.mean_activation().mean((1, 2))}


def empty_stats(
    languages: list[str], n_layers: int, n_neurons: int, meta: dict[str, Any], hidden_size: int | None = None,
    track_sq: bool = True,
) -> ActivationStats:
    """All-zero statistics to accumulate into (with `sum_sq` if `track_sq`, and hidden-state sums if `hidden_size`
    is given)."""
    optional = {"sum_sq": n_neurons} if track_sq else {}
    if hidden_size is not None:
        optional["hidden_sum"] = hidden_size
    return ActivationStats.zeros(languages, n_layers, n_neurons, meta, optional)
