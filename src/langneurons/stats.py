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
        shape = (len(languages), *self.shape[1:])
        out = {name: torch.zeros(shape, dtype=dt) for name, dt in _DTYPES.items()}
        n_tokens = torch.zeros(len(languages), dtype=torch.long)
        with_sq = self.sum_sq is not None and other.sum_sq is not None
        for part in (self, other):
            rows = torch.tensor([languages.index(lang) for lang in part.languages], dtype=torch.long)
            n_tokens.index_add_(0, rows, part.n_tokens)
            out["over_zero"].index_add_(0, rows, part.over_zero)
            out["sum"].index_add_(0, rows, part.sum)
            if with_sq:
                out["sum_sq"].index_add_(0, rows, part.sum_sq)  # type: ignore[arg-type]
        meta = {**self.meta, "languages": languages, "merged": self.meta.get("merged", 1) + other.meta.get("merged", 1)}
        meta["n_tokens"] = dict(zip(languages, n_tokens.tolist()))
        return ActivationStats(
            languages, n_tokens, out["over_zero"], out["sum"], out["sum_sq"] if with_sq else None, meta
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {"n_tokens": self.n_tokens, "over_zero": self.over_zero, "sum": self.sum}
        if self.sum_sq is not None:
            out["sum_sq"] = self.sum_sq
        return out

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
        return cls(
            list(meta["languages"]),
            tensors["n_tokens"].long(),
            tensors["over_zero"].long(),
            tensors["sum"].double(),
            tensors["sum_sq"].double() if "sum_sq" in tensors else None,
            meta,
        )

    def summary(self) -> list[dict[str, Any]]:
        """One row per language: tokens, mean firing rate, mean activation."""
        p, mu = self.activation_probability(), self.mean_activation()
        return [
            {
                "language": lang,
                "tokens": int(self.n_tokens[k]),
                "mean_p": round(float(p[k].mean()), 4),
                "mean_activation": round(float(mu[k].mean()), 4),
            }
            for k, lang in enumerate(self.languages)
        ]


_DTYPES = {"over_zero": torch.long, "sum": torch.float64, "sum_sq": torch.float64}


def empty_stats(languages: list[str], n_layers: int, n_neurons: int, meta: dict[str, Any]) -> ActivationStats:
    """All-zero statistics to accumulate into."""
    shape = (len(languages), n_layers, n_neurons)
    z = {name: torch.zeros(shape, dtype=dt) for name, dt in _DTYPES.items()}
    return ActivationStats(
        list(languages), torch.zeros(len(languages), dtype=torch.long), z["over_zero"], z["sum"], z["sum_sq"], meta
    )
