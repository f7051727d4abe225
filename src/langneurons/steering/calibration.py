"""Calibration: per target language, the steering setting with the highest fluent success on development prompts.

One fixed setting does not fit all targets (a strength that forces English breaks Russian), so each target gets
its own method, strength, neuron share and layers, chosen on the dev questions (disjoint from the eval ones)
by successive halving: every candidate on one question per source language, then the best few on all of them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from langneurons.core.artifacts import read_json, write_json
from langneurons.core.distributed import is_main
from langneurons.core.errors import LangNeuronsError
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import ForcingSetting, SteeringConfig, parse_expression

KIND = "calibration"


@dataclass
class Calibration:
    """Per target: the chosen setting and how the candidates scored on the dev prompts."""

    settings: dict[str, ForcingSetting]
    scores: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def setting(self, target: str) -> ForcingSetting:
        if target not in self.settings:
            raise LangNeuronsError(
                f"no calibrated setting for '{target}'; calibrated targets: {', '.join(self.settings)}"
            )
        return self.settings[target]

    def config(self, expression: str, neurons: NeuronSet | None, stats: ActivationStats) -> SteeringConfig:
        """The steering of an expression that activates one language, with that language's calibrated method,
        strength, layers and neuron share, and deactivates the expression's `-` languages (strengths in the
        expression are not used)."""
        terms = parse_expression(expression)
        targets = [t.language for t in terms if t.sign > 0]
        if len(targets) != 1:
            raise LangNeuronsError("calibrated steering activates exactly one language, e.g. '-en +fr'")
        s = self.setting(targets[0])
        config = SteeringConfig({targets[0]: s.alpha}, {}, s.method, "set", s.layers, s.generated_only, s.top_rate)
        chosen = config.neuron_set(neurons, stats)
        # as in calibration: a language without neurons at this share has nothing to deactivate
        config.deactivate = {t.language: s.value for t in terms if t.sign < 0 and (
            chosen is None or t.language not in chosen.languages or chosen.count(t.language))}
        return config

    def save(self, path: str | Path) -> None:
        """JSON: settings per target, candidate scores, and how they were measured (under torchrun: rank 0)."""
        if not is_main():
            return
        write_json(path, {"kind": KIND, "settings": {t: asdict(s) for t, s in self.settings.items()},
                          "scores": self.scores, "meta": self.meta})

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        data = read_json(path, KIND, missing="run `langneurons calibrate` first")
        settings = data.get("settings")
        if not isinstance(settings, dict) or not isinstance(data.get("scores", {}), dict) \
                or not isinstance(data.get("meta", {}), dict):
            raise LangNeuronsError(f"{path}: 'settings', 'scores' and 'meta' must be objects; re-run calibrate")
        try:
            chosen = {str(t): _setting(s) for t, s in settings.items()}
        except (TypeError, ValueError) as e:
            raise LangNeuronsError(f"{path}: a setting has a field of the wrong type ({e}); re-run calibrate") \
                from None
        return cls(chosen, data.get("scores", {}), data.get("meta", {}))


_FIELD_TYPES = {"method": (str,), "alpha": (int, float), "top_rate": (int, float, type(None)),
                "deactivate_source": (bool,), "value": (int, float), "layers": (list, type(None)),
                "generated_only": (bool,)}


def _setting(data: Any) -> ForcingSetting:
    """A ForcingSetting from its JSON form, every field of the right type."""
    if not isinstance(data, dict):
        raise TypeError(f"{data!r} is not an object")
    for name, value in data.items():
        types = _FIELD_TYPES.get(name)
        if types is None:
            raise TypeError(f"unknown field {name!r}")
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types) \
                or (isinstance(value, float) and not math.isfinite(value)):
            raise TypeError(f"{name}={value!r}")
    if data.get("layers") is not None and (len(data["layers"]) != 2 or
                                           not all(isinstance(x, int) for x in data["layers"])):
        raise TypeError(f"layers={data['layers']!r}")
    SteeringConfig.from_expression("+x", data.get("method", "add"))  # an unknown method fails here
    return ForcingSetting.from_dict(data)
