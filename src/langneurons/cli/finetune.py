"""Neuron-only fine-tuning: train the selected neurons' rows of gate/up (fc_in) and columns of down (fc_out) on one
language, with early stopping on validation documents; report held-out NLL before and after for every language of
the neuron set."""

from __future__ import annotations

import argparse

from langneurons.cli import options
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons finetune`."""
    options.add_model_options(p)
    p.set_defaults(dtype="float32")  # training: float32 weights and optimizer steps unless --dtype says otherwise
    p.add_argument("--neurons", required=True, help="neuron set file (from `identify`)")
    p.add_argument("--language", required=True, help="the language whose neurons are trained, on its text")
    options.add_corpus_options(p, languages="languages evaluated (default: the neuron set's languages)")
    p.add_argument("--steps", type=int, default=200, help="most optimizer steps (default 200)")
    p.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per step (default 4)")
    p.add_argument("--window", type=int, default=256, help="tokens per packed window, BOS included (default 256)")
    p.add_argument("--max-tokens", type=int, default=None, help="training tokens at most (default: all)")
    p.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW weight decay, toward the base model's values (default 0)")
    p.add_argument("--valid-every", type=int, default=10,
                   help="every n-th training document validates, for early stopping (default 10; 0: none)")
    p.add_argument("--eval-every", type=int, default=10, help="steps between validations (default 10)")
    p.add_argument("--patience", type=int, default=3, help="validations without improvement before stopping")
    p.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens per language (default: all)")
    p.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("-o", "--output", default="delta.safetensors", help="file of the changed slices")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons finetune`."""
    from langneurons.core.artifacts import read_meta
    from langneurons.tasks.finetune import KIND, finetune

    check_output(args.output, [args.neurons], kind=KIND)
    langs = read_meta(args.neurons, "neurons").get("languages", [])
    if args.language not in langs:
        raise LangNeuronsError(f"--language {args.language}: not in {args.neurons} (it has {', '.join(langs)}); "
                               "choose one of those")
    model, tok, neurons, _ = options.load_inputs(args)
    langs = options.parse_languages(args.languages) or (neurons.languages if args.corpus == "udhr" else None)
    if langs:
        args.languages = ",".join(dict.fromkeys([args.language, *langs]))
    corpus = options.build_corpus(args)
    neurons.meta["source"] = str(args.neurons)
    delta = finetune(
        model, tok, neurons, args.language, corpus, steps=args.steps, lr=args.lr, batch_size=args.batch_size,
        window=args.window, max_tokens=args.max_tokens, weight_decay=args.weight_decay,
        valid_every=args.valid_every, eval_every=args.eval_every, patience=args.patience,
        eval_tokens=args.eval_tokens, seed=args.seed, progress=not args.quiet,
    )
    delta.save(args.output)
    nll, run = delta.meta["nll"], delta.meta["training"]
    print(options.format_table([{"language": lang, "nll_before": f"{b:.4f}", "nll_after": f"{nll['after'][lang]:.4f}",
                         "change": f"{nll['after'][lang] - b:+.4f}"} for lang, b in nll["before"].items()]))
    print(f"{delta.n_parameters} trained parameters ({delta.meta['neurons']['count']} neurons of "
          f"{args.language}); {run['steps']} steps, best at {run['best_step']}, stopped by {run['stopped']}, "
          f"{run['seconds']} s; wrote {args.output}")
