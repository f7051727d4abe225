"""Generate from prompts without and with steering, with the identified language."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons generate`."""
    options.add_model_options(p)
    options.add_steering_options(p)
    p.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    p.add_argument("--prompts-file", help="one prompt per line ('\\n' for a newline)")
    p.add_argument("--questions", help="use the built-in questions of this language (as Q:/A: prompts in the plain "
                                       "format, as the user's message in the chat format)")
    options.add_generation_options(p)
    p.add_argument("-o", "--output", help="also write the rows as JSONL")


def _read_prompts(path: str) -> list[str]:
    try:
        text = Path(path).read_text("utf-8")
    except FileNotFoundError:
        raise LangNeuronsError(f"--prompts-file {path}: no such file; check the path") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LangNeuronsError(f"--prompts-file {path}: cannot read it ({e}); give a UTF-8 text file") from None
    return [line.rstrip("\n").replace("\\n", "\n") for line in text.splitlines() if line.strip()]


def _check_steering(args: argparse.Namespace) -> None:
    """Before the model loads: the expression parses, and every language it names is in the neuron set (with
    neurons) and, where the method needs means, in the statistics."""
    from langneurons.core.artifacts import read_meta
    from langneurons.steering.config import SteeringConfig

    config = SteeringConfig.from_expression(args.steer, **options.steering_keywords(args))
    if args.calibrated:
        return
    if args.top_rate is not None and not args.stats:
        raise LangNeuronsError("--top-rate computes LAPE's neurons from statistics; give --stats")
    if args.neurons and config.top_rate is None and (config.method != "residual" or config.deactivate):
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


def main(args: argparse.Namespace) -> None:
    """Run `langneurons generate`."""
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
    _check_steering(args)
    from langneurons.data.prompts import STOP_STRINGS, question_prompt
    from langneurons.steering.edits import steer
    from langneurons.steering.generation import generate

    decoding = options.decoding_from_args(args)
    model, tok, neurons, stats = options.load_inputs(args)
    decoding = decoding.resolved(tok)
    fmt = decoding.prompt_format
    prompts += [question_prompt(q, fmt) for q in asked]
    baseline = generate(model, tok, prompts, decoding, stop_strings=STOP_STRINGS, progress=not args.quiet)
    with steer(model, neurons, stats, args.steer, calibrated=args.calibrated, **options.steering_keywords(args)) as s:
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
