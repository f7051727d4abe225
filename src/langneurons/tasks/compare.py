"""Compare identification methods: neuron sets of equal size, masking selectivity and language forcing.

For each set (e.g. LAPE, CRANE per relevance rule, the activation-frequency baseline, random neurons per layer)
and each language X, X's neurons are zeroed and the mean next-token loss is measured on the held-out text of
every language. Selectivity of X = loss increase on X / mean increase on the other languages (None unless that
mean is positive); the pooled ratio = mean increase on the own language / mean increase on the others over all X.
Forcing: the fluent success of `-src +tgt` (deactivate the prompt language's neurons, add the target's mean
activations) with each set on the same questions. Every figure has a 95% percentile-bootstrap interval over the
held-out windows (masking) or the prompts (forcing). The same sets can be applied to another model of the same
shape (e.g. a base model's neurons on its chat sibling) to see whether they transfer.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tqdm.auto import tqdm

from langneurons.core.errors import LangNeuronsError
from langneurons.core.lm import window_nll
from langneurons.core.models import model_id
from langneurons.identify import frequency_contrast, random_like
from langneurons.identify.crane import crane
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.stats.relevance import RelevanceStats
from langneurons.steering.edits import steer
from langneurons.steering.generation import Decoding
from langneurons.tasks import bootstrap
from langneurons.tasks.perplexity import matrix_summary
from langneurons.tasks.results import SampleLog

if TYPE_CHECKING:
    from transformers import PreTrainedModel

KEYS = ("set", "digest", "deactivated", "language")


def matched_sets(reference: NeuronSet, stats: ActivationStats | None = None,
                 relevance: RelevanceStats | Sequence[RelevanceStats] = (), seed: int = 0,
                 contrast: str = "margin", random: bool = True) -> dict[str, NeuronSet]:
    """Sets with `reference`'s number of neurons per language: the reference itself (named by its method), CRANE
    from each relevance (named `crane-<rule>`, e.g. crane-attnlrp and crane-grad_x_input), the frequency contrast
    from `stats` and random neurons per layer (`seed`), each over the reference's languages. A method may select
    fewer neurons when fewer have a positive contrast."""
    languages = list(reference.languages)
    sizes = {lang: reference.count(lang) for lang in languages}
    sets = {str(reference.meta.get("method") or "reference"): reference}
    for rel in [relevance] if isinstance(relevance, RelevanceStats) else relevance:
        name = f"crane-{rel.rule}"
        if name in sets:
            raise LangNeuronsError(f"two relevance files of rule '{rel.rule}'; give one per rule")
        sets[name] = crane(rel.select(languages), per_language=sizes, contrast=contrast)
    if stats is not None:
        sets["frequency"] = frequency_contrast(stats.select(languages), sizes)
    if random:
        sets["random"] = random_like(reference, seed)
    return sets


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.numpy().tobytes() if isinstance(part, torch.Tensor) else repr(part).encode())
    return h.hexdigest()[:16]


def compare_methods(
    model: PreTrainedModel,
    sets: Mapping[str, NeuronSet],
    windows: Mapping[str, Sequence[Sequence[int]]],
    batch_size: int = 8,
    log_path: str | Path | None = None,
    fresh: bool = False,
    progress: bool = False,
    replicates: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Mask each language's neurons of each set in turn and measure the next-token loss on every language.

    `windows`: token windows per evaluated language (`tasks.perplexity.heldout_windows`). Each set is masked
    with `steer(model, set, None, "-X")` (neurons set to 0) for every evaluated language X it has neurons for.
    With `log_path`, every measured cell (with its per-window losses) is appended there (with a digest of its
    set's masks) and a rerun skips the cells of unchanged sets, also when sets are added (`fresh`: start over).
    Returns the baseline loss, and per set its sizes, loss increases {X: {Y: delta}}, the `matrix_summary` of
    those (selectivity per language, pooled `ratio`), `mean_selectivity` (mean over languages that have one)
    and `ci`: 95% bootstrap intervals of the selectivities, their mean and the pooled ratio, from `replicates`
    resamplings (`seed`) of each language's windows, the same for every set and condition (None when a language
    has a single window: use shorter windows).
    """
    languages = list(windows)
    if not languages:
        raise LangNeuronsError("no evaluation windows; give at least one language")
    if "baseline" in sets:
        raise LangNeuronsError("'baseline' names the unedited model; give the set another name")
    for name, neurons in sets.items():
        try:
            neurons.check_model(model)
        except LangNeuronsError as e:
            raise LangNeuronsError(f"set '{name}': {e}") from None
    counts = {y: np.array([max(len(w) - 1, 0) for w in rows], dtype=float) for y, rows in windows.items()}
    tokens = {y: int(c.sum()) for y, c in counts.items()}
    conditions: list[tuple[str, str | None]] = [("baseline", None)]
    conditions += [(name, x) for name, s in sets.items() for x in languages if x in s.languages and s.count(x) > 0]
    digests = {"baseline": "", **{name: _digest(s.languages, s.masks) for name, s in sets.items()}}
    log = None
    if log_path is not None:
        settings = {"model": model_id(model), "dtype": str(next(model.parameters()).dtype),
                    "windows": _digest([(y, [list(w) for w in rows]) for y, rows in windows.items()])}
        log = SampleLog(log_path, KEYS, settings, fresh)
    cells = {(c["set"], c["deactivated"], c["language"]): np.array(c["windows"]) for c in (log or [])
             if digests.get(c["set"]) == c["digest"] and "windows" in c}
    start = time.perf_counter()
    for name, x in tqdm(conditions, desc="compare", unit="condition", disable=not progress):
        todo = [y for y in languages if (name, x, y) not in cells]
        if not todo:
            continue
        with steer(model, sets[name], None, f"-{x}") if x else contextlib.nullcontext():
            sums = window_nll(model, {y: windows[y] for y in todo}, batch_size)
        rows = [{"set": name, "digest": digests[name], "deactivated": x, "language": y,
                 "nll": sum(sums[y]) / tokens[y], "windows": sums[y]} for y in todo]
        if log is not None:
            log.add(rows)
        cells.update({(name, x, y): np.array(sums[y]) for y in todo})
    nll = {key: float(v.sum()) / tokens[key[2]] for key, v in cells.items()}
    baseline = {y: nll[("baseline", None, y)] for y in languages}
    rng = np.random.default_rng(seed)
    draws = {y: bootstrap.resample(len(windows[y]), replicates, rng) for y in languages}

    def resampled(name: str, x: str | None, y: str) -> np.ndarray:
        return cells[(name, x, y)][draws[y]].sum(1) / counts[y][draws[y]].sum(1).clip(min=1)

    base_b = {y: resampled("baseline", None, y) for y in languages}
    methods = {}
    for name, s in sets.items():
        masked = [x for n, x in conditions if n == name and x is not None]
        delta = {x: {y: nll[(name, x, y)] - baseline[y] for y in languages} for x in masked}
        summary = matrix_summary(delta) if delta else {"per_language": {}}
        ratios = [p["selectivity"] for p in summary["per_language"].values() if p["selectivity"] is not None]
        methods[name] = {
            "method": s.meta.get("method") or name,
            "sizes": {x: s.count(x) if x in s.languages else 0 for x in languages},
            "delta": delta, **summary,
            "mean_selectivity": sum(ratios) / len(ratios) if ratios else None,
            "ci": _selectivity_ci({x: {y: resampled(name, x, y) - base_b[y] for y in languages} for x in masked}
                                  if min(len(w) for w in windows.values()) > 1 else {}),
        }
    return {"model": model_id(model), "languages": languages, "tokens": tokens, "baseline": baseline,
            "methods": methods, "replicates": replicates, "seconds": round(time.perf_counter() - start, 2)}


def _selectivity_ci(delta: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, Any]:
    """Intervals from bootstrap replicates of the loss increases {X: {Y: [replicates]}}: selectivity per X,
    its mean over X (over the X where a replicate defines it) and the pooled ratio."""
    if not delta:
        return {"selectivity": {}, "mean_selectivity": None, "ratio": None}
    own = {x: row[x] for x, row in delta.items()}
    others = {x: np.mean([v for y, v in row.items() if y != x] or [np.full_like(own[x], np.nan)], axis=0)
              for x, row in delta.items()}
    selectivity = {x: bootstrap.ratio(own[x], others[x]) for x in delta}
    stacked = np.stack(list(selectivity.values()))
    defined = ~np.isnan(stacked)
    mean = np.where(defined.any(0), np.nansum(stacked, 0) / defined.sum(0).clip(min=1), np.nan)
    pooled = bootstrap.ratio(np.mean(list(own.values()), 0), np.mean(list(others.values()), 0))
    return {"selectivity": {x: bootstrap.interval(v) for x, v in selectivity.items()},
            "mean_selectivity": bootstrap.interval(mean), "ratio": bootstrap.interval(pooled)}


def compare_forcing(
    model: PreTrainedModel,
    tokenizer: Any,
    sets: Mapping[str, NeuronSet],
    stats: ActivationStats,
    languages: Sequence[str],
    n_questions: int = 2,
    decoding: Decoding = Decoding(max_new_tokens=24, repetition_penalty=1.2),
    identifier: str = "fasttext",
    replicates: int = 1000,
    seed: int = 0,
    out_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Language forcing with each set: `-src +tgt` (deactivate the prompt language's neurons, add the target's
    mean activations from `stats`) on the first `n_questions` built-in eval questions of every language, towards
    every other language the set has neurons for. Per set: success and fluent success over the off-diagonal
    prompts, with 95% bootstrap intervals over those prompts. With `out_dir`, each set's outputs are saved there
    (`forcing_<set>.json` and samples)."""
    from langneurons.data.prompts import STOP_STRINGS, questions
    from langneurons.steering.config import ForcingSetting
    from langneurons.tasks.forcing import run_forcing

    if n_questions <= 0:
        raise LangNeuronsError(f"n_questions must be positive, got {n_questions}")
    setting = ForcingSetting("add", 1.0, deactivate_source=True)
    question_set = {lang: questions(lang, "eval")[:n_questions] for lang in languages}
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, s in sets.items():
        result = run_forcing(model, tokenizer, s, stats, languages, languages, [setting], question_set=question_set,
                             baseline=False, decoding=decoding, identifier=identifier, nll=False,
                             skip_unavailable=True, progress=progress)
        if out_dir is not None:
            result.save(out_dir, f"forcing_{name}")
        rows = [r for r in result.samples if r["source"] != r["target"]]
        entry: dict[str, Any] = {"setting": setting.label(), "prompts": len(rows),
                                 "targets": sorted({r["target"] for r in rows}), "ci": {}}
        for metric in ("success", "fluent_success"):
            values = np.array([float(r[metric]) for r in rows])
            entry[metric] = round(float(values.mean()), 4) if rows else None
            entry["ci"][metric] = bootstrap.interval(values[bootstrap.resample(len(rows), replicates, rng)].mean(1)) \
                if rows else None
        out[name] = entry
    return {"languages": list(languages), "questions": n_questions, "identifier": identifier,
            "generation": decoding.record(tokenizer, STOP_STRINGS),
            "methods": out}


def _with_ci(value: float | None, ci: Sequence[float] | None, fmt: str = ".2f") -> str:
    if value is None:
        return "-"
    return f"{value:{fmt}}" + (f" [{ci[0]:{fmt}}, {ci[1]:{fmt}}]" if ci else "")


def selectivity_table(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per set: selectivity per language, their mean and the pooled ratio (own / others) with 95%
    intervals, and (when measured) the fluent success of forcing with its interval."""
    rows = []
    forcing = result.get("forcing", {}).get("methods", {})
    for name, m in result["methods"].items():
        per, ci = m["per_language"], m.get("ci", {})
        row: dict[str, Any] = {"set": name}
        for x in result["languages"]:
            value = per.get(x, {}).get("selectivity")
            row[x] = "-" if value is None else f"{value:.2f}"
        row["mean [95% CI]"] = _with_ci(m["mean_selectivity"], ci.get("mean_selectivity"))
        row["pooled [95% CI]"] = _with_ci(m.get("ratio"), ci.get("ratio"))
        if name in forcing:
            f = forcing[name]
            row["forcing fluent [95% CI]"] = _with_ci(f["fluent_success"], f["ci"].get("fluent_success"))
        rows.append(row)
    return rows


def _errors(values: np.ndarray, cis: Sequence[Sequence[float] | None]) -> np.ndarray:
    """Asymmetric error bars [2, n] from intervals (0 where there is none)."""
    out = np.zeros((2, len(values)))
    for i, (v, ci) in enumerate(zip(values, cis)):
        if ci is not None and not np.isnan(v):
            out[:, i] = [max(v - ci[0], 0.0), max(ci[1] - v, 0.0)]
    return out


def selectivity_bars(results: Sequence[Mapping[str, Any]], path: str | Path) -> list[Path]:
    """Grouped bars of selectivity per language (and the mean) per set with 95% intervals, one panel per model;
    log scale, a line at 1 (no selectivity); a last panel of forcing fluent success per set where it was
    measured. Languages without a selectivity (no neurons, or no loss increase elsewhere) are left empty.
    Writes PNG and SVG."""
    import matplotlib.pyplot as plt

    from langneurons.figures.charts import _save

    forced = [r for r in results if r.get("forcing")]
    panels = len(results) + len(forced)
    width = max(8.0, 1.0 + 0.75 * (len(results[0]["languages"]) + 1))
    fig, axes = plt.subplots(panels, 1, figsize=(width, 3.6 * panels), squeeze=False)
    for ax, result in zip(axes[:, 0], results):
        labels = [*result["languages"], "mean"]
        names = list(result["methods"])
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            m = result["methods"][name]
            ci = m.get("ci", {})
            values = [m["per_language"].get(x, {}).get("selectivity") for x in result["languages"]]
            values.append(m["mean_selectivity"])
            cis = [ci.get("selectivity", {}).get(x) for x in result["languages"]] + [ci.get("mean_selectivity")]
            heights = np.array([v if v is not None and v > 0 else np.nan for v in values], dtype=float)
            ax.bar(np.arange(len(labels)) + (i - (len(names) - 1) / 2) * width, heights, width, label=name,
                   yerr=_errors(heights, cis), error_kw={"elinewidth": 0.8, "capsize": 1.5})
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel("selectivity (own / others)")
        ax.set_title(f"Masking selectivity on {result['model']} (95% bootstrap intervals)")
        ax.legend(fontsize=8, frameon=False, ncol=len(names))
    for ax, result in zip(axes[len(results):, 0], forced):
        methods = result["forcing"]["methods"]
        names = list(methods)
        fluent = np.array([np.nan if methods[n]["fluent_success"] is None else methods[n]["fluent_success"]
                           for n in names])
        ax.bar(range(len(names)), fluent, 0.6, yerr=_errors(fluent, [methods[n]["ci"].get("fluent_success")
                                                                      for n in names]), capsize=3)
        ax.set_xticks(range(len(names)), names)
        ax.set_ylim(0, 1)
        ax.set_ylabel("fluent success")
        ax.set_title(f"Forcing ({next(iter(methods.values()))['setting'] if methods else ''}) on {result['model']}")
    fig.tight_layout()
    return _save(fig, path)


