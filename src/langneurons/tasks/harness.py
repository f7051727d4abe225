"""lm-evaluation-harness with steering: every harness task, baseline and steered, from one loaded model.

`lm_eval_model(model, tokenizer, steering)` wraps a loaded model in the harness's HF model class (`HFLM`) so that
every forward pass it makes (log-likelihoods and `generate_until`) runs inside our steering; `lm_eval.simple_evaluate`
takes it like any harness model. `run_lm_eval` evaluates a list of harness tasks unsteered and under each steering,
writes the harness's results JSON for each, and our results summary (kind `results`: scores, the change from the
baseline per task, a heatmap of the changes) for the report.

Local data: Belebele, XNLI and XQuAD tasks can read local JSONL files in the hub's schema (`data=DIR`): a task named
`belebele_X`, `xnli_X` or `xquad_X` reads `DIR/<belebele|xnli|xquad>/X.jsonl` through the task YAMLs shipped in
`langneurons/data/lm_eval/` (`dataset_path: json`), with the harness's prompts and metrics (XQuAD: ours, see
`langneurons.tasks.xquad`). Every other task name goes to the harness as it is (its data from the hub).

Needs the optional extra: `pip install 'langneurons[lm-eval]'`.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from langneurons.core.artifacts import write_json
from langneurons.core.errors import LangNeuronsError
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import SteeringConfig
from langneurons.steering.edits import Steering, build_steering
from langneurons.tasks.results import run_metadata, write_results

if TYPE_CHECKING:
    from transformers import PreTrainedModel

INSTALL = "pip install 'langneurons[lm-eval]'"
# the fields every row of a local file needs (the hub's schema)
LOCAL_FIELDS = {
    "belebele": ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4",
                 "correct_answer_num"),
    "xnli": ("premise", "hypothesis", "label"),
    "xquad": ("context", "question", "answers"),
}
LOCAL_FAMILIES = tuple(LOCAL_FIELDS)
_LOCAL_NAME = re.compile(r"^(belebele|xnli|xquad)_([A-Za-z0-9_-]+)$")

SteeringSpec = Steering | SteeringConfig | str | Path


def _harness() -> Any:
    """The `lm_eval` package, or a one-line error naming the extra to install."""
    try:
        import lm_eval
        import lm_eval.models.huggingface
    except ImportError as e:
        raise LangNeuronsError(f"the lm-eval path needs lm-evaluation-harness ({e}); {INSTALL}") from None
    return lm_eval


# ----------------------------------------------------------------------------------------------------------
# The steered model


@functools.cache
def _steered_class() -> type:
    """The harness's HFLM, with every model call inside a steering (defined once the harness is imported)."""
    from lm_eval.models.huggingface import HFLM

    class SteeredHFLM(HFLM):
        """HFLM over an already loaded model whose forward passes (`_model_call`, `_model_generate`) run with
        `self.steering`'s hooks attached (None: unsteered, the plain HFLM)."""

        def __init__(self, model: PreTrainedModel, tokenizer: Any, steering: Steering | None, **kwargs: Any):
            super().__init__(pretrained=model, tokenizer=tokenizer, **kwargs)
            self.steering = steering

        @contextmanager
        def _steered(self) -> Iterator[None]:
            if self.steering is None:
                yield
                return
            self.steering.attach()
            try:
                yield
            finally:
                self.steering.remove()

        def _model_call(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            with self._steered():
                return super()._model_call(*args, **kwargs)

        def _model_generate(self, *args: Any, **kwargs: Any) -> torch.Tensor:
            with self._steered():
                return super()._model_generate(*args, **kwargs)

        def get_model_info(self) -> dict[str, Any]:
            from langneurons.core.models import model_id

            info = {k: v for k, v in super().get_model_info().items() if v != ""}
            steering = None if self.steering is None else self.steering.config.describe()
            return {**info, "model_id": model_id(self.model), "langneurons_steering": steering}

    return SteeredHFLM


def compile_steering(model: PreTrainedModel, steering: SteeringSpec | None, neurons: NeuronSet | None = None,
                     stats: ActivationStats | None = None, calibrated: Any = None, **options: Any) -> Steering | None:
    """A compiled `Steering` from a `Steering`, a `SteeringConfig`, a saved settings file (`*.json`) or an
    expression such as '+de' (with `calibrated`: the calibration's setting for its target); None stays None."""
    if steering is None or isinstance(steering, Steering):
        return steering
    if isinstance(steering, SteeringConfig):
        return build_steering(model, neurons, stats, config=steering)
    if isinstance(steering, Path) or steering.endswith(".json"):
        return build_steering(model, neurons, stats, config=SteeringConfig.load(steering))
    return build_steering(model, neurons, stats, steering, calibrated=calibrated, **options)


def lm_eval_model(model: PreTrainedModel, tokenizer: Any, steering: SteeringSpec | None = None, *,
                  neurons: NeuronSet | None = None, stats: ActivationStats | None = None, calibrated: Any = None,
                  batch_size: int = 8, max_length: int | None = None, **options: Any) -> Any:
    """A harness model (an `lm_eval` `HFLM`) over `model` whose every forward pass runs inside `steering`.

    `steering`: a `Steering`, a `SteeringConfig`, a settings file written by `SteeringConfig.save`, or an
    expression like '-en +de' (with `neurons`, `stats`, `calibrated` and the keywords of `build_steering`:
    method=, alpha=, ...); None: unsteered. Pass the result to `lm_eval.simple_evaluate(model=...)`.
    """
    _harness()
    compiled = compile_steering(model, steering, neurons, stats, calibrated, **options)
    return _steered_class()(model, tokenizer, compiled, batch_size=batch_size, max_length=max_length)


# ----------------------------------------------------------------------------------------------------------
# Local task configs


def local_task(name: str, data: str | Path) -> dict[str, Any]:
    """The harness config of task `name` (belebele_X, xnli_X or xquad_X) over the local file DATA/<family>/X.jsonl."""
    m = _LOCAL_NAME.match(name)
    if not m:
        raise LangNeuronsError(f"task {name!r} has no local form; local tasks are "
                               f"{', '.join(f + '_X' for f in LOCAL_FAMILIES)} (X: the file DATA/<family>/X.jsonl)")
    family, suffix = m.groups()
    path = Path(data) / family / f"{suffix}.jsonl"
    if not path.is_file():
        raise LangNeuronsError(f"{path}: no such file; put {family} rows for {name} there, or leave --data out "
                               "to read the task from the hub")
    _check_rows(path, family)
    import yaml

    text = resources.files("langneurons").joinpath(f"data/lm_eval/{family}.yaml").read_text("utf-8")
    config = yaml.safe_load(text)
    config["task"] = name
    config["dataset_kwargs"] = {"data_files": {"test": str(path.resolve())}}
    if family == "xnli":
        config["doc_to_choice"] = _xnli_choices(suffix)
    elif family == "xquad":
        from langneurons.tasks.xquad import process_results

        config["process_results"] = functools.partial(process_results, language=suffix.split("_")[0])
    return config


def _check_rows(path: Path, family: str) -> None:
    """One-line errors for what the harness would only trip over mid-run: bad JSON, missing fields, bad labels."""
    fields, rows = LOCAL_FIELDS[family], 0
    try:
        lines = path.read_text("utf-8").splitlines()
    except UnicodeDecodeError:
        raise LangNeuronsError(f"{path}: not UTF-8 text; convert it to UTF-8") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise LangNeuronsError(f"{path}:{number}: not a JSON object; write one object per line")
        missing = [f for f in fields if f not in row]
        if missing:
            raise LangNeuronsError(f"{path}:{number}: missing field '{missing[0]}'; {family} rows need "
                                   f"{', '.join(fields)}")
        label, allowed = {"belebele": (row.get("correct_answer_num"), ("1", "2", "3", "4")),
                          "xnli": (row.get("label"), ("0", "1", "2"))}.get(family, (None, None))
        if allowed and str(label) not in allowed:
            raise LangNeuronsError(f"{path}:{number}: {fields[-1]} {label!r} is not one of {', '.join(allowed)}; "
                                   "fix the row")
        if family == "xquad" and not (isinstance(row["answers"], dict) and row["answers"].get("text")):
            raise LangNeuronsError(f"{path}:{number}: answers needs a non-empty 'text' list; fix the row")
        rows += 1
    if not rows:
        raise LangNeuronsError(f"{path}: no rows; add {family} rows, one JSON object per line")


def _xnli_choices(language: str) -> str:
    """The harness's XNLI options of `language`: "premise, right? Yes|Also|No, hypothesis" in that language."""
    from lm_eval.tasks.xnli.utils import LANGUAGES

    if language not in LANGUAGES:
        raise LangNeuronsError(f"xnli has no label words for '{language}'; name the file after one of "
                               f"{', '.join(LANGUAGES)}")
    w = LANGUAGES[language]
    q = w["QUESTION_WORD"]
    options = [f'premise+", {q}? {w[label]}, "+hypothesis'
               for label in ("ENTAILMENT_LABEL", "NEUTRAL_LABEL", "CONTRADICTION_LABEL")]
    return "{{[" + ",".join(options) + "]}}"


def task_specs(tasks: Sequence[str], data: str | Path | None) -> list[str | dict[str, Any]]:
    """What the harness is given: with `data`, local configs for belebele_/xnli_/xquad_ tasks; names otherwise."""
    if not tasks:
        raise LangNeuronsError("no tasks; name harness tasks, e.g. --tasks belebele_deu_Latn,xnli_de")
    if len(set(tasks)) != len(tasks):
        raise LangNeuronsError(f"tasks {list(tasks)} name a task twice; name each once")
    if data is not None and not Path(data).is_dir():
        raise LangNeuronsError(f"--data {data}: no such folder; give a folder with belebele/, xnli/ or xquad/ "
                               "holding <X>.jsonl files")
    return [local_task(t, data) if data is not None and _LOCAL_NAME.match(t) else t for t in tasks]


# ----------------------------------------------------------------------------------------------------------
# Baseline vs steered


@dataclass
class HarnessResult:
    """Harness metrics per (task, condition): condition "baseline" or a steering's label."""

    tasks: list[str]
    conditions: list[str]  # "baseline" first
    scores: dict[str, dict[str, dict[str, float]]]  # task -> condition -> metric -> value
    metric: dict[str, str]  # task -> its main metric (the table's and heatmap's)
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def steered(self) -> list[str]:
        return self.conditions[1:]

    def delta(self) -> np.ndarray:
        """[task, steered condition] change of each task's main metric from the baseline."""
        return np.array([[self.scores[t][c][self.metric[t]] - self.scores[t]["baseline"][self.metric[t]]
                          for c in self.steered] for t in self.tasks], dtype=float).reshape(len(self.tasks), -1)

    def summary(self) -> dict[str, Any]:
        d = self.delta()
        return {"tasks": self.tasks, "conditions": self.conditions, "metric": self.metric, "scores": self.scores,
                "delta": {t: {c: round(float(d[i, j]), 4) for j, c in enumerate(self.steered)}
                          for i, t in enumerate(self.tasks)},
                "mean_delta": {c: round(float(d[:, j].mean()), 4) for j, c in enumerate(self.steered)}}

    def table(self) -> str:
        """Plain text: each task's main metric at baseline and its change under each steering."""
        d = self.delta()
        width = max(len(t) for t in self.tasks) + 2
        head = f"{'task':<{width}}{'metric':>12s} {'baseline':>9s} " + " ".join(f"{c:>12s}" for c in self.steered)
        return "\n".join([head] + [f"{t:<{width}}{self.metric[t]:>12s} "
                                   f"{self.scores[t]['baseline'][self.metric[t]]:9.3f} "
                                   + " ".join(f"{v:+12.3f}" for v in d[i]) for i, t in enumerate(self.tasks)])


def _metrics(task_results: Mapping[str, Any]) -> dict[str, float]:
    """A harness task's metrics ("acc,none" -> "acc"; other filters keep their name), without standard errors."""
    out = {}
    for key, value in task_results.items():
        if "," not in key or "_stderr," in key or not isinstance(value, int | float) or isinstance(value, bool):
            continue
        name, filt = key.split(",", 1)
        out[name if filt == "none" else key] = round(float(value), 4)
    return out


def _main_metric(metrics: Mapping[str, float]) -> str:
    for name in ("acc", "f1", "exact_match", "acc_norm"):
        if name in metrics:
            return name
    return next(iter(metrics))


def _label(steering: SteeringSpec) -> str:
    """A steering's name in the results: the file or expression as given, else its settings described."""
    if isinstance(steering, (str, Path)):
        return str(steering)
    return (steering if isinstance(steering, SteeringConfig) else steering.config).describe()


def run_lm_eval(
    model: PreTrainedModel,
    tokenizer: Any,
    tasks: Sequence[str],
    steerings: Sequence[SteeringSpec],
    neurons: NeuronSet | None = None,
    stats: ActivationStats | None = None,
    calibrated: Any = None,
    data: str | Path | None = None,
    limit: int | float | None = None,
    num_fewshot: int | None = None,
    batch_size: int = 8,
    output_dir: str | Path = "runs/lm-eval",
    log_samples: bool = False,
    progress: bool = True,
    **options: Any,
) -> HarnessResult:
    """Evaluate harness `tasks` unsteered and under each of `steerings` (see `lm_eval_model`).

    Writes `harness_baseline.json` and `harness_steered<i>.json` (the harness's results, as `lm_eval` writes them),
    `lm-eval.json` (kind `results`: every metric per task and condition, the change of each task's main metric
    from the baseline) and `lm-eval_delta.png/.svg`. `data`: a folder with belebele/, xnli/, xquad/ JSONL files
    for the tasks named after them; `limit`: the first items per task.
    """
    lm_eval = _harness()
    from lm_eval.tasks import TaskManager
    from lm_eval.utils import handle_non_serializable

    specs = task_specs(list(tasks), data)
    compiled = [compile_steering(model, s, neurons, stats, calibrated, **options) for s in steerings]
    labels = [_label(s) for s in steerings]
    if len(set(labels)) != len(labels):
        raise LangNeuronsError(f"steerings {labels} repeat one; give each once")
    if not progress:
        logging.getLogger("lm_eval").setLevel(logging.WARNING)
    manager = TaskManager(include_defaults=any(isinstance(s, str) for s in specs))  # indexing all: seconds
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    raw: dict[str, dict[str, Any]] = {}
    files: dict[str, Path] = {}
    for i, (label, steering) in enumerate(zip(["baseline", *labels], [None, *compiled])):
        lm = _steered_class()(model, tokenizer, steering, batch_size=batch_size)
        results = lm_eval.simple_evaluate(model=lm, tasks=specs, num_fewshot=num_fewshot, limit=limit,
                                          task_manager=manager, log_samples=log_samples)
        if results is None:  # a non-zero rank of a distributed run
            raise LangNeuronsError("the harness returned no results on this process; run on one process")
        name = "harness_baseline.json" if i == 0 else f"harness_steered{i}.json"
        files[label] = out / name
        write_json(files[label], json.loads(json.dumps(results, default=handle_non_serializable,
                                                       ensure_ascii=False)))
        raw[label] = results["results"]
    names = [t for t in raw["baseline"] if _metrics(raw["baseline"][t])]  # a group without its own metrics: none
    scores = {t: {c: _metrics(raw[c][t]) for c in raw} for t in names}
    result = HarnessResult(names, list(raw), scores, {t: _main_metric(scores[t]["baseline"]) for t in names})
    settings = {"tasks": list(tasks), "data": None if data is None else str(data), "limit": limit,
                "num_fewshot": num_fewshot, "batch_size": batch_size, "lm_eval": lm_eval.__version__,
                "steerings": {label: s.config.to_dict() for label, s in zip(labels, compiled) if s is not None},
                "neurons": None if neurons is None else neurons.meta.get("method"),
                "harness_files": {c: p.name for c, p in files.items()}}
    result.files = {"json": write_results(out / "lm-eval.json", run_metadata(model, "lm-eval", settings),
                                          result.summary()), **{f"harness {c}": p for c, p in files.items()}}
    if result.steered:
        from langneurons.figures.charts import heatmap

        d = result.delta()
        bound = float(np.abs(d).max()) or 1.0
        png, _ = heatmap(d, names, result.steered, out / "lm-eval_delta.png",
                         "lm-eval: change of each task's main metric from the baseline", "task", "steering",
                         fmt="{:+.2f}", vmin=-bound, vmax=bound, cmap="RdBu")
        result.files["heatmap"] = png
    return result


# ----------------------------------------------------------------------------------------------------------
# Command line


