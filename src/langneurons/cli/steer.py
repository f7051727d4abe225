"""Subcommands that steer: generate, calibrate, and evaluate (every task of the registry)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError


def _read_prompts(path: str) -> list[str]:
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise LangNeuronsError(f"--prompts-file {path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LangNeuronsError(f"--prompts-file {path}: cannot read it ({e}); give a UTF-8 text file") from None
    return [line.rstrip("\n").replace("\\n", "\n") for line in text.splitlines() if line.strip()]


def check_steering(args: argparse.Namespace) -> None:
    """Before the model loads: the expression parses, and every language it names is in the neuron set (with
    neurons) and, where the method needs means, in the statistics."""
    from langneurons.core.artifacts import read_meta
    from langneurons.steering.config import SteeringConfig

    config = SteeringConfig.from_expression(args.steer, args.method, args.alpha, args.value, args.deactivation,
                                            args.beta, options.parse_layers(args.layers), args.generated_only)
    if args.calibrated:
        return
    if args.neurons and (config.method != "residual" or config.deactivate):
        meta = read_meta(args.neurons, "neurons")
        counts = meta.get("counts", {})
        for lang in config.languages if config.method != "residual" else config.deactivate:
            if lang not in meta.get("languages", []) or counts.get(lang) == 0:
                raise LangNeuronsError(f"--steer names '{lang}', which has no neurons in {args.neurons} "
                                       f"(it has {', '.join(meta.get('languages', []))}); choose another language "
                                       "or identify neurons for it")
    if args.stats and config.activate and config.method != "scale":
        langs = read_meta(args.stats, "stats").get("languages", [])
        for lang in config.activate:
            if lang not in langs:
                raise LangNeuronsError(f"--steer activates '{lang}', which {args.stats} has no statistics for "
                                       f"(it has {', '.join(langs)}); collect statistics for it")


def cmd_generate(args: argparse.Namespace) -> None:
    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += _read_prompts(args.prompts_file)
    from langneurons.data.prompts import questions

    asked = questions(args.questions, "eval") if args.questions else []
    if not prompts and not asked:
        raise LangNeuronsError("no prompts: give --prompt, --prompts-file or --questions LANG")
    if not args.steer:
        raise LangNeuronsError("say how to steer with --steer, e.g. --steer '-en +fr'")
    if args.output:
        check_output(args.output, [args.neurons, args.stats, args.calibrated, args.prompts_file])
    check_steering(args)
    from langneurons.data.prompts import STOP_STRINGS, question_prompt
    from langneurons.steering.edits import steer
    from langneurons.steering.generation import generate

    decoding = options.decoding_from_args(args)
    model, tok, neurons, stats = options.load_inputs(args)
    decoding = decoding.resolved(tok)
    fmt = decoding.prompt_format
    prompts += [question_prompt(q, fmt) for q in asked]
    baseline = generate(model, tok, prompts, decoding, stop_strings=STOP_STRINGS, progress=not args.quiet)
    with steer(model, neurons, stats, args.steer, method=args.method, alpha=args.alpha, value=args.value,
               deactivation=args.deactivation, beta=args.beta, layers=options.parse_layers(args.layers),
               generated_only=args.generated_only, calibrated=args.calibrated) as s:
        steered = generate(model, tok, prompts, decoding, stop_strings=STOP_STRINGS, progress=not args.quiet)
        described = s.config.describe()
    from langneurons.tasks.lid import get_identifier

    lid = get_identifier(args.identifier)
    rows = []
    for prompt, b, st, lb, ls in zip(prompts, baseline, steered, lid.identify(baseline), lid.identify(steered)):
        rows.append({"prompt": prompt, "prompt_format": fmt, "baseline": b, "baseline_language": lb.language,
                     "steered": st, "steered_language": ls.language, "steering": described})
        print(f"--- {prompt!r}\n  baseline [{lb.language or '-'}]: {b}\n  steered  [{ls.language or '-'}]: {st}")
    from langneurons.core.distributed import is_main

    if args.output and is_main():
        from langneurons.core.artifacts import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        print(f"wrote {args.output}")


def cmd_calibrate(args: argparse.Namespace) -> None:
    from langneurons.core.artifacts import read_meta
    from langneurons.steering.calibration import KIND
    from langneurons.tasks.calibrate import calibrate

    check_output(args.output, [args.stats], kind=KIND)
    langs = read_meta(args.stats, "stats").get("languages", [])
    for option in ("targets", "sources"):
        missing = [x for x in options.parse_languages(getattr(args, option)) or [] if x not in langs]
        if missing:
            raise LangNeuronsError(f"--{option} {', '.join(missing)}: not in {args.stats} (it has {', '.join(langs)});"
                                   " choose among those or collect statistics for them")
    question_set = None
    if args.questions_file:
        from langneurons.data.prompts import load_questions

        loaded = load_questions(args.questions_file)
        split = "dev" if any(q["dev"] for q in loaded.values()) else "all"
        question_set = {lang: q[split] for lang, q in loaded.items()}
    decoding = options.decoding_from_args(args)
    model, tok, _, stats = options.load_inputs(args, need_stats=True)
    targets = options.parse_languages(args.targets) or stats.languages
    cal = calibrate(model, tok, stats, targets, sources=options.parse_languages(args.sources), keep=args.keep,
                    decoding=decoding, identifier=args.identifier, progress=not args.quiet, question_set=question_set)
    cal.save(args.output)
    for target in cal.meta.get("failed", {}):
        print(f"{target}: no setting (no candidate gave a fluent success above 0)")
    for target, setting in cal.settings.items():
        best = next(s for s in cal.scores[target] if s["setting"] == setting.label())
        print(f"{target}: {setting.label():32s} dev fluent success {best['stage2']['fluent_success']:.2f}")
    print(f"wrote {args.output}")


def cmd_export(args: argparse.Namespace) -> None:
    from langneurons.steering.config import SteeringConfig
    from langneurons.steering.edits import build_steering
    from langneurons.steering.export import export_steering

    if bool(args.steer) == bool(args.setting):
        raise LangNeuronsError("say what to export: --steer '+de' or --setting FILE (one of them)")
    if Path(args.output).suffix not in (".pt", ".pth"):
        raise LangNeuronsError(f"-o {args.output}: the harness reads steering files named *.pt; name the output *.pt")
    config = SteeringConfig.load(args.setting) if args.setting else None
    model, _, neurons, stats = options.load_inputs(args)
    steering = build_steering(model, neurons, stats, args.steer, config=config, method=args.method, alpha=args.alpha,
                              value=args.value, deactivation=args.deactivation, beta=args.beta,
                              layers=options.parse_layers(args.layers), generated_only=args.generated_only,
                              calibrated=args.calibrated)
    info = export_steering(steering, args.output, args.format)
    print(f"kept: {info['kept']}; dropped: {', '.join(info['dropped']) or 'nothing'}")
    print(f"wrote {args.output} and {args.output}.json; use: {info['use']}")


def add_parsers(sub: Any, selected: Callable[[str], bool] = lambda _name: True) -> None:
    """Register generate, calibrate and evaluate on the main parser's subcommands; a task's module is imported
    (for its options) only if `selected(task)`."""
    g = sub.add_parser("generate", help="baseline and steered outputs side by side",
                       description="Generate from prompts without and with steering, with the identified language.")
    options.add_model_options(g)
    options.add_steering_options(g)
    g.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    g.add_argument("--prompts-file", help="one prompt per line ('\\n' for a newline)")
    g.add_argument("--questions", help="use the built-in questions of this language (as Q:/A: prompts in the plain "
                                       "format, as the user's message in the chat format)")
    options.add_generation_options(g)
    g.add_argument("-o", "--output", help="also write the rows as JSONL")
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("calibrate", help="choose the steering setting per target language on dev prompts",
                       description="Per target: method, strength, neuron share and layers with the highest fluent "
                                   "success on the dev questions (successive halving over candidates).")
    options.add_model_options(c)
    c.add_argument("--stats", required=True, help="statistics file (LAPE is rerun at each neuron share)")
    c.add_argument("--targets", help="comma-separated (default: the statistics' languages)")
    c.add_argument("--sources", help="prompt languages (default: the statistics' languages)")
    c.add_argument("--keep", type=int, default=2, help="candidates per target kept for the second round")
    c.add_argument("--questions-file",
                   help="tune on your own questions: JSONL lines {lang, question, split?} (the 'dev' ones if any, "
                        "else all) or JSON like the built-in set")
    options.add_generation_options(c)
    c.add_argument("-o", "--output", default="calibration.json", help="calibration file")
    c.set_defaults(func=cmd_calibrate)

    x = sub.add_parser("export", help="write a steering setting in another tool's format (lm-eval-steer)",
                       description="Write the additive part of a steering setting as lm-evaluation-harness's "
                                   "`steered` model file (.pt); deactivation, scale and replace are dropped.")
    options.add_model_options(x)
    options.add_steering_options(x)
    x.add_argument("--setting", help="saved steering settings (JSON) instead of --steer")
    x.add_argument("--format", default="lm-eval-steer", choices=["lm-eval-steer"], help="output format")
    x.add_argument("-o", "--output", default="steer.pt", help="output file (default steer.pt)")
    x.set_defaults(func=cmd_export)

    from langneurons.cli.evaluate import TASKS, task_module
    helps = {name: options.module_help(module) for name, module in TASKS.items()}
    e = sub.add_parser("evaluate", help="evaluation tasks (--list shows them)",
                       description="Run an evaluation task; `langneurons evaluate TASK --help` explains its options.")
    e.add_argument("--list", action="store_true", help="list the tasks")
    e.set_defaults(func=lambda a: print("\n".join(f"{k:12s} {summary}" for k, (_, summary) in helps.items())))
    tasks = e.add_subparsers(dest="task", metavar="TASK")
    for name, (doc, summary) in helps.items():
        t = tasks.add_parser(name, help=summary, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
        if selected(name):
            module = task_module(name)
            module.add_arguments(t)
            t.set_defaults(func=module.main)
