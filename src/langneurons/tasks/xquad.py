"""XQuAD: extractive question answering by greedy generation, scored with SQuAD exact match and token F1.

The prompt is "{context}\\nQuestion: {question}\\nAnswer:" (the template is an option); the answer is generated
greedily and cut at the first newline. Answers are normalised as in SQuAD (lowercase, punctuation removed, and
for English the articles a/an/the), then split into tokens at whitespace, with every character of a
whitespace-free script (Han, kana, Thai, Lao, Khmer, Myanmar, Tibetan) a token of its own. Exact match and the
F1 of the multiset token overlap take the best gold answer. Every data language is evaluated unsteered and with
each language of the neuron set activated: F1 and exact match per cell and their change from the baseline.

Data: `google/xquad` on the hub (configs xquad.en, ...), or local JSONL in the SQuAD schema: context, question,
answers {"text": [...], "answer_start": [...]}.
"""

from __future__ import annotations

import argparse
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from langneurons.cli_common import add_model_options, add_prompt_format_option, add_steering_options, load_inputs
from langneurons.errors import LangNeuronsError
from langneurons.generation import generate, generation_settings, prompt_settings, resolve_prompt_format
from langneurons.neurons import NeuronSet
from langneurons.stats import ActivationStats
from langneurons.tasks.benchmark_data import (
    BenchmarkResult,
    SteerOptions,
    add_benchmark_options,
    benchmark_inputs,
    load_items,
    run_benchmark,
)

SUMMARY = "XQuAD question answering: exact match and token F1 of greedy answers, baseline vs each activated language"

TEMPLATE = "{context}\nQuestion: {question}\nAnswer:"
STOP_STRINGS = ("\n",)
_ARTICLES = {"en": re.compile(r"\b(a|an|the)\b")}
# scripts written without spaces between words: each character is a token
_CHAR_SCRIPTS = re.compile(
    "([\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0002ffff])"
)


def answer_tokens(text: str, language: str) -> list[str]:
    """SQuAD-normalised tokens of an answer: lowercased, punctuation dropped, English articles dropped, split at
    whitespace, and characters of whitespace-free scripts split apart."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    if language in _ARTICLES:
        text = _ARTICLES[language].sub(" ", text)
    return [t for t in _CHAR_SCRIPTS.split(text) for t in t.split()]


def exact_match(prediction: str, answers: Sequence[str], language: str) -> float:
    """1.0 if the normalised prediction equals some normalised gold answer, else 0.0."""
    pred = answer_tokens(prediction, language)
    return max(float(pred == answer_tokens(a, language)) for a in answers)


def token_f1(prediction: str, answers: Sequence[str], language: str) -> float:
    """The best F1, over the gold answers, of the multiset overlap of normalised tokens."""
    pred = answer_tokens(prediction, language)
    best = 0.0
    for answer in answers:
        gold = answer_tokens(answer, language)
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        same = sum((Counter(pred) & Counter(gold)).values())
        if same:
            precision, recall = same / len(pred), same / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def run_xquad(
    model: torch.nn.Module,
    tokenizer: Any,
    neurons: NeuronSet | None,
    stats: ActivationStats | None,
    languages: Sequence[str],
    n: int | None = 100,
    data: str | Path = "hub",
    template: str = TEMPLATE,
    max_new_tokens: int = 32,
    repetition_penalty: float = 1.0,
    activate: Sequence[str] | None = None,
    steering: SteerOptions | None = None,
    output_dir: str | Path = "runs/xquad",
    split: str | None = None,
    batch_size: int = 8,
    fresh: bool = False,
    progress: bool = True,
    prompt_format: str = "auto",
) -> BenchmarkResult:
    """Exact match and F1 on the first `n` items per language, unsteered and with each language of `activate`.

    `template`: a format string with {context} and {question}; generation is greedy, cut at the first newline.
    `prompt_format`: "auto" (the filled template as the user's message in the chat template, when the tokenizer
    has one), "chat" or "plain".
    """
    fmt = resolve_prompt_format(tokenizer, prompt_format)
    if "{context}" not in template or "{question}" not in template:
        raise LangNeuronsError(f"template {template!r} needs {{context}} and {{question}}")
    languages = list(dict.fromkeys(languages))
    items = {lang: load_items("xquad", lang, data, n, split) for lang in languages}

    def evaluate(language: str, chunk: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        try:
            prompts = [template.format(context=it["context"], question=it["question"]) for it in chunk]
        except (KeyError, IndexError, ValueError) as e:
            raise LangNeuronsError(f"template {template!r} is malformed ({e}); use only {{context}} and "
                                   "{question}, and write literal braces as {{ }}") from None
        outputs = generate(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                           stop_strings=STOP_STRINGS, repetition_penalty=repetition_penalty, prompt_format=fmt)
        return [{"question": it["question"], "answers": it["answers"], "prediction": out,
                 "exact_match": exact_match(out, it["answers"], language),
                 "f1": round(token_f1(out, it["answers"], language), 4)}
                for it, out in zip(chunk, outputs)]

    settings = {"data": str(data), "split": split, "n": n, "template": template,
                "generation": generation_settings(max_new_tokens, STOP_STRINGS, batch_size, repetition_penalty,
                                                  prompt_settings(tokenizer, fmt)),
                "normalisation": "SQuAD: lowercase, no punctuation, English articles dropped; whitespace tokens, "
                                 "characters for whitespace-free scripts"}
    return run_benchmark("xquad", model, neurons, stats, items, evaluate, {"f1": "f1", "exact_match": "exact_match"},
                         settings, output_dir, activate, steering, fresh=fresh, progress=progress)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate xquad`."""
    add_model_options(p)
    add_steering_options(p, expression=False)
    add_benchmark_options(p, default_n=100)
    p.add_argument("--template", default=TEMPLATE, help="prompt, a format string with {context} and {question} "
                                                        "(default: '{context}\\nQuestion: {question}\\nAnswer:')")
    p.add_argument("--max-new-tokens", type=int, default=32, help="longest answer in tokens (default 32)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="greedy decoding with this repetition penalty (default 1.0: plain greedy)")
    add_prompt_format_option(p)


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate xquad`."""
    languages, activate, steering = benchmark_inputs(args)
    model, tok, neurons, stats = load_inputs(args)
    template = args.template.replace("\\n", "\n")
    result = run_xquad(model, tok, neurons, stats, languages, n=args.n or None, data=args.data, template=template,
                       max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty,
                       activate=activate, steering=steering, output_dir=args.output_dir or "runs/xquad",
                       split=args.split, batch_size=args.batch_size, fresh=args.fresh, progress=not args.quiet,
                       prompt_format=args.prompt_format)
    print(result.table())
    print(result.table("exact_match"))
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
