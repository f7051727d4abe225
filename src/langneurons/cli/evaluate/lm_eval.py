"""`langneurons evaluate lm-eval`: options, checks and printout of `langneurons.tasks.harness`."""

from __future__ import annotations

import argparse
from typing import Any

from langneurons.cli import options


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate lm-eval`."""
    options.add_model_options(p)
    options.add_steering_options(p)
    p.add_argument("--tasks", required=True, help="harness tasks, comma-separated (e.g. belebele_deu_Latn,xnli_de)")
    p.add_argument("--activate", help="also one steered run per language, comma-separated: '+Y' for each")
    p.add_argument("--setting", help="also a steered run with these saved steering settings (JSON)")
    p.add_argument("--data", help="folder of local JSONL (belebele/X.jsonl, xnli/X.jsonl, xquad/X.jsonl) for the "
                                  "tasks belebele_X, xnli_X, xquad_X (default: the harness reads the hub)")
    p.add_argument("--limit", type=int, help="first N items per task")
    p.add_argument("--num-fewshot", type=int, help="few-shot examples (default: each task's own)")
    p.add_argument("--batch-size", type=int, default=8, help="requests per forward pass (default 8)")
    p.add_argument("--log-samples", action="store_true", help="keep per-sample outputs in the harness JSON")
    p.add_argument("--output-dir", default="runs/lm-eval", help="results folder (default runs/lm-eval)")
    p.add_argument("--quiet", action="store_true", help="less harness logging")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate lm-eval`."""
    from langneurons.tasks.harness import _harness, run_lm_eval, task_specs

    _harness()
    tasks = options.parse_languages(args.tasks) or []
    steerings: list[Any] = [args.steer] if args.steer else []
    steerings += [f"+{lang}" for lang in options.parse_languages(args.activate) or []]
    if args.setting:
        steerings.append(args.setting)
    task_specs(tasks, args.data)  # bad task names or data before the model loads
    model, tok, neurons, stats = options.load_inputs(args)
    result = run_lm_eval(model, tok, tasks, steerings, neurons, stats, calibrated=args.calibrated, data=args.data,
                         limit=args.limit, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                         output_dir=args.output_dir, log_samples=args.log_samples, progress=not args.quiet,
                         **options.steering_keywords(args))
    print(result.table())
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
