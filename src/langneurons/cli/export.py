"""Write the additive part of a steering setting as lm-evaluation-harness's `steered` model file (.pt); deactivation,
scale and replace are dropped."""

from __future__ import annotations

import argparse
from pathlib import Path

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons export`."""
    options.add_model_options(p)
    options.add_steering_options(p)
    p.add_argument("--setting", help="saved steering settings (JSON) instead of --steer")
    p.add_argument("--format", default="lm-eval-steer", choices=["lm-eval-steer"], help="output format")
    p.add_argument("-o", "--output", default="steer.pt", help="output file (default steer.pt)")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons export`."""
    from langneurons.steering.config import SteeringConfig
    from langneurons.steering.edits import build_steering
    from langneurons.steering.export import export_steering

    if bool(args.steer) == bool(args.setting):
        raise LangNeuronsError("say what to export: --steer '+de' or --setting FILE (one of them)")
    if Path(args.output).suffix not in (".pt", ".pth"):
        raise LangNeuronsError(f"-o {args.output}: the harness reads steering files named *.pt; name the output *.pt")
    config = SteeringConfig.load(args.setting) if args.setting else None
    model, _, neurons, stats = options.load_inputs(args)
    steering = build_steering(model, neurons, stats, args.steer, config=config, calibrated=args.calibrated,
                              **(options.steering_keywords(args) if args.steer else {}))
    info = export_steering(steering, args.output, args.format)
    print(f"kept: {info['kept']}; dropped: {', '.join(info['dropped']) or 'nothing'}")
    print(f"wrote {args.output} and {args.output}.json; use: {info['use']}")
