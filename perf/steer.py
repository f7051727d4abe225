"""Steering overhead in generation on the embedded model, measured side by side in one run.

Prints tok/s of greedy generation (32 built-in prompts in four languages, batch 32, 32 new tokens, no stop strings)
  unsteered           no hooks
  steered             "-en +fr" (add) on every row
  per-row             four different settings in one batch, one group of rows each
and the ratios steered / unsteered and per-row / unsteered (target >= 0.97), of the best runs and, steadier
under drifting load, the median over rounds of each round's ratio. Generated tokens are counted from
the model's forward calls (rows x steps), so the runs are checked to do the same work.

Run: python perf/steer.py [--repeats 3] [--stats stats.safetensors]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import langneurons as ln
from langneurons.data.prompts import qa_prompt, questions
from langneurons.steering.config import SteeringConfig
from langneurons.steering.generation import generate

STATS_LANGS = ["en", "de", "fr", "ru", "zh"]
PROMPT_LANGS = ["en", "de", "ru", "zh"]
PER_ROW = [
    SteeringConfig(activate={"fr": 1.0}, deactivate={"en": 0.0}),
    SteeringConfig(activate={"ru": 1.0}, deactivate={"de": 0.0}),
    SteeringConfig(activate={"zh": 1.0}, method="replace"),
    SteeringConfig(activate={"de": 2.0}, deactivate={"ru": 0.0}, method="scale"),
]


class TokenCounter:
    """Counts the tokens a model generates: each forward call during `generate` yields one token per row."""

    def __init__(self, model: torch.nn.Module):
        self.tokens = 0
        self.handle = model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, _module: torch.nn.Module, _args: tuple, kwargs: dict) -> None:
        self.tokens += int(kwargs["input_ids"].shape[0])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each round times every setting once")
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--stats", help="statistics file of this model (default: collect over the UDHR, about a minute)")
    ap.add_argument("--top-rate", type=float, default=0.01, help="LAPE top_rate of the neuron set")
    args = ap.parse_args()
    model, tok = ln.load_model("gemma-3-270m")
    if args.stats:
        stats = ln.ActivationStats.load(args.stats)
    else:
        start = time.perf_counter()
        stats = ln.collect_stats(model, tok, ln.udhr(STATS_LANGS), max_tokens=1000, progress=False)
        print(f"statistics over the UDHR in {', '.join(STATS_LANGS)}: {time.perf_counter() - start:.1f} s")
    neurons = ln.lape(stats, top_rate=args.top_rate)
    print(f"LAPE {args.top_rate:g}: " + ", ".join(f"{k} {neurons.count(k)}" for k in neurons.languages))
    prompts = [qa_prompt(q) for lang in PROMPT_LANGS for q in questions(lang, "eval")]
    settings = {
        "unsteered": None,
        "steered": [SteeringConfig.from_expression("-en +fr", method="add")] * len(prompts),
        "per-row": [PER_ROW[i % len(PER_ROW)] for i in range(len(prompts))],
    }
    print(f"{type(model).__name__}, {len(prompts)} prompts, batch {args.batch_size}, {args.max_new_tokens} new tokens, "
          f"greedy, no stop strings, {torch.get_num_threads()} threads")

    def run(steerings: list[SteeringConfig] | None, max_new_tokens: int = args.max_new_tokens) -> int:
        counter = TokenCounter(model)
        try:
            generate(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=args.batch_size,
                     steerings=steerings, neurons=neurons, stats=stats)
        finally:
            counter.handle.remove()
        return counter.tokens

    for steerings in settings.values():  # warm-up (and a first check that every setting compiles)
        run(steerings, max_new_tokens=2)
    times: dict[str, list[float]] = {name: [] for name in settings}
    tokens: dict[str, set[int]] = {name: set() for name in settings}
    names = list(settings)
    for r in range(args.repeats):  # interleaved and rotated, so drifting load and order hit every setting alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = time.perf_counter()
            tokens[name].add(run(settings[name]))
            times[name].append(time.perf_counter() - start)
    print("generated tokens: " + ", ".join(f"{k} {sorted(v)}" for k, v in tokens.items())
          + ("  (same work)" if len({n for v in tokens.values() for n in v}) == 1 else "  (DIFFERENT: compare tok/s)"))
    rate = {name: max(tokens[name]) / min(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:10s} {rate[name]:8.1f} tok/s  (best of {args.repeats}; median {statistics.median(t):.2f} s)")
    for name in names[1:]:
        paired = statistics.median(u / t for u, t in zip(times["unsteered"], times[name]))
        print(f"{name} / unsteered = {rate[name] / rate['unsteered']:.3f}   (target >= 0.97; median of the "
              f"per-round ratios {paired:.3f})")


if __name__ == "__main__":
    main()
