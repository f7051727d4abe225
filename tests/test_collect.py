"""collect_stats against an independent hand-written loop; merging, resume, sharding and errors."""

import itertools
import os
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from tiny import SAMPLE, TINY_CONFIGS, Interrupting, capture, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.core.artifacts import load_tensors, save_tensors
from langneurons.core.sites import find_sites
from langneurons.data.corpus import Corpus
from langneurons.data.windows import pack_windows
from langneurons.stats.collect import language_windows

TEXTS = {lang: [f"{i}: {t}" for i in range(12) for t in texts] for lang, texts in SAMPLE.items()}


def tiny(model_type: str = "llama", seed: int = 0):
    model = make_tiny(model_type, seed)
    model.langneurons_id = f"tiny-{model_type}"
    return model


@torch.no_grad()
def reference_stats(model, tok, docs, window, max_tokens):
    """Hand loop: build windows from the token stream, compute each neuron from the MLP input, count per token."""
    stream = [t for d in docs for t in tok(d + "\n\n", add_special_tokens=False).input_ids][:max_tokens]
    size = window - 1
    windows = [[tok.bos_token_id, *stream[i : i + size]] for i in range(0, len(stream), size)]
    gpt2 = model.config.model_type == "gpt2"
    layers = model.transformer.h if gpt2 else model.model.layers
    n_layers, n_neurons = len(layers), model.config.n_inner if gpt2 else model.config.intermediate_size
    count = torch.zeros(n_layers, n_neurons, dtype=torch.long)
    total = torch.zeros(n_layers, n_neurons, dtype=torch.float64)
    total_sq = torch.zeros(n_layers, n_neurons, dtype=torch.float64)
    for ids in windows:
        inputs = capture(model, [layer.mlp for layer in layers], torch.tensor([ids]), inputs=True)
        for i, layer in enumerate(layers):
            x = inputs[i][0]
            if gpt2:  # Conv1D: x @ W + b, then GELU (tanh approximation, "gelu_new")
                a = F.gelu(x @ layer.mlp.c_fc.weight + layer.mlp.c_fc.bias, approximate="tanh")
            else:
                a = F.silu(x @ layer.mlp.gate_proj.weight.T)
            for pos in range(1, len(ids)):  # position 0 is BOS: left out
                for j in range(n_neurons):
                    v = float(a[pos, j])
                    count[i, j] += v > 0
                    total[i, j] += v
                    total_sq[i, j] += v * v
    return len(stream), count, total, total_sq


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_matches_hand_loop(model_type):
    model, tok = tiny(model_type), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"], "ru": TEXTS["ru"]}, heldout_every=0)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=150, window=20, batch_size=3, progress=False)
    for k, lang in enumerate(["en", "ru"]):
        n, count, total, total_sq = reference_stats(model, tok, TEXTS[lang], 20, 150)
        assert stats.n_tokens[k] == n == 150
        assert torch.equal(stats.over_zero[k], count)
        torch.testing.assert_close(stats.sum[k], total, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(stats.sum_sq[k], total_sq, rtol=1e-5, atol=1e-4)


def test_heldout_documents_are_never_collected():
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"]}, heldout_every=4)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=None, window=20, progress=False)
    train = list(corpus.documents("en", "train"))
    n, count, _, _ = reference_stats(model, tok, train, 20, None)
    assert len(train) == 18 and stats.n_tokens[0] == n
    assert torch.equal(stats.over_zero[0], count)


def test_languages_collected_apart_merge_exactly():
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts(TEXTS, heldout_every=0)
    args = {"max_tokens": 120, "window": 16, "progress": False}
    whole = ln.collect_stats(model, tok, corpus, **args)
    parts = ln.collect_stats(model, tok, corpus.select(["en", "de"]), **args) + ln.collect_stats(
        model, tok, corpus.select(["fr", "ru", "zh"]), **args
    )
    assert parts.languages == whole.languages
    for name in ("n_tokens", "over_zero", "sum", "sum_sq"):
        assert torch.equal(getattr(parts, name), getattr(whole, name)), name


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    model, tok = tiny(), tiny_tokenizer()
    source = Interrupting(TEXTS["ru"], after=6)
    corpus = Corpus({"en": lambda: iter(TEXTS["en"]), "ru": source, "zh": lambda: iter(TEXTS["zh"])},
                    {"kind": "test"}, heldout_every=0)
    args = {"max_tokens": 300, "window": 16, "batch_size": 2, "checkpoint_every": 2, "progress": False}
    path = tmp_path / "stats.safetensors"
    with pytest.raises(KeyboardInterrupt):
        ln.collect_stats(model, tok, corpus, checkpoint=path, **args)
    meta = ln.core.artifacts.read_meta(path)
    assert meta["incomplete"]["done"] == ["en"] and meta["incomplete"]["partial"][0] == "ru"
    with pytest.raises(ln.LangNeuronsError, match="interrupted collection"):
        ln.ActivationStats.load(path)
    source.armed = False
    resumed = ln.collect_stats(model, tok, corpus, checkpoint=path, **args)
    fresh = ln.collect_stats(model, tok, corpus, checkpoint=tmp_path / "fresh.safetensors", **args)
    for name in ("n_tokens", "over_zero", "sum", "sum_sq"):
        assert torch.equal(getattr(resumed, name), getattr(fresh, name)), name
    assert torch.equal(ln.ActivationStats.load(path).over_zero, fresh.over_zero)
    with pytest.raises(ln.LangNeuronsError, match="other settings"):
        ln.collect_stats(model, tok, corpus, checkpoint=path, **{**args, "window": 32})


def test_bad_input_errors():
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"], "xx": ["   "]}, heldout_every=0)
    with pytest.raises(ln.LangNeuronsError, match="no text for language 'xx'"):
        ln.collect_stats(model, tok, corpus, max_tokens=50, window=16, progress=False)
    with pytest.raises(ln.LangNeuronsError, match="max_tokens must be positive"):
        ln.collect_stats(model, tok, corpus, max_tokens=0, progress=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_gloo_processes_equal_one(tmp_path):
    model, tok = tiny(), tiny_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    texts = tmp_path / "texts"
    texts.mkdir()
    for lang in ("en", "de", "zh"):
        (texts / f"{lang}.txt").write_text("\n\n".join(TEXTS[lang]), "utf-8")
    common = ["collect", "--model", str(tmp_path / "model"), "--corpus", str(texts), "--max-tokens", "200",
              "--window", "16", "--batch-size", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda cmd: subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)  # noqa: E731
    single = run([sys.executable, "-m", "langneurons.cli.main", *common, "-o", str(tmp_path / "one.safetensors")])
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    two_path = str(tmp_path / "two.safetensors")
    dist = run([*torchrun, "--master-port", str(free_port()), "-m", "langneurons.cli.main", *common, "-o", two_path])
    assert dist.returncode == 0, dist.stderr[-3000:]
    one = ln.ActivationStats.load(tmp_path / "one.safetensors")
    two = ln.ActivationStats.load(tmp_path / "two.safetensors")
    assert two.meta["collection"]["world_size"] == 2
    assert torch.equal(one.n_tokens, two.n_tokens) and torch.equal(one.over_zero, two.over_zero)
    torch.testing.assert_close(one.sum, two.sum, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(one.sum_sq, two.sum_sq, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("model_type", sorted(TINY_CONFIGS))
def test_every_family_matches_stored_activations(model_type):
    """Per family: batched collection (with early exit) == statistics of activations stored one window at a time."""
    model, tok = tiny(model_type), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"], "zh": TEXTS["zh"]}, heldout_every=0)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=40, window=12, batch_size=2, progress=False)
    sites = find_sites(model)
    for k, lang in enumerate(corpus.languages):
        count = torch.zeros(sites.shape, dtype=torch.long)
        total = torch.zeros(sites.shape, dtype=torch.float64)
        for ids in pack_windows(tok, corpus.documents(lang), 12, 40):
            stored = capture(model, sites.acts, ids[None])
            for i in range(sites.n_layers):
                a = stored[i].reshape(len(ids), -1)[1:].double()  # drop BOS
                count[i] += (a > 0).sum(0)
                total[i] += a.sum(0)
        assert torch.equal(stats.over_zero[k], count), lang
        torch.testing.assert_close(stats.sum[k], total, rtol=1e-5, atol=1e-5)


def test_hidden_state_means_match_layer_outputs(tmp_path):
    model, tok = tiny("gpt2"), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"], "de": TEXTS["de"]}, heldout_every=0)
    path = tmp_path / "h.safetensors"
    stats = ln.collect_stats(model, tok, corpus, max_tokens=60, window=16, batch_size=2, hidden=True,
                             checkpoint=path, progress=False)
    sites = find_sites(model)
    for k, lang in enumerate(corpus.languages):
        total = torch.zeros(2, 32, dtype=torch.float64)
        for ids in pack_windows(tok, corpus.documents(lang), 16, 60):
            outs = capture(model, sites.layers, ids[None])
            total += torch.stack([(o[0] if isinstance(o, tuple) else o)[0, 1:].double().sum(0) for o in outs])
        torch.testing.assert_close(stats.hidden_sum[k], total, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(stats.mean_hidden()[k], total / 60)
    assert torch.equal(ln.ActivationStats.load(path).hidden_sum, stats.hidden_sum)
    with pytest.raises(ln.LangNeuronsError, match="hidden=True"):
        ln.collect_stats(model, tok, corpus, max_tokens=30, window=16, progress=False).mean_hidden()


def _last_bar(err: str, desc: str) -> tuple[int, int]:
    """(done, total) of the last drawing of the progress bar named `desc` in captured stderr."""
    import re

    done, total = re.findall(rf"{desc}: .*?(\d+)/(\d+) ", err.replace("\r", "\n"))[-1]
    return int(done), int(total)


def test_progress_totals_are_reached_and_a_short_corpus_is_said(capsys):
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"][:6], "ru": TEXTS["ru"]}, heldout_every=0)
    held = reference_stats(model, tok, TEXTS["en"][:6], 16, None)[0]  # what the short language holds
    with pytest.warns(ln.LangNeuronsWarning) as warned:
        ln.collect_stats(model, tok, corpus, max_tokens=400, window=16, progress=True)
    err = capsys.readouterr().err
    assert held < 400
    assert _last_bar(err, "collect en") == (held, held)
    said = [str(w.message) for w in warned]
    assert f"'en': the text ran out at {held} of the 400 tokens asked for; add text or lower the budget " \
           "(--max-tokens)" in said
    assert _last_bar(err, "collect ru") == (400, 400)
    assert not any("ran out" in m and "'ru'" in m for m in said)


def chars(text: str, add_special_tokens: bool = True) -> SimpleNamespace:
    """A tokenizer of one token per character, BOS (id 1) first as gemma's: token counts are easy by hand."""
    return SimpleNamespace(input_ids=([1] if add_special_tokens else []) + [ord(c) for c in text])


@pytest.mark.parametrize(("endless", "max_tokens", "by_hand"), [
    (False, 100, len("abc\n\n") + len("defgh\n\n")),  # a corpus shorter than the budget: all its tokens
    (False, 8, 8),  # longer: the budget
    (True, 8, 8),  # endless: the count ends only if it stops at the budget
])
def test_progress_total_is_counted_by_a_streaming_pass_that_stops_at_the_budget(endless, max_tokens, by_hand):
    docs = ["abc", "defgh"]
    corpus = Corpus({"en": lambda: itertools.cycle(docs) if endless else iter(docs)}, {"kind": "texts"}, 0)
    windows, bar = language_windows(chars, corpus, "en", "train", 4, max_tokens, "en", progress=False)
    assert iter(windows) is windows  # a stream, not a list of windows
    yielded = [w.tolist() for w in windows]
    assert all(w[0] == 1 and len(w) <= 4 for w in yielded)
    assert bar.total == sum(len(w) - 1 for w in yielded) == by_hand


def test_the_counting_pass_leaves_the_corpus_warnings_to_the_real_pass():
    corpus = ln.from_texts({"en": ["abc", "defgh"]})  # two documents, every 10th held out: none is
    with pytest.warns(ln.LangNeuronsWarning) as warned:
        windows, _ = language_windows(chars, corpus, "en", "train", 4, None, "en", progress=False)
        assert len(warned) == 0
        list(windows)
    assert ["none is held out" in str(w.message) for w in warned] == [True]


def test_progress_after_a_resume_counts_the_restored_windows(tmp_path, capsys):
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"]}, heldout_every=0)
    path = tmp_path / "s.safetensors"
    args = {"max_tokens": 300, "window": 16, "batch_size": 2, "checkpoint_every": 2, "checkpoint": path}
    ln.collect_stats(model, tok, corpus, progress=False, **args)
    tensors, meta = load_tensors(path, "stats")
    restored = {name: t.clone() for name, t in tensors.items()}
    for t in restored.values():
        t.zero_()  # the windows before the stop are restored from the checkpoint: only their count matters here
    save_tensors(path, "stats", restored, {**meta, "incomplete": {"done": [], "partial": ["en", 6]}})
    ln.collect_stats(model, tok, corpus, progress=True, **args)
    assert _last_bar(capsys.readouterr().err, "collect en") == (300, 300)
