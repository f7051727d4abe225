"""Per target: method, strength, neuron share and layers with the highest fluent success on the dev questions
(successive halving over candidates)."""

from __future__ import annotations

import argparse

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons calibrate`."""
    options.add_model_options(p)
    p.add_argument("--stats", required=True, help="statistics file (LAPE is rerun at each neuron share)")
    options.add_source_target_options(p)
    p.add_argument("--keep", type=int, default=2, help="candidates per target kept for the second round")
    p.add_argument("--questions-file",
                   help="tune on your own questions: JSONL lines {lang, question, split?} (the 'dev' ones if any, "
                        "else all) or JSON like the built-in set")
    options.add_generation_options(p)
    p.add_argument("-o", "--output", default="calibration.json", help="calibration file")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons calibrate`."""
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
