"""Throughput on models of the sizes researchers study, from real configs with random weights (no download).

Per shape (Llama-3.1-8B and Gemma-3-4B's text model in bfloat16; `--small`: tiny shapes of both families for the
CPU, which CI runs), side by side in one run:
  collect / bare      `collect_stats` tok/s (the whole pipeline: packing, batching, hooks, sums) over a bare forward of
                      the decoder body over the same windows (target >= 0.95), and the model FLOPs utilisation of
                      both against the GPU's peak dense bf16 FLOP/s (2 x parameters + attention per token)
  steered / plain     greedy generation tok/s with "-en +de" on every row over unsteered (target >= 0.95)
  mixed / plain       four different settings in one batch, one per group of rows, over unsteered (target >= 0.9)
  forcing grid        prompts/s of a 3 x 3 source x target forcing grid (generation, identification, NLL guard)
  peak memory         the most GPU memory allocated during each part
Rotary scaling is left out of the configs (it changes no FLOP). Texts are the embedded UDHR, tokenized by a
byte-level BPE trained here in seconds (its ids fit any of the vocabularies). End of sequence is switched off,
so every row generates `--new-tokens` tokens.

Run: python perf/gpu.py [--shapes llama-3.1-8b,gemma-3-4b] [--tokens 65536] [--peak-tflops 989]
     python perf/gpu.py --small      (seconds on a CPU)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

import langneurons as ln
from langneurons.core.models import resolve_dtype
from langneurons.data.prompts import qa_prompt, questions
from langneurons.data.windows import pack_windows, window_prefix
from langneurons.steering.config import ForcingSetting, SteeringConfig
from langneurons.steering.generation import Decoding, generate
from langneurons.tasks.forcing import run_forcing

IDS = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
SHAPES: dict[str, dict[str, Any]] = {
    # meta-llama/Llama-3.1-8B config.json
    "llama-3.1-8b": {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
                     "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
                     "max_position_embeddings": 131072, "rms_norm_eps": 1e-5, "tie_word_embeddings": False},
    # google/gemma-3-4b-pt text_config
    "gemma-3-4b": {"model_type": "gemma3_text", "hidden_size": 2560, "intermediate_size": 10240,
                   "num_hidden_layers": 34, "num_attention_heads": 8, "num_key_value_heads": 4, "head_dim": 256,
                   "vocab_size": 262208, "sliding_window": 1024, "query_pre_attn_scalar": 256,
                   "max_position_embeddings": 131072},
    # the same families at a size a CPU runs in seconds
    "llama-small": {"model_type": "llama", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 4,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 1024,
                    "max_position_embeddings": 2048, "tie_word_embeddings": False},
    "gemma-small": {"model_type": "gemma3_text", "hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 6,
                    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 1024,
                    "sliding_window": 64, "max_position_embeddings": 2048},
}
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
                    "A800": 312.0, "L40S": 362.0, "A6000": 155.0, "L4": 121.0}
LANGS = ["en", "de", "fr"]
MIXED = [SteeringConfig({"de": 1.0}, {"en": 0.0}), SteeringConfig({"fr": 1.0}, {"en": 0.0}),
         SteeringConfig({"en": 2.0}, method="scale"), SteeringConfig({"de": 1.0}, method="replace")]


def tokenizer(vocab: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained on the embedded UDHR of LANGS; <pad>=0, <bos>=1, <eos>=2."""
    corpus = ln.udhr(LANGS, heldout_every=0)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<pad>", "<bos>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([d for lang in LANGS for d in corpus.documents(lang)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>")


def build(shape: str, device: str, dtype: torch.dtype) -> torch.nn.Module:
    """Random weights of the shape, created directly on `device` in `dtype`."""
    spec = dict(SHAPES[shape])
    config = AutoConfig.for_model(spec.pop("model_type"), **spec, **IDS)
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.generation_config.eos_token_id = None  # random weights: every row generates all its new tokens
    return model.eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], device: str, repeats: int) -> tuple[float, Any]:
    """Best wall time of `repeats` calls (after one warm-up call) and the last result."""
    result = fn()
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        result = fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best, result


def peak_memory(device: str, fn: Callable[[], Any]) -> tuple[Any, float | None]:
    """Run `fn`; the most GPU memory allocated meanwhile, in GiB (None on the CPU)."""
    if not device.startswith("cuda"):
        return fn(), None
    torch.cuda.reset_peak_memory_stats()
    result = fn()
    return result, torch.cuda.max_memory_allocated() / 2**30


def flops_per_token(model: torch.nn.Module, window: int) -> float:
    """Forward FLOPs per token of the decoder body: 2 x its non-embedding parameters plus causal attention
    (2 x layers x window x attention width: QK^T and AV, half of each by causality)."""
    c = model.config
    body = sum(p.numel() for p in model.base_model.parameters()) - model.get_input_embeddings().weight.numel()
    width = c.num_attention_heads * (getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads)
    return 2 * body + 2 * c.num_hidden_layers * window * width


def peak_flops(device: str, given: float | None) -> float | None:
    if given:
        return given * 1e12
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12
    return None


def bench_collect(model, tok, device: str, args) -> dict[str, Any]:
    texts = {lang: list(ln.udhr([lang], heldout_every=0).documents(lang)) for lang in LANGS}
    prefix = len(window_prefix(tok))
    per_lang = args.tokens // len(LANGS)
    # enough copies of each language's text for `per_lang` tokens
    reps = {lang: 1 + per_lang // max(1, sum(len(tok(t).input_ids) for t in docs)) for lang, docs in texts.items()}
    corpus = ln.from_texts({lang: docs * reps[lang] for lang, docs in texts.items()}, heldout_every=0)
    windows = [w for lang in LANGS for w in pack_windows(tok, corpus.documents(lang), args.window, per_lang)]
    batches: list[list[torch.Tensor]] = []  # as collect_stats batches them: up to --batch windows of one length
    for w in windows:
        if batches and len(batches[-1]) < args.batch and len(batches[-1][0]) == len(w):
            batches[-1].append(w)
        else:
            batches.append([w])
    batches = [torch.stack(b).to(device) for b in batches]
    n_bare = sum(b.shape[0] * (b.shape[1] - prefix) for b in batches)

    def bare() -> None:
        with torch.inference_mode():
            for ids in batches:
                model.base_model(input_ids=ids, use_cache=False)

    def collect() -> ln.ActivationStats:
        return ln.collect_stats(model, tok, corpus, max_tokens=per_lang, window=args.window, batch_size=args.batch,
                                progress=False)

    (t_bare, _), mem_bare = peak_memory(device, lambda: timed(bare, device, args.repeats))
    (t_collect, stats), mem_collect = peak_memory(device, lambda: timed(collect, device, args.repeats))
    n_collect = int(stats.n_tokens.sum())
    flops = flops_per_token(model, args.window)
    peak = peak_flops(device, args.peak_tflops)
    out = {"bare_tok_s": n_bare / t_bare, "collect_tok_s": n_collect / t_collect, "stats": stats,
           "mem_bare": mem_bare, "mem_collect": mem_collect}
    out["ratio"] = out["collect_tok_s"] / out["bare_tok_s"]
    out["mfu_bare"] = out["bare_tok_s"] * flops / peak if peak else None
    out["mfu_collect"] = out["collect_tok_s"] * flops / peak if peak else None
    return out


def bench_generate(model, tok, stats, device: str, args) -> dict[str, Any]:
    neurons = ln.frequency_contrast(stats, max(1, stats.n_neurons * stats.n_layers // 200))
    pool = [qa_prompt(q) for lang in LANGS for q in questions(lang, "all")]
    prompts = (pool * (1 + args.prompts // len(pool)))[: args.prompts]
    common = {"max_new_tokens": args.new_tokens, "batch_size": args.gen_batch, "neurons": neurons, "stats": stats}
    steered = [SteeringConfig({"de": 1.0}, {"en": 0.0})] * len(prompts)
    mixed = [MIXED[i * len(MIXED) // len(prompts)] for i in range(len(prompts))]
    tokens = len(prompts) * args.new_tokens
    out: dict[str, Any] = {}
    for name, steerings in (("plain", None), ("steered", steered), ("mixed", mixed)):
        (seconds, _), out[f"mem_{name}"] = peak_memory(
            device, lambda s=steerings: timed(lambda: generate(model, tok, prompts, steerings=s, **common), device,
                                              args.repeats))
        out[f"{name}_tok_s"] = tokens / seconds
    out["steered_ratio"] = out["steered_tok_s"] / out["plain_tok_s"]
    out["mixed_ratio"] = out["mixed_tok_s"] / out["plain_tok_s"]
    start = time.perf_counter()
    result = run_forcing(model, tok, neurons, stats, LANGS, LANGS, [ForcingSetting("add", 1.0)], split="eval",
                         decoding=Decoding(max_new_tokens=args.new_tokens, batch_size=args.gen_batch),
                         identifier="script", progress=False)
    sync(device)
    out["forcing_prompts_s"] = len(result.samples) / (time.perf_counter() - start)
    out["forcing_prompts"] = len(result.samples)
    return out


def _gib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} GiB"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny shapes, few tokens: seconds on a CPU (for CI)")
    ap.add_argument("--shapes", help="comma-separated, of " + ", ".join(SHAPES))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="default bfloat16 on CUDA, float32 on the CPU")
    ap.add_argument("--tokens", type=int, help="collection tokens in all (default 98304; --small 1536)")
    ap.add_argument("--window", type=int, help="tokens per window (default 512; --small 64)")
    ap.add_argument("--batch", type=int, help="windows per forward (default 8; --small 4)")
    ap.add_argument("--prompts", type=int, help="generation prompts (default 256; --small 16)")
    ap.add_argument("--gen-batch", type=int, help="prompts per generation batch (default 64; --small 8)")
    ap.add_argument("--new-tokens", type=int, help="new tokens per prompt (default 64; --small 8)")
    ap.add_argument("--repeats", type=int, default=2, help="timed repeats after a warm-up; the best counts")
    ap.add_argument("--peak-tflops", type=float, help="the device's peak dense bf16 TFLOP/s (default: known GPUs)")
    args = ap.parse_args(argv)
    small = {"tokens": 1536, "window": 64, "batch": 4, "prompts": 16, "gen_batch": 8, "new_tokens": 8}
    large = {"tokens": 98304, "window": 512, "batch": 8, "prompts": 256, "gen_batch": 64, "new_tokens": 64}
    for key, value in (small if args.small else large).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    shapes = args.shapes.split(",") if args.shapes else (["llama-small", "gemma-small"] if args.small
                                                          else ["llama-3.1-8b", "gemma-3-4b"])
    dtype = resolve_dtype(args.dtype, args.device.startswith("cuda"))
    tok = tokenizer(min(8000, min(SHAPES[s]["vocab_size"] for s in shapes)))
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"{device_name}, {dtype}, torch {torch.__version__}; window {args.window}, batch {args.batch}, "
          f"{args.tokens} collection tokens; {args.prompts} prompts x {args.new_tokens} new tokens, batch "
          f"{args.gen_batch}")
    rows = []
    for shape in shapes:
        model = build(shape, args.device, dtype)
        params = sum(p.numel() for p in model.parameters())
        c = bench_collect(model, tok, args.device, args)
        g = bench_generate(model, tok, c["stats"], args.device, args)
        rows.append((shape, params, c, g))
        del model
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    for shape, params, c, g in rows:
        print(f"\n{shape} ({params / 1e6:,.1f} M parameters)")
        print(f"  collect            {c['collect_tok_s']:10.0f} tok/s   MFU {_pct(c['mfu_collect'])}   "
              f"peak {_gib(c['mem_collect'])}")
        print(f"  bare forward       {c['bare_tok_s']:10.0f} tok/s   MFU {_pct(c['mfu_bare'])}   "
              f"peak {_gib(c['mem_bare'])}")
        print(f"  collect / bare     {c['ratio']:10.3f}         (target >= 0.95)")
        print(f"  generate plain     {g['plain_tok_s']:10.0f} tok/s   peak {_gib(g['mem_plain'])}")
        print(f"  generate steered   {g['steered_tok_s']:10.0f} tok/s   peak {_gib(g['mem_steered'])}   "
              f"ratio {g['steered_ratio']:.3f} (target >= 0.95)")
        print(f"  generate mixed     {g['mixed_tok_s']:10.0f} tok/s   peak {_gib(g['mem_mixed'])}   "
              f"ratio {g['mixed_ratio']:.3f} (target >= 0.9)")
        print(f"  forcing grid       {g['forcing_prompts_s']:10.1f} prompts/s ({g['forcing_prompts']} prompts)")


if __name__ == "__main__":
    main()
