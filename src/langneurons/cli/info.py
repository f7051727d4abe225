"""Summarise an artifact (statistics, relevance, neuron set, fine-tuning delta): what it holds, the model it was made
on, and a table per language."""

from __future__ import annotations

import argparse
import json
from typing import Any

from langneurons.cli import options
from langneurons.core.errors import LangNeuronsError


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Command-line options of `langneurons info`."""
    p.add_argument("file", help="a .safetensors file written by langneurons")
    p.add_argument("--json", action="store_true", help="print the full metadata as JSON")


def main(args: argparse.Namespace) -> None:
    """Run `langneurons info`."""
    from langneurons.core.artifacts import read_meta
    from langneurons.core.summaries import neuron_rows, relevance_rows, stats_rows

    meta = read_meta(args.file)
    if args.json:
        print(json.dumps(meta, indent=2, ensure_ascii=False))
        return
    model, shape = meta.get("model"), meta.get("shape")
    model = model if isinstance(model, dict) else {}
    shape = shape if isinstance(shape, dict) else {}
    kind = meta.get("kind")
    print(f"{args.file}: {kind} of {model.get('id')} (revision {model.get('revision')}), "
          f"{shape.get('layers')} layers x {shape.get('neurons')} neurons, langneurons {meta.get('library_version')}")
    if meta.get("incomplete"):
        print(f"incomplete collection, done: {meta['incomplete'].get('done')}; rerun collect to resume")
        return
    if kind not in ("stats", "relevance", "neurons"):
        return
    t = _numpy_tensors(args.file)
    try:
        langs = meta["languages"]
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
