"""XNLI: three-way natural language inference, scored by log-likelihood.

Template "right" (the default; XGLM's and lm-evaluation-harness's prompt): each label is a word in the data's
language inside "premise, right? Yes|Also|No, hypothesis", and the label whose sentence is most likely wins (the
premise is the shared context, so this is the likelihood of the whole sentence). Template "tfn": "premise
Question: hypothesis True, False or Neither? Answer: True|Neither|False". Every data language is evaluated
unsteered and with each language of the neuron set activated: accuracy per cell and its change from the baseline.

Data: `facebook/xnli` on the hub (test split), or local JSONL with premise, hypothesis and label (0 entailment,
1 neutral, 2 contradiction).
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

SUMMARY = "XNLI entailment: accuracy by the log-likelihood of each label, baseline vs each activated language"

LABELS = ("entailment", "neutral", "contradiction")
TEMPLATES = {
    "right": "{premise}, {right} {label}, {hypothesis}",
    "tfn": "{premise}\nQuestion: {hypothesis} True, False or Neither?\nAnswer: {label}",
}
TFN_WORDS = ("True", "Neither", "False")
# "right?" and the words for entailment / neutral / contradiction, per language (English for the others)
RIGHT_WORDS: dict[str, tuple[str, str, str, str]] = {
    "en": ("right?", "Yes", "Also", "No"),
    "ar": ("صحيح؟", "نعم", "لذا", "لا"),
    "bg": ("правилно?", "да", "така", "не"),
    "de": ("richtig?", "Ja", "Auch", "Nein"),
    "el": ("σωστά;", "Ναι", "Επίσης", "Όχι"),
    "es": ("¿correcto?", "Sí", "Así que", "No"),
    "fr": ("n'est-ce pas ?", "Oui", "Aussi", "Non"),
    "hi": ("सही?", "हाँ", "इसलिए", "नहीं"),
    "ru": ("правильно?", "Да", "Так", "Нет"),
    "sw": ("sahihi?", "Ndiyo", "Hivyo", "Hapana"),
    "th": ("ใช่ไหม?", "ใช่", "ดังนั้น", "ไม่"),
    "tr": ("doğru mu?", "Evet", "Ayrıca", "Hayır"),
    "ur": ("صحیح؟", "جی ہاں", "اس لیے", "نہیں"),
    "vi": ("đúng không?", "Vâng", "Vì vậy", "Không"),
    "zh": ("对吗？", "是的", "所以", "不是的"),
}


def verbaliser(language: str, template: str, labels: Sequence[str] | None = None) -> tuple[dict[str, str], list[str]]:
    """(extra template fields, the three label words) of `language` under a named or custom template."""
    right, *words = RIGHT_WORDS.get(language, RIGHT_WORDS["en"])
    if labels is not None:
        words = list(labels)
    elif template == "tfn":
        words = list(TFN_WORDS)
    if len(words) != 3:
        raise LangNeuronsError(f"labels={words}: give three words (entailment, neutral, contradiction)")
    return {"right": right}, words


def run_xnli(
    model: torch.nn.Module,
    tokenizer: Any,
    neurons: NeuronSet | None,
    stats: ActivationStats | None,
    languages: Sequence[str],
    n: int | None = 100,
    data: str | Path = "hub",
    template: str = "right",
    labels: Sequence[str] | None = None,
    normalize: str = "sum",
    activate: Sequence[str] | None = None,
    steering: SteerOptions | None = None,
    output_dir: str | Path = "runs/xnli",
    split: str | None = None,
    batch_size: int = 8,
    fresh: bool = False,
    progress: bool = True,
) -> BenchmarkResult:
    """Accuracy on the first `n` items per language, unsteered and with each language of `activate` steered in.

    `template`: "right", "tfn", or a format string with {premise}, {hypothesis}, {right} (the language's
    "right?") and {label} (where the scored option starts). `labels`: three words for entailment, neutral and
    contradiction in every language (default: the language's Yes/Also/No, or True/Neither/False for "tfn").
    """
    steering = steering or SteerOptions()
    if steering.generated_only:
        raise LangNeuronsError("generated_only has no effect on log-likelihood scoring (nothing is generated); "
                               "leave it out")
    text = pick_template(template, TEMPLATES)
    if normalize not in NORMALIZATIONS:
        raise LangNeuronsError(f"normalize={normalize!r}; use one of {', '.join(NORMALIZATIONS)}")
    languages = list(dict.fromkeys(languages))
    words = {lang: verbaliser(lang, template, labels) for lang in languages}
    items = {lang: load_items("xnli", lang, data, n, split) for lang in languages}

    def evaluate(language: str, chunk: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        extra, label_words = words[language]
        contexts, options = [], []
        for it in chunk:
            fields = {"premise": it["premise"], "hypothesis": it["hypothesis"], **extra}
            pairs = [split_template(text, fields, word) for word in label_words]
            contexts.append(pairs[0][0])
            options.append([option for _, option in pairs])
        chosen = multiple_choice(model, tokenizer, contexts, options, batch_size=batch_size, normalize=normalize)
        return [{"premise": it["premise"], "hypothesis": it["hypothesis"], "label": it["label"], "prediction": pred,
                 "correct": pred == it["label"], "scores": [round(s, 4) for s in scores]}
                for it, (pred, scores) in zip(chunk, chosen)]

    settings = {"data": str(data), "split": split, "n": n, "template": text, "normalize": normalize,
                "labels": {lang: dict(zip(LABELS, w[1])) for lang, w in words.items()},
                "right": {lang: w[0]["right"] for lang, w in words.items()}, "batch_size": batch_size,
                "scoring": "argmax over labels of the log-likelihood of the label and the rest of the template"}
    return run_benchmark("xnli", model, neurons, stats, items, evaluate, {"accuracy": "correct"}, settings,
                         output_dir, activate, steering, fresh=fresh, progress=progress)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate xnli`."""
    add_model_options(p)
    add_steering_options(p, expression=False)
    add_benchmark_options(p, default_n=100)
    p.add_argument("--template", default="right",
                   help="'right' (premise, right? Yes|Also|No, hypothesis; words in the data's language), 'tfn' "
                        "(True/Neither/False), or a format string with {premise} {hypothesis} {right} and {label}")
    p.add_argument("--labels", help="three comma-separated words for entailment,neutral,contradiction "
                                    "(used for every language)")
    p.add_argument("--normalize", default="sum", choices=NORMALIZATIONS,
                   help="log-likelihood summed, per token, or per character (default sum)")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate xnli`."""
    languages, activate, steering = benchmark_inputs(args)
    model, tok, neurons, stats = load_inputs(args)
    result = run_xnli(model, tok, neurons, stats, languages, n=args.n or None, data=args.data,
                      template=args.template.replace("\\n", "\n"),
                      labels=parse_languages(args.labels), normalize=args.normalize,
                      activate=activate, steering=steering, output_dir=args.output_dir or "runs/xnli",
                      split=args.split, batch_size=args.batch_size, fresh=args.fresh, progress=not args.quiet)
    print(result.table())
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
