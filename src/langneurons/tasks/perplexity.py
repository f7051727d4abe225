"""Perplexity matrix: deactivate each language's neurons and measure the next-token loss on every language.

For each language X of the neuron set, X's neurons are deactivated (set to a value, or scaled) and the mean
negative log-likelihood per token is measured on the held-out text of every language Y. Deactivating X should
raise X's loss much more than the others' (Tang et al. 2024). The same is done with random neurons of equal size
per layer as a control. Results: the NLL matrix [X, Y], its delta against the unedited model, the mean delta on
the diagonal and off it and their ratio, and heatmaps.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from langneurons.core.distributed import is_main
from langneurons.core.errors import LangNeuronsError
from langneurons.core.lm import mean_nll
from langneurons.data.corpus import Corpus
from langneurons.data.windows import heldout_windows
from langneurons.identify import random_like
from langneurons.identify.neurons import NeuronSet
from langneurons.steering.config import SteeringConfig
from langneurons.steering.edits import steer
from langneurons.steering.methods import DEACTIVATIONS
from langneurons.tasks.results import SampleLog, run_metadata, write_results

if TYPE_CHECKING:
    from transformers import PreTrainedModel

CELLS = "perplexity_cells.jsonl"
KEYS = ("set", "deactivated", "language")
BASELINE = "baseline"

def _mean(values: Sequence[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is not positive (the ratio means nothing then)."""
    return num / den if num is not None and den is not None and den > 0 else None


def matrix_summary(delta: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Summary of a delta-NLL matrix {deactivated X: {evaluated Y: delta}} whose rows hold the X column.

    `diagonal_mean` (X on X), `off_diagonal_mean` (X on Y != X), `ratio` of the two (None unless the off-diagonal
    mean is positive), `own_hurt_most` (how many X raise X's loss strictly more than any other Y's), and per X:
    own delta, mean and max of the others, the most hurt language, and selectivity = own / mean of others.
    """
    per: dict[str, dict[str, Any]] = {}
    for x, row in delta.items():
        others = [v for y, v in row.items() if y != x]
        own = row[x]
        per[x] = {"own": own, "others_mean": _mean(others), "others_max": max(others, default=None),
                  "most_hurt": max(row, key=lambda y: row[y]), "own_hurt_most": all(own > v for v in others),
                  "selectivity": _ratio(own, _mean(others))}
    diagonal = _mean([row[x] for x, row in delta.items()])
    off = _mean([v for x, row in delta.items() for y, v in row.items() if y != x])
    return {"diagonal_mean": diagonal, "off_diagonal_mean": off, "ratio": _ratio(diagonal, off),
            "own_hurt_most": sum(p["own_hurt_most"] for p in per.values()), "per_language": per}


@dataclass
class PerplexityResult:
    """NLL cells of one run: set ("baseline", "neurons" or "random") x deactivated language x evaluated language.

    `cells`: rows {"set", "deactivated" (None for the baseline), "language", "nll", "tokens"}. `meta`: the run's
    metadata (`results.run_metadata`). `log_settings`: what the cells JSONL is fingerprinted with.
    """

    languages: list[str]
    deactivated: list[str]
    sets: dict[str, str]  # set name -> its identification method, e.g. {"neurons": "lape", "random": "random"}
    counts: dict[str, int]  # neurons per deactivated language (the random set has the same per layer)
    cells: list[dict[str, Any]]
    meta: dict[str, Any]
    log_settings: dict[str, Any]
    seconds: float
    log_path: Path | None = None

    def _cell(self, name: str, x: str | None, y: str) -> float:
        return next(c["nll"] for c in self.cells if (c["set"], c["deactivated"], c["language"]) == (name, x, y))

    @property
    def baseline(self) -> dict[str, float]:
        """NLL of each evaluated language with nothing deactivated."""
        return {y: self._cell(BASELINE, None, y) for y in self.languages}

    @property
    def tokens(self) -> dict[str, int]:
        """Predicted tokens of each evaluated language."""
        return {c["language"]: c["tokens"] for c in self.cells if c["set"] == BASELINE}

    def nll(self, name: str) -> dict[str, dict[str, float]]:
        """{deactivated X: {evaluated Y: NLL}} of set `name`."""
        return {x: {y: self._cell(name, x, y) for y in self.languages} for x in self.deactivated}

    def delta(self, name: str) -> dict[str, dict[str, float]]:
        """{deactivated X: {evaluated Y: NLL - baseline NLL of Y}} of set `name`."""
        base = self.baseline
        return {x: {y: v - base[y] for y, v in row.items()} for x, row in self.nll(name).items()}

    def summary(self) -> dict[str, Any]:
        """What perplexity.json holds under "summary"."""
        sets = {name: {"method": method, "nll": self.nll(name), "delta": self.delta(name),
                       **matrix_summary(self.delta(name))} for name, method in self.sets.items()}
        return {"languages": self.languages, "deactivated": self.deactivated, "neurons": self.counts,
                "tokens": self.tokens, "baseline": self.baseline, "sets": sets, "seconds": round(self.seconds, 2)}

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write perplexity.json, the cells JSONL (unless the run logged there) and a delta-NLL heatmap per set
        (PNG + SVG, one colour scale for all); returns the paths."""
        from langneurons.figures.charts import heatmap

        if not is_main():  # under torchrun rank 0 writes
            return {}
        out = Path(out_dir)
        paths = {"summary": write_results(out / "perplexity.json", self.meta, self.summary()), "cells": out / CELLS}
        if self.log_path is None or self.log_path.resolve() != paths["cells"].resolve():
            SampleLog(paths["cells"], KEYS, self.log_settings, fresh=True).add(self.cells)
        deltas = {name: self.delta(name) for name in self.sets}
        values = [v for d in deltas.values() for row in d.values() for v in row.values()]
        low, high = min(0.0, *values), max(0.0, *values)
        for name, method in self.sets.items():
            matrix = np.array([[deltas[name][x][y] for y in self.languages] for x in self.deactivated])
            png, svg = heatmap(matrix, self.deactivated, self.languages, out / f"perplexity_{name}.png",
                               f"ΔNLL with {method} neurons deactivated", row_label="deactivated",
                               col_label="evaluated", fmt="{:+.2f}", vmin=low, vmax=high, cmap="magma")
            paths[f"{name}_png"], paths[f"{name}_svg"] = png, svg
        return paths


def _neuron_digest(neurons: NeuronSet) -> str:
    """A short hash of a neuron set's languages and masks: cells of another set are not reused."""
    h = hashlib.sha256(",".join(neurons.languages).encode())
    h.update(neurons.masks.numpy().tobytes())
    return h.hexdigest()[:16]


def run_perplexity(
    model: PreTrainedModel,
    tok: Any,
    neurons: NeuronSet,
    corpus: Corpus,
    languages: Sequence[str] | None = None,
    value: float = 0.0,
    method: str = "set",
    beta: float | None = None,
    control: bool = True,
    seed: int = 0,
    max_tokens: int | None = None,
    window: int = 512,
    batch_size: int = 8,
    output_dir: str | Path | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> PerplexityResult:
    """Mean NLL on the held-out text of every language with each language's neurons deactivated.

    `languages`: evaluated languages (default: the neuron set's); each of them with neurons in the set is also
    deactivated in turn. `method` "set" sets the neurons to `value`, "scale" multiplies them by `beta` (default 0).
    `control`: also deactivate random neurons of the same number per language and layer (`random_like`, `seed`).
    `max_tokens`: content tokens per language; `window`: tokens per window, BOS included. With `output_dir`, each
    cell is appended to its JSONL as it is measured and a rerun skips the cells there (`fresh`: start over).
    """
    if method not in DEACTIVATIONS:
        raise LangNeuronsError(f"unknown deactivation {method!r}; use one of {', '.join(DEACTIVATIONS)}")
    languages = list(neurons.languages if languages is None else languages)
    neurons.check_model(model)
    deactivated = [x for x in languages if x in neurons.languages and neurons.count(x) > 0]
    if not deactivated:
        raise LangNeuronsError(f"none of {', '.join(languages)} has neurons in the set "
                               f"({', '.join(neurons.languages)}); choose languages of the set")
    factor = value if method == "set" else (0.0 if beta is None else beta)
    sets = {"neurons": neurons, **({"random": random_like(neurons, seed)} if control else {})}
    log_settings = {
        "deactivation": method, "value": factor, "seed": seed, "max_tokens": max_tokens, "window": window,
        "split": "heldout", "corpus": corpus.select(languages).describe(), "neurons": _neuron_digest(neurons),
        "dtype": str(next(model.parameters()).dtype),
    }
    settings = {**log_settings, "languages": languages, "control": control, "batch_size": batch_size,
                "neurons": {"digest": log_settings["neurons"], "method": neurons.meta.get("method"),
                            "settings": neurons.meta.get("settings", {})}}
    windows = heldout_windows(tok, corpus, languages, max_tokens, window)
    tokens = {y: sum(len(w) - 1 for w in rows) for y, rows in windows.items()}
    log_path = Path(output_dir) / CELLS if output_dir is not None else None
    log = SampleLog(log_path, KEYS, log_settings, fresh) if log_path is not None else None
    cells: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    if log is not None:
        cells = {(c["set"], c["deactivated"], c["language"]): c for c in log}
    conditions = [(BASELINE, None), *((name, x) for x in deactivated for name in sets)]
    start = time.perf_counter()
    bar = tqdm(conditions, desc="perplexity", unit="condition", disable=not progress)
    for name, x in bar:
        todo = [y for y in languages if (name, x, y) not in cells]
        if not todo:
            continue
        bar.set_postfix_str(f"{name} -{x}" if x else name)
        config = SteeringConfig(deactivate={x: factor}, deactivation=method) if x else None
        with steer(model, sets[name], None, config=config) if config else contextlib.nullcontext():
            nll = mean_nll(model, {y: windows[y] for y in todo}, batch_size)
        rows = [{"set": name, "deactivated": x, "language": y, "nll": nll[y], "tokens": tokens[y]} for y in todo]
        if log is not None:
            log.add(rows)
        cells.update({(name, x, y): row for row, y in zip(rows, todo)})
    bar.close()
    kept = [cells[(name, x, y)] for name, x in conditions for y in languages]
    return PerplexityResult(
        languages, deactivated, {name: s.meta.get("method") or name for name, s in sets.items()},
        {x: neurons.count(x) for x in deactivated}, kept, run_metadata(model, "perplexity", settings), log_settings,
        time.perf_counter() - start, log_path,
    )


