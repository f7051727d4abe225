"""NeuronSet: per-language boolean masks over [layer, neuron], with set algebra and summaries."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from langneurons.core.artifacts import load_tensors, save_tensors
from langneurons.core.errors import LangNeuronsError

if TYPE_CHECKING:
    from transformers import PreTrainedModel

KIND = "neurons"


@dataclass
class NeuronSet:
    """For each language, a boolean mask `[layer, neuron]` of its neurons (a neuron may belong to several)."""

    languages: list[str]
    masks: torch.Tensor  # bool [K, L, N]
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.masks.dtype != torch.bool or self.masks.dim() != 3 or self.masks.shape[0] != len(self.languages):
            raise LangNeuronsError(
                f"neuron masks must be bool [{len(self.languages)}, layers, neurons], "
                f"got {self.masks.dtype} {tuple(self.masks.shape)}"
            )
        if len(set(self.languages)) != len(self.languages):
            raise LangNeuronsError(f"duplicate languages in neuron set: {self.languages}")

    @property
    def shape(self) -> tuple[int, int]:
        """(layers, neurons) of the model this set belongs to."""
        return (self.masks.shape[1], self.masks.shape[2])

    def mask(self, language: str) -> torch.Tensor:
        """Bool `[layer, neuron]` mask of `language`'s neurons."""
        if language not in self.languages:
            raise LangNeuronsError(f"no neurons for language '{language}'; this set has {', '.join(self.languages)}")
        return self.masks[self.languages.index(language)]

    def indices(self, language: str) -> list[torch.Tensor]:
        """Per layer, the indices of `language`'s neurons."""
        return [row.nonzero().flatten() for row in self.mask(language)]

    def count(self, language: str | None = None) -> int:
        """Neurons of `language`, or distinct neurons over all languages."""
        m = self.mask(language) if language is not None else self.masks.any(0)
        return int(m.sum())

    def per_layer(self) -> torch.Tensor:
        """Neurons per language and layer: int64 [K, L]."""
        return self.masks.sum(-1)

    def overlap(self) -> torch.Tensor:
        """Neurons shared by each pair of languages: int64 [K, K] (the diagonal is each language's size)."""
        flat = self.masks.flatten(1).to(torch.float32)
        return (flat @ flat.T).round().long()

    def jaccard(self) -> torch.Tensor:
        """Intersection over union for each pair of languages: float [K, K] (0 where both are empty)."""
        inter = self.overlap().double()
        size = inter.diagonal()
        union = size[:, None] + size[None, :] - inter
        return torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))

    def select(self, languages: list[str]) -> NeuronSet:
        """The masks of some languages, in the given order."""
        return NeuronSet(list(languages), torch.stack([self.mask(lang) for lang in languages]), dict(self.meta))

    def combined(self, languages: list[str]) -> torch.Tensor:
        """One mask: the union of the given languages' neurons."""
        return torch.stack([self.mask(lang) for lang in languages]).any(0)

    def exclusive(self) -> NeuronSet:
        """Each language keeps only the neurons that belong to no other language."""
        shared = self.masks.sum(0) > 1
        return NeuronSet(list(self.languages), self.masks & ~shared, {**self.meta, "exclusive": True})

    def _combine(self, other: NeuronSet, languages: list[str], op: Callable) -> NeuronSet:
        if not isinstance(other, NeuronSet):
            return NotImplemented
        if self.shape != other.shape:
            raise LangNeuronsError(f"cannot combine neuron sets of shapes {self.shape} and {other.shape}")
        empty = torch.zeros(self.shape, dtype=torch.bool)

        def get(s: NeuronSet, lang: str) -> torch.Tensor:
            return s.mask(lang) if lang in s.languages else empty

        masks = [op(get(self, lang), get(other, lang)) for lang in languages]
        return NeuronSet(languages, torch.stack(masks) if masks else torch.zeros(0, *self.shape, dtype=torch.bool),
                         dict(self.meta))

    def __or__(self, other: NeuronSet) -> NeuronSet:
        langs = self.languages + [lang for lang in other.languages if lang not in self.languages]
        return self._combine(other, langs, torch.logical_or)

    def __and__(self, other: NeuronSet) -> NeuronSet:
        return self._combine(other, [lang for lang in self.languages if lang in other.languages], torch.logical_and)

    def __sub__(self, other: NeuronSet) -> NeuronSet:
        return self._combine(other, list(self.languages), lambda a, b: a & ~b)

    union, intersection, difference = __or__, __and__, __sub__

    def check_shape(self, n_layers: int, n_neurons: int, model: str | None = None) -> None:
        """Fail clearly if this set was made for a model of another shape."""
        if self.shape != (n_layers, n_neurons):
            made_for = self.meta.get("model", {}).get("id") or "another model"
            raise LangNeuronsError(
                f"neuron set made for {made_for} ({self.shape[0]} layers x {self.shape[1]} neurons) does not fit "
                f"{model or 'this model'} ({n_layers} x {n_neurons}); identify neurons on this model"
            )

    def check_model(self, model: PreTrainedModel) -> None:
        """Fail clearly unless this set fits `model`'s neuron sites (layers x neurons)."""
        from langneurons.core.models import model_id
        from langneurons.core.sites import find_sites

        self.check_shape(*find_sites(model).shape, model=model_id(model))

    def summary(self) -> list[dict[str, Any]]:
        """One row per language: size, and the layers holding most of its neurons."""
        from langneurons.core.summaries import neuron_rows

        return neuron_rows(self.languages, self.masks)

    def save(self, path: str | Path) -> None:
        """Write safetensors with the JSON metadata in its header, atomically."""
        meta = {
            **self.meta,
            "languages": self.languages,
            "shape": {"layers": self.shape[0], "neurons": self.shape[1]},
            "counts": {lang: self.count(lang) for lang in self.languages},
        }
        save_tensors(path, KIND, {"masks": self.masks}, meta)

    @classmethod
    def load(cls, path: str | Path) -> NeuronSet:
        """Load a neuron set written by `save`."""
        tensors, meta = load_tensors(path, KIND)
        if "masks" not in tensors or tensors["masks"].dtype != torch.bool:
            raise LangNeuronsError(f"{path}: has no bool 'masks' tensor; re-create it")
        return cls(list(meta["languages"]), tensors["masks"], meta)
