"""Options, their parsing and the loading they describe, shared by the commands."""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from typing import Any, NoReturn

from langneurons.core.errors import LangNeuronsError

# options whose value may start with '-' (`--steer -en`): argparse would take it for an option
SIGNED_OPTIONS = ("--steer",)
# rules for numeric options of every subcommand: name -> (test, what to give)
_POSITIVE = (lambda v: v > 0, "a number above 0")
NUMBER_RULES: dict[str, tuple[Any, str]] = {
    **dict.fromkeys(("batch_size", "max_new_tokens", "window", "max_tokens", "per_language", "steps", "top_k", "keep",
                     "eval_every", "eval_tokens", "questions", "repetition_penalty", "lr"), _POSITIVE),
    **dict.fromkeys(("top_rate", "filter_rate", "bar_rate"), (lambda v: 0 < v <= 1, "a share in (0, 1]")),
    **dict.fromkeys(("n", "shots", "heldout_every", "valid_every", "seed", "weight_decay"),
                    (lambda v: v >= 0, "a number >= 0")),
}


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line that says where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _negative_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.startswith("-")


def quote_signed(argv: Sequence[str]) -> list[str]:
    """`--steer -en` -> `--steer=-en` and `--alpha -1e3` -> `--alpha=-1e3`, so that a leading '-' is read as the
    value (argparse takes such values for options)."""
    out: list[str] = []
    args = list(argv)
    for i, arg in enumerate(args):
        prev = args[i - 1] if i else ""
        signed = prev in SIGNED_OPTIONS and arg.startswith("-") and not arg.startswith("--")
        number = prev.startswith("--") and "=" not in prev and _negative_number(arg)
        if signed or number:
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def check_numbers(args: argparse.Namespace) -> None:
    """Fail on NaN/inf and on numbers outside an option's range, before any work."""
    for name, value in vars(args).items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        option = "--" + name.replace("_", "-")
        if isinstance(value, float) and not math.isfinite(value):
            raise LangNeuronsError(f"argument {option}: {value} is not a finite number; give a finite number")
        if name in NUMBER_RULES and not NUMBER_RULES[name][0](value):
            raise LangNeuronsError(f"argument {option}: {value} is out of range; give {NUMBER_RULES[name][1]}")


def parse_languages(text: str | None) -> list[str] | None:
    """'en,de' -> ['en', 'de']; None (not given) -> None; a list with no language (',') is an error."""
    if text is None:
        return None
    langs = [x.strip() for x in text.split(",") if x.strip()]
    if not langs:
        raise LangNeuronsError(f"no language in {text!r}; give comma-separated codes such as en,de")
    duplicates = sorted({x for x in langs if langs.count(x) > 1})
    if duplicates:
        raise LangNeuronsError(f"{', '.join(duplicates)} given twice in {text!r}; name each language once")
    return langs


def parse_mapping(spec: str) -> dict[str, str]:
    """'en=a.txt,de=b.txt' -> {'en': 'a.txt', 'de': 'b.txt'}; each language once, each with a file."""
    mapping: dict[str, str] = {}
    for part in spec.split(","):
        lang, eq, path = (x.strip() for x in part.partition("="))
        if not eq or not lang or not path:
            raise LangNeuronsError(f"--corpus item {part.strip()!r}: write LANG=FILE, e.g. en=a.txt,de=b.txt")
        if lang in mapping:
            raise LangNeuronsError(f"--corpus names '{lang}' twice ({mapping[lang]}, {path}); give one file per "
                                   "language (join the texts into one file)")
        mapping[lang] = path
    return mapping


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
    p.add_argument("--allow-other-model", action="store_true",
                   help="use neuron sets, statistics or calibrations made on another model of the same shape "
                        "(a deliberate transfer, e.g. base -> chat)")
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


def add_corpus_options(p: argparse.ArgumentParser, languages: str, heldout: str | None = None) -> None:
    """The options `build_corpus` reads; `languages` is the help of --languages. A command that evaluates on the
    held-out documents says how in `heldout`; for the others (which collect or train) --heldout-every says more."""
    p.add_argument("--corpus", default="udhr",
                   help="'udhr' (embedded), a folder of <lang>.txt/.jsonl files, 'en=a.txt,de=b.txt', or 'hf:NAME' "
                        + (f"({heldout})" if heldout else "for a Hugging Face dataset"))
    p.add_argument("--languages", help=languages)
    p.add_argument("--heldout-every", type=int, default=10,
                   help="every n-th document is held out (default 10)" if heldout else "every n-th document is held "
                        "out for evaluation and never trained on or collected (default 10; 0: none)")
    p.add_argument("--hf-config", help="dataset config; '{lang}' is replaced per language (e.g. '20231101.{lang}')")
    p.add_argument("--hf-split", default="train", help="dataset split (default train)")
    p.add_argument("--text-column", default="text", help="dataset text column (default text)")


def load_model_from_args(args: argparse.Namespace, name: str | None = None) -> tuple[Any, Any]:
    """The model (`name`, default --model) and tokenizer placed as --dtype, --device and --device-map say."""
    from langneurons.core.models import load_model

    return load_model(name or args.model, dtype=args.dtype, device=args.device,
                      device_map=getattr(args, "device_map", None))


def add_steering_options(p: argparse.ArgumentParser, target_mode: str | None = None) -> None:
    """Options that say how to steer: an expression (--steer), or, with `target_mode`, a setting relative to each
    prompt's source and target language (forcing and translation: --mode, with that default, and --top-rate;
    `forcing_setting` reads them)."""
    expression = target_mode is None
    p.add_argument("--neurons", help="neuron set file (from `identify`)")
    p.add_argument("--stats", help="statistics file (from `collect`): means for add/replace/diffmean/residual")
    if expression:
        p.add_argument("--steer", help="expression, e.g. '-en +fr', '+2.5*fr', '-en -de +ja' (quote it; a lone "
                                       "'-en' works as --steer -en or --steer=-en)")
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
    p.add_argument("--top-rate", type=float,
                   help="edit LAPE's neurons at this share, computed from --stats (instead of --neurons)")
    if not expression:
        p.add_argument("--mode", default=target_mode, choices=["activate", "deactivate-source"],
                       help=f"activate the target's neurons only, or deactivate the source language's first (default "
                            f"{target_mode})")


def steering_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The keywords of `SteeringConfig.from_expression` (and `steer`, `build_steering`) that the steering options
    give, for the expression of --steer."""
    return {"method": args.method, "alpha": args.alpha, "value": args.value, "deactivation": args.deactivation,
            "beta": args.beta, "layers": parse_layers(args.layers), "generated_only": args.generated_only,
            "top_rate": args.top_rate}


def forcing_setting(args: argparse.Namespace, method: str | None = None, strength: float | None = None) -> Any:
    """The `ForcingSetting` that the target steering options describe; `method` and `strength` (an item of a
    sweep) replace --method and --alpha. The default strength is that of expressions: 1, or 2 for scale."""
    from langneurons.steering.config import ForcingSetting

    method = method or args.method
    alpha = strength if strength is not None else args.alpha
    return ForcingSetting(method, alpha if alpha is not None else (2.0 if method == "scale" else 1.0), args.top_rate,
                          args.mode == "deactivate-source", args.value, parse_layers(args.layers),
                          args.generated_only)


def add_source_target_options(p: argparse.ArgumentParser) -> None:
    """--sources and --targets: the languages of the prompts and those to steer toward."""
    p.add_argument("--sources", help="prompt languages (default: the statistics' languages)")
    p.add_argument("--targets", help="target languages (default: the statistics' languages)")


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
    add_prompt_format_option(p)


def decoding_from_args(args: argparse.Namespace) -> Any:
    """The `Decoding` that the generation options (`add_generation_options`) describe."""
    from langneurons.steering.generation import Decoding

    return Decoding(args.max_new_tokens, args.batch_size, args.batch_tokens, args.repetition_penalty,
                    args.prompt_format)


def load_inputs(args: argparse.Namespace, need_stats: bool = False) -> tuple[Any, Any, Any, Any]:
    """Model, tokenizer, neuron set and statistics named by the options; each artifact (and a calibration) must
    have been made on this model unless --allow-other-model."""
    from langneurons.core.artifacts import read_json
    from langneurons.core.checks import check_window
    from langneurons.core.provenance import check_same_model, model_meta
    from langneurons.identify.neurons import NeuronSet
    from langneurons.stats.activation import ActivationStats

    neurons = NeuronSet.load(args.neurons) if getattr(args, "neurons", None) else None
    stats = ActivationStats.load(args.stats) if getattr(args, "stats", None) else None
    if need_stats and stats is None:
        raise LangNeuronsError("this command needs --stats (a statistics file from `collect`)")
    calibration = getattr(args, "calibrated", None)
    if calibration:
        from langneurons.steering.calibration import Calibration

        Calibration.load(calibration)  # a damaged file fails here, before the model loads
    model, tok = load_model_from_args(args)
    check_window(model, getattr(args, "window", None), "--window")
    current, allow = model_meta(model), getattr(args, "allow_other_model", False)
    if neurons is not None:
        neurons.check_model(model)
        check_same_model(neurons.meta.get("model"), current, f"neuron set {args.neurons}", allow)
    if stats is not None:
        check_same_model(stats.meta.get("model"), current, f"statistics {args.stats}", allow)
    if calibration:
        recorded = read_json(calibration, "calibration").get("meta", {}).get("statistics", {}).get("model")
        check_same_model(recorded, current, f"calibration {calibration}", allow)
    return model, tok, neurons, stats


def build_corpus(args: argparse.Namespace) -> Any:
    """Build the corpus the options describe: udhr, a folder/file mapping, or an HF dataset."""
    from langneurons.cli.demo_job import LANGUAGES
    from langneurons.data.files import text_files
    from langneurons.data.hf import hf_dataset
    from langneurons.data.udhr import udhr

    langs = parse_languages(args.languages)
    spec: str = args.corpus
    if spec == "udhr":
        return udhr(langs or LANGUAGES, heldout_every=args.heldout_every)
    if spec.startswith("hf:"):
        if not langs:
            raise LangNeuronsError("--corpus hf:NAME needs --languages")
        return hf_dataset(spec[3:], langs, config=args.hf_config, split=args.hf_split,
                          text_column=args.text_column, heldout_every=args.heldout_every)
    if "=" in spec:
        corpus = text_files(parse_mapping(spec), heldout_every=args.heldout_every)
    else:
        corpus = text_files(spec, heldout_every=args.heldout_every)
    return corpus.select(langs) if langs else corpus


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as an aligned plain-text table."""
    if not rows:
        return "(empty)"
    cols = list(rows[0])
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])
