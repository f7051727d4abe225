"""`langneurons evaluate fallback`: options, checks and printout of `langneurons.tasks.fallback`."""

from __future__ import annotations

import argparse

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate fallback`."""
    options.add_model_options(p)
    p.add_argument("--neurons", required=True, help="neuron set file")
    p.add_argument("--language", required=True, help="language of the prompts (built-in questions)")
    p.add_argument("--order", help="languages to deactivate, in order (default: the prompt language, then the rest)")
    p.add_argument("--value", type=float, default=0.0, help="value deactivated neurons are set to")
    options.add_generation_options(p)
    p.add_argument("--output-dir", default="runs/fallback", help="results folder")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate fallback`."""
    from langneurons.tasks.fallback import run_fallback

    decoding = options.decoding_from_args(args)
    model, tok, neurons, _ = options.load_inputs(args)
    if neurons is None:
        raise LangNeuronsError("fallback needs --neurons (a neuron set file from `identify`)")
    result = run_fallback(model, tok, neurons, args.language, order=options.parse_languages(args.order),
                          value=args.value, decoding=decoding, identifier=args.identifier, progress=not args.quiet)
    files = result.save(args.output_dir)
    for step in result.steps:
        top = sorted(step["distribution"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{' '.join('-' + x for x in step['deactivated']) or 'none':40s} "
              + "  ".join(f"{k or 'none'} {v:.2f}" for k, v in top))
    print("wrote " + ", ".join(str(p) for p in files.values()))
