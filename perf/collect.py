"""Collection speed and memory on the embedded model, measured side by side in one run.

Prints:
  collect / bare      throughput of statistics collection over throughput of a bare decoder-body forward over
                      the same windows (target >= 0.97)
  collect / naive     over a naive loop: full model with its LM head, one window at a time, Python hooks that
                      reduce each layer to counts and sums on the spot (target >= 3)
  peak memory         of `collect_stats` (a fresh process each) for two corpus sizes (target: the same)
  window stream       memory a local corpus's window stream holds when collection starts (it counts the tokens
                      for the progress bar first), for two corpus sizes, tokenizer only (target: no growth)

Run: python perf/collect.py [--windows 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

import langneurons as ln
from langneurons.core.sites import find_sites
from langneurons.data.windows import pack_windows
from langneurons.stats.collect import StatsRecorder

LANGS = ["en", "de", "ru", "zh", "ar", "hi"]


def windows(tok, n: int, window: int) -> list[torch.Tensor]:
    corpus = ln.udhr(LANGS, heldout_every=0)
    out: list[torch.Tensor] = []
    for lang in LANGS:
        out += [w for w in pack_windows(tok, corpus.documents(lang), window) if len(w) == window]
    return out[:n]


def bare(model, batches) -> None:
    with torch.inference_mode():
        for ids in batches:
            model.base_model(input_ids=ids, use_cache=False)


def collect(model, batches, stop_after_last: bool = True) -> None:
    with StatsRecorder(find_sites(model), skip=1, stop_after_last=stop_after_last) as rec:
        for ids in batches:
            rec.run(model, ids)
        rec.take()


def collect_full(model, batches) -> None:
    """Collection without the early exit after the last neuron site (to show what the hooks alone cost)."""
    collect(model, batches, stop_after_last=False)


def naive(model, batches) -> None:
    """What research scripts do: the full model, one window at a time, per-layer reductions in Python."""
    sites = find_sites(model)
    over_zero = [torch.zeros(sites.n_neurons, dtype=torch.long) for _ in sites.acts]
    sums = [torch.zeros(sites.n_neurons, dtype=torch.float64) for _ in sites.acts]

    def hook(i):
        def fn(_m, _inp, out):
            a = out[0, 1:].float()
            over_zero[i] += (a > 0).sum(0).cpu()
            sums[i] += a.sum(0).double().cpu()

        return fn

    handles = [act.register_forward_hook(hook(i)) for i, act in enumerate(sites.acts)]
    try:
        with torch.no_grad():
            for ids in batches:
                for row in ids:
                    model(input_ids=row[None])
    finally:
        for h in handles:
            h.remove()


def timed(fn, model, batches) -> float:
    start = time.perf_counter()
    fn(model, batches)
    return time.perf_counter() - start


def compare_speeds(methods: dict, model, batches, repeats: int, tokens: int) -> dict[str, float]:
    """Time every method `repeats` times, interleaved and rotated so that drifting load and order hit every method
    alike; print each one's throughput and return its best time in seconds."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    names = list(methods)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(methods[name], model, batches))
    best = {k: min(v) for k, v in times.items()}
    for name, t in best.items():
        print(f"{name:10s} {tokens / t:8.1f} tok/s  (best of {repeats}; median {statistics.median(times[name]):.2f} s)")
    return best


def child_memory(tokens: int) -> None:
    """Run collect_stats over `tokens` tokens of one language and print the process's peak RSS (MiB)."""
    model, tok = ln.load_model("gemma-3-270m")
    docs = list(ln.udhr(["en"], heldout_every=0).documents("en"))
    corpus = ln.Corpus({"en": lambda: (d for _ in range(1000) for d in docs)}, {"kind": "repeated udhr"}, 0)
    ln.collect_stats(model, tok, corpus, max_tokens=tokens, window=512, batch_size=4, progress=False)
    print(json.dumps({"tokens": tokens, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def child_windows(repeats: int) -> None:
    """Print the growth of resident memory from before a local corpus's window stream is set up to when its first
    window would go to the model (the token count for the progress bar is done by then)."""
    from transformers import AutoTokenizer

    from langneurons.core.models import embedded_model_dir
    from langneurons.stats.collect import language_windows

    tok = AutoTokenizer.from_pretrained(embedded_model_dir("gemma-3-270m"))
    docs = list(ln.udhr(["en"], heldout_every=0).documents("en"))
    corpus = ln.from_texts({"en": docs * repeats}, heldout_every=0)
    before = _rss_mib()
    _, bar = language_windows(tok, corpus, "en", "train", 512, None, "count", False)
    print(json.dumps({"tokens": bar.total, "growth_mib": _rss_mib() - before}))


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS")).split()[1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=8, help="512-token windows per measurement")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each round times every method once")
    ap.add_argument("--memory-tokens", default="4000,16000", help="two corpus sizes for the memory check")
    ap.add_argument("--window-repeats", default="500,5000",
                    help="two local corpus sizes (repeats of the English UDHR) for the window stream check")
    ap.add_argument("--child-memory", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-windows", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child_memory:
        child_memory(args.child_memory)
        return
    if args.child_windows:
        child_windows(args.child_windows)
        return
    model, tok = ln.load_model("gemma-3-270m")
    wins = windows(tok, args.windows, 512)
    batches = [torch.stack(wins[i : i + args.batch_size]) for i in range(0, len(wins), args.batch_size)]
    tokens = sum(len(w) - 1 for w in wins)
    print(f"{type(model).__name__}, {len(wins)} windows x 512 tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    bare(model, batches[:1])  # warm-up
    methods = {"bare": bare, "collect": collect, "hooks-only": collect_full, "naive": naive}
    best = compare_speeds(methods, model, batches, args.repeats, tokens)
    print(f"collect / bare   = {best['bare'] / best['collect']:.3f}   (target >= 0.97)")
    print(f"  (hooks without the early exit after the last site: {best['bare'] / best['hooks-only']:.3f})")
    print(f"collect / naive  = {best['naive'] / best['collect']:.2f}    (target >= 3)")
    peaks = []
    for n in (int(x) for x in args.memory_tokens.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child-memory", str(n)], capture_output=True, text=True,
                             check=True)
        peaks.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"peak memory, {n:6d} tokens: {peaks[-1]['peak_mib']:.0f} MiB")
    print(f"peak memory ratio (larger / smaller corpus) = {peaks[-1]['peak_mib'] / peaks[0]['peak_mib']:.3f} "
          "(target: 1.0)")
    for n in (int(x) for x in args.window_repeats.split(",")):
        out = subprocess.run([sys.executable, __file__, "--child-windows", str(n)], capture_output=True, text=True,
                             check=True)
        grown = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"window stream, {grown['tokens']:9d} tokens: +{grown['growth_mib']:.0f} MiB when collection starts "
              "(target: no growth)")


if __name__ == "__main__":
    main()
