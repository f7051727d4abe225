"""Benchmarks Belebele, XNLI and XQuAD: their data (Hugging Face hub or local JSONL) and the loop they share.

Data: `load_items(task, language, data)` reads the hub dataset (streaming) or local JSONL in the same schema
(a folder of `<lang>.jsonl` or `<config>.jsonl` files, or one file whose rows carry a "language" field or whose
name is the language), checks every row and returns items in one plain form per task.

Loop: `run_benchmark` scores every data language without steering ("baseline") and with each language of the
neuron set activated (`steer(..., "+Y")`, or a calibration's setting for Y), writes each sample to a resumable
JSONL as it goes, and summarises the metric per (data language, activated language) with its change from the
baseline: a JSON summary and a heatmap of the changes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from langneurons.cli_common import parse_languages, parse_layers
from langneurons.errors import LangNeuronsError
from langneurons.models import model_fingerprint, model_id
from langneurons.neurons import NeuronSet
from langneurons.stats import ActivationStats
from langneurons.steering import steer
from langneurons.tasks.results import SampleLog, run_metadata, write_results

# ISO 639-1 code -> Belebele (FLORES-200) config; a config name itself (e.g. "zho_Hant") is accepted as well.
BELEBELE_CONFIGS = {
    "af": "afr_Latn", "am": "amh_Ethi", "ar": "arb_Arab", "as": "asm_Beng", "az": "azj_Latn", "bg": "bul_Cyrl",
    "bm": "bam_Latn", "bn": "ben_Beng", "bo": "bod_Tibt", "ca": "cat_Latn", "cs": "ces_Latn", "da": "dan_Latn",
    "de": "deu_Latn", "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn",
    "fa": "pes_Arab", "ff": "fuv_Latn", "fi": "fin_Latn", "fr": "fra_Latn", "gn": "grn_Latn", "gu": "guj_Gujr",
    "ha": "hau_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "ht": "hat_Latn", "hu": "hun_Latn",
    "hy": "hye_Armn", "id": "ind_Latn", "ig": "ibo_Latn", "is": "isl_Latn", "it": "ita_Latn", "ja": "jpn_Jpan",
    "jv": "jav_Latn", "ka": "kat_Geor", "kk": "kaz_Cyrl", "km": "khm_Khmr", "kn": "kan_Knda", "ko": "kor_Hang",
    "ky": "kir_Cyrl", "lg": "lug_Latn", "ln": "lin_Latn", "lo": "lao_Laoo", "lt": "lit_Latn", "lv": "lvs_Latn",
    "mi": "mri_Latn", "mk": "mkd_Cyrl", "ml": "mal_Mlym", "mn": "khk_Cyrl", "mr": "mar_Deva", "ms": "zsm_Latn",
    "mt": "mlt_Latn", "my": "mya_Mymr", "nb": "nob_Latn", "ne": "npi_Deva", "nl": "nld_Latn", "no": "nob_Latn",
    "ny": "nya_Latn", "om": "gaz_Latn", "or": "ory_Orya", "pa": "pan_Guru", "pl": "pol_Latn", "ps": "pbt_Arab",
    "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl", "rw": "kin_Latn", "sd": "snd_Arab", "si": "sin_Sinh",
    "sk": "slk_Latn", "sl": "slv_Latn", "sn": "sna_Latn", "so": "som_Latn", "sq": "als_Latn", "sr": "srp_Cyrl",
    "ss": "ssw_Latn", "st": "sot_Latn", "sv": "swe_Latn", "sw": "swh_Latn", "ta": "tam_Taml", "te": "tel_Telu",
    "tg": "tgk_Cyrl", "th": "tha_Thai", "ti": "tir_Ethi", "tl": "tgl_Latn", "tn": "tsn_Latn", "tr": "tur_Latn",
    "ts": "tso_Latn", "uk": "ukr_Cyrl", "ur": "urd_Arab", "uz": "uzn_Latn", "vi": "vie_Latn", "wo": "wol_Latn",
    "xh": "xho_Latn", "yo": "yor_Latn", "zh": "zho_Hans", "zh-Hans": "zho_Hans", "zh-Hant": "zho_Hant",
    "zu": "zul_Latn",
}
XNLI_LANGUAGES = ("ar", "bg", "de", "el", "en", "es", "fr", "hi", "ru", "sw", "th", "tr", "ur", "vi", "zh")
XQUAD_LANGUAGES = ("ar", "de", "el", "en", "es", "hi", "ro", "ru", "th", "tr", "vi", "zh")
_FLORES_CONFIG = re.compile(r"^[a-z]{3}_[A-Z][a-z]{3}$")


# ----------------------------------------------------------------------------------------------------------
# Schemas: check a raw row, return the task's plain item


def _belebele_item(row: Mapping[str, Any]) -> dict[str, Any]:
    try:
        answer = int(str(row["correct_answer_num"]).strip())
    except ValueError:
        raise ValueError(f"correct_answer_num {row['correct_answer_num']!r} is not 1, 2, 3 or 4") from None
    if not 1 <= answer <= 4:
        raise ValueError(f"correct_answer_num {answer} is not 1, 2, 3 or 4")
    source = f"{row['link']}#{row['question_number']}" if "link" in row and "question_number" in row else None
    return {"passage": _text(row, "flores_passage"), "question": _text(row, "question"),
            "options": [_text(row, f"mc_answer{k}") for k in range(1, 5)], "answer": answer - 1, "source_id": source}


def _xnli_item(row: Mapping[str, Any]) -> dict[str, Any]:
    label = row["label"]
    if isinstance(label, bool) or not isinstance(label, int) or label not in (0, 1, 2):
        raise ValueError(f"label {label!r} is not 0 (entailment), 1 (neutral) or 2 (contradiction)")
    return {"premise": _text(row, "premise"), "hypothesis": _text(row, "hypothesis"), "label": label,
            "source_id": None}


def _xquad_item(row: Mapping[str, Any]) -> dict[str, Any]:
    answers = row["answers"]
    texts = answers.get("text") if isinstance(answers, Mapping) else None
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError('answers must be {"text": ["...", ...], "answer_start": [...]} with at least one answer')
    return {"context": _text(row, "context"), "question": _text(row, "question"), "answers": texts,
            "source_id": row.get("id")}


def _text(row: Mapping[str, Any], name: str) -> str:
    value = row[name]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"field '{name}' must be a non-empty string")
    return value


@dataclass(frozen=True)
class Benchmark:
    """Where a benchmark lives on the hub, which fields its rows need, and how a language names its config."""

    name: str
    hub_id: str
    split: str
    fields: tuple[str, ...]
    parse: Callable[[Mapping[str, Any]], dict[str, Any]]
    languages: tuple[str, ...]

    def config(self, language: str) -> str:
        """The hub config of `language` (ISO 639-1), or a clear error naming the known ones."""
        if self.name == "belebele":
            if language in BELEBELE_CONFIGS:
                return BELEBELE_CONFIGS[language]
            if _FLORES_CONFIG.match(language):
                return language
        elif language in self.languages:
            return f"xquad.{language}" if self.name == "xquad" else language
        raise LangNeuronsError(
            f"{self.name} has no language '{language}'; use one of {', '.join(self.languages)}"
            + (" or a config such as eng_Latn" if self.name == "belebele" else "")
        )


BENCHMARKS = {
    "belebele": Benchmark("belebele", "facebook/belebele", "test",
                          ("flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3", "mc_answer4",
                           "correct_answer_num"), _belebele_item, tuple(BELEBELE_CONFIGS)),
    "xnli": Benchmark("xnli", "facebook/xnli", "test", ("premise", "hypothesis", "label"), _xnli_item,
                      XNLI_LANGUAGES),
    "xquad": Benchmark("xquad", "google/xquad", "validation", ("context", "question", "answers"), _xquad_item,
                       XQUAD_LANGUAGES),
}


# ----------------------------------------------------------------------------------------------------------
# Loading


def load_items(task: str, language: str, data: str | Path = "hub", n: int | None = None,
               split: str | None = None) -> list[dict[str, Any]]:
    """The first `n` items (all if None) of `task` in `language`, from the hub or from local JSONL (`data`)."""
    if task not in BENCHMARKS:
        raise LangNeuronsError(f"unknown benchmark {task!r}; use one of {', '.join(BENCHMARKS)}")
    if n is not None and n < 1:
        raise LangNeuronsError(f"n={n}; ask for at least one item")
    bench = BENCHMARKS[task]
    if str(data) == "hub":
        where, rows = f"{bench.hub_id} ({bench.config(language)})", _hub_rows(bench, language, split)
    else:
        path = _local_file(bench, language, Path(data))
        where, rows = str(path), _local_rows(path, language, _file_names(bench, language))
    items = []
    for number, row in itertools.islice(rows, n):
        missing = [f for f in bench.fields if f not in row]
        if missing:
            raise LangNeuronsError(f"{where} row {number}: missing field '{missing[0]}'; {task} rows need "
                                   f"{', '.join(bench.fields)}")
        try:
            items.append(bench.parse(row))
        except ValueError as e:
            raise LangNeuronsError(f"{where} row {number}: {e}; fix the row") from None
    if not items:
        raise LangNeuronsError(f"{where}: no {task} rows for language '{language}'; check the data")
    return items


def _hub_rows(bench: Benchmark, language: str, split: str | None) -> Iterator[tuple[int, Mapping[str, Any]]]:
    config = bench.config(language)
    try:
        import datasets
    except ImportError:
        raise LangNeuronsError(f"{bench.name} from the hub needs `datasets`; pip install 'langneurons[hf]', "
                               "or pass --data with local JSONL files") from None
    try:
        rows = datasets.load_dataset(bench.hub_id, config, split=split or bench.split, streaming=True)
        yield from enumerate(rows, 1)
    except Exception as e:  # datasets raises many types for a missing config, split or connection
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LangNeuronsError(f"could not load {bench.hub_id} ({config}, split {split or bench.split}): {reason}; "
                               "check your connection, or pass --data with local JSONL files") from None


def _local_file(bench: Benchmark, language: str, path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise LangNeuronsError(f"{path}: no such file or folder; pass --data hub, a folder of <lang>.jsonl files "
                               "or one .jsonl file")
    names = _file_names(bench, language)
    for name in names:
        if (path / f"{name}.jsonl").is_file():
            return path / f"{name}.jsonl"
    raise LangNeuronsError(f"{path}: no {' or '.join(f'{x}.jsonl' for x in names)}; add one file per language")


def _file_names(bench: Benchmark, language: str) -> list[str]:
    """The names a local file of `language` may have (without .jsonl): the code, and the hub config if any."""
    names = [language]
    with contextlib.suppress(LangNeuronsError):  # a language the hub lacks may still have a local file
        names.append(bench.config(language))
    return names


def _local_rows(path: Path, language: str, names: Sequence[str]) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """Rows of a JSONL file; rows with a "language" field are kept only for `language`, rows without one only
    when the file is named after the language (`names`)."""
    try:
        with open(path, encoding="utf-8") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise LangNeuronsError(f"{path}:{number}: not valid JSON; write one object per line") from None
                if not isinstance(row, dict):
                    raise LangNeuronsError(f"{path}:{number}: not a JSON object; write one object per line")
                if "language" in row:
                    if row["language"] == language:
                        yield number, row
                elif path.stem in names:
                    yield number, row
                else:
                    raise LangNeuronsError(f"{path}:{number}: no 'language' field and the file is not named "
                                           f"{language}.jsonl; add \"language\" to each row or rename the file")
    except UnicodeDecodeError:
        raise LangNeuronsError(f"{path}: not UTF-8 text; convert it to UTF-8") from None


# ----------------------------------------------------------------------------------------------------------
# Steering per activated language


@dataclass
class SteerOptions:
    """How each activated language Y is steered in: `steer(model, neurons, stats, "+Y", method, alpha, ...)`, or
    with `calibrated` (a `Calibration` or its file) Y's calibrated setting. `deactivate_source` also deactivates
    the data language's neurons ("-X +Y") when it has any and differs from Y."""

    method: str = "add"
    alpha: float | None = None
    value: float = 0.0
    layers: tuple[int, int] | None = None
    generated_only: bool = False
    deactivate_source: bool = False
    calibrated: Any = None

    def expression(self, data_language: str, activated: str, neurons: NeuronSet | None) -> str:
        """The steering expression of one cell, e.g. "+fr" or "-de +fr"."""
        has_neurons = neurons is not None and data_language in neurons.languages and neurons.count(data_language) > 0
        # a calibration picks its own neuron share and leaves out languages without neurons there
        source = self.deactivate_source and data_language != activated and (has_neurons or self.calibrated is not None)
        return f"-{data_language} +{activated}" if source else f"+{activated}"

    def context(self, model: torch.nn.Module, neurons: NeuronSet | None, stats: ActivationStats | None,
                data_language: str, activated: str | None) -> AbstractContextManager:
        """The steering block of one cell (nothing for the baseline)."""
        if activated is None:
            return nullcontext()
        return steer(model, neurons, stats, self.expression(data_language, activated, neurons), method=self.method,
                     alpha=self.alpha, value=self.value, layers=self.layers, generated_only=self.generated_only,
                     calibrated=self.calibrated)

    def to_dict(self) -> dict[str, Any]:
        cal = self.calibrated
        return {"method": self.method, "alpha": self.alpha, "value": self.value,
                "layers": list(self.layers) if self.layers else None, "generated_only": self.generated_only,
                "deactivate_source": self.deactivate_source,
                "calibrated": None if cal is None else str(cal) if isinstance(cal, str | Path)
                else {target: asdict(s) for target, s in cal.settings.items()}}


def _digest(*tensors: torch.Tensor | None) -> str:
    h = hashlib.sha256()
    for t in tensors:
        if t is not None:
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# The shared loop


@dataclass
class BenchmarkResult:
    """Metric per (data language, condition): condition "baseline" or an activated language."""

    task: str
    metrics: tuple[str, ...]  # the first is the one the heatmap shows
    languages: list[str]
    activated: list[str]
    scores: dict[str, dict[str, dict[str, float]]]  # data language -> condition -> metric (and "n") -> value
    settings: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def delta(self, metric: str | None = None) -> np.ndarray:
        """[data language, activated language] change of `metric` (default: the first) from the baseline."""
        metric = metric or self.metrics[0]
        return np.array([[self.scores[x][y][metric] - self.scores[x]["baseline"][metric] for y in self.activated]
                         for x in self.languages], dtype=float).reshape(len(self.languages), len(self.activated))

    def summary(self) -> dict[str, Any]:
        """Scores, changes from the baseline, and the mean change on the diagonal (X = Y) and off it."""
        out: dict[str, Any] = {"metrics": list(self.metrics), "languages": self.languages,
                               "activated": self.activated, "scores": self.scores, "delta": {}}
        for metric in self.metrics:
            d = self.delta(metric)
            diag = [d[i, self.activated.index(x)] for i, x in enumerate(self.languages) if x in self.activated]
            off = [d[i, j] for i, x in enumerate(self.languages) for j, y in enumerate(self.activated) if x != y]
            out["delta"][metric] = {
                "table": {x: {y: round(float(d[i, j]), 4) for j, y in enumerate(self.activated)}
                          for i, x in enumerate(self.languages)},
                "mean_diagonal": round(float(np.mean(diag)), 4) if diag else None,
                "mean_off_diagonal": round(float(np.mean(off)), 4) if off else None,
            }
        return out

    def table(self, metric: str | None = None) -> str:
        """A plain-text table: baseline and the change under each activated language, per data language."""
        metric = metric or self.metrics[0]
        d = self.delta(metric)
        head = f"{metric:>14s} {'baseline':>9s} " + " ".join(f"{'+' + y:>7s}" for y in self.activated)
        lines = [head] + [f"{x:>14s} {self.scores[x]['baseline'][metric]:9.3f} "
                          + " ".join(f"{v:+7.3f}" for v in d[i]) for i, x in enumerate(self.languages)]
        return "\n".join(lines)


def run_benchmark(
    task: str,
    model: torch.nn.Module,
    neurons: NeuronSet | None,
    stats: ActivationStats | None,
    items: Mapping[str, Sequence[dict[str, Any]]],
    evaluate: Callable[[str, Sequence[dict[str, Any]]], list[dict[str, Any]]],
    metrics: Mapping[str, str],
    settings: Mapping[str, Any],
    output_dir: str | Path,
    activate: Sequence[str] | None = None,
    steering: SteerOptions | None = None,
    chunk_size: int = 32,
    fresh: bool = False,
    progress: bool = True,
) -> BenchmarkResult:
    """Evaluate `items[X]` for every data language X at baseline and with each language of `activate` steered in.

    `evaluate(X, chunk)` returns one row per item with at least the fields named by `metrics` (metric name ->
    row field, averaged over items). Rows are appended to `<task>_samples.jsonl` (keyed by data language,
    activated language and item index) as each chunk finishes, so a rerun with the same settings only computes
    what is missing. `activate` defaults to the neuron set's languages that have neurons (or the calibrated
    targets). Writes `<task>.json` (via `write_results`) and `<task>_delta.png/.svg`.
    """
    steering = steering or SteerOptions()
    if isinstance(steering.calibrated, str | Path):
        from langneurons.calibrate import Calibration

        steering = replace(steering, calibrated=Calibration.load(steering.calibrated))
    activated = _activated(neurons, steering, activate)
    languages = list(items)
    if not languages:
        raise LangNeuronsError("no data languages; pass at least one language")
    full = {**settings, "task": task, "languages": languages, "activated": activated,
            "steering": steering.to_dict(), "model": model_id(model), "model_fingerprint": model_fingerprint(model),
            "neurons": None if neurons is None else {"method": neurons.meta.get("method"),
                                                     "settings": neurons.meta.get("settings"),
                                                     "digest": _digest(neurons.masks)},
            "stats": None if stats is None else {"languages": stats.languages,
                                                 "digest": _digest(stats.n_tokens, stats.sum, stats.hidden_sum)}}
    # what decides a sample's content: not the languages or n (rows are keyed by language and item index)
    identity = {k: v for k, v in full.items() if k not in ("languages", "activated", "n", "batch_size")}
    out = Path(output_dir)
    log = SampleLog(out / f"{task}_samples.jsonl", ("language", "activated", "index"), identity, fresh=fresh)
    conditions: list[str | None] = [None, *activated]
    todo = [(x, y, [dict(it, index=i) for i, it in enumerate(items[x])
                    if {"language": x, "activated": y, "index": i} not in log])
            for x in languages for y in conditions]
    bar = tqdm(total=sum(len(t[2]) for t in todo), desc=task, disable=not progress)
    for x, y, pending in todo:
        for start in range(0, len(pending), chunk_size):
            chunk = pending[start : start + chunk_size]
            with steering.context(model, neurons, stats, x, y):
                rows = evaluate(x, chunk)
            label = None if y is None else steering.expression(x, y, neurons)
            log.add([{"language": x, "activated": y, "index": it["index"], "steering": label, **row}
                      for it, row in zip(chunk, rows)])
            bar.update(len(chunk))
    bar.close()
    scores: dict[str, dict[str, dict[str, float]]] = {}
    for x in languages:
        scores[x] = {}
        for y in conditions:
            rows = [log.get({"language": x, "activated": y, "index": i}) for i in range(len(items[x]))]
            scores[x][y or "baseline"] = {
                **{m: round(float(np.mean([float(r[f]) for r in rows])), 4) for m, f in metrics.items()},
                "n": len(rows)}
    result = BenchmarkResult(task, tuple(metrics), languages, activated, scores, full)
    result.files = _save(result, model, out)
    return result


def _activated(neurons: NeuronSet | None, steering: SteerOptions, activate: Sequence[str] | None) -> list[str]:
    """The languages to steer in, checked against the neuron set or calibration."""
    cal = steering.calibrated
    if activate is None:
        if cal is not None:
            return list(cal.settings)
        if neurons is None:
            return []
        return [lang for lang in neurons.languages if neurons.count(lang) > 0]
    activate = list(activate)
    if len(set(activate)) != len(activate):
        raise LangNeuronsError(f"activate={activate} names a language twice; name each once")
    if activate and neurons is None and cal is None:
        raise LangNeuronsError("activating languages needs a neuron set (--neurons) or a calibration (--calibrated)")
    for lang in activate:
        if cal is not None:
            cal.setting(lang)
        elif lang not in neurons.languages or neurons.count(lang) == 0:
            raise LangNeuronsError(f"language '{lang}' has no neurons in this set ({', '.join(neurons.languages)}); "
                                   "leave it out of --activate")
    return activate


def _save(result: BenchmarkResult, model: torch.nn.Module, out: Path) -> dict[str, Path]:
    files = {"json": write_results(out / f"{result.task}.json", run_metadata(model, result.task, result.settings),
                                   result.summary()),
             "samples": out / f"{result.task}_samples.jsonl"}
    if result.activated:
        from langneurons.plots import heatmap

        metric = result.metrics[0]
        d = result.delta(metric)
        bound = float(np.abs(d).max()) or 1.0
        png, _ = heatmap(d, result.languages, [f"+{y}" for y in result.activated], out / f"{result.task}_delta.png",
                         f"{result.task}: change in {metric} from the baseline", "data language",
                         "activated language", fmt="{:+.2f}", vmin=-bound, vmax=bound, cmap="RdBu")
        files["heatmap"] = png
    return files


# ----------------------------------------------------------------------------------------------------------
# Command-line options shared by the three tasks


def pick_template(template: str, named: Mapping[str, str]) -> str:
    """A named template's text, or `template` itself when it is a format string of its own."""
    if template in named:
        return named[template]
    if "{" not in template:
        raise LangNeuronsError(f"unknown template {template!r}; use {', '.join(named)} or a format string")
    return template


def add_benchmark_options(p: argparse.ArgumentParser, default_n: int, batch_size: int = 8) -> None:
    """--languages, --activate, --data, --n, --split, --deactivate-source, --batch-size, --output-dir, --fresh,
    --quiet."""
    p.add_argument("--languages", required=True, help="data languages, comma-separated ISO 639-1 codes (e.g. en,de)")
    p.add_argument("--activate", help="languages to steer in, comma-separated (default: every language of the "
                                      "neuron set that has neurons, or the calibrated targets); 'none': baseline only")
    p.add_argument("--data", default="hub", help="'hub' (Hugging Face datasets, streaming) or local JSONL in the "
                                                 "hub schema: a folder of <lang>.jsonl files, or one .jsonl file")
    p.add_argument("--n", type=int, default=default_n, help=f"items per language (default {default_n}; 0: all)")
    p.add_argument("--split", help="dataset split on the hub (default: the benchmark's test split)")
    p.add_argument("--deactivate-source", action="store_true",
                   help="also deactivate the data language's neurons when steering another language in ('-X +Y')")
    p.add_argument("--batch-size", type=int, default=batch_size, help=f"rows per forward pass (default {batch_size})")
    p.add_argument("--output-dir", help="results folder (default runs/TASK)")
    p.add_argument("--fresh", action="store_true", help="start the samples file over instead of resuming it")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def benchmark_inputs(args: argparse.Namespace) -> tuple[list[str], list[str] | None, SteerOptions]:
    """Data languages, activated languages (None: the default) and steering options from the parsed arguments."""
    languages = parse_languages(args.languages)
    if not languages:
        raise LangNeuronsError("--languages is empty; name at least one data language, e.g. --languages en,de")
    activate = [] if (args.activate or "").strip() == "none" else parse_languages(args.activate)
    steering = SteerOptions(method=args.method, alpha=args.alpha, value=args.value, layers=parse_layers(args.layers),
                            generated_only=getattr(args, "generated_only", False),
                            deactivate_source=args.deactivate_source, calibrated=args.calibrated)
    return languages, activate, steering
