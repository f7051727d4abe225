"""One description of a steering: `SteeringConfig` (which languages to deactivate and activate, how, where, and
optionally at which neuron share), plus the expression syntax `-en +fr` / `+2.5*fr`. `ForcingSetting` is a rule
that makes a `SteeringConfig` for each (source, target) pair of a grid or a calibration. Plain data, saveable as
JSON; `langneurons.steering.edits` compiles and applies it."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langneurons.core.artifacts import read_json, write_json
from langneurons.core.errors import LangNeuronsError
from langneurons.steering.methods import DEACTIVATIONS, METHODS

if TYPE_CHECKING:
    from langneurons.identify.neurons import NeuronSet
    from langneurons.stats.activation import ActivationStats

_TERM = re.compile(r"\s*([+-])\s*(?:(\d+(?:\.\d*)?|\.\d+)\s*\*\s*)?([A-Za-z][A-Za-z0-9_-]*)\s*")


@dataclass(frozen=True)
class Term:
    """One term of an expression: activate (`sign` +1) or deactivate (-1) a language, with optional strength."""

    language: str
    sign: int
    strength: float | None = None


def parse_expression(expression: str) -> list[Term]:
    """Parse `-en +fr`, `+2.5*fr`, `-en -de +ja` into terms; a malformed expression is a clear error."""
    terms, pos = [], 0
    text = expression.strip()
    while pos < len(text):
        m = _TERM.match(text, pos)
        if not m:
            raise LangNeuronsError(
                f"malformed steering expression {expression!r} at {text[pos:]!r}; "
                "write terms like '-en +fr' or '+2.5*fr'"
            )
        sign, strength, lang = m.groups()
        if sign == "-" and strength is not None:
            raise LangNeuronsError(
                f"'{sign}{strength}*{lang}': a strength applies to activation only; set the deactivation value "
                "with value= (--value) or use deactivate='scale' with beta= (--beta)"
            )
        terms.append(Term(lang, 1 if sign == "+" else -1, float(strength) if strength else None))
        pos = m.end()
    if not terms:
        raise LangNeuronsError("empty steering expression; write terms like '-en +fr'")
    langs = [t.language for t in terms]
    if len(set(langs)) != len(langs):
        raise LangNeuronsError(f"a language appears twice in {expression!r}; name each language once")
    return terms


@dataclass
class SteeringConfig:
    """What to edit, as plain saveable settings (JSON).

    `activate`: language -> strength (alpha for add/diffmean/residual, beta for scale; unused by replace).
    `deactivate`: language -> value c (deactivation "set") or factor (deactivation "scale").
    `layers`: [start, stop) of the layers edited (None: all). `generated_only`: leave prompt tokens alone.
    `top_rate`: the neuron share: the neurons are LAPE's at this share on the statistics (None: the neuron set
    given with the config).
    """

    activate: dict[str, float] = field(default_factory=dict)
    deactivate: dict[str, float] = field(default_factory=dict)
    method: str = "add"
    deactivation: str = "set"
    layers: tuple[int, int] | None = None
    generated_only: bool = False
    top_rate: float | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LangNeuronsError(f"unknown steering method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.deactivation not in DEACTIVATIONS:
            raise LangNeuronsError(f"unknown deactivation {self.deactivation!r}; use one of {', '.join(DEACTIVATIONS)}")
        for lang, strength in [*self.activate.items(), *self.deactivate.items()]:
            if not math.isfinite(strength):
                raise LangNeuronsError(f"strength {strength} for '{lang}': give a finite number")
        if self.layers is not None:
            start, stop = self.layers
            if not 0 <= start < stop:
                raise LangNeuronsError(f"layers={self.layers}: give [start, stop) with 0 <= start < stop")
            self.layers = (int(start), int(stop))
        if self.top_rate is not None and not 0 < self.top_rate <= 1:
            raise LangNeuronsError(f"top_rate={self.top_rate}: give a share of the neurons in (0, 1]")

    @classmethod
    def from_expression(
        cls,
        expression: str,
        method: str = "add",
        alpha: float | None = None,
        value: float = 0.0,
        deactivation: str = "set",
        beta: float | None = None,
        layers: tuple[int, int] | None = None,
        generated_only: bool = False,
        top_rate: float | None = None,
    ) -> SteeringConfig:
        """Settings from an expression; keywords fill in what the expression does not say.

        `alpha`: default strength of activation (add/diffmean/residual: 1.0; scale: 2.0). `value`: what
        deactivated neurons are set to. `beta`: the factor of deactivation "scale" (default 0.0).
        """
        default_strength = alpha if alpha is not None else (2.0 if method == "scale" else 1.0)
        activate, deactivate = {}, {}
        for term in parse_expression(expression):
            if term.sign > 0:
                activate[term.language] = term.strength if term.strength is not None else default_strength
            else:
                deactivate[term.language] = (beta if beta is not None else 0.0) if deactivation == "scale" else value
        return cls(activate, deactivate, method, deactivation, layers, generated_only, top_rate)

    @property
    def languages(self) -> list[str]:
        return [*self.deactivate, *self.activate]

    def describe(self) -> str:
        """The settings as a short expression, e.g. "-en +1.0*fr [add]"."""
        terms = [f"-{lang}" for lang in self.deactivate] + [f"+{s:g}*{lang}" for lang, s in self.activate.items()]
        extra = f", layers {self.layers[0]}-{self.layers[1] - 1}" if self.layers else ""
        extra += f", top {self.top_rate:g}" if self.top_rate is not None else ""
        return f"{' '.join(terms)} [{self.method}{extra}{', generated only' if self.generated_only else ''}]"

    def neuron_set(self, neurons: NeuronSet | None, stats: ActivationStats | None) -> NeuronSet | None:
        """The neurons this config edits: LAPE on `stats` at `top_rate` (computed once per statistics object and
        share), else `neurons`."""
        if self.top_rate is None:
            return neurons
        if stats is None:
            raise LangNeuronsError(f"top_rate={self.top_rate} reruns LAPE on statistics; pass stats= (--stats)")
        from langneurons.identify.lape import lape_at_share

        return lape_at_share(stats, self.top_rate)

    def drop_deactivations_without_neurons(self, neurons: NeuronSet | None) -> bool:
        """Leave out the deactivated languages that `neurons` holds no neurons for (at a small share a language
        may have none: there is nothing to deactivate); whether any was left out."""
        if neurons is None:
            return False
        kept = {lang: v for lang, v in self.deactivate.items() if lang in neurons.languages and neurons.count(lang)}
        left_out = len(kept) < len(self.deactivate)
        self.deactivate = kept
        return left_out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the settings as JSON (atomically)."""
        write_json(path, {"kind": "steering settings", **self.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> SteeringConfig:
        """Read settings written by `save`."""
        data = read_json(path, "steering settings")
        data.pop("kind")
        try:
            return cls(**{**data, "layers": tuple(data["layers"]) if data.get("layers") else None})
        except TypeError as e:
            raise LangNeuronsError(f"{path}: unexpected settings ({e}); re-create it") from None


@dataclass(frozen=True)
class ForcingSetting:
    """A rule for steering towards a target language, relative to each prompt's source language: method and
    strength, neuron share, layers, and whether to deactivate the source language's neurons first. `config` makes
    the `SteeringConfig` of one (source, target) pair; a calibration holds one rule per target."""

    method: str = "add"
    alpha: float = 1.0
    top_rate: float | None = None
    deactivate_source: bool = True
    value: float = 0.0
    layers: tuple[int, int] | None = None
    generated_only: bool = False

    def config(self, source: str, target: str) -> SteeringConfig:
        """The steering of prompts in `source` towards `target` (no deactivation when they are the same)."""
        deactivate = {source: self.value} if self.deactivate_source and source != target else {}
        return SteeringConfig({target: self.alpha}, deactivate, self.method, "set", self.layers, self.generated_only,
                              self.top_rate)

    def label(self) -> str:
        rate = f" top {self.top_rate:g}" if self.top_rate is not None else ""
        layers = f" L{self.layers[0]}-{self.layers[1] - 1}" if self.layers else ""
        src = "-src " if self.deactivate_source else ""
        strength = "" if self.method == "replace" else f"{self.alpha:g}x "
        return f"{src}{strength}{self.method}{rate}{layers}{' gen-only' if self.generated_only else ''}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForcingSetting:
        data = dict(data)
        if data.get("layers") is not None:
            data["layers"] = tuple(data["layers"])
        return cls(**data)
