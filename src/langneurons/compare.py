"""Compare identification methods by masking: neuron sets of equal size, selectivity per language.

For each set (e.g. LAPE, CRANE, the activation-frequency baseline, random neurons per layer) and each language X,
X's neurons are zeroed and the mean next-token loss is measured on the held-out text of every language.
Selectivity of X = loss increase on X / mean increase on the other languages (None unless that mean is
positive); the pooled ratio = mean increase on the own language / mean increase on the others over all X.
The same sets can be applied to another model of the same shape (e.g. a base model's neurons on its chat
sibling) to see whether they transfer.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from langneurons.errors import LangNeuronsError
from langneurons.identify import frequency_contrast, random_like
from langneurons.identify.crane import CONTRASTS, crane
from langneurons.identify.relevance import RelevanceStats
from langneurons.models import model_fingerprint, model_id
from langneurons.neurons import NeuronSet
from langneurons.stats import ActivationStats
from langneurons.steering import steer
from langneurons.tasks.perplexity import matrix_summary, mean_nll
from langneurons.tasks.results import SampleLog

KEYS = ("set", "digest", "deactivated", "language")


def matched_sets(reference: NeuronSet, stats: ActivationStats | None = None,
                 relevance: RelevanceStats | None = None, seed: int = 0, contrast: str = "margin",
                 random: bool = True) -> dict[str, NeuronSet]:
    """Sets with `reference`'s number of neurons per language: the reference itself (named by its method), CRANE
    from `relevance`, the frequency contrast from `stats` and random neurons per layer (`seed`), each over the
    reference's languages. A method may select fewer neurons when fewer have a positive contrast."""
    languages = list(reference.languages)
    sizes = {lang: reference.count(lang) for lang in languages}
    sets = {str(reference.meta.get("method") or "reference"): reference}
    if relevance is not None:
        sets["crane"] = crane(relevance.select(languages), per_language=sizes, contrast=contrast)
    if stats is not None:
        sets["frequency"] = frequency_contrast(stats.select(languages), sizes)
    if random:
        sets["random"] = random_like(reference, seed)
    return sets


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.numpy().tobytes() if isinstance(part, torch.Tensor) else repr(part).encode())
    return h.hexdigest()[:16]


def compare_methods(
    model: torch.nn.Module,
    sets: Mapping[str, NeuronSet],
    windows: Mapping[str, Sequence[Sequence[int]]],
    batch_size: int = 8,
    log_path: str | Path | None = None,
    fresh: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Mask each language's neurons of each set in turn and measure the next-token loss on every language.

    `windows`: token windows per evaluated language (`tasks.perplexity.heldout_windows`). Each set is masked
    with `steer(model, set, None, "-X")` (neurons set to 0) for every evaluated language X it has neurons for.
    With `log_path`, every measured cell is appended there (with a digest of its set's masks) and a rerun skips
    the cells of unchanged sets, also when sets are added (`fresh`: start over).
    Returns the baseline loss, and per set its sizes, loss increases {X: {Y: delta}}, the `matrix_summary` of
    those (selectivity per language, pooled `ratio`) and `mean_selectivity` (mean over languages that have one).
    """
    languages = list(windows)
    if not languages:
        raise LangNeuronsError("no evaluation windows; give at least one language")
    if "baseline" in sets:
        raise LangNeuronsError("'baseline' names the unedited model; give the set another name")
    for name, neurons in sets.items():
        try:
            neurons.check_model(model)
        except LangNeuronsError as e:
            raise LangNeuronsError(f"set '{name}': {e}") from None
    tokens = {y: sum(max(len(w) - 1, 0) for w in rows) for y, rows in windows.items()}
    conditions: list[tuple[str, str | None]] = [("baseline", None)]
    conditions += [(name, x) for name, s in sets.items() for x in languages if x in s.languages and s.count(x) > 0]
    digests = {"baseline": "", **{name: _digest(s.languages, s.masks) for name, s in sets.items()}}
    log = None
    if log_path is not None:
        settings = {"model": model_id(model), "model_fingerprint": model_fingerprint(model),
                    "dtype": str(next(model.parameters()).dtype),
                    "windows": _digest([(y, [list(w) for w in rows]) for y, rows in windows.items()])}
        log = SampleLog(log_path, KEYS, settings, fresh)
    cells = {(c["set"], c["deactivated"], c["language"]): c["nll"] for c in (log or [])
             if digests.get(c["set"]) == c["digest"]}
    start = time.perf_counter()
    for name, x in tqdm(conditions, desc="compare", unit="condition", disable=not progress):
        todo = [y for y in languages if (name, x, y) not in cells]
        if not todo:
            continue
        with steer(model, sets[name], None, f"-{x}") if x else contextlib.nullcontext():
            nll = mean_nll(model, {y: windows[y] for y in todo}, batch_size)
        rows = [{"set": name, "digest": digests[name], "deactivated": x, "language": y, "nll": nll[y]} for y in todo]
        if log is not None:
            log.add(rows)
        cells.update({(name, x, y): nll[y] for y in todo})
    baseline = {y: cells[("baseline", None, y)] for y in languages}
    methods = {}
    for name, s in sets.items():
        masked = [x for n, x in conditions if n == name]
        delta = {x: {y: cells[(name, x, y)] - baseline[y] for y in languages} for x in masked}
        summary = matrix_summary(delta) if delta else {"per_language": {}}
        ratios = [p["selectivity"] for p in summary["per_language"].values() if p["selectivity"] is not None]
        methods[name] = {
            "method": s.meta.get("method") or name,
            "sizes": {x: s.count(x) if x in s.languages else 0 for x in languages},
            "delta": delta, **summary,
            "mean_selectivity": sum(ratios) / len(ratios) if ratios else None,
        }
    return {"model": model_id(model), "model_fingerprint": model_fingerprint(model),
            "languages": languages, "tokens": tokens, "baseline": baseline,
            "methods": methods, "seconds": round(time.perf_counter() - start, 2)}


def selectivity_table(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per set: selectivity per language, their mean, and the pooled ratio (own / others)."""
    rows = []
    for name, m in result["methods"].items():
        per = m["per_language"]
        row: dict[str, Any] = {"set": name}
        for x in result["languages"]:
            value = per.get(x, {}).get("selectivity")
            row[x] = "-" if value is None else f"{value:.2f}"
        row["mean"] = "-" if m["mean_selectivity"] is None else f"{m['mean_selectivity']:.2f}"
        row["pooled"] = "-" if m.get("ratio") is None else f"{m['ratio']:.2f}"
        row["own"] = "-" if m.get("diagonal_mean") is None else f"{m['diagonal_mean']:+.3f}"
        row["others"] = "-" if m.get("off_diagonal_mean") is None else f"{m['off_diagonal_mean']:+.3f}"
        rows.append(row)
    return rows


def selectivity_bars(results: Sequence[Mapping[str, Any]], path: str | Path) -> list[Path]:
    """Grouped bars of selectivity per language (and the mean) per set, one panel per model; log scale, a line
    at 1 (no selectivity). Languages without a selectivity (no neurons, or no loss increase elsewhere) are left
    empty. Writes PNG and SVG."""
    import matplotlib.pyplot as plt
    import numpy as np

    from langneurons.plots import _save

    fig, axes = plt.subplots(len(results), 1, figsize=(1.0 + 0.75 * (len(results[0]["languages"]) + 1),
                                                        3.6 * len(results)), squeeze=False)
    for ax, result in zip(axes[:, 0], results):
        labels = [*result["languages"], "mean"]
        names = list(result["methods"])
        width = 0.8 / len(names)
        for i, name in enumerate(names):
            m = result["methods"][name]
            values = [m["per_language"].get(x, {}).get("selectivity") for x in result["languages"]]
            values.append(m["mean_selectivity"])
            heights = np.array([v if v is not None and v > 0 else np.nan for v in values], dtype=float)
            ax.bar(np.arange(len(labels)) + (i - (len(names) - 1) / 2) * width, heights, width, label=name)
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(labels)), labels)
        ax.set_ylabel("selectivity (own / others)")
        ax.set_title(f"Masking selectivity on {result['model']}")
        ax.legend(fontsize=8, frameon=False, ncol=len(names))
    fig.tight_layout()
    return _save(fig, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons compare`."""
    from langneurons.cli_common import add_model_options

    add_model_options(p)
    p.add_argument("--neurons", required=True,
                   help="reference neuron set (e.g. LAPE from `identify`); the other sets match its size per language")
    p.add_argument("--stats", help="statistics file (from `collect`): adds the activation-frequency baseline")
    p.add_argument("--relevance", help="relevance file (from `collect --relevance`): adds CRANE")
    p.add_argument("--contrast", default="margin", choices=list(CONTRASTS), help="CRANE contrast (default margin)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random per-layer set (default 0)")
    p.add_argument("--no-random", action="store_true", help="leave out the random per-layer set")
    p.add_argument("--transfer", action="append", default=[], metavar="MODEL",
                   help="also evaluate the same sets on this model of the same shape (repeatable)")
    p.add_argument("--corpus", default="udhr",
                   help="'udhr' (embedded), a folder of <lang>.txt/.jsonl files, 'en=a.txt,de=b.txt', or 'hf:NAME' "
                        "(its held-out documents are used)")
    p.add_argument("--languages", help="comma-separated evaluated languages (default: the reference set's)")
    p.add_argument("--heldout-every", type=int, default=10, help="every n-th document is held out (default 10)")
    p.add_argument("--hf-config", help="dataset config; '{lang}' is replaced per language")
    p.add_argument("--hf-split", default="train", help="dataset split (default train)")
    p.add_argument("--text-column", default="text", help="dataset text column (default text)")
    p.add_argument("--max-tokens", type=int, default=None, help="held-out tokens per language (default: all)")
    p.add_argument("--window", type=int, default=512, help="tokens per window, BOS included (default 512)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--output-dir", default="runs/compare", help="results folder (a rerun resumes there)")
    p.add_argument("--fresh", action="store_true", help="discard cells measured before in --output-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons compare`."""
    from langneurons.cli import format_table
    from langneurons.cli_common import build_corpus, parse_languages
    from langneurons.models import load_model
    from langneurons.tasks.perplexity import heldout_windows
    from langneurons.tasks.results import run_metadata, write_results

    for name in ("max_tokens", "batch_size", "window"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise LangNeuronsError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    reference = NeuronSet.load(args.neurons)
    languages = parse_languages(args.languages) or list(reference.languages)
    reference = reference.select(languages)
    stats = ActivationStats.load(args.stats) if args.stats else None
    relevance = RelevanceStats.load(args.relevance) if args.relevance else None
    sets = matched_sets(reference, stats, relevance, args.seed, args.contrast, random=not args.no_random)
    out = Path(args.output_dir)
    for name, s in sets.items():
        s.save(out / f"neurons_{name}.safetensors")
    args.languages = ",".join(languages)
    corpus = build_corpus(args)
    results = []
    for i, spec in enumerate([args.model, *args.transfer]):
        model, tok = load_model(spec, dtype=args.dtype, device=args.device)
        windows = heldout_windows(tok, corpus, languages, args.max_tokens, args.window)
        results.append(compare_methods(model, sets, windows, args.batch_size, out / f"cells_{i}.jsonl", args.fresh,
                                       progress=not args.quiet))
        results[-1]["transfer"] = i > 0
        if i == 0:
            settings = {"neurons": str(args.neurons), "stats": args.stats, "relevance": args.relevance,
                        "contrast": args.contrast, "seed": args.seed, "languages": languages,
                        "corpus": corpus.select(languages).describe(), "max_tokens": args.max_tokens,
                        "window": args.window, "transfer": list(args.transfer),
                        "sets": {name: {"method": s.meta.get("method"), "settings": s.meta.get("settings", {}),
                                        "made_on": s.meta.get("model", {}).get("id")} for name, s in sets.items()}}
            meta = run_metadata(model, "compare", settings)
        del model
    path = write_results(out / "compare.json", meta, {"results": results})
    figures = selectivity_bars(results, out / "selectivity.png")
    for result in results:
        role = " (transfer)" if result["transfer"] else ""
        print(f"\nselectivity on {result['model']}{role}; held-out tokens "
              f"{', '.join(f'{y} {n}' for y, n in result['tokens'].items())}; {result['seconds']:.1f} s")
        print(format_table(selectivity_table(result)))
    print(f"\nwrote {path}, {', '.join(str(f) for f in figures)}")
