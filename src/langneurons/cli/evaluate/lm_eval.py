"""lm-evaluation-harness with steering: every harness task, baseline and steered, from one loaded model.

`lm_eval_model(model, tokenizer, steering)` wraps a loaded model in the harness's HF model class (`HFLM`) so that
every forward pass it makes (log-likelihoods and `generate_until`) runs inside our steering; `lm_eval.simple_evaluate`
takes it like any harness model. `run_lm_eval` evaluates a list of harness tasks unsteered and under each steering,
writes the harness's results JSON for each, and our results summary (kind `results`: scores, the change from the
baseline per task, a heatmap of the changes) for the report.

Local data: Belebele, XNLI and XQuAD tasks can read local JSONL files in the hub's schema (`data=DIR`): a task named
`belebele_X`, `xnli_X` or `xquad_X` reads `DIR/<belebele|xnli|xquad>/X.jsonl` through the task YAMLs shipped in
`langneurons/data/lm_eval/` (`dataset_path: json`), with the harness's prompts and metrics (XQuAD: ours, see
`langneurons.tasks.xquad`). Every other task name goes to the harness as it is (its data from the hub).

Needs the optional extra: `pip install 'langneurons[lm-eval]'`.
"""

from __future__ import annotations

import argparse
from typing import Any

from langneurons.cli.options import add_model_options, add_steering_options, load_inputs, parse_languages, parse_layers

SUMMARY = "any lm-evaluation-harness task (belebele_*, xnli_*, xquad_*, xcopa_*, ...): baseline vs steered"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate lm-eval`."""
    add_model_options(p)
    add_steering_options(p)
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
    tasks = parse_languages(args.tasks) or []
    steerings: list[Any] = [args.steer] if args.steer else []
    steerings += [f"+{lang}" for lang in parse_languages(args.activate) or []]
    if args.setting:
        steerings.append(args.setting)
    task_specs(tasks, args.data)  # bad task names or data before the model loads
    model, tok, neurons, stats = load_inputs(args)
    result = run_lm_eval(model, tok, tasks, steerings, neurons, stats, calibrated=args.calibrated, data=args.data,
                         limit=args.limit, num_fewshot=args.num_fewshot, batch_size=args.batch_size,
                         output_dir=args.output_dir, log_samples=args.log_samples, progress=not args.quiet,
                         method=args.method, alpha=args.alpha, value=args.value, deactivation=args.deactivation,
                         beta=args.beta, layers=parse_layers(args.layers), generated_only=args.generated_only)
    print(result.table())
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
