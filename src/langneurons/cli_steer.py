"""Subcommands that steer: generate, calibrate, and evaluate (every task of the registry)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from langneurons.cli_common import (
    add_generation_options,
    add_model_options,
    add_steering_options,
    load_inputs,
    parse_languages,
    parse_layers,
)
from langneurons.errors import LangNeuronsError


def cmd_generate(args: argparse.Namespace) -> None:
    from langneurons.generation import generate, resolve_prompt_format
    from langneurons.prompts import STOP_STRINGS, question_prompt, questions
    from langneurons.steering import steer

    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [line.rstrip("\n").replace("\\n", "\n") for line in Path(args.prompts_file).read_text("utf-8")
                    .splitlines() if line.strip()]
    asked = questions(args.questions, "eval") if args.questions else []
    if not prompts and not asked:
        raise LangNeuronsError("no prompts: give --prompt, --prompts-file or --questions LANG")
    if not args.steer:
        raise LangNeuronsError("say how to steer with --steer, e.g. --steer '-en +fr'")
    model, tok, neurons, stats = load_inputs(args)
    fmt = resolve_prompt_format(tok, args.prompt_format)
    prompts += [question_prompt(q, fmt) for q in asked]
    common = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "stop_strings": STOP_STRINGS,
              "repetition_penalty": args.repetition_penalty, "progress": not args.quiet, "prompt_format": fmt}
    baseline = generate(model, tok, prompts, **common)
    with steer(model, neurons, stats, args.steer, method=args.method, alpha=args.alpha, value=args.value,
               deactivation=args.deactivation, beta=args.beta, layers=parse_layers(args.layers),
               generated_only=args.generated_only, calibrated=args.calibrated) as s:
        steered = generate(model, tok, prompts, **common)
        described = s.config.describe()
    from langneurons.lid import get_identifier

    lid = get_identifier(args.identifier)
    rows = []
    for prompt, b, st, lb, ls in zip(prompts, baseline, steered, lid.identify(baseline), lid.identify(steered)):
        rows.append({"prompt": prompt, "prompt_format": fmt, "baseline": b, "baseline_language": lb.language,
                     "steered": st, "steered_language": ls.language, "steering": described})
        print(f"--- {prompt!r}\n  baseline [{lb.language or '-'}]: {b}\n  steered  [{ls.language or '-'}]: {st}")
    if args.output:
        from langneurons.artifacts import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        print(f"wrote {args.output}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from langneurons.calibrate import calibrate

    question_set = None
    if args.questions_file:
        from langneurons.prompts import load_questions

        loaded = load_questions(args.questions_file)
        split = "dev" if any(q["dev"] for q in loaded.values()) else "all"
        question_set = {lang: q[split] for lang, q in loaded.items()}
    model, tok, _, stats = load_inputs(args, need_stats=True)
    targets = parse_languages(args.targets) or stats.languages
    cal = calibrate(model, tok, stats, targets, sources=parse_languages(args.sources), keep=args.keep,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                    repetition_penalty=args.repetition_penalty, identifier=args.identifier, progress=not args.quiet,
                    question_set=question_set, prompt_format=args.prompt_format)
    cal.save(args.output)
    for target, setting in cal.settings.items():
        best = next(s for s in cal.scores[target] if s["setting"] == setting.label())
        print(f"{target}: {setting.label():32s} dev fluent success {best['stage2']['fluent_success']:.2f}")
    for target in cal.meta.get("failed", {}):
        print(f"{target}: no setting (no candidate gave a fluent success above 0)")
    print(f"wrote {args.output}")


def add_parsers(sub: Any) -> None:
    """Register generate, calibrate and evaluate on the main parser's subcommands."""
    g = sub.add_parser("generate", help="baseline and steered outputs side by side",
                       description="Generate from prompts without and with steering, with the identified language.")
    add_model_options(g)
    add_steering_options(g)
    g.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    g.add_argument("--prompts-file", help="one prompt per line ('\\n' for a newline)")
    g.add_argument("--questions", help="use the built-in questions of this language (as Q:/A: prompts in the plain "
                                       "format, as the user's message in the chat format)")
    add_generation_options(g)
    g.add_argument("-o", "--output", help="also write the rows as JSONL")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("calibrate", help="choose the steering setting per target language on dev prompts",
                       description="Per target: method, strength, neuron share and layers with the highest fluent "
                                   "success on the dev questions (successive halving over candidates).")
    add_model_options(c)
    c.add_argument("--stats", required=True, help="statistics file (LAPE is rerun at each neuron share)")
    c.add_argument("--targets", help="comma-separated (default: the statistics' languages)")
    c.add_argument("--sources", help="prompt languages (default: the statistics' languages)")
    c.add_argument("--keep", type=int, default=2, help="candidates per target kept for the second round")
    c.add_argument("--questions-file",
                   help="tune on your own questions: JSONL lines {lang, question, split?} (the 'dev' ones if any, "
                        "else all) or JSON like the built-in set")
    add_generation_options(c)
    c.add_argument("-o", "--output", default="calibration.json", help="calibration file")
    c.set_defaults(func=cmd_calibrate)

    from langneurons.tasks import TASKS, task_module

    modules = {name: task_module(name) for name in TASKS}
    e = sub.add_parser("evaluate", help="evaluation tasks (--list shows them)",
                       description="Run an evaluation task; `langneurons evaluate TASK --help` explains its options.")
    e.add_argument("--list", action="store_true", help="list the tasks")
    e.set_defaults(func=lambda a: print("\n".join(f"{k:12s} {m.SUMMARY}" for k, m in modules.items())))
    tasks = e.add_subparsers(dest="task", metavar="TASK")
    for name, module in modules.items():
        t = tasks.add_parser(name, help=module.SUMMARY, description=module.__doc__,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(t)
        t.set_defaults(func=module.main)
