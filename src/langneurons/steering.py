"""Language arithmetics: edit language neurons (or the residual stream) while the model runs.

An expression such as `-en +fr` or `+2.5*fr` says which languages to deactivate (`-`) and activate (`+`).
Deactivation comes first, then activation, at every position (prompt and generated tokens) of every layer where
the language has neurons. Hooks live for the duration of a `with steer(...)` block and are removed in `finally`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from langneurons.artifacts import write_json
from langneurons.errors import LangNeuronsError
from langneurons.neurons import NeuronSet
from langneurons.sites import find_sites
from langneurons.stats import ActivationStats

METHODS = ("add", "scale", "replace", "diffmean", "residual")
DEACTIVATIONS = ("set", "scale")
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
    """

    activate: dict[str, float] = field(default_factory=dict)
    deactivate: dict[str, float] = field(default_factory=dict)
    method: str = "add"
    deactivation: str = "set"
    layers: tuple[int, int] | None = None
    generated_only: bool = False

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise LangNeuronsError(f"unknown steering method {self.method!r}; use one of {', '.join(METHODS)}")
        if self.deactivation not in DEACTIVATIONS:
            raise LangNeuronsError(f"unknown deactivation {self.deactivation!r}; use one of {', '.join(DEACTIVATIONS)}")
        if self.layers is not None:
            start, stop = self.layers
            if not 0 <= start < stop:
                raise LangNeuronsError(f"layers={self.layers}: give [start, stop) with 0 <= start < stop")
            self.layers = (int(start), int(stop))

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
        return cls(activate, deactivate, method, deactivation, layers, generated_only)

    @property
    def languages(self) -> list[str]:
        return [*self.deactivate, *self.activate]

    def describe(self) -> str:
        """The settings as a short expression, e.g. "-en +1.0*fr [add]"."""
        terms = [f"-{lang}" for lang in self.deactivate] + [f"+{s:g}*{lang}" for lang, s in self.activate.items()]
        extra = f", layers {self.layers[0]}-{self.layers[1] - 1}" if self.layers else ""
        return f"{' '.join(terms)} [{self.method}{extra}{', generated only' if self.generated_only else ''}]"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the settings as JSON (atomically)."""
        write_json(path, {"kind": "steering", **self.to_dict()})

    @classmethod
    def load(cls, path: str | Path) -> SteeringConfig:
        """Read settings written by `save`."""
        try:
            data = json.loads(Path(path).read_text("utf-8"))
        except FileNotFoundError:
            raise LangNeuronsError(f"{path}: no such file; check the path") from None
        except json.JSONDecodeError as e:
            raise LangNeuronsError(f"{path}: not JSON ({e.msg}); re-create it") from None
        if data.pop("kind", None) != "steering":
            raise LangNeuronsError(f"{path}: not a steering settings file")
        try:
            return cls(**{**data, "layers": tuple(data["layers"]) if data.get("layers") else None})
        except TypeError as e:
            raise LangNeuronsError(f"{path}: unexpected settings ({e}); re-create it") from None


@dataclass
class _LayerEdit:
    """The edits of one layer: indices (long, last dim) and what to do with them."""

    off: torch.Tensor  # deactivated neurons
    off_value: torch.Tensor  # per index: the value (set) or factor (scale)
    on: list[tuple[torch.Tensor, torch.Tensor]]  # (indices, vector) per activated language


class Steering:
    """Compiled edits for one model; `attach()` registers the hooks, `remove()` takes them away.

    With `rows`, only those rows of each batch are edited, so one batch can carry several steerings (one
    `Steering` per group of rows).
    """

    def __init__(self, model: nn.Module, neurons: NeuronSet | None, stats: ActivationStats | None,
                 config: SteeringConfig, rows: Sequence[int] | None = None):
        self.model, self.config = model, config
        self.rows = None if rows is None else torch.as_tensor(list(rows), dtype=torch.long)
        self.sites = find_sites(model)
        n_layers = self.sites.n_layers
        start, stop = config.layers or (0, n_layers)
        if stop > n_layers:
            raise LangNeuronsError(f"layers={config.layers} goes past the model's {n_layers} layers")
        self.layer_range = range(start, stop)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._prompt = False
        if config.method == "residual":
            self._residual = self._compile_residual(stats)
            self._edits: dict[int, _LayerEdit] = {}
            if config.deactivate:
                self._edits = self._compile_neurons(neurons, stats, deactivate_only=True)
        else:
            self._residual = {}
            self._edits = self._compile_neurons(neurons, stats)

    # --- compiling -----------------------------------------------------------------------------------------

    def _require_stats(self, stats: ActivationStats | None, why: str) -> ActivationStats:
        if stats is None:
            raise LangNeuronsError(f"{why} needs activation statistics; pass stats= (--stats)")
        if stats.shape[1:] != self.sites.shape:
            raise LangNeuronsError(
                f"statistics of shape {stats.shape[1:]} do not fit this model {self.sites.shape}; "
                "collect statistics on this model"
            )
        for lang in self.config.activate:
            stats.index(lang)
        return stats

    def _compile_neurons(self, neurons: NeuronSet | None, stats: ActivationStats | None,
                         deactivate_only: bool = False) -> dict[int, _LayerEdit]:
        cfg = self.config
        if neurons is None:
            raise LangNeuronsError("neuron steering needs a neuron set; pass neurons= (--neurons)")
        neurons.check_model(self.model)
        activate = {} if deactivate_only else cfg.activate
        for lang in [*cfg.deactivate, *activate]:
            if neurons.count(lang) == 0:
                raise LangNeuronsError(
                    f"language '{lang}' has no neurons in this set; choose another language or a larger top_rate"
                )
        mu = None
        if activate and cfg.method in ("add", "replace", "diffmean"):
            mu = self._require_stats(stats, f"method '{cfg.method}'").mean_activation().float()
        edits: dict[int, _LayerEdit] = {}
        for layer in self.layer_range:
            off_idx, off_val = [], []
            for lang, value in cfg.deactivate.items():
                idx = neurons.mask(lang)[layer].nonzero().flatten()
                off_idx.append(idx)
                off_val.append(torch.full((len(idx),), float(value)))
            on = []
            for lang, strength in activate.items():
                idx = neurons.mask(lang)[layer].nonzero().flatten()
                if len(idx) == 0:
                    continue
                on.append((idx, self._vector(lang, strength, layer, idx, mu, stats)))
            off = torch.cat(off_idx) if off_idx else torch.zeros(0, dtype=torch.long)
            if len(off) or on:
                edits[layer] = _LayerEdit(off, torch.cat(off_val) if off_val else torch.zeros(0), on)
        return edits

    def _vector(self, lang: str, strength: float, layer: int, idx: torch.Tensor, mu: torch.Tensor | None,
                stats: ActivationStats | None) -> torch.Tensor:
        """What activation adds (add, diffmean), writes (replace) or multiplies by (scale) for these neurons."""
        method = self.config.method
        if method == "scale":
            return torch.full((len(idx),), float(strength))
        assert mu is not None and stats is not None
        target = mu[stats.index(lang), layer, idx]
        if method == "replace":
            return target
        if method == "add":
            return strength * target
        others = [k for k, other in enumerate(stats.languages) if other != lang]
        if not others:
            raise LangNeuronsError("diffmean needs statistics of at least one language besides the target")
        return strength * (target - mu[others][:, layer, idx].mean(0))

    def _compile_residual(self, stats: ActivationStats | None) -> dict[int, torch.Tensor]:
        """Per layer: the sum over activated languages of strength x (mean hidden of target - mean of others)."""
        if not self.config.activate:
            raise LangNeuronsError("residual steering needs a language to activate, e.g. '+fr'")
        stats = self._require_stats(stats, "residual steering")
        h = stats.mean_hidden().float()
        out: dict[int, torch.Tensor] = {}
        for lang, strength in self.config.activate.items():
            k = stats.index(lang)
            others = [i for i in range(len(stats.languages)) if i != k]
            if not others:
                raise LangNeuronsError("residual steering needs statistics of at least two languages")
            for layer in self.layer_range:
                d = strength * (h[k, layer] - h[others, layer].mean(0))
                out[layer] = out[layer] + d if layer in out else d
        return out

    # --- hooks ---------------------------------------------------------------------------------------------

    def _neuron_hook(self, edit: _LayerEdit):
        method = self.config.method
        dev_cache: dict[tuple[torch.device, torch.dtype], tuple] = {}

        def on_device(a: torch.Tensor) -> tuple:
            key = (a.device, a.dtype)
            if key not in dev_cache:
                dev_cache[key] = (
                    edit.off.to(a.device), edit.off_value.to(a.device, a.dtype),
                    [(i.to(a.device), v.to(a.device, a.dtype)) for i, v in edit.on],
                )
            return dev_cache[key]

        scale_off = self.config.deactivation == "scale"

        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor | None:
            if self._prompt and self.config.generated_only:
                return None
            off, off_value, on = on_device(output)
            out = output.clone() if output.requires_grad else output  # in place unless autograd needs it
            a = out if self.rows is None else out[self._rows_on(out)]
            if len(off):
                a[..., off] = a[..., off] * off_value if scale_off else off_value
            for idx, vec in on:
                if method in ("add", "diffmean"):
                    a[..., idx] += vec
                elif method == "replace":
                    a[..., idx] = vec
                else:  # scale
                    a[..., idx] *= vec
            if self.rows is not None:
                out[self._rows_on(out)] = a
            return out

        return hook

    def _rows_on(self, output: torch.Tensor) -> torch.Tensor:
        if output.dim() < 3:
            raise LangNeuronsError("per-row steering needs [batch, seq, ...] activations; this model flattens them")
        if self.rows.device != output.device:  # type: ignore[union-attr]
            self.rows = self.rows.to(output.device)  # type: ignore[union-attr]
        return self.rows  # type: ignore[return-value]

    def _residual_hook(self, delta: torch.Tensor):
        cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

        def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor | tuple) -> torch.Tensor | tuple | None:
            if self._prompt and self.config.generated_only:
                return None
            h = output[0] if isinstance(output, tuple) else output
            key = (h.device, h.dtype)
            if key not in cache:
                cache[key] = delta.to(h.device, h.dtype)
            if self.rows is None:
                h = h + cache[key]
            else:
                h = h.clone()
                h[self._rows_on(h)] += cache[key]
            return (h, *output[1:]) if isinstance(output, tuple) else h

        return hook

    def _phase_hook(self, _module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        """Before each forward: is this the prompt (no cached tokens yet) or a generated token?"""
        cache = kwargs.get("past_key_values")
        self._prompt = cache is None or cache.get_seq_length() == 0

    def attach(self) -> Steering:
        """Register the hooks (idempotent)."""
        if self._handles:
            return self
        try:
            if self.config.generated_only:
                self._handles.append(
                    self.model.base_model.register_forward_pre_hook(self._phase_hook, with_kwargs=True)
                )
            for layer, edit in self._edits.items():
                self._handles.append(self.sites.acts[layer].register_forward_hook(self._neuron_hook(edit)))
            for layer, delta in self._residual.items():
                self._handles.append(self.sites.layers[layer].register_forward_hook(self._residual_hook(delta)))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook this steering registered."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def edited_neurons(self) -> int:
        """Neuron edits per position: deactivated plus activated, over all layers."""
        return sum(len(e.off) + sum(len(i) for i, _ in e.on) for e in self._edits.values())


@contextmanager
def steer(
    model: nn.Module,
    neurons: NeuronSet | None = None,
    stats: ActivationStats | None = None,
    expression: str | None = None,
    *,
    config: SteeringConfig | None = None,
    method: str = "add",
    alpha: float | None = None,
    value: float = 0.0,
    deactivation: str = "set",
    beta: float | None = None,
    layers: tuple[int, int] | None = None,
    generated_only: bool = False,
    rows: Sequence[int] | None = None,
    calibrated: Any = None,
) -> Iterator[Steering]:
    """Edit language neurons for the duration of the block; the hooks are removed afterwards, also on error.

    >>> with steer(model, neurons, stats, "-en +fr", method="add", alpha=1.0):
    ...     out = model.generate(**batch)

    `rows` limits the edits to those rows of each batch (nest several `steer` blocks to steer rows differently).
    `calibrated` (a `Calibration` or its JSON path) supplies the activated language's method, strength, layers
    and neuron share (LAPE on `stats`); the expression then names one `+` language and any `-` languages.
    """
    if calibrated is not None:
        from langneurons.calibrate import Calibration

        if not expression or stats is None:
            raise LangNeuronsError("calibrated steering needs an expression like '-en +fr' and stats=")
        cal = calibrated if isinstance(calibrated, Calibration) else Calibration.load(calibrated)
        terms = parse_expression(expression)
        config, neurons = cal.steering({t.language: 1.0 for t in terms if t.sign > 0},
                                       {t.language: 0.0 for t in terms if t.sign < 0}, neurons, stats)
        expression = None
    if config is None:
        if not expression:
            raise LangNeuronsError("say what to steer: an expression like '-en +fr', or config=")
        config = SteeringConfig.from_expression(expression, method, alpha, value, deactivation, beta, layers,
                                                generated_only)
    elif expression:
        raise LangNeuronsError("pass either an expression or config=, not both")
    steering = Steering(model, neurons, stats, config, rows).attach()
    try:
        yield steering
    finally:
        steering.remove()

