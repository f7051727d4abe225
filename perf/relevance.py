"""Relevance collection speed against a plain forward + backward pass of the same windows, side by side in one run.

Prints:
  relevance / plain   throughput of relevance collection (one forward and one backward per batch, hooks at every
                      down projection, log-probabilities of the actual next tokens) over a plain forward through the
                      whole model (its own logits) and backward of the same summed log-probabilities down to the
                      input embeddings, parameters frozen (target >= 0.9)
  attnlrp / plain     the same for the AttnLRP rule (norm, activation, gate/up and q/k/v hooks on top; it explains
                      the target logits, so its head skips the log-softmax; target >= 0.8)
  relevance / train   over the same with parameter gradients (a training step without the optimizer), for context

Run: python perf/relevance.py [--windows 4] [--repeats 3] [--tiny]
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import torch
from collect import compare_speeds, windows  # perf/collect.py: the same windows and timing

import langneurons as ln
from langneurons.core.lrp import attnlrp
from langneurons.core.sites import find_sites
from langneurons.stats.relevance import RelevanceRecorder, frozen


def tiny_model(window: int):
    """A small random Gemma 3 (4 layers, 1024 neurons, 8k vocabulary) and random-token windows."""
    from transformers import AutoModelForCausalLM, Gemma3TextConfig

    config = Gemma3TextConfig(vocab_size=8192, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                              num_attention_heads=4, num_key_value_heads=1, head_dim=64, sliding_window=128,
                              max_position_embeddings=window)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


def log_likelihood(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    logits = logits[:, :-1].float()
    return (logits.gather(-1, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)).sum()


def plain(model, batches) -> None:
    """The whole model's logits, summed log-probabilities, one backward to the input embeddings."""
    handle = model.get_input_embeddings().register_forward_hook(lambda _m, _i, out: out.requires_grad_())
    try:
        with frozen(model):
            for ids in batches:
                log_likelihood(model(input_ids=ids, use_cache=False).logits, ids).backward()
    finally:
        handle.remove()


def train_step(model, batches) -> None:
    """The same with parameter gradients (what a training step computes before the optimizer)."""
    for ids in batches:
        log_likelihood(model(input_ids=ids, use_cache=False).logits, ids).backward()
        model.zero_grad(set_to_none=True)


def relevance(model, batches, rule: str = "grad_x_input") -> None:
    sites = find_sites(model)
    rec = RelevanceRecorder(sites, skip=1, exclude_target=None, explain_logit=rule == "attnlrp")
    with rec, frozen(model), attnlrp(model, sites) if rule == "attnlrp" else contextlib.nullcontext():
        for ids in batches:
            rec.run(model, ids)
        rec.take()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=4, help="windows per measurement")
    ap.add_argument("--window", type=int, default=512, help="tokens per window")
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="rounds; each round times every method once")
    ap.add_argument("--tiny", action="store_true", help="a small random Gemma 3 on random tokens (seconds)")
    args = ap.parse_args()
    if args.tiny:
        model = tiny_model(args.window)
        gen = torch.Generator().manual_seed(0)
        wins = list(torch.randint(3, model.config.vocab_size, (args.windows, args.window), generator=gen))
    else:
        model, tok = ln.load_model("gemma-3-270m")
        wins = windows(tok, args.windows, args.window)
    batches = [torch.stack(wins[i : i + args.batch_size]) for i in range(0, len(wins), args.batch_size)]
    tokens = sum(len(w) - 1 for w in wins)
    sites = find_sites(model)
    print(f"{type(model).__name__} ({sites.n_layers} layers x {sites.n_neurons} neurons, vocabulary "
          f"{model.config.vocab_size}), {len(wins)} windows x {args.window} tokens, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    plain(model, batches[:1])  # warm-up
    methods = {"plain": plain, "relevance": relevance, "attnlrp": functools.partial(relevance, rule="attnlrp"),
               "train": train_step}
    best = compare_speeds(methods, model, batches, args.repeats, tokens)
    print(f"relevance / plain = {best['plain'] / best['relevance']:.3f}   (target >= 0.9)")
    print(f"attnlrp / plain = {best['plain'] / best['attnlrp']:.3f}   (target >= 0.8)")
    print(f"relevance / train = {best['train'] / best['relevance']:.3f}")


if __name__ == "__main__":
    main()
