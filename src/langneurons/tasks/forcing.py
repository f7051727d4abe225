"""Language forcing: ask in one language, steer towards another, and check the answer's language.

A source x target grid of built-in (or user) questions, asked through the chat template of an instruct model
(`--prompt-format auto`, the default, when the tokenizer has one) or in the `Q: ...\\nA:` frame. Success of one
output: the identifier says it is in the target language. Fluent success: also not empty, at least half of its
token bigrams distinct and no repeated line pattern. The mean NLL of each output under the unsteered model is
recorded beside.
"""


from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from langneurons.core.artifacts import atomic_path
from langneurons.core.distributed import is_main
from langneurons.core.errors import LangNeuronsError, warn
from langneurons.core.models import model_id
from langneurons.core.provenance import model_meta
from langneurons.data.prompts import STOP_STRINGS, question_prompt, questions
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import ForcingSetting, SteeringConfig
from langneurons.steering.generation import Decoding, generate
from langneurons.tasks.fluency import continuation_nll, distinct_bigram_share, is_fluent
from langneurons.tasks.lid import get_identifier
from langneurons.tasks.results import FORCING_KIND, write_kind

SUCCESS_RULE = ("identified language == target (confidence above the identifier's floor, label fits the script) "
                "and not empty; fluent: and distinct-bigram share >= 0.5 and no repeated line pattern")


@dataclass
class ForcingResult:
    """Every output (`samples`) and the settings; cell and target summaries are computed from the samples."""

    settings: dict[str, Any]
    samples: list[dict[str, Any]] = field(default_factory=list)

    def cells(self, label: str) -> dict[tuple[str, str], dict[str, float | None]]:
        """Per (source, target) of one steering setting: success, fluent success and the guards."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for s in self.samples:
            if s["setting"] == label:
                groups.setdefault((s["source"], s["target"]), []).append(s)
        return {key: _summarise(rows) for key, rows in groups.items()}

    def summary(self) -> dict[str, Any]:
        """Per setting: mean off-diagonal success and fluent success, per target and overall."""
        out: dict[str, Any] = {}
        for label in self.settings["labels"]:
            cells = self.cells(label)
            per_target: dict[str, dict[str, float | None]] = {}
            for target in self.settings["targets"]:
                off = [c for (src, tgt), c in cells.items() if tgt == target and src != target]
                if off:
                    per_target[target] = {k: _mean([c[k] for c in off]) for k in off[0]}
            fluent = [v["fluent_success"] for v in per_target.values()]
            out[label] = {
                "success": _mean([v["success"] for v in per_target.values()]),
                "fluent_success": _mean(fluent),
                "min_target_fluent_success": min((f for f in fluent if f is not None), default=None),
                "per_target": per_target,
            }
        return out

    def matrix(self, label: str, metric: str = "fluent_success") -> np.ndarray:
        """[source, target] matrix of one metric (NaN where not run)."""
        cells = self.cells(label)
        src, tgt = self.settings["sources"], self.settings["targets"]
        m = np.full((len(src), len(tgt)), np.nan)
        for (s, t), c in cells.items():
            m[src.index(s), tgt.index(t)] = c[metric]
        return m

    def save(self, out_dir: str | Path, name: str = "forcing") -> dict[str, Path]:
        """`{name}.json` (settings + summary + cells), `{name}_samples.jsonl`, one heatmap per setting."""
        from langneurons.figures.charts import heatmap

        if not is_main():  # under torchrun rank 0 writes
            return {}
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cells = {label: {f"{s}>{t}": c for (s, t), c in self.cells(label).items()} for label in self.settings["labels"]}
        files = {"json": out / f"{name}.json", "samples": out / f"{name}_samples.jsonl"}
        write_kind(files["json"], FORCING_KIND, {"settings": self.settings, "summary": self.summary(), "cells": cells})
        with atomic_path(files["samples"]) as tmp:
            tmp.write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in self.samples), "utf-8")
        for i, label in enumerate(self.settings["labels"]):
            fluent = self.summary()[label]["fluent_success"]
            title = f"Fluent success: {label} (off-diagonal mean {fluent:.2f})" if fluent is not None else label
            path = heatmap(self.matrix(label), self.settings["sources"], self.settings["targets"],
                           out / f"{name}_{i}.png", title, "prompt language", "target language", vmin=0, vmax=1)
            files[f"heatmap_{i}"] = path[0]
        return files


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(float(np.mean(vals)), 4) if vals else None


def _summarise(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    return {
        "n": len(rows),
        "success": _mean([float(r["success"]) for r in rows]),
        "fluent_success": _mean([float(r["fluent_success"]) for r in rows]),
        "empty": _mean([float(r["empty"]) for r in rows]),
        "distinct_bigrams": _mean([r["distinct_bigrams"] for r in rows]),
        "nll": _mean([r["nll"] for r in rows]),
    }


def run_forcing(
    model: Any,
    tokenizer: Any,
    neurons: NeuronSet | None,
    stats: ActivationStats | None,
    sources: Sequence[str],
    targets: Sequence[str],
    plan: Mapping[str, Mapping[str, ForcingSetting]] | Sequence[ForcingSetting],
    split: str = "eval",
    question_set: Mapping[str, Sequence[str]] | None = None,
    baseline: bool = True,
    decoding: Decoding = Decoding(),
    identifier: str = "fasttext",
    nll: bool = True,
    skip_unavailable: bool = False,
    progress: bool = True,
) -> ForcingResult:
    """Generate every (setting, source, target, question) and judge it.

    `plan`: settings to compare (a list: the same setting for every target), or label -> target -> setting (a
    calibration; targets a label leaves out are not run for it). `baseline` adds the unsteered outputs as the
    setting "baseline" (success = the unsteered answer happens to be in the target language). Rows of all
    settings and cells share batches. `skip_unavailable` leaves out (setting, target) pairs whose neuron set
    has no neurons for the target instead of failing. `decoding`: how prompts are generated; in the plain prompt
    format a question is asked as `Q: ...\\nA:`.
    """
    decoding = decoding.resolved(tokenizer)
    fmt = decoding.prompt_format
    if isinstance(plan, Sequence):
        plan = {s.label(): dict.fromkeys(targets, s) for s in plan}
    plan = dict(plan)
    prompts_of = {lang: _questions(lang, split, question_set) for lang in sources}
    jobs: list[tuple[str, str, str, int, SteeringConfig | None]] = []
    unsourced: dict[str, dict[str, None]] = {}  # prompt language -> settings where -src deactivates nothing
    for label, per_target in plan.items():
        for target in targets:
            setting = per_target.get(target)
            if setting is None:  # a plan may leave some targets out of some settings
                continue
            chosen = setting.config(target, target).neuron_set(neurons, stats)
            if skip_unavailable and chosen is not None and _size(chosen, target) == 0:
                continue  # this setting cannot steer towards `target`: it is not a candidate for it
            for source in sources:
                config = setting.config(source, target)
                if config.drop_deactivations_without_neurons(chosen):
                    unsourced.setdefault(source, {})[label] = None
                for i in range(len(prompts_of[source])):
                    jobs.append((label, source, target, i, config))
    for source, names in unsourced.items():
        warn(f"prompt language '{source}' has no neurons in {len(names)} setting(s) ({', '.join(list(names)[:3])}"
             f"{', ...' if len(names) > 3 else ''}), so -src deactivates nothing there; identify neurons for it "
             "or use a larger top_rate")
    if baseline:
        jobs += [("baseline", s, t, i, None) for s in sources for t in targets for i in range(len(prompts_of[s]))]
    outputs = _generate_jobs(model, tokenizer, jobs, prompts_of, neurons, stats, decoding, progress)
    lid = get_identifier(identifier)
    texts = [outputs[(j[1], j[3], j[0] if j[4] else "baseline", j[2] if j[4] else "")] for j in jobs]
    found = lid.identify(texts)
    prompts = [question_prompt(prompts_of[j[1]][j[3]], fmt) for j in jobs]
    unique = list(dict.fromkeys(zip(prompts, texts)))  # the baseline answers repeat for every target
    scored = dict(zip(unique, continuation_nll(
        model, tokenizer, [p for p, _ in unique], [t for _, t in unique], prompt_format=fmt, progress=progress,
        desc="forcing: score NLL"))) if nll else {}
    nlls = [scored.get(pair) for pair in zip(prompts, texts)]
    samples = []
    for (label, source, target, i, steering), text, ident, prompt, loss in zip(jobs, texts, found, prompts, nlls):
        distinct = distinct_bigram_share(tokenizer(text, add_special_tokens=False).input_ids)
        success = ident.language == target and bool(text.strip())
        samples.append({
            "setting": label, "source": source, "target": target, "question": i, "prompt": prompt,
            "steering": steering.describe() if steering else None, "output": text, "identified": ident.language,
            "confidence": round(ident.confidence, 4), "empty": not text.strip(),
            "distinct_bigrams": round(distinct, 4), "nll": None if loss is None else round(loss, 4),
            "success": success, "fluent_success": success and is_fluent(text, distinct),
        })
    labels = [*plan, *(["baseline"] if baseline else [])]
    settings = {
        "task": "forcing", "model": model_id(model), "model_fingerprint": model_meta(model),
        "sources": list(sources), "targets": list(targets),
        "split": split, "labels": labels, "identifier": identifier,
        "plan": {label: {t: asdict(s) for t, s in per.items()} for label, per in plan.items()},
        "neurons": None if neurons is None else {"method": neurons.meta.get("method"),
                                                 "settings": neurons.meta.get("settings")},
        "generation": decoding.record(tokenizer, STOP_STRINGS),
        "prompt_format": fmt,
        "success_rule": SUCCESS_RULE,
    }
    return ForcingResult(settings, samples)


def _size(neurons: NeuronSet, lang: str) -> int:
    return neurons.count(lang) if lang in neurons.languages else 0


def _questions(lang: str, split: str, question_set: Mapping[str, Sequence[str]] | None) -> list[str]:
    if question_set is None:
        return questions(lang, split)
    if lang not in question_set:
        raise LangNeuronsError(f"the question set has no language '{lang}'; it has {', '.join(question_set)}")
    if not question_set[lang]:
        raise LangNeuronsError(f"the question set has no questions for '{lang}' in this split ({split}); add some "
                               "or choose another split")
    return list(question_set[lang])


def _generate_jobs(model, tokenizer, jobs, prompts_of, neurons, stats, decoding: Decoding,
                   progress: bool) -> dict[tuple[str, int, str, str], str]:
    """Generate each distinct (source, question, setting, target) once; unsteered outputs once per question. One
    generation call per neuron share keeps each call's table of settings small."""
    out: dict[tuple[str, int, str, str], str] = {}
    by_rate: dict[float | None, list[tuple[tuple[str, int, str, str], str, SteeringConfig | None]]] = {}
    for label, source, target, i, config in jobs:
        key = (source, i, label if config else "baseline", target if config else "")
        if key not in out:
            out[key] = ""
            prompt = question_prompt(prompts_of[source][i], decoding.prompt_format)
            by_rate.setdefault(config.top_rate if config else None, []).append((key, prompt, config))
    bar = tqdm(total=len(out), desc="forcing: generate", unit="prompt", disable=not progress)
    for rows in by_rate.values():
        texts = generate(model, tokenizer, [r[1] for r in rows], decoding, stop_strings=STOP_STRINGS,
                         steerings=[r[2] for r in rows], neurons=neurons, stats=stats, bar=bar)
        for (key, _, _), text in zip(rows, texts):
            out[key] = text
    bar.close()
    return out


