"""Subcommands that steer: generate, calibrate, evaluate (forcing, fallback)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError

TASKS = {
    "forcing": "source x target grid: is the steered answer in the target language (and fluent)?",
    "fallback": "deactivate languages one after another: which language does the model fall back to?",
}


def _langs(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _layers(text: str | None) -> tuple[int, int] | None:
    """'12-17' (inclusive) -> (12, 18)."""
    if not text:
        return None
    try:
        start, end = (int(x) for x in text.split("-"))
    except ValueError:
        raise LangNeuronsError(f"--layers {text!r}: write first-last, e.g. 12-17") from None
    return (start, end + 1)


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="gemma-3-270m", help="HF id, folder, .gguf, or the embedded 'gemma-3-270m'")
    p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16, float16 or auto")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")


def add_steering_options(p: argparse.ArgumentParser, expression: bool = True) -> None:
    """Options that say how to steer (the forcing grid builds its own expressions per cell)."""
    p.add_argument("--neurons", help="neuron set file (from `identify`)")
    p.add_argument("--stats", help="statistics file (from `collect`): means for add/replace/diffmean/residual")
    if expression:
        p.add_argument("--steer", help="expression, e.g. '-en +fr', '+2.5*fr', '-en -de +ja'")
    p.add_argument("--method", default="add", choices=["add", "scale", "replace", "diffmean", "residual"],
                   help="how to activate: add alpha*mean, scale by beta, replace with the mean, add the difference "
                        "of means, or residual-stream DiffMean (default add)")
    p.add_argument("--alpha", type=float, default=None, help="activation strength (default 1; 2 for scale)")
    p.add_argument("--value", type=float, default=0.0, help="value deactivated neurons are set to (default 0)")
    if expression:
        p.add_argument("--deactivation", default="set", choices=["set", "scale"],
                       help="set to --value or scale by --beta")
        p.add_argument("--beta", type=float, default=None, help="factor for --deactivation scale (default 0)")
    p.add_argument("--layers", help="edit only these layers, first-last inclusive (e.g. 12-17)")
    p.add_argument("--generated-only", action="store_true", help="leave the prompt's tokens unedited")
    p.add_argument("--calibrated", help="calibration file (from `calibrate`): per-target method and strength")


def add_generation_options(p: argparse.ArgumentParser, max_new_tokens: int = 40) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new_tokens, help=f"default {max_new_tokens}")
    p.add_argument("--batch-size", type=int, default=64, help="prompts per batch (default 64)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="greedy decoding with this repetition penalty (default 1.0: plain greedy)")
    p.add_argument("--identifier", default="fasttext", choices=["fasttext", "script"], help="language identifier")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _load(args: argparse.Namespace, need_stats: bool = False) -> tuple[Any, Any, Any, Any]:
    """Model, tokenizer, neuron set and statistics named by the options."""
    from langneurons.models import load_model
    from langneurons.neurons import NeuronSet
    from langneurons.stats import ActivationStats

    neurons = NeuronSet.load(args.neurons) if getattr(args, "neurons", None) else None
    stats = ActivationStats.load(args.stats) if getattr(args, "stats", None) else None
    if need_stats and stats is None:
        raise LangNeuronsError("this command needs --stats (a statistics file from `collect`)")
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    if neurons is not None:
        neurons.check_model(model)
    return model, tok, neurons, stats


def cmd_generate(args: argparse.Namespace) -> None:
    from langneurons.generation import generate
    from langneurons.prompts import STOP_STRINGS, qa_prompt, questions
    from langneurons.steering import steer

    prompts = list(args.prompt or [])
    if args.prompts_file:
        prompts += [line.rstrip("\n").replace("\\n", "\n") for line in Path(args.prompts_file).read_text("utf-8")
                    .splitlines() if line.strip()]
    if args.questions:
        prompts += [qa_prompt(q) for q in questions(args.questions, "eval")]
    if not prompts:
        raise LangNeuronsError("no prompts: give --prompt, --prompts-file or --questions LANG")
    if not args.steer:
        raise LangNeuronsError("say how to steer with --steer, e.g. --steer '-en +fr'")
    model, tok, neurons, stats = _load(args)
    common = {"max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size, "stop_strings": STOP_STRINGS,
              "repetition_penalty": args.repetition_penalty, "progress": not args.quiet}
    baseline = generate(model, tok, prompts, **common)
    with steer(model, neurons, stats, args.steer, method=args.method, alpha=args.alpha, value=args.value,
               deactivation=args.deactivation, beta=args.beta, layers=_layers(args.layers),
               generated_only=args.generated_only, calibrated=args.calibrated) as s:
        steered = generate(model, tok, prompts, **common)
        described = s.config.describe()
    from langneurons.lid import get_identifier

    lid = get_identifier(args.identifier)
    rows = []
    for prompt, b, st, lb, ls in zip(prompts, baseline, steered, lid.identify(baseline), lid.identify(steered)):
        rows.append({"prompt": prompt, "baseline": b, "baseline_language": lb.language, "steered": st,
                     "steered_language": ls.language, "steering": described})
        print(f"--- {prompt!r}\n  baseline [{lb.language or '-'}]: {b}\n  steered  [{ls.language or '-'}]: {st}")
    if args.output:
        from langneurons.artifacts import atomic_path

        with atomic_path(args.output) as tmp:
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
        print(f"wrote {args.output}")


def _sweep(args: argparse.Namespace) -> list[Any]:
    """--sweep 'add:1,2 replace diffmean:1.5' (or the single --method/--alpha) as forcing settings."""
    from langneurons.tasks.forcing import ForcingSetting

    deactivate = args.mode == "deactivate-source"
    common = {"deactivate_source": deactivate, "value": args.value, "layers": _layers(args.layers),
              "generated_only": args.generated_only, "top_rate": args.top_rate}
    if not args.sweep:
        return [ForcingSetting(args.method, args.alpha if args.alpha is not None else 1.0, **common)]
    out = []
    for item in args.sweep.split():
        method, _, strengths = item.partition(":")
        for strength in (strengths.split(",") if strengths else ["1"]):
            try:
                out.append(ForcingSetting(method, float(strength), **common))
            except ValueError:
                raise LangNeuronsError(f"--sweep item {item!r}: write method:strength,strength") from None
    return out


def cmd_forcing(args: argparse.Namespace) -> None:
    from langneurons.prompts import load_questions
    from langneurons.tasks.forcing import run_forcing

    model, tok, neurons, stats = _load(args)
    langs = stats.languages if stats is not None else (neurons.languages if neurons is not None else None)
    sources = _langs(args.sources) or langs
    targets = _langs(args.targets) or langs
    if not sources or not targets:
        raise LangNeuronsError("give --sources and --targets, or --stats/--neurons to take their languages")
    if args.calibrated:
        from langneurons.calibrate import Calibration

        cal = Calibration.load(args.calibrated)
        plan: Any = {"calibrated": {t: cal.setting(t) for t in targets}}
    else:
        plan = _sweep(args)
    question_set = None
    if args.questions_file:
        question_set = {lang: q[args.split] for lang, q in load_questions(args.questions_file).items()}
    result = run_forcing(model, tok, neurons, stats, sources, targets, plan, split=args.split,
                         question_set=question_set, baseline=not args.no_baseline,
                         max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                         repetition_penalty=args.repetition_penalty, identifier=args.identifier,
                         progress=not args.quiet)
    files = result.save(args.output_dir)
    for label, summary in result.summary().items():
        per = " ".join(f"{t}:{v['fluent_success']:.2f}" for t, v in summary["per_target"].items())
        print(f"{label:28s} success {summary['success']:.3f}  fluent {summary['fluent_success']:.3f}  | {per}")
    print("wrote " + ", ".join(str(p) for p in files.values()))


def cmd_fallback(args: argparse.Namespace) -> None:
    from langneurons.tasks.fallback import run_fallback

    model, tok, neurons, _ = _load(args)
    if neurons is None:
        raise LangNeuronsError("fallback needs --neurons (a neuron set file from `identify`)")
    result = run_fallback(model, tok, neurons, args.language, order=_langs(args.order), value=args.value,
                          max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                          identifier=args.identifier, repetition_penalty=args.repetition_penalty,
                          progress=not args.quiet)
    files = result.save(args.output_dir)
    for step in result.steps:
        top = sorted(step["distribution"].items(), key=lambda kv: -kv[1])[:4]
        print(f"{' '.join('-' + x for x in step['deactivated']) or 'none':40s} "
              + "  ".join(f"{k or 'none'} {v:.2f}" for k, v in top))
    print("wrote " + ", ".join(str(p) for p in files.values()))


def cmd_calibrate(args: argparse.Namespace) -> None:
    from langneurons.calibrate import calibrate

    model, tok, _, stats = _load(args, need_stats=True)
    targets = _langs(args.targets) or stats.languages
    cal = calibrate(model, tok, stats, targets, sources=_langs(args.sources), keep=args.keep,
                    max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                    repetition_penalty=args.repetition_penalty, identifier=args.identifier, progress=not args.quiet)
    cal.save(args.output)
    for target, setting in cal.settings.items():
        best = next(s for s in cal.scores[target] if s["setting"] == setting.label())
        print(f"{target}: {setting.label():32s} dev fluent success {best['stage2']['fluent_success']:.2f}")
    print(f"wrote {args.output}")


def add_parsers(sub: Any) -> None:
    """Register generate, calibrate and evaluate on the main parser's subcommands."""
    g = sub.add_parser("generate", help="baseline and steered outputs side by side",
                       description="Generate from prompts without and with steering, with the identified language.")
    add_model_options(g)
    add_steering_options(g)
    g.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    g.add_argument("--prompts-file", help="one prompt per line ('\\n' for a newline)")
    g.add_argument("--questions", help="use the built-in questions of this language as Q:/A: prompts")
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
    add_generation_options(c)
    c.add_argument("-o", "--output", default="calibration.json", help="calibration file")
    c.set_defaults(func=cmd_calibrate)

    e = sub.add_parser("evaluate", help="evaluation tasks (--list shows them)",
                       description="Run an evaluation task: " + "; ".join(f"{k}: {v}" for k, v in TASKS.items()))
    e.add_argument("--list", action="store_true", help="list the tasks")
    e.set_defaults(func=lambda a: print("\n".join(f"{k:10s} {v}" for k, v in TASKS.items())))
    tasks = e.add_subparsers(dest="task", metavar="TASK")

    f = tasks.add_parser("forcing", help=TASKS["forcing"], description=TASKS["forcing"])
    add_model_options(f)
    add_steering_options(f, expression=False)
    f.add_argument("--sources", help="prompt languages (default: the statistics' languages)")
    f.add_argument("--targets", help="target languages (default: the statistics' languages)")
    f.add_argument("--mode", default="deactivate-source", choices=["activate", "deactivate-source"],
                   help="activate the target only, or deactivate the source first (default)")
    f.add_argument("--sweep", help="settings to compare, e.g. 'add:1,2,4 replace diffmean:1.5'")
    f.add_argument("--top-rate", type=float, help="rerun LAPE on --stats at this neuron share")
    f.add_argument("--split", default="eval", choices=["eval", "dev", "all"], help="question split (default eval)")
    f.add_argument("--questions-file", help="your own questions (JSON, same schema as the built-in set)")
    f.add_argument("--no-baseline", action="store_true", help="skip the unsteered outputs")
    add_generation_options(f)
    f.add_argument("--output-dir", default="runs/forcing", help="results folder")
    f.set_defaults(func=cmd_forcing)

    b = tasks.add_parser("fallback", help=TASKS["fallback"], description=TASKS["fallback"])
    add_model_options(b)
    b.add_argument("--neurons", required=True, help="neuron set file")
    b.add_argument("--language", required=True, help="language of the prompts (built-in questions)")
    b.add_argument("--order", help="languages to deactivate, in order (default: the prompt language, then the rest)")
    b.add_argument("--value", type=float, default=0.0, help="value deactivated neurons are set to")
    add_generation_options(b)
    b.add_argument("--output-dir", default="runs/fallback", help="results folder")
    b.set_defaults(func=cmd_fallback)
