"""On the embedded gemma-3-270m and the UDHR: collect statistics, identify LAPE neurons, run the calibrated forcing
grid and the perplexity matrix, and write an HTML report. A rerun continues where an interrupted one stopped."""

from __future__ import annotations

import argparse

from langneurons.cli import options
from langneurons.cli.demo_job import LANGUAGES, run_demo
from langneurons.core.checks import check_output


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons demo`."""
    p.add_argument("--model", default="gemma-3-270m", help="model (default: the embedded gemma-3-270m)")
    p.add_argument("--languages", help=f"comma-separated (default {','.join(LANGUAGES)})")
    p.add_argument("--max-tokens", type=int, default=None, help="token budget per language (default: all)")
    p.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--top-rate", type=float, default=0.01, help="LAPE share of neurons (default 0.01)")
    p.add_argument("--calibration", help="calibration file for the grid (default: the one shipped for the embedded "
                                         "model)")
    p.add_argument("--questions", type=int, help="eval questions per prompt language in the grid (default: all 8)")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per generation batch (default 64)")
    p.add_argument("--no-grid", action="store_true", help="skip the calibrated forcing grid")
    p.add_argument("--no-perplexity", action="store_true", help="skip the perplexity matrix")
    p.add_argument("--output-dir", default="runs/demo", help="where results go (default runs/demo)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    options.add_threads_option(p)


def main(args: argparse.Namespace) -> None:
    """Run `langneurons demo`."""
    check_output(args.output_dir, option="--output-dir", folder=True)
    run_demo(args.model, options.parse_languages(args.languages), args.output_dir, max_tokens=args.max_tokens,
             window=args.window, top_rate=args.top_rate, calibration=args.calibration, questions=args.questions,
             batch_size=args.batch_size, grid=not args.no_grid, perplexity=not args.no_perplexity,
             progress=not args.quiet)
