"""Collect per-language neuron statistics (resumable: rerun to continue). Under torchrun each rank takes a shard and
the sums are all-reduced."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError

if TYPE_CHECKING:
    from langneurons.stats.sums import LanguageSums


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons collect`."""
    options.add_model_options(p)
    options.add_corpus_options(p, languages="comma-separated language codes (default: all in the corpus; 10 for udhr)")
    p.add_argument("--max-tokens", type=int, default=100_000, help="token budget per language (default 100000)")
    p.add_argument("--window", type=int, default=512, help="tokens per packed window, BOS included (default 512)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default 4; 1 with --relevance)")
    p.add_argument("--no-sq", action="store_true", help="skip the sum of squares (no variance)")
    p.add_argument("--hidden", action="store_true",
                   help="also record each layer's mean hidden state (for residual DiffMean steering)")
    p.add_argument("--relevance", action="store_true",
                   help="collect gradient x activation relevance for the next-token predictions instead "
                        "(for identify --method crane; a forward and a backward pass through the whole model)")
    p.add_argument("--rule", choices=["grad_x_input", "attnlrp"],
                   help="relevance rule: gradient x input (default) or AttnLRP (Achtibat et al. 2024; Llama-, "
                        "Qwen-, Gemma-like families)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", default="stats.safetensors", help="statistics file (also the checkpoint)")


def _expected_model_id(name: str) -> str | None:
    """The id `load_model(name)` will record, where it is known without loading (embedded alias, local path)."""
    from langneurons.core.models import EMBEDDED

    if name in EMBEDDED:
        return EMBEDDED[name].source
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else None


def main(args: argparse.Namespace) -> None:
    """Run `langneurons collect`."""
    from langneurons.core.distributed import is_main
    from langneurons.stats.collect import check_checkpoint, collect_stats

    if args.relevance and (args.hidden or args.no_sq):
        raise LangNeuronsError("--hidden and --no-sq are options of activation statistics, not of --relevance")
    if args.rule and not args.relevance:
        raise LangNeuronsError("--rule is an option of --relevance; add --relevance or leave --rule out")
    texts = list(options.parse_mapping(args.corpus).values()) if "=" in args.corpus else []
    check_output(args.output, texts, kind="relevance" if args.relevance else "stats")
    corpus = options.build_corpus(args)
    settings: dict[str, Any] = {"window": args.window, "max_tokens": args.max_tokens, "split": "train"}
    if not args.relevance:
        settings.update(track_sq=not args.no_sq, hidden=args.hidden)
    check_checkpoint(args.output, settings, corpus.describe(), _expected_model_id(args.model),
                     kind="relevance" if args.relevance else "stats")
    model, tok = options.load_model_from_args(args)
    start = time.perf_counter()
    if args.relevance:
        from langneurons.stats.relevance import collect_relevance

        stats: LanguageSums = collect_relevance(
            model, tok, corpus, max_tokens=args.max_tokens, window=args.window, batch_size=args.batch_size or 1,
            checkpoint=args.output, progress=not args.quiet, rule=args.rule or "grad_x_input",
        )
    else:
        stats = collect_stats(
            model, tok, corpus, max_tokens=args.max_tokens, window=args.window, batch_size=args.batch_size or 4,
            checkpoint=args.output, track_sq=not args.no_sq, hidden=args.hidden, progress=not args.quiet,
        )
    took = time.perf_counter() - start
    if is_main():
        print(options.format_table(stats.summary()))
        print(f"{int(stats.n_tokens.sum())} tokens in {took:.1f} s; wrote {args.output}")
