"""Per-neuron activation statistics per language: mergeable sums, saved as safetensors."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from langneurons.artifacts import load_tensors, save_tensors
from langneurons.errors import LangNeuronsError

KIND = "stats"


@dataclass
class ActivationStats:
    """Sums over tokens, per language: `n_tokens` [K], `over_zero` [K, L, N] (int64), `sum`, `sum_sq` (float64).

    Sums add up exactly, so statistics of shards of a corpus merge with `a + b`.
    """

    languages: list[str]
    n_tokens: torch.Tensor
    over_zero: torch.Tensor
    sum: torch.Tensor
    sum_sq: torch.Tensor | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    hidden_sum: torch.Tensor | None = None  # [K, L, hidden] float64: sums of each decoder layer's output

    def __post_init__(self) -> None:
        k = len(self.languages)
        if len(set(self.languages)) != k:
            raise LangNeuronsError(f"duplicate languages in statistics: {self.languages}")
        if self.over_zero.dim() != 3 or self.over_zero.shape[0] != k or self.n_tokens.shape != (k,):
            raise LangNeuronsError(
                f"statistics tensors have shapes n_tokens {tuple(self.n_tokens.shape)}, over_zero "
                f"{tuple(self.over_zero.shape)}; expected [{k}] and [{k}, layers, neurons]"
            )
        for name in ("sum", "sum_sq"):
            t = getattr(self, name)
            if t is not None and t.shape != self.over_zero.shape:
                raise LangNeuronsError(f"statistics '{name}' has shape {tuple(t.shape)}, expected {self.shape}")
        if self.hidden_sum is not None and self.hidden_sum.shape[:2] != self.shape[:2]:
            raise LangNeuronsError(f"statistics 'hidden_sum' has shape {tuple(self.hidden_sum.shape)}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.over_zero.shape)  # type: ignore[return-value]

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
            raise LangNeuronsError(
                f"no statistics for language '{language}'; these have {', '.join(self.languages)}"
            )
        return self.languages.index(language)

    def _per_token(self, total: torch.Tensor) -> torch.Tensor:
        n = self.n_tokens.to(torch.float64).clamp(min=1).view(-1, 1, 1)
        return total.to(torch.float64) / n

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

    def select(self, languages: list[str]) -> ActivationStats:
        """The statistics of a subset of languages, in the given order."""
        rows = torch.tensor([self.index(lang) for lang in languages], dtype=torch.long)
        return replace(
            self,
            languages=list(languages),
            n_tokens=self.n_tokens[rows],
            over_zero=self.over_zero[rows],
            sum=self.sum[rows],
            sum_sq=None if self.sum_sq is None else self.sum_sq[rows],
            hidden_sum=None if self.hidden_sum is None else self.hidden_sum[rows],
            meta={**self.meta, "languages": list(languages)},
        )

    def __add__(self, other: ActivationStats) -> ActivationStats:
        """Merge: languages in both are summed, the others are carried over."""
        if not isinstance(other, ActivationStats):
            return NotImplemented
        if self.shape[1:] != other.shape[1:]:
            raise LangNeuronsError(
                f"cannot merge statistics of shape {self.shape[1:]} and {other.shape[1:]}: different models"
            )
        if self.model_id and other.model_id and self.model_id != other.model_id:
            raise LangNeuronsError(f"cannot merge statistics of '{self.model_id}' and '{other.model_id}'")
        languages = self.languages + [lang for lang in other.languages if lang not in self.languages]
        merged: dict[str, torch.Tensor] = {}
        for name, mine in self.tensors().items():
            theirs = other.tensors().get(name)
            if theirs is None or theirs.shape[1:] != mine.shape[1:]:
                continue  # kept only where both have it
            out = torch.zeros((len(languages), *mine.shape[1:]), dtype=mine.dtype)
            for part in (mine, theirs):
                langs = self.languages if part is mine else other.languages
                out.index_add_(0, torch.tensor([languages.index(lang) for lang in langs]), part)
            merged[name] = out
        meta = {**self.meta, "languages": languages, "merged": self.meta.get("merged", 1) + other.meta.get("merged", 1)}
        meta["n_tokens"] = dict(zip(languages, merged["n_tokens"].tolist()))
        return ActivationStats.from_tensors(languages, merged, meta)

    def tensors(self) -> dict[str, torch.Tensor]:
        """The sums by name (optional ones only when present)."""
        out = {"n_tokens": self.n_tokens, "over_zero": self.over_zero, "sum": self.sum}
        for name in ("sum_sq", "hidden_sum"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return out

    @classmethod
    def from_tensors(
        cls, languages: list[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]
    ) -> ActivationStats:
        """Build from named tensors as `tensors()` returns them."""
        optional = {name: tensors[name].double() for name in ("sum_sq", "hidden_sum") if name in tensors}
        return cls(list(languages), tensors["n_tokens"].long(), tensors["over_zero"].long(), tensors["sum"].double(),
                   meta=meta, **optional)

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
    def load(cls, path: str | Path) -> ActivationStats:
        """Load statistics written by `save` (or by `collect_stats`)."""
        tensors, meta = load_tensors(path, KIND)
        if meta.get("incomplete"):
            raise LangNeuronsError(
                f"{path}: an interrupted collection (done: {meta['incomplete'].get('done', [])}); "
                "run the same collect command again to resume it"
            )
        missing = {"n_tokens", "over_zero", "sum"} - set(tensors)
        if missing:
            raise LangNeuronsError(f"{path}: lacks tensors {sorted(missing)}; re-create it")
        return cls.from_tensors(meta["languages"], tensors, meta)

    def summary(self) -> list[dict[str, Any]]:
        """One row per language: tokens, mean firing rate, mean activation."""
        from langneurons.summaries import stats_rows

        return stats_rows(self.languages, self.n_tokens, self.over_zero, self.sum)


def empty_stats(
    languages: list[str], n_layers: int, n_neurons: int, meta: dict[str, Any], hidden_size: int | None = None
) -> ActivationStats:
    """All-zero statistics to accumulate into (with hidden-state sums if `hidden_size` is given)."""
    k = len(languages)
    zeros = lambda *shape: torch.zeros(shape, dtype=torch.float64)  # noqa: E731
    return ActivationStats(
        list(languages), torch.zeros(k, dtype=torch.long), torch.zeros(k, n_layers, n_neurons, dtype=torch.long),
        zeros(k, n_layers, n_neurons), zeros(k, n_layers, n_neurons), meta,
        None if hidden_size is None else zeros(k, n_layers, hidden_size),
    )
