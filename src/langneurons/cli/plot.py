"""Neurons and share per layer, clustered overlap matrix, Latin vs other-script specialisation; with --stats also
firing rates and neuron activation profiles."""

from __future__ import annotations

import argparse
from pathlib import Path

from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons plot`."""
    p.add_argument("neurons", help="neuron set file from `identify`")
    p.add_argument("--stats", help="statistics file: adds firing rates per layer and activation profiles")
    p.add_argument("--neuron", action="append", metavar="LAYER:INDEX",
                   help="also plot this neuron's activation probability per language (repeatable; needs --stats)")
    p.add_argument("-o", "--output-dir", default="figures", help="folder for the .png and .svg files")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons plot`."""
    from langneurons.figures.neurons import activation_profile, neuron_figures
    from langneurons.identify.neurons import NeuronSet
    from langneurons.stats.activation import ActivationStats

    check_output(args.output_dir, [args.neurons, args.stats], option="--output-dir", folder=True)
    neurons = NeuronSet.load(args.neurons)
    stats = ActivationStats.load(args.stats) if args.stats else None
    if args.neuron and stats is None:
        raise LangNeuronsError("--neuron needs --stats (the activation probabilities come from the statistics)")
    written = [p for paths in neuron_figures(neurons, args.output_dir, stats).values() for p in paths]
    if args.neuron:
        assert stats is not None  # --neuron without --stats was refused above
        units = []
        for spec in args.neuron:
            layer, _, index = spec.partition(":")
            if not (layer.isdigit() and index.isdigit()):
                raise LangNeuronsError(f"--neuron {spec!r}: write LAYER:INDEX, e.g. 5:1021")
            units.append((int(layer), int(index)))
        written += activation_profile(stats, units, Path(args.output_dir) / "activation_profile.png", neurons)
    print("\n".join(str(p) for p in written))
