"""Options and loading shared by every subcommand that runs a model (generate, calibrate, evaluate TASK)."""

from __future__ import annotations

import argparse
from typing import Any

from langneurons.core.errors import LangNeuronsError


def parse_languages(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def parse_layers(text: str | None) -> tuple[int, int] | None:
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
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights' dtype (default auto: bfloat16 on a CUDA GPU that supports it, else float32)")
    p.add_argument("--device", default=None,
                   help="one device: cpu, cuda, cuda:N, mps (default: this process's GPU if CUDA is available, "
                        "else cpu)")
    p.add_argument("--device-map", default=None,
                   help="spread the model over devices instead: auto, balanced, balanced_low_0, sequential (under "
                        "torchrun: over this rank's share of the node's GPUs), or one device such as cuda:1")


def load_model_from_args(args: argparse.Namespace, name: str | None = None) -> tuple[Any, Any]:
    """The model (`name`, default --model) and tokenizer placed as --dtype, --device and --device-map say."""
    from langneurons.core.models import load_model

    return load_model(name or args.model, dtype=args.dtype, device=args.device,
                      device_map=getattr(args, "device_map", None))


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
    p.add_argument("--batch-tokens", type=int, default=None,
                   help="also at most this many tokens per batch, prompt and new tokens counted (prompts are sorted "
                        "by length; default: no limit)")
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="greedy decoding with this repetition penalty (default 1.0: plain greedy)")
    p.add_argument("--identifier", default="fasttext", choices=["fasttext", "script"], help="language identifier")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_inputs(args: argparse.Namespace, need_stats: bool = False) -> tuple[Any, Any, Any, Any]:
    """Model, tokenizer, neuron set and statistics named by the options."""
    from langneurons.identify.neurons import NeuronSet
    from langneurons.stats.activation import ActivationStats

    neurons = NeuronSet.load(args.neurons) if getattr(args, "neurons", None) else None
    stats = ActivationStats.load(args.stats) if getattr(args, "stats", None) else None
    if need_stats and stats is None:
        raise LangNeuronsError("this command needs --stats (a statistics file from `collect`)")
    model, tok = load_model_from_args(args)
    if neurons is not None:
        neurons.check_model(model)
    return model, tok, neurons, stats


def build_corpus(args: argparse.Namespace) -> Any:
    """Build the corpus the options describe: udhr, a folder/file mapping, or an HF dataset."""
    from langneurons.cli.demo import LANGUAGES
    from langneurons.data import corpus as c

    langs = parse_languages(args.languages)
    spec: str = args.corpus
    if spec == "udhr":
        return c.udhr(langs or LANGUAGES, heldout_every=args.heldout_every)
    if spec.startswith("hf:"):
        if not langs:
            raise LangNeuronsError("--corpus hf:NAME needs --languages")
        return c.hf_dataset(spec[3:], langs, config=args.hf_config, split=args.hf_split,
                            text_column=args.text_column, heldout_every=args.heldout_every)
    if "=" in spec:
        mapping = dict(part.split("=", 1) for part in spec.split(","))
        corpus = c.text_files(mapping, heldout_every=args.heldout_every)
    else:
        corpus = c.text_files(spec, heldout_every=args.heldout_every)
    return corpus.select(langs) if langs else corpus
