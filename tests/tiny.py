"""Tiny randomly initialised models and an offline tokenizer for unit tests (no downloads)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import cache

import pytest
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

SAMPLE = {
    "en": ["The quick brown fox jumps over the lazy dog.", "All human beings are born free and equal."],
    "de": ["Alle Menschen sind frei und gleich an Würde und Rechten geboren.", "Der Hund schläft."],
    "fr": ["Tous les êtres humains naissent libres et égaux en dignité et en droits.", "Le chat dort."],
    "ru": ["Все люди рождаются свободными и равными в своем достоинстве и правах.", "Собака спит."],
    "zh": ["人人生而自由，在尊严和权利上一律平等。", "他们赋有理性和良心。"],
}

# Small configs, one per family; every other field keeps the family's default.
_COMMON = {"vocab_size": 300, "num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 48,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
_IDS = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}
_LLAMA_LIKE = {**_COMMON, **_IDS}  # families whose config takes the Llama field names
_HEAD8 = {**_LLAMA_LIKE, "head_dim": 8}  # families whose default head_dim ignores hidden_size / heads
_GPT2_LIKE = {"vocab_size": 300, **_IDS, "n_layer": 2, "n_embd": 32, "n_head": 4, "n_inner": 48,
              "n_positions": 128}
TINY_CONFIGS: dict[str, dict] = {
    "llama": _COMMON,
    "gemma3_text": {**_COMMON, "head_dim": 8, "sliding_window": 16},
    "gpt2": {"vocab_size": 300, "bos_token_id": 1, "eos_token_id": 2, "n_layer": 2, "n_embd": 32, "n_head": 4,
             "n_inner": 48, "n_positions": 128},
    # gated MLPs: act_fn(gate_proj(x)) * up_proj(x)
    **{name: _LLAMA_LIKE for name in (
        "mistral", "qwen2", "olmo", "olmo2", "cohere", "granite", "stablelm", "smollm3",
    )},
    **{name: _HEAD8 for name in (
        "qwen3", "gemma", "gemma2", "vaultgemma", "exaone4", "helium", "ministral", "seed_oss", "ernie4_5",
        "hunyuan_v1_dense",
    )},
    # their default RoPE scaling expects the default (long) context: keep max_position_embeddings
    "ministral3": {k: v for k, v in _HEAD8.items() if k != "max_position_embeddings"},
    "olmo3": {**_LLAMA_LIKE, "sliding_window": 16},
    "cohere2": {**_LLAMA_LIKE, "sliding_window": 16},
    "gemma3": {  # the multimodal Gemma3ForConditionalGeneration: tiny text model + tiny SigLIP tower
        "text_config": {**_COMMON, **_IDS, "head_dim": 8, "sliding_window": 16},
        "vision_config": {"hidden_size": 32, "intermediate_size": 40, "num_hidden_layers": 1,
                          "num_attention_heads": 4, "image_size": 28, "patch_size": 14},
        "mm_tokens_per_image": 4, "boi_token_index": 297, "eoi_token_index": 298, "image_token_index": 299,
        **_IDS,
    },
    # gated with one fused [gate; up] linear
    "phi3": _LLAMA_LIKE,
    "glm": _HEAD8,
    "glm4": _HEAD8,
    # plain MLPs: act(fc_in(x))
    "arcee": _LLAMA_LIKE,
    "nemotron": _LLAMA_LIKE,
    "jais2": _LLAMA_LIKE,
    "apertus": {k: v for k, v in _LLAMA_LIKE.items() if k != "max_position_embeddings"},
    "nanochat": _LLAMA_LIKE,
    "starcoder2": _LLAMA_LIKE,
    "persimmon": _LLAMA_LIKE,
    "phi": _LLAMA_LIKE,
    "gpt_neox": _LLAMA_LIKE,
    "gptj": {**_GPT2_LIKE, "rotary_dim": 4},
    "codegen": {**_GPT2_LIKE, "rotary_dim": 4, "n_ctx": 128},
    "gpt_bigcode": _GPT2_LIKE,
    "gpt_neo": {"vocab_size": 300, **_IDS, "num_layers": 2, "hidden_size": 32, "num_heads": 4,
                "intermediate_size": 48, "attention_types": [[["global", "local"], 1]], "window_size": 16,
                "max_position_embeddings": 128},
    # BLOOM and MPT have no MLP width field: it is 4 * hidden = 128
    "bloom": {"vocab_size": 300, **_IDS, "n_layer": 2, "hidden_size": 32, "n_head": 4},
    "mpt": {"vocab_size": 300, **_IDS, "n_layers": 2, "d_model": 32, "n_heads": 4, "max_seq_len": 128},
    "falcon": {"vocab_size": 300, **_IDS, "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
               "ffn_hidden_size": 48},
    "opt": {"vocab_size": 300, **_IDS, "num_hidden_layers": 2, "hidden_size": 32, "num_attention_heads": 4,
            "ffn_dim": 48, "word_embed_proj_dim": 32, "max_position_embeddings": 128},
    "xglm": {"vocab_size": 300, **_IDS, "num_layers": 2, "d_model": 32, "attention_heads": 4, "ffn_dim": 48,
             "max_position_embeddings": 128},
}


@cache
def tiny_tokenizer(add_bos: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in memory on a few multilingual sentences; id 1 is BOS, added before
    every text (`add_special_tokens=True`) unless `add_bos` is False (as SmolLM2's and Qwen2's tokenizers have a
    BOS token they never add)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>", "<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator([t for texts in SAMPLE.values() for t in texts] * 3, trainer)
    if add_bos:  # adds BOS before a text, as gemma's and Llama's do
        tok.post_processor = processors.TemplateProcessing(
            single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>"
    )


def make_tiny(model_type: str, seed: int = 0, dtype: torch.dtype = torch.float32):
    """A randomly initialised causal LM of the given family, in eval mode (the test skips where this transformers
    predates the family)."""
    if model_type not in CONFIG_MAPPING:
        pytest.skip(f"model family {model_type!r} is not in transformers {transformers.__version__}")
    config = AutoConfig.for_model(model_type, **TINY_CONFIGS[model_type])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


@torch.no_grad()
def capture(model, modules, input_ids: torch.Tensor, inputs: bool = False) -> list[torch.Tensor]:
    """Run `model` once on `input_ids`; return each module's output (or, with `inputs`, its first input)."""
    seen: dict[int, torch.Tensor] = {}

    def keep(i: int):
        if inputs:
            return lambda _m, args: seen.__setitem__(i, args[0].detach())
        # a decoder layer returns a tuple before transformers 5 and its hidden states after
        return lambda _m, _args, out: seen.__setitem__(i, (out[0] if isinstance(out, tuple) else out).detach())

    register = "register_forward_pre_hook" if inputs else "register_forward_hook"
    handles = [getattr(m, register)(keep(i)) for i, m in enumerate(modules)]
    try:
        model(input_ids=input_ids)
    finally:
        for h in handles:
            h.remove()
    return [seen[i] for i in range(len(modules))]


class Interrupting:
    """A document source that raises KeyboardInterrupt after `after` documents while `armed`."""

    def __init__(self, docs: list[str], after: int):
        self.docs, self.after, self.armed = docs, after, True

    def __call__(self) -> Iterator[str]:
        for i, doc in enumerate(self.docs):
            if self.armed and i == self.after:
                raise KeyboardInterrupt
            yield doc
