"""Belebele: four-way reading comprehension on FLORES passages, scored by log-likelihood.

Each answer is scored as the continuation of the passage and question (template "cloze", the default), or the
letters A-D are scored after the listed answers (template "letters"); the most likely option is the prediction,
so nothing generated is parsed. Every data language is evaluated unsteered and with each language of the neuron
set activated; the summary holds accuracy per (data language, activated language) and its change from the
baseline, with a heatmap of the changes.

Data: `facebook/belebele` on the hub (configs such as eng_Latn; --languages takes ISO 639-1 codes), or local JSONL
with the hub's fields: flores_passage, question, mc_answer1..mc_answer4, correct_answer_num (1-4).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from langneurons.cli.options import add_model_options, add_steering_options, load_inputs, parse_languages
from langneurons.core.errors import LangNeuronsError
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.tasks.benchmark_data import (
    BenchmarkResult,
    SteerOptions,
    add_benchmark_options,
    benchmark_inputs,
    load_items,
    pick_template,
    run_benchmark,
)
from langneurons.tasks.scoring import NORMALIZATIONS, multiple_choice, split_template

SUMMARY = "Belebele reading comprehension: accuracy by option log-likelihood, baseline vs each activated language"

TEMPLATES = {
    "cloze": "{passage}\nQuestion: {question}\nAnswer: {label}",
    "letters": "{passage}\nQuestion: {question}\nA. {a}\nB. {b}\nC. {c}\nD. {d}\nAnswer: {label}",
}
LETTERS = ("A", "B", "C", "D")


def run_belebele(
    model: torch.nn.Module,
    tokenizer: Any,
    neurons: NeuronSet | None,
    stats: ActivationStats | None,
    languages: Sequence[str],
    n: int | None = 100,
    data: str | Path = "hub",
    template: str = "cloze",
    labels: Sequence[str] | None = None,
    normalize: str = "char",
    activate: Sequence[str] | None = None,
    steering: SteerOptions | None = None,
    output_dir: str | Path = "runs/belebele",
    split: str | None = None,
    batch_size: int = 8,
    fresh: bool = False,
    progress: bool = True,
) -> BenchmarkResult:
    """Accuracy on the first `n` items per language, unsteered and with each language of `activate` steered in.

    `template`: "cloze", "letters" or a format string with {passage}, {question}, {a}-{d} and {label} (where the
    scored option starts). `labels`: the four option texts put at {label} (default: the answers themselves, or
    A-D for "letters"). `normalize`: "sum", "token" or "char" (log-likelihood per character, the default).
    """
    steering = steering or SteerOptions()
    if steering.generated_only:
        raise LangNeuronsError("generated_only has no effect on log-likelihood scoring (nothing is generated); "
                               "leave it out")
    text = pick_template(template, TEMPLATES)
    if labels is None and template == "letters":
        labels = LETTERS
    if labels is not None and len(labels) != 4:
        raise LangNeuronsError(f"labels={list(labels)}: give four labels, one per answer")
    if normalize not in NORMALIZATIONS:
        raise LangNeuronsError(f"normalize={normalize!r}; use one of {', '.join(NORMALIZATIONS)}")
    items = {lang: load_items("belebele", lang, data, n, split) for lang in dict.fromkeys(languages)}

    def evaluate(_language: str, chunk: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        contexts, options = [], []
        for it in chunk:
            fields = {"passage": it["passage"], "question": it["question"],
                      **dict(zip("abcd", it["options"]))}
            pairs = [split_template(text, fields, label) for label in (labels or it["options"])]
            contexts.append(pairs[0][0])
            options.append([option for _, option in pairs])
        chosen = multiple_choice(model, tokenizer, contexts, options, batch_size=batch_size, normalize=normalize)
        return [{"question": it["question"], "answer": it["answer"], "prediction": pred,
                 "correct": pred == it["answer"], "scores": [round(s, 4) for s in scores]}
                for it, (pred, scores) in zip(chunk, chosen)]

    settings = {"data": str(data), "split": split, "n": n, "template": text,
                "labels": list(labels) if labels else "answers", "normalize": normalize, "batch_size": batch_size,
                "scoring": "argmax over options of the log-likelihood of the option after its context"}
    return run_benchmark("belebele", model, neurons, stats, items, evaluate, {"accuracy": "correct"}, settings,
                         output_dir, activate, steering, fresh=fresh, progress=progress)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate belebele`."""
    add_model_options(p)
    add_steering_options(p, expression=False)
    add_benchmark_options(p, default_n=100)
    p.add_argument("--template", default="cloze",
                   help="'cloze' (score each answer), 'letters' (score A-D after the listed answers), or a format "
                        "string with {passage} {question} {a}-{d} and {label}")
    p.add_argument("--labels", help="four comma-separated texts put at {label} (default: the answers; A-D for letters)")
    p.add_argument("--normalize", default="char", choices=NORMALIZATIONS,
                   help="log-likelihood summed, per token, or per character (default char)")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate belebele`."""
    languages, activate, steering = benchmark_inputs(args)
    model, tok, neurons, stats = load_inputs(args)
    result = run_belebele(model, tok, neurons, stats, languages, n=args.n or None, data=args.data,
                          template=args.template.replace("\\n", "\n"),
                          labels=parse_languages(args.labels), normalize=args.normalize,
                          activate=activate, steering=steering, output_dir=args.output_dir or "runs/belebele",
                          split=args.split, batch_size=args.batch_size, fresh=args.fresh, progress=not args.quiet)
    print(result.table())
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
