"""`langneurons evaluate logit-lens`: options, checks and printout of `langneurons.tasks.logit_lens`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError
from langneurons.data.prompts import SPLITS


def _read_prompts(path: str | Path) -> dict[str, list[str]]:
    """A JSON file {language: [prompt, ...]} (prompts used verbatim)."""
    try:
        data = json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError:
        raise LangNeuronsError(f"{path}: no such file; check the path") from None
    except json.JSONDecodeError:
        raise LangNeuronsError(f"{path}: not valid JSON; write {{\"en\": [\"prompt\", ...]}}") from None
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise LangNeuronsError(f"{path}: expected {{\"en\": [\"prompt\", ...], ...}}")
    return data


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate logit-lens`."""
    options.add_model_options(p)
    options.add_steering_options(p)
    p.add_argument("--languages", help="comma-separated prompt languages (default: the prompts file's, else the "
                                       "neuron set's, else en,de,fr,es,ru,ar,hi,zh,ja,ko)")
    p.add_argument("--prompts-file", help="JSON {language: [prompt, ...]} used verbatim instead of the built-in "
                                          "questions")
    p.add_argument("--split", default="all", choices=list(SPLITS), help="built-in question split (default all)")
    p.add_argument("--top-k", type=int, default=10, help="candidates per layer classified by script (default 10)")
    p.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass (default 16)")
    p.add_argument("--output-dir", default="runs/logit_lens", help="results folder")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


_SHORT = {"Latin": "Lat", "Cyrillic": "Cyr", "Arabic": "Ara", "Devanagari": "Dev", "Han": "Han", "Kana": "Kana",
          "Hangul": "Hang", "other": "oth", "none": "none"}


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate logit-lens`."""
    from langneurons.cli.demo_job import LANGUAGES as DEMO_LANGUAGES
    from langneurons.steering.config import SteeringConfig
    from langneurons.tasks.logit_lens import builtin_prompts, run_logit_lens

    if args.calibrated:
        raise LangNeuronsError("--calibrated is not supported by the logit lens; give --steer with --method")
    model, tok, neurons, stats = options.load_inputs(args)
    languages = options.parse_languages(args.languages)
    if args.prompts_file:
        prompts = _read_prompts(args.prompts_file)
        if languages:
            missing = [lang for lang in languages if lang not in prompts]
            if missing:
                raise LangNeuronsError(f"{args.prompts_file} has no prompts for {', '.join(missing)}")
            prompts = {lang: prompts[lang] for lang in languages}
    else:
        languages = languages or (list(neurons.languages) if neurons is not None else DEMO_LANGUAGES)
        prompts = builtin_prompts(languages, args.split)
    steering = None
    if args.steer:
        steering = SteeringConfig.from_expression(args.steer, **options.steering_keywords(args))
    result = run_logit_lens(model, tok, prompts, top_k=args.top_k, steering=steering, neurons=neurons, stats=stats,
                            batch_size=args.batch_size, progress=not args.quiet)
    files = result.save(args.output_dir)
    for name in result.conditions:
        table = result.layers[name]
        rows = []
        for layer in range(len(next(iter(table.values())))):
            row: dict[str, str] = {"layer": str(layer)}
            for lang, steps in table.items():
                shares = steps[layer]["shares"]
                top = max(shares, key=lambda s: shares[s])
                row[lang] = f"{_SHORT[top]} {shares[top]:.2f} H{steps[layer]['entropy']:.1f}"
            rows.append(row)
        print(f"{name}: most common script of the top-{args.top_k} candidates (share), mean entropy H (nats)")
        print(options.format_table(rows) + "\n")
    print("wrote " + ", ".join(str(p) for p in files.values()))
