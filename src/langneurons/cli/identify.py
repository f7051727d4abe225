"""Identify language neurons: LAPE (Tang et al. 2024), CRANE-style relevance (Le & Li 2026) or the frequency
baseline."""

from __future__ import annotations

import argparse

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons identify`."""
    p.add_argument("stats", help="statistics file from `collect` (for crane: a relevance file from "
                                 "`collect --relevance`)")
    p.add_argument("--method", choices=["lape", "crane", "frequency"], default="lape", help="identification method")
    p.add_argument("--languages", help="use only these languages (comma-separated)")
    p.add_argument("--top-rate", type=float, default=0.01, help="share of all neurons kept (default 0.01)")
    p.add_argument("--filter-rate", type=float, default=0.95,
                   help="LAPE: neurons never above this quantile of activation probability are dropped "
                        "(default 0.95)")
    p.add_argument("--bar-rate", type=float, default=0.95,
                   help="LAPE: a kept neuron belongs to each language whose probability is above this quantile "
                        "(default 0.95)")
    p.add_argument("--per-language", type=int,
                   help="crane/frequency: neurons per language (default: --top-rate of all neurons, split evenly)")
    p.add_argument("--match", help="crane/frequency: as many neurons per language as this neuron set has")
    p.add_argument("--contrast", default="margin", choices=["margin", "mean"],
                   help="crane: relevance for the language minus the max (margin) or mean over the others")
    p.add_argument("--plot", help="also write a neurons-per-layer figure here (.png and .svg)")
    p.add_argument("-o", "--output", default="neurons.safetensors", help="neuron set file")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons identify`."""
    from langneurons.identify import crane, frequency_contrast, lape
    from langneurons.identify.neurons import NeuronSet
    from langneurons.stats.activation import ActivationStats
    from langneurons.stats.relevance import RelevanceStats

    check_output(args.output, [args.stats, args.match], kind="neurons")
    if args.plot:
        check_output(args.plot, [args.stats, args.match, args.output], option="--plot")
    stats = RelevanceStats.load(args.stats) if args.method == "crane" else ActivationStats.load(args.stats)
    languages = options.parse_languages(args.languages)
    if languages:
        stats = stats.select(languages)
    if args.match and args.method == "lape":
        raise LangNeuronsError("--match sets the size of crane and frequency; LAPE's size comes from --top-rate")
    size = round(args.top_rate * stats.n_layers * stats.n_neurons / len(stats.languages))
    per_language = args.per_language or size
    if args.match:
        match = NeuronSet.load(args.match)
        per_language = {lang: match.count(lang) if lang in match.languages else 0 for lang in stats.languages}
    if isinstance(stats, RelevanceStats):  # loaded for crane
        neurons = crane(stats, per_language=per_language, contrast=args.contrast)
    elif args.method == "lape":
        neurons = lape(stats, top_rate=args.top_rate, filter_rate=args.filter_rate, bar_rate=args.bar_rate)
    else:
        neurons = frequency_contrast(stats, per_language)
    neurons.save(args.output)
    print(options.format_table(neurons.summary()))
    print(f"{neurons.count()} distinct neurons; wrote {args.output}")
    if args.plot:
        from langneurons.figures.charts import neurons_per_layer

        print("plot:", ", ".join(str(p) for p in neurons_per_layer(neurons, args.plot)))
