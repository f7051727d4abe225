"""Options and loading shared by every subcommand that runs a model (generate, calibrate, evaluate TASK)."""

from __future__ import annotations

import argparse
from typing import Any

from langneurons.errors import LangNeuronsError


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
    p.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16, float16 or auto")
    p.add_argument("--device", default=None, help="cpu, cuda, ... (default cpu)")
    add_threads_option(p)


def add_threads_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (default: $OMP_NUM_THREADS, else the physical cores, at most 8)")


def set_threads(threads: int | None) -> int:
    """Set torch's CPU threads: `threads`, else $OMP_NUM_THREADS, else the physical cores (at most 8); returns it.
    Under contention torch's default (every logical core) can be ten times slower than one thread."""
    import os

    import torch

    if threads is not None and threads < 1:
        raise LangNeuronsError(f"--threads {threads}: give a positive number of threads")
    if threads is None:
        env = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(env) if env.isdigit() and int(env) > 0 else min(8, _physical_cores())
    torch.set_num_threads(threads)
    return threads


def _physical_cores() -> int:
    """Cores this process may use, counting hyper-threads of one core once (Linux sysfs; else all logical)."""
    import os
    from pathlib import Path

    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in usable:
        topo = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            cores.add(((topo / "physical_package_id").read_text().strip(), (topo / "core_id").read_text().strip()))
        except OSError:
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def add_prompt_format_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompt-format", default="auto", choices=["auto", "chat", "plain"],
                   help="chat: prompts go through the tokenizer's chat template; plain: raw text after the "
                        "tokenizer's start; auto (default): chat when the tokenizer has a chat template")


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
    p.add_argument("--repetition-penalty", type=float, default=1.0,
                   help="greedy decoding with this repetition penalty (default 1.0: plain greedy)")
    p.add_argument("--identifier", default="fasttext", choices=["fasttext", "script"], help="language identifier")
    add_prompt_format_option(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def load_inputs(args: argparse.Namespace, need_stats: bool = False) -> tuple[Any, Any, Any, Any]:
    """Model, tokenizer, neuron set and statistics named by the options."""
    from langneurons.models import load_model
    from langneurons.neurons import NeuronSet
    from langneurons.stats import ActivationStats

    neurons = NeuronSet.load(args.neurons) if getattr(args, "neurons", None) else None
    stats = ActivationStats.load(args.stats) if getattr(args, "stats", None) else None
    if need_stats and stats is None:
        raise LangNeuronsError("this command needs --stats (a statistics file from `collect`)")
    model, tok = load_model(args.model, dtype=args.dtype, device=args.device)
    if neurons is not None:
        neurons.check_model(model)
    return model, tok, neurons, stats


def build_corpus(args: argparse.Namespace) -> Any:
    """Build the corpus the options describe: udhr, a folder/file mapping, or an HF dataset."""
    from langneurons import corpus as c
    from langneurons.demo import LANGUAGES

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
