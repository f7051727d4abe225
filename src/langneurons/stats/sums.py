"""Per-language sums over tokens: what activation statistics and relevance statistics have in common.

Every statistic the package collects is a sum over tokens with one row per language, so statistics of shards of a
corpus merge exactly with `a + b`, a subset of languages is a selection of rows, and the whole is saved as named
safetensors with JSON metadata. A subclass is a dataclass with the fields `languages`, its tensors (`n_tokens`
first) and `meta`, and says in `SHAPES` what each tensor holds per language.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch

from langneurons.core.artifacts import load_tensors, save_tensors
from langneurons.core.errors import LangNeuronsError

S = TypeVar("S", bound="LanguageSums")

# What one language's row of a tensor is: one number, one per neuron [layers, neurons], or one vector per layer
# [layers, width] (e.g. hidden states).
PER_LANGUAGE, PER_NEURON, PER_LAYER = "K", "KLN", "KL*"
_EXPECTED = {PER_LANGUAGE: "[{k}]", PER_NEURON: "[{k}, layers, neurons]", PER_LAYER: "[{k}, layers, width]"}


class LanguageSums:
    """Named sums with one row per language, and JSON metadata (`model`, `site`, `corpus`, `collection`, ...).

    Subclasses set `KIND` (the artifact kind), `LABEL` (how messages name them), `COMMAND` (the command that
    resumes an interrupted collection), `SHAPES` (tensor name -> PER_LANGUAGE, PER_NEURON or PER_LAYER, in field
    order), `OPTIONAL` (tensors that may be None) and `INTEGER` (tensors of counts, int64; the rest is float64).
    The first PER_NEURON tensor gives the shape.
    """

    KIND: ClassVar[str]
    LABEL: ClassVar[str]
    COMMAND: ClassVar[str]
    SHAPES: ClassVar[dict[str, str]]
    OPTIONAL: ClassVar[tuple[str, ...]] = ()
    INTEGER: ClassVar[tuple[str, ...]] = ("n_tokens",)

    languages: list[str]
    n_tokens: torch.Tensor
    meta: dict[str, Any]

    def __post_init__(self) -> None:
        k = len(self.languages)
        if len(set(self.languages)) != k:
            raise LangNeuronsError(f"duplicate languages in {self.LABEL}: {self.languages}")
        main = getattr(self, self._main())
        if main.dim() != 3 or main.shape[0] != k:
            raise LangNeuronsError(
                f"{self.LABEL} tensor '{self._main()}' has shape {tuple(main.shape)}, expected [{k}, layers, neurons]"
            )
        for name, t in self.tensors().items():
            kind = self.SHAPES[name]
            fits = t.shape == (k,) if kind == PER_LANGUAGE else (
                t.shape == main.shape if kind == PER_NEURON else t.dim() == 3 and t.shape[:2] == main.shape[:2])
            if not fits:
                raise LangNeuronsError(
                    f"{self.LABEL} tensor '{name}' has shape {tuple(t.shape)}, expected {_EXPECTED[kind].format(k=k)}"
                    f" with {main.shape[1]} layers" + (f" and {main.shape[2]} neurons" if kind == PER_NEURON else "")
                )

    @classmethod
    def _main(cls) -> str:
        return next(name for name, kind in cls.SHAPES.items() if kind == PER_NEURON)

    @classmethod
    def zeros(cls: type[S], languages: list[str], n_layers: int, n_neurons: int, meta: dict[str, Any],
              optional: dict[str, int] | None = None) -> S:
        """All-zero sums to accumulate into; `optional` names the optional tensors to include, with the width of
        their rows (n_neurons for a PER_NEURON one)."""
        optional = optional or {}
        k, tensors = len(languages), {}
        for name, kind in cls.SHAPES.items():
            if name in cls.OPTIONAL and name not in optional:
                continue
            shape = (k,) if kind == PER_LANGUAGE else (k, n_layers, optional.get(name, n_neurons))
            tensors[name] = torch.zeros(shape, dtype=torch.long if name in cls.INTEGER else torch.float64)
        return cls.from_tensors(languages, tensors, meta)

    @property
    def shape(self) -> tuple[int, int, int]:
        """[languages, layers, neurons]."""
        return tuple(getattr(self, self._main()).shape)

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
        """Row of `language`; a clear error if these sums do not have it."""
        if language not in self.languages:
            raise LangNeuronsError(f"no {self.LABEL} for language '{language}'; these have {', '.join(self.languages)}")
        return self.languages.index(language)

    def _per_token(self, total: torch.Tensor) -> torch.Tensor:
        """`total` [K, ...] divided by each language's token count, in float64."""
        n = self.n_tokens.to(torch.float64).clamp(min=1)
        return total.to(torch.float64) / n.view(-1, *([1] * (total.dim() - 1)))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The sums by name (optional ones only when present)."""
        return {name: getattr(self, name) for name in self.SHAPES if getattr(self, name) is not None}

    @classmethod
    def from_tensors(cls: type[S], languages: list[str], tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> S:
        """Build from named tensors as `tensors()` returns them."""
        typed = {name: t.long() if name in cls.INTEGER else t.double() for name, t in tensors.items()
                 if name in cls.SHAPES}
        return cls(languages=list(languages), meta=meta, **typed)  # type: ignore[call-arg]

    def select(self: S, languages: list[str]) -> S:
        """The sums of a subset of languages, in the given order."""
        rows = torch.tensor([self.index(lang) for lang in languages], dtype=torch.long)
        return replace(self, languages=list(languages), meta={**self.meta, "languages": list(languages)},  # type: ignore[type-var]
                       **{name: t[rows] for name, t in self.tensors().items()})

    def __add__(self: S, other: S) -> S:
        """Merge: languages in both are summed, the others are carried over (optional tensors only where both
        have them)."""
        if not isinstance(other, type(self)):
            return NotImplemented
        if self.shape[1:] != other.shape[1:]:
            raise LangNeuronsError(
                f"cannot merge {self.LABEL} of shape {self.shape[1:]} and {other.shape[1:]}: different models"
            )
        if self.model_id and other.model_id and self.model_id != other.model_id:
            raise LangNeuronsError(f"cannot merge {self.LABEL} of '{self.model_id}' and '{other.model_id}'")
        languages = self.languages + [lang for lang in other.languages if lang not in self.languages]
        merged: dict[str, torch.Tensor] = {}
        for name, mine in self.tensors().items():
            theirs = other.tensors().get(name)
            if theirs is None or theirs.shape[1:] != mine.shape[1:]:
                continue
            out = torch.zeros((len(languages), *mine.shape[1:]), dtype=mine.dtype)
            for part, langs in ((mine, self.languages), (theirs, other.languages)):
                out.index_add_(0, torch.tensor([languages.index(lang) for lang in langs], dtype=torch.long), part)
            merged[name] = out
        meta = {**self.meta, "languages": languages, "merged": self.meta.get("merged", 1) + other.meta.get("merged", 1)}
        meta["n_tokens"] = dict(zip(languages, merged["n_tokens"].tolist()))
        return type(self).from_tensors(languages, merged, meta)

    def save(self, path: str | Path) -> None:
        """Write safetensors with the JSON metadata in its header, atomically."""
        meta = {
            **self.meta,
            "languages": self.languages,
            "n_tokens": dict(zip(self.languages, self.n_tokens.tolist())),
            "shape": {"layers": self.n_layers, "neurons": self.n_neurons},
        }
        save_tensors(path, self.KIND, self.tensors(), meta)

    @classmethod
    def load(cls: type[S], path: str | Path) -> S:
        """Load sums written by `save` (or by the collection)."""
        tensors, meta = load_tensors(path, cls.KIND)
        if meta.get("incomplete"):
            raise LangNeuronsError(
                f"{path}: an interrupted collection (done: {meta['incomplete'].get('done', [])}); "
                f"run the same {cls.COMMAND} command again to resume it"
            )
        missing = {name for name in cls.SHAPES if name not in cls.OPTIONAL} - set(tensors)
        if missing:
            raise LangNeuronsError(f"{path}: lacks tensors {sorted(missing)}; re-create it")
        return cls.from_tensors(meta["languages"], tensors, meta)

    def summary(self) -> list[dict[str, Any]]:
        """One row per language: its name, its tokens, and the subclass's columns."""
        columns = self._summary_columns()
        return [{"language": lang, "tokens": int(self.n_tokens[k]), **{c: round(float(v[k]), 4) for c, v in
                                                                       columns.items()}}
                for k, lang in enumerate(self.languages)]

    def _summary_columns(self) -> dict[str, torch.Tensor]:
        """Summary column name -> one value per language [K]."""
        raise NotImplementedError
