"""`langneurons evaluate translation`: options, checks and printout of `langneurons.tasks.translation`."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError
from langneurons.data.parallel import DEFAULT_TEMPLATE, parse_pairs

if TYPE_CHECKING:
    from langneurons.steering.config import ForcingSetting


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate translation`."""
    options.add_model_options(p)
    options.add_steering_options(p, target_mode="activate")
    p.add_argument("--pairs", help="source-target pairs, e.g. en-de,en-fr")
    p.add_argument("--source", help="source language (with --targets, instead of --pairs)")
    p.add_argument("--targets", help="target languages, e.g. de,fr,ru,zh,ar")
    p.add_argument("--data", default="udhr",
                   help="'udhr' (embedded, default), 'flores' (FLORES+ from the hub) or a JSONL file/folder of "
                        '{"id", "lang", "text"} rows')
    p.add_argument("--split", help="udhr: all (default), train or heldout (articles 9, 19, 29); flores: devtest "
                                   "(default) or dev")
    p.add_argument("--n", type=int, default=30, help="segments per pair (default 30; 0: all)")
    p.add_argument("--template", default=DEFAULT_TEMPLATE,
                   help="prompt with {src_name} {tgt_name} {src} {tgt} {source}; \\n is a newline (default: "
                        "'Translate from {src_name} to {tgt_name}.\\n{src_name}: {source}\\n{tgt_name}:')")
    p.add_argument("--shots", type=int, default=0, help="example translations before the prompt (default 0)")
    p.add_argument("--names", help="language names for prompts, e.g. 'de=German,xx=Name' (built in for 33 codes)")
    p.add_argument("--baseline-only", action="store_true", help="only the unsteered translations")
    options.add_generation_options(p, max_new_tokens=256)
    p.add_argument("--fresh", action="store_true", help="start over instead of continuing the samples file")
    p.add_argument("--no-plot", action="store_true", help="skip the bar plot")
    p.add_argument("--output-dir", default="runs/translation", help="results folder (default runs/translation)")


def _pairs(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.pairs and (args.source or args.targets):
        raise LangNeuronsError("give --pairs or --source/--targets, not both")
    if args.pairs:
        return parse_pairs(args.pairs)
    targets = options.parse_languages(args.targets)
    if not args.source or not targets:
        raise LangNeuronsError("give --pairs en-de,en-fr or --source en --targets de,fr")
    return [(args.source, t) for t in targets]


def _names(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    out = {}
    for item in text.split(","):
        code, sep, name = item.partition("=")
        if not sep or not code.strip() or not name.strip():
            raise LangNeuronsError(f"--names item {item!r}: write code=Name, e.g. de=German")
        out[code.strip()] = name.strip()
    return out


def _steering(args: argparse.Namespace, targets: Sequence[str]) -> ForcingSetting | dict[str, ForcingSetting] | None:
    if args.baseline_only:
        return None
    deactivate = args.mode == "deactivate-source"
    if args.calibrated:
        from langneurons.steering.calibration import Calibration

        cal = Calibration.load(args.calibrated)
        return {t: dataclasses.replace(cal.setting(t), deactivate_source=deactivate) for t in targets}
    return options.forcing_setting(args)


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate translation`."""
    from langneurons.tasks.translation import SETTINGS, run_translation

    pairs = _pairs(args)
    steering = _steering(args, [t for _, t in pairs])
    decoding = options.decoding_from_args(args)
    model, tok, neurons, stats = options.load_inputs(args)
    result = run_translation(
        model, tok, neurons, stats, pairs, data=args.data, output_dir=args.output_dir, n=args.n or None,
        steering=steering, split=args.split, template=args.template.replace("\\n", "\n"), shots=args.shots,
        names=_names(args.names), decoding=decoding, identifier=args.identifier, fresh=args.fresh,
        plot=not args.no_plot, progress=not args.quiet,
    )
    rows = []
    for name, cell in result.summary["pairs"].items():
        row = {"pair": name}
        for label in (label for label in SETTINGS if label in cell):
            row.update({f"{label} chrF": f"{cell[label]['chrf']:.1f}", f"{label} BLEU": f"{cell[label]['bleu']:.1f}",
                        f"{label} in target": f"{cell[label]['target_share']:.2f}"})
        if "delta" in cell:
            row.update({"delta chrF": f"{cell['delta']['chrf']:+.1f}", "delta BLEU": f"{cell['delta']['bleu']:+.1f}"})
        rows.append(row)
    print(options.format_table(rows))
    for name, cell in result.summary["pairs"].items():
        print(f"{name}: chrF {cell['signatures']['chrf']}\n{' ' * len(name)}  BLEU {cell['signatures']['bleu']}")
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
