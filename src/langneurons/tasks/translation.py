"""Translation: source -> target prompts, corpus-level chrF and BLEU, unsteered against steered towards the target.

Data: segments aligned across languages by id, from the UDHR (offline), FLORES+ (from the hub) or JSONL files;
each prompt fills `template` after `shots` filled examples (`langneurons.data.parallel` describes both). Greedy
generation stops at the end of the line. Every pair is generated unsteered ("baseline") and steered: the target's
neurons activated ("+tgt"), optionally the source's deactivated first ("-src +tgt"). chrF and BLEU are
corpus-level sacrebleu scores (`langneurons.tasks.metrics`); each output's language is identified, since that is
what steering changes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from langneurons.core.distributed import is_main, rounds
from langneurons.core.errors import LangNeuronsError
from langneurons.core.models import model_id
from langneurons.core.provenance import model_meta
from langneurons.data.parallel import BY_FLORES, DEFAULT_TEMPLATE, ParallelData, load_parallel, translation_prompt
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import ForcingSetting, SteeringConfig
from langneurons.steering.generation import Decoding, generate
from langneurons.tasks.lid import get_identifier
from langneurons.tasks.metrics import bleu_tokenizer, translation_scores
from langneurons.tasks.results import SampleLog, run_metadata, write_results

STOP = ["\n"]  # sources are single lines, so a translation ends with its line
SETTINGS = ("baseline", "steered")
ACTIVATE = ForcingSetting(deactivate_source=False)  # "+tgt": add the target's mean activation (alpha 1)
DECODING = Decoding(max_new_tokens=256, batch_size=32)  # a translation's budget is set per prompt, at most this


# ----------------------------------------------------------------------------------------------------------
# The run


@dataclass
class TranslationResult:
    """The summary (as written to translation.json), the per-sample rows of this run's pairs, and the files."""

    summary: dict[str, Any]
    samples: list[dict[str, Any]]
    files: dict[str, Path]


def run_translation(
    model: Any,
    tokenizer: Any,
    neurons: NeuronSet | None,
    stats: ActivationStats | None,
    pairs: Sequence[tuple[str, str]],
    data: ParallelData | str | Path = "udhr",
    output_dir: str | Path = "runs/translation",
    n: int | None = 30,
    steering: ForcingSetting | Mapping[str, ForcingSetting] | None = ACTIVATE,
    split: str | None = None,
    template: str = DEFAULT_TEMPLATE,
    shots: int = 0,
    names: Mapping[str, str] | None = None,
    decoding: Decoding = DECODING,
    identifier: str = "fasttext",
    fresh: bool = False,
    plot: bool = True,
    progress: bool = True,
) -> TranslationResult:
    """Translate the first `n` segments of each (source, target) pair unsteered and steered; score and save.

    `steering`: one setting for every target, or target -> setting (a calibration); None runs the baseline only.
    A setting with `top_rate` reruns LAPE on `stats` at that share. A prompt may generate twice its source's
    tokens plus 16, rounded up to a multiple of 32, and at most `max_new_tokens`. Rows go to
    `translation_samples.jsonl` as they are made; a rerun with the same settings skips them (`fresh` starts over).
    Writes `translation.json` (metadata and summary) and, with `plot`, `translation.png/.svg`. In the chat prompt
    format of `decoding`, the filled template is the user's message.
    """
    decoding = decoding.resolved(tokenizer)
    given = [tuple(p) for p in pairs]
    if not given or any(len(p) != 2 or p[0] == p[1] for p in given):
        raise LangNeuronsError("pairs must be (source, target) tuples of two different languages, e.g. [('en', 'de')]")
    pairs = [(source, target) for source, target in given]
    if n is not None and n < 1:
        raise LangNeuronsError(f"n={n}; evaluate at least one segment per pair (or None for all)")
    if shots < 0:
        raise LangNeuronsError(f"shots={shots}; give 0 or more example translations")
    languages = list(dict.fromkeys(lang for p in pairs for lang in p))
    if not isinstance(data, ParallelData):
        data = load_parallel(data, languages, split)
    plan = _plan(steering, [t for _, t in pairs])
    lid = get_identifier(identifier)
    generation = decoding.record(tokenizer, STOP)
    generation["max_new_tokens_rule"] = "2 * source tokens + 16, rounded up to a multiple of 32, at most max_new_tokens"
    settings = {
        "model": model_id(model), "model_fingerprint": model_meta(model), "prompt_format": decoding.prompt_format,
        "data": data.description, "template": template, "shots": shots,
        "names": dict(names or {}), "identifier": identifier,
        "steering": None if plan is None else {t: dataclasses.asdict(s) for t, s in plan.items()},
        "neurons": None if neurons is None else {"method": neurons.meta.get("method"),
                                                 "settings": neurons.meta.get("settings")},
        "generation": {k: v for k, v in generation.items() if k != "batch_size"},
    }
    out = Path(output_dir)
    log = SampleLog(out / "translation_samples.jsonl", ("pair", "setting", "id"), settings, fresh=fresh)
    jobs, wanted = [], []
    for source, target in pairs:
        segments = data.segments(source, target, n)
        if not segments:
            raise LangNeuronsError(f"no segments for {source}-{target} in the data; check the languages and split")
        examples = data.example_pairs(source, target, shots)
        config = _config(plan, neurons, stats, source, target)
        for seg, text, reference in segments:
            prompt = translation_prompt(template, text, source, target, examples, names)
            limit = _limit(tokenizer, text, decoding.max_new_tokens)
            for label, cfg in (("baseline", None), *((("steered", config),) if plan is not None else ())):
                row = {"pair": f"{source}-{target}", "setting": label, "id": seg}
                wanted.append(row)
                if row not in log:
                    rate = cfg.top_rate if cfg is not None else None
                    jobs.append((row, source, target, text, reference, prompt, cfg, rate, limit))
    start = time.perf_counter()
    _generate_jobs(model, tokenizer, jobs, log, lid, neurons, stats, decoding, progress)
    seconds = time.perf_counter() - start
    samples = [log[row] for row in wanted]  # every wanted row is logged by now
    summary = _summary(samples, pairs, plan is not None)
    summary["generated"] = {"rows": len(jobs), "reused": len(wanted) - len(jobs), "seconds": round(seconds, 1)}
    meta = run_metadata(model, "translation", {**settings, "pairs": [f"{s}-{t}" for s, t in pairs], "n": n,
                                                "generation": generation})
    files = {"summary": write_results(out / "translation.json", meta, summary), "samples": log.path}
    if plot and is_main():
        from langneurons.figures.charts import translation_bars

        files.update(zip(("png", "svg"), translation_bars(summary, out / "translation.png")))
    return TranslationResult(summary, samples, files)


def _plan(steering: ForcingSetting | Mapping[str, ForcingSetting] | None,
          targets: Sequence[str]) -> dict[str, ForcingSetting] | None:
    if steering is None:
        return None
    if isinstance(steering, ForcingSetting):
        return dict.fromkeys(targets, steering)
    missing = [t for t in targets if t not in steering]
    if missing:
        raise LangNeuronsError(f"no steering setting for target(s) {', '.join(missing)}; "
                               f"the settings cover {', '.join(steering)}")
    return {t: steering[t] for t in dict.fromkeys(targets)}


def _config(plan: dict[str, ForcingSetting] | None, neurons: NeuronSet | None, stats: ActivationStats | None,
            source: str, target: str) -> SteeringConfig | None:
    """The steering of one pair: +target (and -source, if the setting says so and the source has neurons)."""
    if plan is None:
        return None
    config = plan[target].config(source, target)
    chosen = config.neuron_set(neurons, stats)
    if chosen is None:
        raise LangNeuronsError("steering needs a neuron set (--neurons), a calibration (--calibrated) or --top-rate")
    if config.method != "residual" and (target not in chosen.languages or chosen.count(target) == 0):
        raise LangNeuronsError(f"the neuron set has no neurons for target '{target}'; "
                               "use a set that has (a larger top_rate) or leave the pair out")
    config.drop_deactivations_without_neurons(chosen)
    return config


def _limit(tokenizer: Any, text: str, cap: int) -> int:
    """New-token budget of one prompt: twice its source's tokens plus 16, in steps of 32, at most `cap`."""
    tokens = len(tokenizer(text, add_special_tokens=False).input_ids)
    return min(cap, 32 * math.ceil((2 * tokens + 16) / 32))


def _generate_jobs(model, tokenizer, jobs, log, lid, neurons, stats, decoding: Decoding, progress: bool) -> None:
    """Generate the missing rows in batches of equal (neuron share, token budget); log each batch as it finishes."""
    groups: dict[tuple[float | None, int], list[tuple]] = {}
    for job in jobs:
        groups.setdefault((job[7], job[8]), []).append(job)
    size = decoding.batch_size
    chunks = [(key, rows[i : i + size]) for key, rows in sorted(groups.items(), key=lambda kv: (kv[0][1],
              str(kv[0][0]))) for i in range(0, len(rows), size)]

    def run(job: tuple[tuple[float | None, int], list[tuple]]) -> list[str]:
        (_, limit), chunk = job
        return generate(model, tokenizer, [j[5] for j in chunk], decoding, max_new_tokens=limit, stop_strings=STOP,
                        steerings=[j[6] for j in chunk], neurons=neurons, stats=stats)

    bar = tqdm(total=len(chunks), desc="translate", disable=not progress)
    # under torchrun: chunks split over ranks, every rank logs every row (rank 0 writes)
    for (_, chunk), texts in (pair for done in rounds(chunks, run) for pair in done):
        bar.update()
        found = lid.identify(texts)
        log.add([{
            **row, "source_lang": source, "target_lang": target, "steering": cfg.describe() if cfg else None,
            "source": text, "reference": reference, "output": output, "identified": ident.language,
            "confidence": round(ident.confidence, 4), "in_target": bool(output) and ident.language == _iso(target),
            "in_source": bool(output) and ident.language == _iso(source), "max_new_tokens": budget,
        } for (row, source, target, text, reference, _, cfg, _, budget), output, ident in zip(chunk, texts, found)])
    bar.close()


def _iso(lang: str) -> str:
    """The identifier's label for a language code (FLORES codes mapped back to ISO 639-1 where known)."""
    return BY_FLORES.get(lang, lang)


def _summary(samples: list[dict[str, Any]], pairs: Sequence[tuple[str, str]], steered: bool) -> dict[str, Any]:
    """Per pair and setting: chrF, BLEU, shares of outputs in the target / source language and empty; deltas."""
    labels = SETTINGS if steered else SETTINGS[:1]
    per_pair: dict[str, Any] = {}
    for source, target in pairs:
        name = f"{source}-{target}"
        cell: dict[str, Any] = {"bleu_tokenize": bleu_tokenizer(target)}
        for label in labels:
            rows = [s for s in samples if s["pair"] == name and s["setting"] == label]
            scores = translation_scores([r["output"] for r in rows], [r["reference"] for r in rows], target)
            cell[label] = {
                "n": len(rows), "chrf": round(scores["chrf"].score, 2), "bleu": round(scores["bleu"].score, 2),
                "target_share": _share(rows, "in_target"), "source_share": _share(rows, "in_source"),
                "empty_share": round(sum(not r["output"] for r in rows) / len(rows), 4),
            }
            cell["signatures"] = {"chrf": scores["chrf"].signature, "bleu": scores["bleu"].signature}
        if steered:
            cell["delta"] = {k: round(cell["steered"][k] - cell["baseline"][k], 4)
                             for k in ("chrf", "bleu", "target_share", "source_share")}
        per_pair[name] = cell
    mean = {label: {k: round(sum(c[label][k] for c in per_pair.values()) / len(per_pair), 4)
                    for k in ("chrf", "bleu", "target_share", "source_share")} for label in labels}
    if steered:
        mean["delta"] = {k: round(mean["steered"][k] - mean["baseline"][k], 4) for k in mean["baseline"]}
    return {"pairs": per_pair, "mean": mean, "ids": {name: [s["id"] for s in samples if s["pair"] == name
                                                           and s["setting"] == "baseline"] for name in per_pair}}


def _share(rows: list[dict[str, Any]], key: str) -> float:
    return round(sum(bool(r[key]) for r in rows) / len(rows), 4)
