"""Perplexity matrix: deactivate each language's neurons and measure the next-token loss on every language.

For each language X of the neuron set, X's neurons are deactivated (set to a value, or scaled) and the mean
negative log-likelihood per token is measured on the held-out text of every language Y. Deactivating X should
raise X's loss much more than the others' (Tang et al. 2024). The same is done with random neurons of equal size
per layer as a control. Results: the NLL matrix [X, Y], its delta against the unedited model, the mean delta on
the diagonal and off it and their ratio, and heatmaps.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from langneurons.cli_common import add_model_options, load_inputs, parse_languages
from langneurons.corpus import Corpus, pack_windows
from langneurons.errors import LangNeuronsError
from langneurons.identify import random_like
from langneurons.neurons import NeuronSet
from langneurons.steering import DEACTIVATIONS, SteeringConfig, steer
from langneurons.tasks.results import SampleLog, run_metadata, write_results

SUMMARY = "deactivate each language's neurons: next-token loss on every language's held-out text (+ random control)"

CELLS = "perplexity_cells.jsonl"
KEYS = ("set", "deactivated", "language")
BASELINE = "baseline"

# Positions sent through the LM head at once: about 256 MB of float32 logits for a 262k-token vocabulary.
_HEAD_ELEMENTS = 2**26


def heldout_windows(tokenizer: Any, corpus: Corpus, languages: Sequence[str], max_tokens: int | None = None,
                    window: int = 512, split: str = "heldout") -> dict[str, list[list[int]]]:
    """Token windows (BOS first, via corpus.pack_windows/window_prefix) of each language's held-out text."""
    if isinstance(languages, str) or not languages:
        raise LangNeuronsError(f"languages={languages!r}; pass a non-empty list such as ['en', 'de']")
    out: dict[str, list[list[int]]] = {}
    for lang in languages:
        rows = [w.tolist() for w in pack_windows(tokenizer, corpus.documents(lang, split), window, max_tokens)]
        if not rows:
            raise LangNeuronsError(f"no {split} text for language '{lang}'; give the corpus more documents "
                                   "(every heldout_every-th document is held out)")
        out[lang] = rows
    return out


def head_logits(model: torch.nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """Next-token logits from final hidden states (after the final norm): the LM head, then what the family's
    own forward does after it (Gemma 2/3 soft-capping, Cohere's logit_scale, Granite's logits_scaling)."""
    logits = model.get_output_embeddings()(hidden)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap is not None:
        logits = logits / cap
        logits = torch.tanh(logits)
        logits = logits * cap
    scale = getattr(model, "logit_scale", None)
    if scale is not None:
        logits = logits * scale
    scaling = getattr(model.config, "logits_scaling", None)
    if scaling is not None:
        logits = logits / scaling
    return logits


def check_head(model: torch.nn.Module, input_ids: torch.Tensor) -> None:
    """Raise unless `head_logits` of the decoder body's output equals the model's own logits on `input_ids`
    ([1, T]): a guard against a family that post-processes its logits in a way `head_logits` does not know."""
    hidden = model.base_model(input_ids=input_ids, use_cache=False).last_hidden_state
    ours = head_logits(model, hidden).float()
    theirs = model(input_ids=input_ids, use_cache=False).logits.float()
    if ours.shape != theirs.shape or not torch.allclose(ours, theirs, rtol=1e-3, atol=1e-3):
        raise LangNeuronsError(
            f"the LM head of this {model.config.model_type} model does not reproduce its logits from the decoder "
            "body's output; its family post-processes logits in an unsupported way (report it)"
        )


def nll_rows(model: torch.nn.Module, rows: Sequence[Sequence[int]], device: torch.device) -> torch.Tensor:
    """Summed next-token NLL of each of `rows` (run together, right-padded): float64 [len(rows)] on the CPU."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(r, dtype=torch.long)
        mask[i, : len(r)] = 1
    ids, mask = ids.to(device), mask.to(device)
    # Causal attention: a row's real positions never see the padding after them.
    hidden = model.base_model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
    keep = mask[:, 1:].bool()  # position t predicts token t + 1; padding is never a target, the BOS never one
    states, targets = hidden[:, :-1][keep], ids[:, 1:][keep]
    row_of = torch.arange(len(rows), device=device)[:, None].expand_as(keep)[keep]
    chunk = max(1, _HEAD_ELEMENTS // model.get_output_embeddings().weight.shape[0])
    total = torch.zeros(len(rows), dtype=torch.float64, device=device)
    for start in range(0, len(targets), chunk):
        logits = head_logits(model, states[start : start + chunk]).float()
        picked = logits.gather(-1, targets[start : start + chunk, None])[:, 0]
        total.index_add_(0, row_of[start : start + chunk], (torch.logsumexp(logits, -1) - picked).double())
    return total.cpu()


def mean_nll(model: torch.nn.Module, windows: Mapping[str, Sequence[Sequence[int]]], batch_size: int = 8,
             progress: bool = False) -> dict[str, float]:
    """Mean next-token NLL per predicted token of each language's windows (padding excluded, the BOS is never a
    target). Whatever steering is active on `model` (a `steer(...)` block around the call) applies."""
    sums = window_nll(model, windows, batch_size, progress)
    return {lang: sum(sums[lang]) / sum(max(len(r) - 1, 0) for r in rows) for lang, rows in windows.items()}


@torch.inference_mode()
def window_nll(model: torch.nn.Module, windows: Mapping[str, Sequence[Sequence[int]]], batch_size: int = 8,
               progress: bool = False) -> dict[str, list[float]]:
    """Summed next-token NLL of each window of each language (0 for a window with nothing to predict), as
    `mean_nll` computes it; per-window sums let callers bootstrap over windows."""
    if batch_size <= 0:
        raise LangNeuronsError(f"batch_size must be positive, got {batch_size}")
    device = model.get_input_embeddings().weight.device
    out: dict[str, list[float]] = {}
    checked = False
    for lang, rows in windows.items():
        rows = [list(r) for r in rows]
        if sum(max(len(r) - 1, 0) for r in rows) == 0:
            raise LangNeuronsError(f"language '{lang}': no token to predict (windows need at least 2 tokens)")
        if not checked:
            first = next(r for r in rows if len(r) > 1)
            check_head(model, torch.as_tensor(first[:8], dtype=torch.long, device=device)[None])
            checked = True
        sums = [0.0] * len(rows)
        batches = range(0, len(rows), batch_size)
        for start in tqdm(batches, desc=f"nll {lang}", unit="batch", disable=not progress, leave=False):
            index = [i for i in range(start, min(start + batch_size, len(rows))) if len(rows[i]) > 1]
            if index:
                for i, v in zip(index, nll_rows(model, [rows[i] for i in index], device).tolist()):
                    sums[i] = v
        out[lang] = sums
    return out


def _mean(values: Sequence[float]) -> float | None:
    values = list(values)
    return sum(values) / len(values) if values else None


def _ratio(num: float | None, den: float | None) -> float | None:
    """num / den, or None when either is missing or den is not positive (the ratio means nothing then)."""
    return num / den if num is not None and den is not None and den > 0 else None


def matrix_summary(delta: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Summary of a delta-NLL matrix {deactivated X: {evaluated Y: delta}} whose rows hold the X column.

    `diagonal_mean` (X on X), `off_diagonal_mean` (X on Y != X), `ratio` of the two (None unless the off-diagonal
    mean is positive), `own_hurt_most` (how many X raise X's loss strictly more than any other Y's), and per X:
    own delta, mean and max of the others, the most hurt language, and selectivity = own / mean of others.
    """
    per: dict[str, dict[str, Any]] = {}
    for x, row in delta.items():
        others = [v for y, v in row.items() if y != x]
        own = row[x]
        per[x] = {"own": own, "others_mean": _mean(others), "others_max": max(others, default=None),
                  "most_hurt": max(row, key=lambda y: row[y]), "own_hurt_most": all(own > v for v in others),
                  "selectivity": _ratio(own, _mean(others))}
    diagonal = _mean([row[x] for x, row in delta.items()])
    off = _mean([v for x, row in delta.items() for y, v in row.items() if y != x])
    return {"diagonal_mean": diagonal, "off_diagonal_mean": off, "ratio": _ratio(diagonal, off),
            "own_hurt_most": sum(p["own_hurt_most"] for p in per.values()), "per_language": per}


@dataclass
class PerplexityResult:
    """NLL cells of one run: set ("baseline", "neurons" or "random") x deactivated language x evaluated language.

    `cells`: rows {"set", "deactivated" (None for the baseline), "language", "nll", "tokens"}. `meta`: the run's
    metadata (`results.run_metadata`). `log_settings`: what the cells JSONL is fingerprinted with.
    """

    languages: list[str]
    deactivated: list[str]
    sets: dict[str, str]  # set name -> its identification method, e.g. {"neurons": "lape", "random": "random"}
    counts: dict[str, int]  # neurons per deactivated language (the random set has the same per layer)
    cells: list[dict[str, Any]]
    meta: dict[str, Any]
    log_settings: dict[str, Any]
    seconds: float
    log_path: Path | None = None

    def _cell(self, name: str, x: str | None, y: str) -> float:
        return next(c["nll"] for c in self.cells if (c["set"], c["deactivated"], c["language"]) == (name, x, y))

    @property
    def baseline(self) -> dict[str, float]:
        """NLL of each evaluated language with nothing deactivated."""
        return {y: self._cell(BASELINE, None, y) for y in self.languages}

    @property
    def tokens(self) -> dict[str, int]:
        """Predicted tokens of each evaluated language."""
        return {c["language"]: c["tokens"] for c in self.cells if c["set"] == BASELINE}

    def nll(self, name: str) -> dict[str, dict[str, float]]:
        """{deactivated X: {evaluated Y: NLL}} of set `name`."""
        return {x: {y: self._cell(name, x, y) for y in self.languages} for x in self.deactivated}

    def delta(self, name: str) -> dict[str, dict[str, float]]:
        """{deactivated X: {evaluated Y: NLL - baseline NLL of Y}} of set `name`."""
        base = self.baseline
        return {x: {y: v - base[y] for y, v in row.items()} for x, row in self.nll(name).items()}

    def summary(self) -> dict[str, Any]:
        """What perplexity.json holds under "summary"."""
        sets = {name: {"method": method, "nll": self.nll(name), "delta": self.delta(name),
                       **matrix_summary(self.delta(name))} for name, method in self.sets.items()}
        return {"languages": self.languages, "deactivated": self.deactivated, "neurons": self.counts,
                "tokens": self.tokens, "baseline": self.baseline, "sets": sets, "seconds": round(self.seconds, 2)}

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write perplexity.json, the cells JSONL (unless the run logged there) and a delta-NLL heatmap per set
        (PNG + SVG, one colour scale for all); returns the paths."""
        from langneurons.plots import heatmap

        out = Path(out_dir)
        paths = {"summary": write_results(out / "perplexity.json", self.meta, self.summary()), "cells": out / CELLS}
        if self.log_path is None or self.log_path.resolve() != paths["cells"].resolve():
            SampleLog(paths["cells"], KEYS, self.log_settings, fresh=True).add(self.cells)
        deltas = {name: self.delta(name) for name in self.sets}
        values = [v for d in deltas.values() for row in d.values() for v in row.values()]
        low, high = min(0.0, *values), max(0.0, *values)
        for name, method in self.sets.items():
            matrix = [[deltas[name][x][y] for y in self.languages] for x in self.deactivated]
            png, svg = heatmap(matrix, self.deactivated, self.languages, out / f"perplexity_{name}.png",
                               f"ΔNLL with {method} neurons deactivated", row_label="deactivated",
                               col_label="evaluated", fmt="{:+.2f}", vmin=low, vmax=high, cmap="magma")
            paths[f"{name}_png"], paths[f"{name}_svg"] = png, svg
        return paths


def _neuron_digest(neurons: NeuronSet) -> str:
    """A short hash of a neuron set's languages and masks: cells of another set are not reused."""
    h = hashlib.sha256(",".join(neurons.languages).encode())
    h.update(neurons.masks.numpy().tobytes())
    return h.hexdigest()[:16]


def run_perplexity(
    model: torch.nn.Module,
    tok: Any,
    neurons: NeuronSet,
    corpus: Corpus,
    languages: Sequence[str] | None = None,
    value: float = 0.0,
    method: str = "set",
    beta: float | None = None,
    control: bool = True,
    seed: int = 0,
    max_tokens: int | None = None,
    window: int = 512,
    batch_size: int = 8,
    output_dir: str | Path | None = None,
    fresh: bool = False,
    progress: bool = True,
) -> PerplexityResult:
    """Mean NLL on the held-out text of every language with each language's neurons deactivated.

    `languages`: evaluated languages (default: the neuron set's); each of them with neurons in the set is also
    deactivated in turn. `method` "set" sets the neurons to `value`, "scale" multiplies them by `beta` (default 0).
    `control`: also deactivate random neurons of the same number per language and layer (`random_like`, `seed`).
    `max_tokens`: content tokens per language; `window`: tokens per window, BOS included. With `output_dir`, each
    cell is appended to its JSONL as it is measured and a rerun skips the cells there (`fresh`: start over).
    """
    if method not in DEACTIVATIONS:
        raise LangNeuronsError(f"unknown deactivation {method!r}; use one of {', '.join(DEACTIVATIONS)}")
    languages = list(neurons.languages if languages is None else languages)
    neurons.check_model(model)
    deactivated = [x for x in languages if x in neurons.languages and neurons.count(x) > 0]
    if not deactivated:
        raise LangNeuronsError(f"none of {', '.join(languages)} has neurons in the set "
                               f"({', '.join(neurons.languages)}); choose languages of the set")
    factor = value if method == "set" else (0.0 if beta is None else beta)
    sets = {"neurons": neurons, **({"random": random_like(neurons, seed)} if control else {})}
    log_settings = {
        "deactivation": method, "value": factor, "seed": seed, "max_tokens": max_tokens, "window": window,
        "split": "heldout", "corpus": corpus.select(languages).describe(), "neurons": _neuron_digest(neurons),
        "dtype": str(next(model.parameters()).dtype),
    }
    settings = {**log_settings, "languages": languages, "control": control, "batch_size": batch_size,
                "neurons": {"digest": log_settings["neurons"], "method": neurons.meta.get("method"),
                            "settings": neurons.meta.get("settings", {})}}
    windows = heldout_windows(tok, corpus, languages, max_tokens, window)
    tokens = {y: sum(len(w) - 1 for w in rows) for y, rows in windows.items()}
    log_path = Path(output_dir) / CELLS if output_dir is not None else None
    log = SampleLog(log_path, KEYS, log_settings, fresh) if log_path is not None else None
    cells: dict[tuple[str, str | None, str], dict[str, Any]] = {}
    if log is not None:
        cells = {(c["set"], c["deactivated"], c["language"]): c for c in log}
    conditions = [(BASELINE, None), *((name, x) for x in deactivated for name in sets)]
    start = time.perf_counter()
    bar = tqdm(conditions, desc="perplexity", unit="condition", disable=not progress)
    for name, x in bar:
        todo = [y for y in languages if (name, x, y) not in cells]
        if not todo:
            continue
        bar.set_postfix_str(f"{name} -{x}" if x else name)
        config = SteeringConfig(deactivate={x: factor}, deactivation=method) if x else None
        with steer(model, sets[name], None, config=config) if config else contextlib.nullcontext():
            nll = mean_nll(model, {y: windows[y] for y in todo}, batch_size)
        rows = [{"set": name, "deactivated": x, "language": y, "nll": nll[y], "tokens": tokens[y]} for y in todo]
        if log is not None:
            log.add(rows)
        cells.update({(name, x, y): row for row, y in zip(rows, todo)})
    bar.close()
    kept = [cells[(name, x, y)] for name, x in conditions for y in languages]
    return PerplexityResult(
        languages, deactivated, {name: s.meta.get("method") or name for name, s in sets.items()},
        {x: neurons.count(x) for x in deactivated}, kept, run_metadata(model, "perplexity", settings), log_settings,
        time.perf_counter() - start, log_path,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons evaluate perplexity`."""
    add_model_options(p)
    p.add_argument("--neurons", required=True, help="neuron set file (from `identify`)")
    p.add_argument("--corpus", default="udhr",
                   help="'udhr' (embedded), a folder of <lang>.txt/.jsonl files, 'en=a.txt,de=b.txt', or 'hf:NAME' "
                        "(the held-out documents are used: the same corpus and --heldout-every as `collect` keep "
                        "them apart from the statistics' text)")
    p.add_argument("--languages", help="comma-separated evaluated languages (default: the neuron set's); each one "
                                       "with neurons is also deactivated in turn")
    p.add_argument("--heldout-every", type=int, default=10, help="every n-th document is held out (default 10)")
    p.add_argument("--hf-config", help="dataset config; '{lang}' is replaced per language")
    p.add_argument("--hf-split", default="train", help="dataset split (default train)")
    p.add_argument("--text-column", default="text", help="dataset text column (default text)")
    p.add_argument("--deactivation", default="set", choices=list(DEACTIVATIONS),
                   help="set the neurons to --value, or scale them by --beta (default set)")
    p.add_argument("--value", type=float, default=0.0, help="value deactivated neurons are set to (default 0)")
    p.add_argument("--beta", type=float, default=None, help="factor for --deactivation scale (default 0)")
    p.add_argument("--no-control", action="store_true", help="skip the random-neuron control")
    p.add_argument("--seed", type=int, default=0, help="seed of the random control set (default 0)")
    p.add_argument("--max-tokens", type=int, default=None, help="held-out tokens per language (default: all)")
    p.add_argument("--window", type=int, default=512, help="tokens per window, BOS included (default 512)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per forward pass (default 8)")
    p.add_argument("--output-dir", default="runs/perplexity", help="results folder (a rerun resumes there)")
    p.add_argument("--fresh", action="store_true", help="discard cells measured before in --output-dir")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _signed(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.3f}"


def _table(result: PerplexityResult, name: str) -> str:
    """The set's delta matrix as text: baseline NLL first, then one row per deactivated language."""
    from langneurons.cli import format_table

    rows = [{"": "baseline NLL", **{y: f"{v:.3f}" for y, v in result.baseline.items()}}]
    rows += [{"": f"-{x}", **{y: f"{v:+.3f}" for y, v in row.items()}} for x, row in result.delta(name).items()]
    s = matrix_summary(result.delta(name))
    ratio = "n/a" if s["ratio"] is None else f"{s['ratio']:.2f}"
    missed = [x for x, p in s["per_language"].items() if not p["own_hurt_most"]]
    return "\n".join([
        f"ΔNLL with {result.sets[name]} neurons deactivated (rows) on held-out text (columns)",
        format_table(rows),
        f"diagonal mean {_signed(s['diagonal_mean'])}, off-diagonal mean {_signed(s['off_diagonal_mean'])}, "
        f"ratio {ratio}; "
        f"own language hurt most for {s['own_hurt_most']}/{len(result.deactivated)}"
        + (f" (not: {', '.join(missed)})" if missed else ""),
    ])


def main(args: argparse.Namespace) -> None:
    """Run `langneurons evaluate perplexity`."""
    from langneurons.cli_common import build_corpus

    for name in ("max_tokens", "batch_size", "window"):
        if getattr(args, name) is not None and getattr(args, name) <= 0:
            raise LangNeuronsError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    model, tok, neurons, _ = load_inputs(args)
    languages = parse_languages(args.languages) or list(neurons.languages)
    args.languages = ",".join(languages)
    result = run_perplexity(model, tok, neurons, build_corpus(args), languages, value=args.value,
                            method=args.deactivation, beta=args.beta, control=not args.no_control, seed=args.seed,
                            max_tokens=args.max_tokens, window=args.window, batch_size=args.batch_size,
                            output_dir=args.output_dir, fresh=args.fresh, progress=not args.quiet)
    files = result.save(args.output_dir)
    print("\n\n".join(_table(result, name) for name in result.sets))
    print(f"tokens per language: {', '.join(f'{y} {n}' for y, n in result.tokens.items())}; "
          f"{result.seconds:.1f} s")
    print("wrote " + ", ".join(str(p) for p in files.values()))
