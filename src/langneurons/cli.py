"""The `langneurons` command: collect, identify, merge, info, languages, generate, calibrate, evaluate, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from langneurons.errors import LangNeuronsError

DEMO_LANGUAGES = ["en", "de", "fr", "es", "ru", "ar", "hi", "zh", "ja", "ko"]


def _languages(text: str | None) -> list[str] | None:
    return [x.strip() for x in text.split(",") if x.strip()] if text else None


def _corpus(args: argparse.Namespace):
    """Build the corpus the options describe: udhr, a folder/file mapping, or an HF dataset."""
    from langneurons import corpus as c

    langs = _languages(args.languages)
    spec: str = args.corpus
    if spec == "udhr":
        return c.udhr(langs or DEMO_LANGUAGES, heldout_every=args.heldout_every)
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


def _init_distributed() -> None:
    """Join the process group when started by torchrun (gloo on CPU, nccl on GPU)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")


def _device(args: argparse.Namespace) -> str | None:
    if args.device is None and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return args.device


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as an aligned plain-text table."""
    if not rows:
        return "(empty)"
    cols = list(rows[0])
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = lambda vals: "  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(vals, widths)))  # noqa: E731
    return "\n".join([line(cols), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def cmd_collect(args: argparse.Namespace) -> None:
    from langneurons.collect import collect_stats
    from langneurons.models import load_model

    for name in ("max_tokens", "window", "batch_size"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise LangNeuronsError(f"{name} must be positive, got {value}")
    _init_distributed()
    corpus = _corpus(args)
    model, tok = load_model(args.model, dtype=args.dtype, device=_device(args))
    start = time.perf_counter()
    stats = collect_stats(
        model, tok, corpus, max_tokens=args.max_tokens, window=args.window, batch_size=args.batch_size,
        checkpoint=args.output, track_sq=not args.no_sq, hidden=args.hidden, progress=not args.quiet,
    )
    took = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        print(format_table(stats.summary()))
        print(f"{int(stats.n_tokens.sum())} tokens in {took:.1f} s; wrote {args.output}")


def cmd_identify(args: argparse.Namespace) -> None:
    from langneurons.identify import frequency_contrast, lape
    from langneurons.stats import ActivationStats

    stats = ActivationStats.load(args.stats)
    if _languages(args.languages):
        stats = stats.select(_languages(args.languages))
    if args.method == "lape":
        neurons = lape(stats, top_rate=args.top_rate, filter_rate=args.filter_rate, bar_rate=args.bar_rate)
    else:
        size = round(args.top_rate * stats.n_layers * stats.n_neurons / len(stats.languages))
        per_language = args.per_language or size
        neurons = frequency_contrast(stats, per_language)
    neurons.save(args.output)
    print(format_table(neurons.summary()))
    print(f"{neurons.count()} distinct neurons; wrote {args.output}")
    if args.plot:
        from langneurons.plots import neurons_per_layer

        print("plot:", ", ".join(str(p) for p in neurons_per_layer(neurons, args.plot)))


def cmd_merge(args: argparse.Namespace) -> None:
    from langneurons.stats import ActivationStats

    if len(args.inputs) < 2:
        raise LangNeuronsError("merge needs at least two statistics files")
    merged = ActivationStats.load(args.inputs[0])
    for path in args.inputs[1:]:
        merged = merged + ActivationStats.load(path)
    merged.meta["merged_from"] = [str(p) for p in args.inputs]
    merged.save(args.output)
    print(format_table(merged.summary()))
    print(f"merged {len(args.inputs)} files; wrote {args.output}")


def cmd_info(args: argparse.Namespace) -> None:
    from langneurons.artifacts import read_meta
    from langneurons.neurons import NeuronSet
    from langneurons.stats import ActivationStats

    meta = read_meta(args.file)
    if args.json:
        print(json.dumps(meta, indent=2, ensure_ascii=False))
        return
    model = meta.get("model", {})
    shape = meta.get("shape", {})
    print(f"{args.file}: {meta.get('kind')} of {model.get('id')} (revision {model.get('revision')}), "
          f"{shape.get('layers')} layers x {shape.get('neurons')} neurons, langneurons {meta.get('library_version')}")
    if meta.get("kind") == "stats":
        if meta.get("incomplete"):
            print(f"incomplete collection, done: {meta['incomplete']['done']}; rerun collect to resume")
            return
        print(format_table(ActivationStats.load(args.file).summary()))
    elif meta.get("kind") == "neurons":
        neurons = NeuronSet.load(args.file)
        print(f"method {meta.get('method')} {json.dumps(meta.get('settings', {}))}")
        print(format_table(neurons.summary()))
        print(f"{neurons.count()} distinct neurons")


def cmd_languages(args: argparse.Namespace) -> None:
    from langneurons.corpus import udhr_languages

    rows = [{"code": e.get("code"), "bcp47": e.get("bcp47"), "iso6393": e.get("iso6393"), "name": e.get("name")}
            for e in udhr_languages()]
    if args.search:
        needle = args.search.lower()
        rows = [r for r in rows if any(needle in str(v).lower() for v in r.values())]
    print(format_table(rows))
    print(f"{len(rows)} UDHR texts; pass ISO 639-1/3 codes (en, deu), BCP-47 tags (zh-Hant) or these codes")


def cmd_demo(args: argparse.Namespace) -> None:
    from langneurons.collect import collect_stats
    from langneurons.corpus import udhr
    from langneurons.identify import lape
    from langneurons.models import load_model
    from langneurons.plots import neurons_per_layer

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    langs = _languages(args.languages) or DEMO_LANGUAGES
    t0 = time.perf_counter()
    print(f"[1/3] loading {args.model} (the first run converts the embedded model once, about a minute)")
    model, tok = load_model(args.model)
    t1 = time.perf_counter()
    print(f"[2/3] collecting statistics over the UDHR in {len(langs)} languages -> {out / 'stats.safetensors'}")
    corpus = udhr(langs)
    stats = collect_stats(model, tok, corpus, max_tokens=args.max_tokens, window=args.window,
                          checkpoint=out / "stats.safetensors", progress=not args.quiet)
    t2 = time.perf_counter()
    print(f"[3/3] LAPE (top_rate {args.top_rate}) -> {out / 'neurons.safetensors'}")
    neurons = lape(stats, top_rate=args.top_rate)
    neurons.save(out / "neurons.safetensors")
    figures = neurons_per_layer(neurons, out / "neurons_per_layer.png")
    rows = [{**s, **n} for s, n in zip(stats.summary(), neurons.summary())]
    print()
    print(format_table(rows))
    print(f"\n{neurons.count()} distinct language neurons of {stats.n_layers * stats.n_neurons}; "
          f"per layer: {neurons.masks.any(0).sum(-1).tolist()}")
    summary = {
        "model": stats.meta["model"], "languages": langs, "tokens": stats.meta["n_tokens"],
        "seconds": {"load": round(t1 - t0, 1), "collect": round(t2 - t1, 1)},
        "lape": neurons.meta["settings"], "neurons": rows, "distinct": neurons.count(),
        "per_layer": dict(zip(langs, neurons.per_layer().tolist())),
    }
    from langneurons.artifacts import write_json

    write_json(out / "summary.json", summary)
    print(f"figures: {', '.join(str(f) for f in figures)}\nsummary: {out / 'summary.json'}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="langneurons", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def model_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--model", default="gemma-3-270m",
                        help="HF id, local folder, .gguf file, or the embedded default 'gemma-3-270m'")
        sp.add_argument("--dtype", default=None, help="float32 (CPU default), bfloat16, float16 or auto")
        sp.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cpu)")

    c = sub.add_parser("collect", help="collect per-neuron activation statistics per language",
                       description="Collect per-language neuron statistics (resumable: rerun to continue). "
                                   "Under torchrun each rank takes a shard and the sums are all-reduced.")
    model_opts(c)
    c.add_argument("--corpus", default="udhr",
                   help="'udhr' (embedded), a folder of <lang>.txt/.jsonl files, 'en=a.txt,de=b.txt', "
                        "or 'hf:NAME' for a Hugging Face dataset")
    c.add_argument("--languages", help="comma-separated language codes (default: all in the corpus; 10 for udhr)")
    c.add_argument("--hf-config", help="dataset config; '{lang}' is replaced per language (e.g. '20231101.{lang}')")
    c.add_argument("--hf-split", default="train", help="dataset split (default train)")
    c.add_argument("--text-column", default="text", help="dataset text column (default text)")
    c.add_argument("--heldout-every", type=int, default=10,
                   help="every n-th document is held out for evaluation and never collected (default 10; 0: none)")
    c.add_argument("--max-tokens", type=int, default=100_000, help="token budget per language (default 100000)")
    c.add_argument("--window", type=int, default=512, help="tokens per packed window, BOS included (default 512)")
    c.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default 4)")
    c.add_argument("--no-sq", action="store_true", help="skip the sum of squares (no variance)")
    c.add_argument("--hidden", action="store_true",
                   help="also record each layer's mean hidden state (for residual DiffMean steering)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("-o", "--output", default="stats.safetensors", help="statistics file (also the checkpoint)")
    c.set_defaults(func=cmd_collect)

    i = sub.add_parser("identify", help="find language neurons from statistics",
                       description="Identify language neurons: LAPE (Tang et al. 2024) or the frequency baseline.")
    i.add_argument("stats", help="statistics file from `collect`")
    i.add_argument("--method", choices=["lape", "frequency"], default="lape", help="identification method")
    i.add_argument("--languages", help="use only these languages (comma-separated)")
    i.add_argument("--top-rate", type=float, default=0.01, help="share of all neurons kept (default 0.01)")
    i.add_argument("--filter-rate", type=float, default=0.95,
                   help="LAPE: neurons never above this quantile of activation probability are dropped")
    i.add_argument("--bar-rate", type=float, default=0.95,
                   help="LAPE: a kept neuron belongs to each language whose probability is above this quantile")
    i.add_argument("--per-language", type=int, help="frequency: neurons per language (default from --top-rate)")
    i.add_argument("--plot", help="also write a neurons-per-layer figure here (.png and .svg)")
    i.add_argument("-o", "--output", default="neurons.safetensors", help="neuron set file")
    i.set_defaults(func=cmd_identify)

    m = sub.add_parser("merge", help="merge statistics files (shards, machines, runs)",
                       description="Sum statistics files of the same model: shared languages add up.")
    m.add_argument("inputs", nargs="+", help="statistics files")
    m.add_argument("-o", "--output", required=True, help="merged statistics file")
    m.set_defaults(func=cmd_merge)

    f = sub.add_parser("info", help="summarise a statistics or neuron file")
    f.add_argument("file")
    f.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    f.set_defaults(func=cmd_info)

    g = sub.add_parser("languages", help="list the languages of the embedded UDHR corpus")
    g.add_argument("--search", help="only rows containing this text (e.g. 'german', 'cmn')")
    g.set_defaults(func=cmd_languages)

    from langneurons.cli_steer import add_parsers

    add_parsers(sub)

    d = sub.add_parser("demo", help="the main job on the embedded default: collect, LAPE, table and plot",
                       description="Collect statistics of the embedded gemma-3-270m over the UDHR, identify "
                                   "LAPE neurons, print a summary and plot neurons per layer and language.")
    d.add_argument("--model", default="gemma-3-270m", help="model (default: the embedded gemma-3-270m)")
    d.add_argument("--languages", help=f"comma-separated (default {','.join(DEMO_LANGUAGES)})")
    d.add_argument("--max-tokens", type=int, default=None, help="token budget per language (default: all)")
    d.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    d.add_argument("--top-rate", type=float, default=0.01, help="LAPE share of neurons (default 0.01)")
    d.add_argument("--output-dir", default="runs/demo", help="where results go (default runs/demo)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    d.set_defaults(func=cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except LangNeuronsError as e:
        print(f"langneurons: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langneurons: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
