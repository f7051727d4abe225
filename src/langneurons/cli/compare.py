"""Zero each language's neurons of each set and measure the next-token loss on every language's held-out text;
selectivity = increase on the language / mean increase on the others. Writes compare.json and a bar plot."""

from __future__ import annotations

import argparse
from pathlib import Path

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError

# the CRANE paper's languages en, zh and vi: the embedded demo's ten languages plus Vietnamese
LANGUAGES = ["en", "de", "fr", "es", "ru", "ar", "hi", "zh", "ja", "ko", "vi"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons compare`."""
    options.add_model_options(p)
    p.add_argument("--neurons", required=True,
                   help="reference neuron set (e.g. LAPE from `identify`); the other sets match its size per language")
    p.add_argument("--stats", help="statistics file (from `collect`): adds the activation-frequency baseline")
    p.add_argument("--relevance", nargs="+", default=[], metavar="FILE",
                   help="relevance file(s) (from `collect --relevance`, one per --rule): adds CRANE for each rule")
    p.add_argument("--contrast", default="margin", choices=["margin", "mean"], help="CRANE contrast (default margin)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random per-layer set (default 0)")
    p.add_argument("--no-random", action="store_true", help="leave out the random per-layer set")
    p.add_argument("--transfer", action="append", default=[], metavar="MODEL",
                   help="also evaluate the same sets on this model of the same shape (repeatable)")
    options.add_corpus_options(p, "comma-separated evaluated languages (default: the reference set's; collect with "
                                  f"--languages {','.join(LANGUAGES)} for the CRANE languages)",
                               heldout="its held-out documents are used")
    p.add_argument("--max-tokens", type=int, default=None, help="held-out tokens per language (default: all)")
    p.add_argument("--window", type=int, default=64,
                   help="tokens per window, BOS included (default 64: the bootstrap resamples windows)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates (default 1000)")
    p.add_argument("--forcing-questions", type=int, default=2,
                   help="forcing -src +tgt with each set on this many eval questions per language (default 2; "
                        "0: no forcing; needs --stats)")
    p.add_argument("--max-new-tokens", type=int, default=24, help="forcing: tokens per answer (default 24)")
    p.add_argument("--repetition-penalty", type=float, default=1.2, help="forcing: greedy decoding penalty (1.2)")
    p.add_argument("--identifier", default="fasttext", choices=["fasttext", "script"],
                   help="forcing: language identifier (default fasttext)")
    p.add_argument("--output-dir", default="runs/compare", help="results folder (a rerun resumes there)")
    p.add_argument("--fresh", action="store_true", help="discard cells measured before in --output-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons compare`."""
    from langneurons.core.distributed import is_main
    from langneurons.core.provenance import check_same_model, model_meta
    from langneurons.data.windows import heldout_windows
    from langneurons.identify.neurons import NeuronSet
    from langneurons.stats.activation import ActivationStats
    from langneurons.stats.relevance import RelevanceStats
    from langneurons.steering.generation import Decoding
    from langneurons.tasks.compare import (
        compare_forcing,
        compare_methods,
        matched_sets,
        selectivity_bars,
        selectivity_table,
    )
    from langneurons.tasks.results import run_metadata, write_results

    for name in ("max_tokens", "batch_size", "window", "replicates", "max_new_tokens"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise LangNeuronsError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.forcing_questions > 0 and not args.stats:
        raise LangNeuronsError("forcing (-src +tgt) adds the target's mean activations: give --stats, "
                               "or --forcing-questions 0")
    reference = NeuronSet.load(args.neurons)
    languages = options.parse_languages(args.languages) or list(reference.languages)
    reference = reference.select(languages)
    stats = ActivationStats.load(args.stats) if args.stats else None
    relevance = [RelevanceStats.load(path) for path in args.relevance]
    sets = matched_sets(reference, stats, relevance, args.seed, args.contrast, random=not args.no_random)
    out = Path(args.output_dir)
    for name, s in sets.items():
        if is_main():
            s.save(out / f"neurons_{name}.safetensors")
    args.languages = ",".join(languages)
    corpus = options.build_corpus(args)
    results = []
    for i, spec in enumerate([args.model, *args.transfer]):
        model, tok = options.load_model_from_args(args, spec)
        if i == 0:  # the --transfer models are deliberate transfers
            check_same_model(reference.meta.get("model"), model_meta(model), f"neuron set {args.neurons}",
                             args.allow_other_model)
        windows = heldout_windows(tok, corpus, languages, args.max_tokens, args.window)
        results.append(compare_methods(model, sets, windows, args.batch_size, out / f"cells_{i}.jsonl", args.fresh,
                                       progress=not args.quiet, replicates=args.replicates, seed=args.seed))
        results[-1]["transfer"] = i > 0
        if i == 0 and args.forcing_questions > 0:
            if stats is None:
                raise LangNeuronsError("the forcing comparison needs --stats; pass it, or --forcing-questions 0")
            results[-1]["forcing"] = compare_forcing(
                model, tok, sets, stats.select(languages), languages, args.forcing_questions,
                Decoding(max_new_tokens=args.max_new_tokens, repetition_penalty=args.repetition_penalty),
                identifier=args.identifier, replicates=args.replicates, seed=args.seed, out_dir=out,
                progress=not args.quiet)
        if i == 0:
            settings = {"neurons": str(args.neurons), "stats": args.stats, "relevance": args.relevance,
                        "contrast": args.contrast, "seed": args.seed, "languages": languages,
                        "corpus": corpus.select(languages).describe(), "max_tokens": args.max_tokens,
                        "window": args.window, "transfer": list(args.transfer), "replicates": args.replicates,
                        "forcing_questions": args.forcing_questions,
                        "sets": {name: {"method": s.meta.get("method"), "settings": s.meta.get("settings", {}),
                                        "made_on": s.meta.get("model", {}).get("id")} for name, s in sets.items()}}
            meta = run_metadata(model, "compare", settings)
        del model
    if not is_main():
        return
    path = write_results(out / "compare.json", meta, {"results": results})
    figures = selectivity_bars(results, out / "selectivity.png")
    for result in results:
        role = " (transfer)" if result["transfer"] else ""
        what = "selectivity and forcing" if result.get("forcing") else "selectivity"
        print(f"\n{what} on {result['model']}{role}; held-out tokens "
              f"{', '.join(f'{y} {n}' for y, n in result['tokens'].items())}; {result['seconds']:.1f} s")
        print(options.format_table(selectivity_table(result)))
    print(f"\nwrote {path}, {', '.join(str(f) for f in figures)}")
