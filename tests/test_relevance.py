"""Relevance collection against autograd on a replaced activation; batching, resume, merge; CRANE; the CLI."""

import pytest
import torch
import torch.nn.functional as F
from tiny import SAMPLE, Interrupting, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.cli.main import main
from langneurons.core.sites import find_sites
from langneurons.data.corpus import Corpus
from langneurons.data.windows import pack_windows
from langneurons.identify import RelevanceStats, collect_relevance, crane, crane_scores
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.relevance import RelevanceRecorder, frozen

TEXTS = {lang: [f"{i}: {t}" for i in range(12) for t in texts] for lang, texts in SAMPLE.items()}
ARGS = {"window": 16, "progress": False}


def tiny(model_type: str = "llama", seed: int = 0):
    model = make_tiny(model_type, seed)
    model.langneurons_id = f"tiny-{model_type}"
    return model


def replaced_activation_grad(model, ids: list[int], layer: int, objective) -> tuple[torch.Tensor, torch.Tensor]:
    """Independent of the recorder: the layer's activation module output (not the down projection's input) is
    replaced by a leaf `h`, `objective` maps the full model's log-probabilities [T, V] to a scalar, and
    torch.autograd.grad gives d objective / d h. Returns h and the gradient, [T, N] each, in float64."""
    leaf = {}

    def replace(_module, _inputs, output):
        leaf["h"] = output.detach().clone().requires_grad_()
        return leaf["h"]

    handle = find_sites(model).acts[layer].register_forward_hook(replace)
    try:
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
        (grad,) = torch.autograd.grad(objective(logits.log_softmax(-1)), leaf["h"])
    finally:
        handle.remove()
    return leaf["h"].detach().reshape(len(ids), -1).double(), grad.reshape(len(ids), -1).double()


def reference_relevance(model, ids: list[int], layer: int) -> torch.Tensor:
    """Sum over the window's positions (BOS left out) of h * d(sum of log p of the actual next tokens) / dh."""
    targets = torch.tensor(ids[1:])
    h, grad = replaced_activation_grad(model, ids, layer, lambda lp: lp[:-1].gather(-1, targets[:, None]).sum())
    return (h * grad)[1:].sum(0)


@pytest.mark.parametrize("model_type", ["llama", "gemma3_text", "gpt2", "opt"])
def test_single_token_relevance_is_activation_times_gradient(model_type):
    """Window [BOS, x1, x2]: only position 1 feeds a prediction (of x2), so the relevance of every neuron is
    a[1] * d log p(x2 | BOS x1) / d a[1]."""
    model, tok = tiny(model_type), tiny_tokenizer()
    ids = [tok.bos_token_id, 50, 77]
    sites = find_sites(model)
    rec = RelevanceRecorder(sites, skip=1, exclude_target=tok.bos_token_id)
    with rec, frozen(model):
        assert rec.run(model, torch.tensor([ids])) == 2
    got = rec.take()
    for layer in range(sites.n_layers):
        h, grad = replaced_activation_grad(model, ids, layer, lambda lp: lp[1, ids[2]])
        expected = h[1] * grad[1]
        assert expected.abs().max() > 1e-4
        torch.testing.assert_close(got["relevance"][layer], expected, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(got["abs_relevance"][layer], expected.abs(), rtol=1e-4, atol=1e-7)
    with torch.no_grad():
        log_p = F.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].double(), -1)
    torch.testing.assert_close(float(got["log_prob"]), float(log_p[0, ids[1]] + log_p[1, ids[2]]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_collection_matches_per_window_autograd(model_type):
    model, tok = tiny(model_type), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"], "ru": TEXTS["ru"]}, heldout_every=0)
    rel = collect_relevance(model, tok, corpus, max_tokens=60, batch_size=2, **ARGS)
    for k, lang in enumerate(corpus.languages):
        windows = [w.tolist() for w in pack_windows(tok, corpus.documents(lang), 16, 60)]
        assert int(rel.n_tokens[k]) == sum(len(w) - 1 for w in windows) == 60
        for layer in range(2):
            expected = sum(reference_relevance(model, w, layer) for w in windows)
            torch.testing.assert_close(rel.relevance[k, layer], expected, rtol=1e-4, atol=1e-6)
        with torch.no_grad():
            nll = sum(float(F.cross_entropy(model(input_ids=torch.tensor([w])).logits[0, :-1].double(),
                                            torch.tensor(w[1:]), reduction="sum")) for w in windows)
        torch.testing.assert_close(float(rel.mean_nll()[k]), nll / 60, rtol=1e-5, atol=1e-5)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_batch_sums_equal_per_window_runs_and_model_is_restored():
    model, tok = tiny("gemma3_text"), tiny_tokenizer()
    model.train()
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)
    corpus = ln.from_texts({"de": TEXTS["de"], "zh": TEXTS["zh"]}, heldout_every=0)
    one = collect_relevance(model, tok, corpus, max_tokens=90, batch_size=1, **ARGS)
    batched = collect_relevance(model, tok, corpus, max_tokens=90, batch_size=4, **ARGS)
    assert torch.equal(one.n_tokens, batched.n_tokens)
    torch.testing.assert_close(batched.relevance, one.relevance, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(batched.abs_relevance, one.abs_relevance, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(batched.log_prob, one.log_prob, rtol=1e-6, atol=1e-4)
    assert model.training and all(m.training for m in model.modules())
    without_grad = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert without_grad == ["model.layers.0.mlp.up_proj.weight"]
    assert all(p.grad is None for p in model.parameters())


def test_languages_collected_apart_merge_exactly_and_save_load(tmp_path):
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts(TEXTS, heldout_every=0)
    whole = collect_relevance(model, tok, corpus, max_tokens=45, **ARGS)
    parts = collect_relevance(model, tok, corpus.select(["en", "de"]), max_tokens=45, **ARGS) + collect_relevance(
        model, tok, corpus.select(["fr", "ru", "zh"]), max_tokens=45, **ARGS)
    assert parts.languages == whole.languages and parts.meta["merged"] == 2
    for name, tensor in whole.tensors().items():
        assert torch.equal(parts.tensors()[name], tensor), name
    twice = whole + whole.select(["ru"])
    torch.testing.assert_close(twice.relevance[3], 2 * whole.relevance[3])
    assert torch.equal(twice.relevance[0], whole.relevance[0])
    whole.save(tmp_path / "r.safetensors")
    loaded = RelevanceStats.load(tmp_path / "r.safetensors")
    assert loaded.languages == whole.languages and loaded.meta["kind"] == "relevance"
    assert torch.equal(loaded.relevance, whole.relevance) and loaded.meta["n_tokens"]["zh"] == 45
    with pytest.raises(ln.LangNeuronsError, match="holds 'relevance', expected 'stats'"):
        ln.ActivationStats.load(tmp_path / "r.safetensors")
    with pytest.raises(ln.LangNeuronsError, match="cannot merge relevance of 'tiny-llama' and 'tiny-gpt2'"):
        whole + collect_relevance(tiny("gpt2"), tok, corpus.select(["en"]), max_tokens=15, **ARGS)


def test_resume_after_interruption_gives_the_same_result(tmp_path):
    model, tok = tiny(), tiny_tokenizer()
    source = Interrupting(TEXTS["ru"], after=6)
    corpus = Corpus({"en": lambda: iter(TEXTS["en"]), "ru": source, "zh": lambda: iter(TEXTS["zh"])},
                    {"kind": "test"}, heldout_every=0)
    args = {"max_tokens": 300, "batch_size": 2, "checkpoint_every": 2, **ARGS}
    path = tmp_path / "rel.safetensors"
    with pytest.raises(KeyboardInterrupt):
        collect_relevance(model, tok, corpus, checkpoint=path, **args)
    meta = ln.core.artifacts.read_meta(path)
    assert meta["incomplete"]["done"] == ["en"] and meta["incomplete"]["partial"][0] == "ru"
    with pytest.raises(ln.LangNeuronsError, match="interrupted collection"):
        RelevanceStats.load(path)
    source.armed = False
    resumed = collect_relevance(model, tok, corpus, checkpoint=path, **args)
    fresh = collect_relevance(model, tok, corpus, **args)
    for name, tensor in fresh.tensors().items():
        torch.testing.assert_close(resumed.tensors()[name], tensor, rtol=0, atol=0)
    assert torch.equal(RelevanceStats.load(path).relevance, fresh.relevance)
    with pytest.raises(ln.LangNeuronsError, match="other settings"):
        collect_relevance(model, tok, corpus, checkpoint=path, **{**args, "window": 32})


def test_bad_input_errors():
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts({"en": TEXTS["en"], "xx": ["   "]}, heldout_every=0)
    with pytest.raises(ln.LangNeuronsError, match="no text for language 'xx'"):
        collect_relevance(model, tok, corpus, max_tokens=30, **ARGS)
    with pytest.raises(ln.LangNeuronsError, match="max_tokens must be positive"):
        collect_relevance(model, tok, corpus, max_tokens=0, progress=False)
    with torch.inference_mode(), pytest.raises(ln.LangNeuronsError, match=r"outside torch\.inference_mode"):
        collect_relevance(model, tok, corpus.select(["en"]), max_tokens=30, **ARGS)


def synthetic(languages, n_tokens=100, layers=3, neurons=20, seed=0) -> RelevanceStats:
    gen = torch.Generator().manual_seed(seed)
    k = len(languages)
    per_token = torch.rand(k, layers, neurons, generator=gen, dtype=torch.float64) * 0.01
    n = torch.full((k,), n_tokens, dtype=torch.long)
    return RelevanceStats(list(languages), n, -torch.ones(k, dtype=torch.float64) * n_tokens,
                          per_token * n_tokens, per_token.abs() * n_tokens, {"model": {"id": "synthetic"}})


def test_crane_picks_planted_neurons():
    rel = synthetic(["en", "fr", "ja"])
    rel.relevance[1, 2, 7] += 5.0  # fr: strongly relevant, only for fr
    rel.relevance[2, 0, 3] += 3.0  # ja
    rel.relevance[:, 1, 1] += 9.0  # relevant for every language: not language-specific
    one = crane(rel, per_language=1)
    assert one.indices("fr")[2].tolist() == [7] and one.count("fr") == 1
    assert one.indices("ja")[0].tolist() == [3]
    assert not one.masks[:, 1, 1].any()
    assert one.meta["method"] == "crane" and one.meta["settings"]["per_language"] == {"en": 1, "fr": 1, "ja": 1}
    # the margin is against the most relevant other language: computed by hand for the planted neuron
    r = rel.relevance / 100
    assert crane_scores(rel)[1, 2, 7] == pytest.approx(float(r[1, 2, 7] - max(r[0, 2, 7], r[2, 2, 7])))
    assert crane_scores(rel, "mean")[1, 2, 7] == pytest.approx(float(r[1, 2, 7] - (r[0, 2, 7] + r[2, 2, 7]) / 2))
    # sizes: a share of all neurons split over languages, or per language (e.g. matched to another set)
    by_rate = crane(rel, top_rate=0.1)
    assert [by_rate.count(x) for x in rel.languages] == [round(0.1 * 60 / 3)] * 3
    matched = crane(rel, per_language={"fr": 4, "ja": 0})
    assert [matched.count(x) for x in rel.languages] == [0, 4, 0]
    # margin: each neuron belongs to at most one language, and only with positive relevance and margin
    assert int(by_rate.masks.sum(0).max()) == 1
    scores = crane_scores(rel)
    assert bool((scores[by_rate.masks] > 0).all())


def test_crane_bad_input():
    rel = synthetic(["en", "fr"])
    with pytest.raises(ln.LangNeuronsError, match="unknown contrast"):
        crane(rel, contrast="ratio")
    with pytest.raises(ln.LangNeuronsError, match="at least two languages"):
        crane(rel.select(["en"]))
    with pytest.raises(ln.LangNeuronsError, match="top_rate"):
        crane(rel, top_rate=0)


def test_cli_collect_relevance_identify_crane_merge_info(tmp_path, capsys):
    model = tiny()
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "texts").mkdir()
    for lang in ("en", "de", "ru"):
        (tmp_path / "texts" / f"{lang}.txt").write_text("\n\n".join(TEXTS[lang]), "utf-8")
    common = ["collect", "--relevance", "--model", str(tmp_path / "model"), "--corpus", str(tmp_path / "texts"),
              "--max-tokens", "45", "--window", "16", "--quiet"]
    assert main([*common, "--languages", "en,de", "-o", str(tmp_path / "a.safetensors")]) == 0
    assert main([*common, "--languages", "ru", "-o", str(tmp_path / "b.safetensors")]) == 0
    assert main(["merge", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "-o", str(tmp_path / "r.safetensors")]) == 0
    rel = RelevanceStats.load(tmp_path / "r.safetensors")
    assert rel.languages == ["en", "de", "ru"] and rel.n_tokens.tolist() == [45] * 3
    match = NeuronSet(["en", "de", "ru"], torch.zeros(3, 2, 48, dtype=torch.bool))
    match.masks[1, 0, :2] = True
    match.save(tmp_path / "match.safetensors")
    assert main(["identify", str(tmp_path / "r.safetensors"), "--method", "crane", "--match",
                 str(tmp_path / "match.safetensors"), "-o", str(tmp_path / "c.safetensors")]) == 0
    neurons = NeuronSet.load(tmp_path / "c.safetensors")
    assert neurons.meta["method"] == "crane" and [neurons.count(x) for x in neurons.languages] == [0, 2, 0]
    assert torch.equal(neurons.masks, crane(rel, per_language={"en": 0, "de": 2, "ru": 0}).masks)
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r.safetensors")]) == 0
    assert "relevance of" in capsys.readouterr().out
    assert main([*common, "--hidden", "-o", str(tmp_path / "x.safetensors")]) == 2
    assert "not of --relevance" in capsys.readouterr().err
