"""Language arithmetics: edit language neurons (or the residual stream) while the model runs.

An expression such as `-en +fr` or `+2.5*fr` says which languages to deactivate (`-`) and activate (`+`).
Deactivation comes first, then activation, at every position (prompt and generated tokens) of every layer where
the language has neurons. Hooks live for the duration of a `with steer(...)` block and are removed in `finally`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.core.hooks import Hooks
from langneurons.core.lm import embedding_weight
from langneurons.core.sites import NeuronSites, find_sites
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import SteeringConfig

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class Steering:
    """Compiled edits for one model; `attach()` registers the hooks, `remove()` takes them away.

    Every edit is affine per neuron, so deactivation followed by activation compiles, per layer, into two
    vectors: `a <- a * scale + shift` (set: scale 0, shift c; scale: beta; add: shift alpha*mu; replace: scale 0,
    shift mu; diffmean: shift alpha*(mu_t - mean mu_others)). Residual steering adds a vector to a layer's output.
    Several steerings stack into one batch (`BatchSteering`): row i edited by steering i.
    """

    def __init__(self, model: PreTrainedModel, neurons: NeuronSet | None, stats: ActivationStats | None,
                 config: SteeringConfig):
        neurons = config.neuron_set(neurons, stats)
        self.model, self.config, self.neurons, self.stats = model, config, neurons, stats
        self.sites = find_sites(model)
        n_layers = self.sites.n_layers
        start, stop = config.layers or (0, n_layers)
        if stop > n_layers:
            raise LangNeuronsError(f"layers={config.layers} goes past the model's {n_layers} layers")
        self.layer_range = range(start, stop)
        residual = config.method == "residual"
        if not residual or config.deactivate:
            self.tables = self._compile_neurons(neurons, stats, deactivate_only=residual)
        else:
            self.tables = {}
        self.residual = self._compile_residual(stats) if residual else {}
        self._hooks: _Hooks | None = None

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
                         deactivate_only: bool = False) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
        """Per edited layer: (scale, shift), float32 [N]."""
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
        n = self.sites.n_neurons
        tables = {}
        for layer in self.layer_range:
            scale, shift = torch.ones(n), torch.zeros(n)
            for lang, value in cfg.deactivate.items():  # deactivation first
                m = neurons.mask(lang)[layer]
                if cfg.deactivation == "scale":
                    scale[m] *= value
                    shift[m] *= value
                else:
                    scale[m], shift[m] = 0.0, value
            for lang, strength in activate.items():  # then activation: compose a' = (a * scale + shift) * s2 + b2
                m = neurons.mask(lang)[layer]
                s2, b2 = self._activation(lang, strength, layer, m, mu, stats)
                scale[m], shift[m] = scale[m] * s2, shift[m] * s2 + b2
            if (scale != 1).any() or (shift != 0).any():
                tables[layer] = (scale, shift)
        return tables

    def _activation(self, lang: str, strength: float, layer: int, mask: torch.Tensor, mu: torch.Tensor | None,
                    stats: ActivationStats | None) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """(factor, addend) that activation applies to the masked neurons."""
        method = self.config.method
        if method == "scale":
            return float(strength), 0.0
        assert mu is not None and stats is not None
        target = mu[stats.index(lang), layer, mask]
        if method == "replace":
            return 0.0, target
        if method == "add":
            return 1.0, strength * target
        others = [k for k, other in enumerate(stats.languages) if other != lang]
        if not others:
            raise LangNeuronsError("diffmean needs statistics of at least one language besides the target")
        return 1.0, strength * (target - mu[others][:, layer, mask].mean(0))

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

    def attach(self) -> Steering:
        """Register the hooks (idempotent)."""
        if self._hooks is None:
            self._hooks = _Hooks(self.model, self.sites, self.tables, self.residual,
                                 prompt=not self.config.generated_only)
        return self

    def remove(self) -> None:
        """Remove every hook this steering registered."""
        if self._hooks is not None:
            self._hooks.remove()
            self._hooks = None

    @property
    def edited_neurons(self) -> int:
        """Neurons edited per position, over all layers."""
        return sum(int(((sc != 1) | (sh != 0)).sum()) for sc, sh in self.tables.values())


class SteeringTable:
    """Several compiled steerings stacked once, for batches that mix them. Per edited layer: the neurons any of
    them edits (`columns`, K of the layer's N) and a [1 + S, K] matrix of scales and one of shifts at those neurons
    (row 0 leaves them as they are, row k + 1 is steering k), so a grid of hundreds of settings costs S x K, not
    S x N; per residual layer a [1 + S, H] matrix of deltas. Each matrix is copied to a device and dtype once,
    when a batch first needs it there, and shared by every batch (`BatchSteering` picks rows by index)."""

    def __init__(self, model: PreTrainedModel, steerings: Sequence[Steering]):
        self.steerings = list(dict.fromkeys(steerings))
        self.row = {id(s): k + 1 for k, s in enumerate(self.steerings)}
        n, h = find_sites(model).n_neurons, embedding_weight(model).shape[1]
        self.neurons: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        for layer in sorted({layer for s in self.steerings for layer in s.tables}):
            dense = [s.tables.get(layer, (torch.ones(n), torch.zeros(n))) for s in self.steerings]
            edited = torch.stack([(scale != 1) | (shift != 0) for scale, shift in dense]).any(0)
            columns = edited.nonzero()[:, 0]
            self.neurons[layer] = (columns, torch.stack([torch.ones(len(columns)), *(d[0][columns] for d in dense)]),
                                   torch.stack([torch.zeros(len(columns)), *(d[1][columns] for d in dense)]))
        self.residual = {layer: torch.stack([torch.zeros(h), *(s.residual.get(layer, torch.zeros(h))
                                                              for s in self.steerings)])
                         for layer in sorted({layer for s in self.steerings for layer in s.residual})}
        self._placed: dict[tuple[str, int, int, torch.device, torch.dtype | None], torch.Tensor] = {}

    def placed(self, kind: str, layer: int, part: int, like: torch.Tensor) -> torch.Tensor:
        """Part `part` of `kind` ("neurons": 0 columns, 1 scales, 2 shifts; "residual": 0 deltas) on `like`'s device
        (and, except the columns, in its dtype)."""
        dtype = None if kind == "neurons" and part == 0 else like.dtype
        key = (kind, layer, part, like.device, dtype)
        if key not in self._placed:
            source = self.neurons[layer][part] if kind == "neurons" else self.residual[layer]
            self._placed[key] = source.to(like.device, dtype)
        return self._placed[key]


class BatchSteering:
    """Row i of a batch steered by `steerings[i]` (None: unsteered), all rows in the same ops a layer: the
    rows of a `SteeringTable` (built here, or shared by every batch of a run) are picked per batch row."""

    def __init__(self, model: PreTrainedModel, steerings: Sequence[Steering | None],
                 table: SteeringTable | None = None):
        present = [s for s in steerings if s is not None]
        self.table = table if table is not None else SteeringTable(model, present)
        rows = [0 if s is None else self.table.row[id(s)] for s in steerings]
        prompt = [r if s is None or _on_prompt(s) else 0 for r, s in zip(rows, steerings)]
        self._rows = {"gen": torch.tensor(rows), "prompt": torch.tensor(prompt)}
        self._on: dict[tuple[str, torch.device], torch.Tensor] = {}
        sites = find_sites(model)
        self._hooks = Hooks(sites, phase=model if any(not _on_prompt(s) for s in present) else None)
        try:
            for layer in self.table.neurons:
                self._hooks.edit(sites.acts[layer], self._neuron_hook(layer))
            for layer in self.table.residual:
                self._hooks.edit(sites.layers[layer], self._residual_hook(layer))
        except BaseException:
            self.remove()
            raise

    def _index(self, device: torch.device) -> torch.Tensor:
        """This phase's table row of every batch row, on `device`."""
        key = ("prompt" if self._hooks.prompt_phase else "gen", device)
        if key not in self._on:
            self._on[key] = self._rows[key[0]].to(device)
        return self._on[key]

    def _neuron_hook(self, layer: int):
        def hook(output: torch.Tensor) -> torch.Tensor:
            rows = self._index(output.device)
            columns = self.table.placed("neurons", layer, 0, output)
            scale = self.table.placed("neurons", layer, 1, output).index_select(0, rows)[:, None]
            shift = self.table.placed("neurons", layer, 2, output).index_select(0, rows)[:, None]
            edited = output.index_select(-1, columns) * scale + shift  # [batch, seq, K]: only the edited neurons
            if output.requires_grad:  # keep autograd intact
                return output.index_copy(-1, columns, edited)
            return output.index_copy_(-1, columns, edited)

        return hook

    def _residual_hook(self, layer: int):
        def hook(h: torch.Tensor) -> torch.Tensor:
            return h + self.table.placed("residual", layer, 0, h).index_select(0, self._index(h.device))[:, None]

        return hook

    def remove(self) -> None:
        self._hooks.close()


def _on_prompt(s: Steering) -> bool:
    return not s.config.generated_only


class _Hooks:
    """The registered hooks of one steering: `a * scale + shift` at neuron sites, `h + delta` at layer outputs.

    In the prompt phase (no cached tokens yet) they edit nothing when `prompt` is False.
    """

    def __init__(self, model: PreTrainedModel, sites: NeuronSites, tables: dict, residual: dict, prompt: bool = True):
        self._cache: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._prompt = prompt
        self._hooks = Hooks(sites, phase=None if prompt else model)
        try:
            for layer, (scale, shift) in tables.items():
                self._hooks.edit(sites.acts[layer], self._neuron_hook(scale, shift))
            for layer, delta in residual.items():
                self._hooks.edit(sites.layers[layer], self._residual_hook(delta))
        except BaseException:
            self.remove()
            raise

    def _placed(self, value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`value` on `like`'s device and dtype, converted once."""
        key = (id(value), like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = value.to(like.device, like.dtype)
        return self._cache[key]

    def _idle(self) -> bool:
        return not self._prompt and self._hooks.prompt_phase

    def _neuron_hook(self, scale: torch.Tensor, shift: torch.Tensor):
        def hook(a: torch.Tensor) -> torch.Tensor | None:
            if self._idle():
                return None
            if a.requires_grad:  # keep autograd intact
                return a * self._placed(scale, a) + self._placed(shift, a)
            return a.mul_(self._placed(scale, a)).add_(self._placed(shift, a))

        return hook

    def _residual_hook(self, delta: torch.Tensor):
        def hook(h: torch.Tensor) -> torch.Tensor | None:
            return None if self._idle() else h + self._placed(delta, h)

        return hook

    def remove(self) -> None:
        self._hooks.close()


def build_steering(
    model: PreTrainedModel,
    neurons: NeuronSet | None = None,
    stats: ActivationStats | None = None,
    expression: str | None = None,
    *,
    config: SteeringConfig | None = None,
    calibrated: Any = None,
    **how: Any,
) -> Steering:
    """A compiled `Steering` (hooks not attached) from an expression, `config=`, or a calibration.

    `how`: the keywords of `SteeringConfig.from_expression` (method, alpha, value, deactivation, beta, layers,
    generated_only), for an expression.

    `calibrated` (a `Calibration` or its JSON path) supplies the activated language's method, strength, layers
    and neuron share (LAPE on `stats`); the expression then names one `+` language and any `-` languages.
    """
    if calibrated is not None:
        from langneurons.steering.calibration import Calibration

        if not expression or stats is None:
            raise LangNeuronsError("calibrated steering needs an expression like '-en +fr' and stats=")
        cal = calibrated if isinstance(calibrated, Calibration) else Calibration.load(calibrated)
        config, expression = cal.config(expression, neurons, stats), None
    if config is None:
        if not expression:
            raise LangNeuronsError("say what to steer: an expression like '-en +fr', or config=")
        config = SteeringConfig.from_expression(expression, **how)
    elif expression:
        raise LangNeuronsError("pass either an expression or config=, not both")
    return Steering(model, neurons, stats, config)


@contextmanager
def steer(model: PreTrainedModel, neurons: NeuronSet | None = None, stats: ActivationStats | None = None,
          expression: str | None = None, **how: Any) -> Iterator[Steering]:
    """Edit language neurons for the duration of the block; the hooks are removed afterwards, also on error.

    >>> with steer(model, neurons, stats, "-en +fr", method="add", alpha=1.0):
    ...     out = model.generate(**batch)

    What to edit is an expression, or `config=` a `SteeringConfig`, or `calibrated=` a calibration; `how` takes
    the keywords of `build_steering` (method, alpha, value, deactivation, beta, layers, generated_only).
    """
    steering = build_steering(model, neurons, stats, expression, **how).attach()
    try:
        yield steering
    finally:
        steering.remove()


