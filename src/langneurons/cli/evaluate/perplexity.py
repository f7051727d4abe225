"""`langneurons evaluate perplexity`: options, checks and printout of `langneurons.tasks.perplexity`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from langneurons.tasks.perplexity import PerplexityResult

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError
from langneurons.steering.methods import DEACTIVATIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate perplexity`."""
    options.add_model_options(p)
    p.add_argument("--neurons", required=True, help="neuron set file (from `identify`)")
    options.add_corpus_options(p, "comma-separated evaluated languages (default: the neuron set's); each one with "
                                  "neurons is also deactivated in turn",
                               heldout="the held-out documents are used: the same corpus and --heldout-every as "
                                       "`collect` keep them apart from the statistics' text")
    p.add_argument("--deactivation", default="set", choices=list(DEACTIVATIONS),
                   help="set the neurons to --value, or scale them by --beta (default set)")
    p.add_argument("--value", type=float, default=0.0, help="value deactivated neurons are set to (default 0)")
    p.add_argument("--beta", type=float, default=None, help="factor for --deactivation scale (default 0)")
    p.add_argument("--no-control", action="store_true", help="skip the random-neuron control")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control set (default 0)")
    p.add_argument("--max-tokens", type=int, default=None, help="held-out tokens per language (default: all)")
    p.add_argument("--window", type=int, default=512, help="tokens per window, BOS included (default 512)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--output-dir", default="runs/perplexity", help="results folder (a rerun resumes there)")
    p.add_argument("--fresh", action="store_true", help="discard cells measured before in --output-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _table(result: PerplexityResult, name: str) -> str:
    """The set's delta matrix as text: baseline NLL first, then one row per deactivated language."""
    from langneurons.tasks.perplexity import matrix_summary

    rows = [{"": "baseline NLL", **{y: f"{v:.3f}" for y, v in result.baseline.items()}}]
    rows += [{"": f"-{x}", **{y: f"{v:+.3f}" for y, v in row.items()}} for x, row in result.delta(name).items()]
    s = matrix_summary(result.delta(name))
    ratio = "n/a" if s["ratio"] is None else f"{s['ratio']:.2f}"
    missed = [x for x, p in s["per_language"].items() if not p["own_hurt_most"]]
    return "\n".join([
        f"ΔNLL with {result.sets[name]} neurons deactivated (rows) on held-out text (columns)",
        options.format_table(rows),
        f"diagonal mean {_signed(s['diagonal_mean'])}, off-diagonal mean {_signed(s['off_diagonal_mean'])}, "
        f"ratio {ratio}; "
        f"own language hurt most for {s['own_hurt_most']}/{len(result.deactivated)}"
        + (f" (not: {', '.join(missed)})" if missed else ""),
    ])


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate perplexity`."""
    from langneurons.tasks.perplexity import run_perplexity

    for name in ("max_tokens", "batch_size", "window"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise LangNeuronsError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    model, tok, neurons, _ = options.load_inputs(args)
    languages = options.parse_languages(args.languages) or list(neurons.languages)
    args.languages = ",".join(languages)
    result = run_perplexity(model, tok, neurons, options.build_corpus(args), languages, value=args.value,
                            method=args.deactivation, beta=args.beta, control=not args.no_control, seed=args.seed,
                            max_tokens=args.max_tokens, window=args.window, batch_size=args.batch_size,
                            output_dir=args.output_dir, fresh=args.fresh, progress=not args.quiet)
    files = result.save(args.output_dir)
    print("\n\n".join(_table(result, name) for name in result.sets))
    print(f"tokens per language: {', '.join(f'{y} {n}' for y, n in result.tokens.items())}; "
          f"{result.seconds:.1f} s")
    print("wrote " + ", ".join(str(p) for p in files.values()))
