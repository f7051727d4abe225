"""`langneurons evaluate forcing`: options, checks and printout of `langneurons.tasks.forcing`."""

from __future__ import annotations

import argparse
from typing import Any

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate forcing`."""
    options.add_model_options(p)
    options.add_steering_options(p, target_mode="deactivate-source")
    options.add_source_target_options(p)
    p.add_argument("--sweep", help="settings to compare, e.g. 'add:1,2,4 replace diffmean:1.5'")
    p.add_argument("--split", default="eval", choices=["eval", "dev", "all"], help="question split (default eval)")
    p.add_argument("--questions-file",
                   help="your own questions: JSONL lines {lang, question, split?} or JSON like the built-in set")
    p.add_argument("--no-baseline", action="store_true", help="skip the unsteered outputs")
    options.add_generation_options(p)
    p.add_argument("--output-dir", default="runs/forcing", help="results folder")


def _sweep(args: argparse.Namespace) -> list[Any]:
    """--sweep 'add:1,2 replace diffmean:1.5' (or the single --method/--alpha) as forcing settings."""
    if not args.sweep:
        return [options.forcing_setting(args)]
    out = []
    for item in args.sweep.split():
        method, _, strengths = item.partition(":")
        for strength in (strengths.split(",") if strengths else ["1"]):
            try:
                out.append(options.forcing_setting(args, method, float(strength)))
            except ValueError:
                raise LangNeuronsError(f"--sweep item {item!r}: write method:strength,strength") from None
    return out


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate forcing`."""
    from langneurons.data.prompts import load_questions
    from langneurons.tasks.forcing import run_forcing

    decoding = options.decoding_from_args(args)
    model, tok, neurons, stats = options.load_inputs(args)
    langs = stats.languages if stats is not None else (neurons.languages if neurons is not None else None)
    sources = options.parse_languages(args.sources) or langs
    targets = options.parse_languages(args.targets) or langs
    if not sources or not targets:
        raise LangNeuronsError("give --sources and --targets, or --stats/--neurons to take their languages")
    if args.calibrated:
        from langneurons.steering.calibration import Calibration

        cal = Calibration.load(args.calibrated)
        plan: Any = {"calibrated": {t: cal.setting(t) for t in targets}}
    else:
        plan = _sweep(args)
    question_set = None
    if args.questions_file:
        question_set = {lang: q[args.split] for lang, q in load_questions(args.questions_file).items()}
    result = run_forcing(model, tok, neurons, stats, sources, targets, plan, split=args.split,
                         question_set=question_set, baseline=not args.no_baseline, decoding=decoding,
                         identifier=args.identifier, progress=not args.quiet)
    files = result.save(args.output_dir)
    for label, summary in result.summary().items():
        per = " ".join(f"{t}:{v['fluent_success']:.2f}" for t, v in summary["per_target"].items())
        print(f"{label:28s} success {summary['success']:.3f}  fluent {summary['fluent_success']:.3f}  | {per}")
    print("wrote " + ", ".join(str(p) for p in files.values()))
