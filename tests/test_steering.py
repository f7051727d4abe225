"""Steering: every edit against a hand-computed activation, clean-up, batching, expressions, saved settings."""

import pytest
import torch
from tiny import SAMPLE, capture, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.core.sites import find_sites
from langneurons.steering.config import SteeringConfig, Term, parse_expression
from langneurons.steering.edits import steer
from langneurons.steering.generation import generate

LANGS = ["en", "de", "fr", "ru"]


@pytest.fixture(scope="module")
def setup():
    model = make_tiny("llama", dtype=torch.float64)
    tok = tiny_tokenizer()
    corpus = ln.from_texts({k: SAMPLE[k] * 8 for k in LANGS}, heldout_every=0)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=120, window=16, hidden=True, progress=False)
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(len(LANGS), 2, 48, generator=g) < 0.15
    neurons = ln.NeuronSet(LANGS, masks, {"model": {"id": "tiny"}})
    ids = tok(["Alle Menschen sind frei"], return_tensors="pt").input_ids
    return model, tok, stats, neurons, ids


def acts(model, ids):
    return capture(model, find_sites(model).acts, ids)


def expected(base, neurons, stats, layer, deactivate, activate, method, strength=1.0, value=0.0):
    """Apply the edit neuron by neuron, as written in the design notes."""
    a = base[layer][0].clone()  # [seq, N]
    mu = stats.mean_activation()
    for lang in deactivate:
        for j in neurons.mask(lang)[layer].nonzero().flatten().tolist():
            a[:, j] = value
    for lang in activate:
        k = LANGS.index(lang)
        for j in neurons.mask(lang)[layer].nonzero().flatten().tolist():
            mean_t = float(mu[k, layer, j])
            mean_others = sum(float(mu[o, layer, j]) for o in range(len(LANGS)) if o != k) / (len(LANGS) - 1)
            if method == "add":
                a[:, j] = a[:, j] + strength * mean_t
            elif method == "replace":
                a[:, j] = mean_t
            elif method == "scale":
                a[:, j] = a[:, j] * strength
            elif method == "diffmean":
                a[:, j] = a[:, j] + strength * (mean_t - mean_others)
    return a


@pytest.mark.parametrize(
    ("expression", "method", "strength"),
    [("-en", "add", 1.0), ("+fr", "add", 1.0), ("-en +2.5*fr", "add", 2.5), ("+fr", "replace", 1.0),
     ("+3*fr", "scale", 3.0), ("-de +fr", "diffmean", 1.0), ("-en -de +ru", "add", 1.0)],
)
def test_each_edit_matches_hand_computation(setup, expression, method, strength):
    model, _, stats, neurons, ids = setup
    terms = parse_expression(expression)
    deactivate = [t.language for t in terms if t.sign < 0]
    activate = [t.language for t in terms if t.sign > 0]
    # The edited layer-0 activations feed layer 1, so compare layer 0 with an unsteered run and layer 1 with a
    # run steered only in layer 0 (its input is then the same as in the fully steered run).
    base = acts(model, ids)
    with steer(model, neurons, stats, expression, method=method):
        steered = acts(model, ids)
    torch.testing.assert_close(steered[0][0], expected(base, neurons, stats, 0, deactivate, activate, method, strength))
    with steer(model, neurons, stats, expression, method=method, layers=(0, 1)):
        layer0_only = acts(model, ids)
    torch.testing.assert_close(steered[1][0],
                               expected(layer0_only, neurons, stats, 1, deactivate, activate, method, strength))


def test_deactivation_value_and_scale(setup):
    model, _, stats, neurons, ids = setup
    base = acts(model, ids)
    with steer(model, neurons, stats, "-en", value=-1.5):
        out = acts(model, ids)
    torch.testing.assert_close(out[0][0], expected(base, neurons, stats, 0, ["en"], [], "add", value=-1.5))
    with steer(model, neurons, stats, "-en", deactivation="scale", beta=0.5):
        out = acts(model, ids)
    idx = neurons.mask("en")[0]
    torch.testing.assert_close(out[0][0][:, idx], 0.5 * base[0][0][:, idx])


def test_hooks_removed_after_exit_and_after_error(setup):
    model, _, stats, neurons, ids = setup
    with torch.no_grad():
        before = model(ids).logits
    with steer(model, neurons, stats, "-en +fr"), torch.no_grad():
        during = model(ids).logits
    assert not torch.equal(before, during)
    with pytest.raises(RuntimeError, match="boom"), steer(model, neurons, stats, "-en +fr"):
        raise RuntimeError("boom")
    with torch.no_grad():
        after = model(ids).logits
    assert torch.equal(before, after)
    assert all(not m._forward_hooks for m in model.modules())


def test_batched_generation_equals_one_at_a_time(setup):
    model, tok, stats, neurons, _ = setup
    prompts = ["Q: The quick brown fox?\nA:", "Q: Все люди?\nA:", "Q: 人人?\nA:", "Q: Le chat dort et le chien?\nA:"]
    with steer(model, neurons, stats, "-en +2*fr"):
        batched = generate(model, tok, prompts, max_new_tokens=8, batch_size=4)
        alone = [generate(model, tok, [p], max_new_tokens=8)[0] for p in prompts]
    assert batched == alone
    assert generate(model, tok, prompts, max_new_tokens=8, batch_size=4) != batched  # steering mattered


def test_generated_only_leaves_the_prompt_alone(setup):
    model, _tok, stats, neurons, ids = setup
    site = find_sites(model).acts[0]
    seen: list[torch.Tensor] = []
    with steer(model, neurons, stats, "+5*fr", generated_only=True):
        handle = site.register_forward_hook(lambda _m, _i, out: seen.append(out.detach().clone()))
        model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    handle.remove()
    base = acts(model, ids)
    torch.testing.assert_close(seen[0], base[0])  # the prompt pass is untouched
    fr = neurons.mask("fr")[0]
    mu = stats.mean_activation()[LANGS.index("fr"), 0, fr].to(torch.float64)
    # generated tokens are edited: compare with the same step unsteered
    with torch.no_grad():
        plain = capture(model, [site], model.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0))
    torch.testing.assert_close(seen[1][0, -1, fr], plain[0][0, ids.shape[1], fr] + 5 * mu)


def test_residual_diffmean_shifts_the_layer_output(setup):
    model, _, stats, _neurons, ids = setup
    layers = find_sites(model).layers
    base = capture(model, layers, ids)
    with steer(model, None, stats, "+2*fr", method="residual", layers=(1, 2)):
        out = capture(model, layers, ids)
    h = stats.mean_hidden()
    delta = 2 * (h[LANGS.index("fr"), 1] - h[[0, 1, 3], 1].mean(0))
    torch.testing.assert_close(out[0], base[0])
    torch.testing.assert_close(out[1], base[1] + delta)


def test_expressions():
    assert parse_expression("-en +fr") == [Term("en", -1), Term("fr", 1)]
    assert parse_expression("+2.5*fr")[0].strength == 2.5
    assert [t.language for t in parse_expression("-en -de +ja")] == ["en", "de", "ja"]
    assert parse_expression("-en+fr") == parse_expression("-en +fr")
    cfg = SteeringConfig.from_expression("-en +fr +0.5*de", method="diffmean", alpha=2.0, value=-1)
    assert cfg.activate == {"fr": 2.0, "de": 0.5} and cfg.deactivate == {"en": -1}
    for bad, msg in [("fr", "malformed"), ("+fr -", "malformed"), ("+fr +fr", "twice"), ("", "empty"),
                     ("-2*en", "strength applies to activation only"), ("+*fr", "malformed")]:
        with pytest.raises(ln.LangNeuronsError, match=msg):
            parse_expression(bad)


def test_bad_requests_are_clear(setup):
    model, _, stats, neurons, _ = setup
    empty = ln.NeuronSet(["en", "xx"], torch.zeros(2, 2, 48, dtype=torch.bool) | torch.tensor([True, False])
                         .view(2, 1, 1).expand(2, 2, 48).clone(), {})
    cases = [
        (dict(neurons=neurons, stats=stats, expression="+ja"), "no neurons for language 'ja'"),
        (dict(neurons=empty, stats=stats, expression="+xx"), "language 'xx' has no neurons"),
        (dict(neurons=neurons, stats=None, expression="+fr"), "needs activation statistics"),
        (dict(neurons=neurons, stats=stats, expression="+fr", method="nope"), "unknown steering method"),
        (dict(neurons=neurons, stats=stats, expression="+fr", layers=(1, 9)), "past the model's 2 layers"),
        (dict(neurons=ln.NeuronSet(["fr"], torch.ones(1, 18, 2048, dtype=torch.bool)), stats=stats,
              expression="+fr"), "does not fit"),
    ]
    for kwargs, msg in cases:
        with pytest.raises(ln.LangNeuronsError, match=msg), steer(model, **kwargs):
            pass
    assert all(not m._forward_hooks for m in model.modules())


def test_settings_roundtrip(tmp_path):
    cfg = SteeringConfig.from_expression("-en +2*fr", method="replace", layers=(3, 6), generated_only=True)
    cfg.save(tmp_path / "s.json")
    assert SteeringConfig.load(tmp_path / "s.json") == cfg
    assert cfg.describe() == "-en +2*fr [replace, layers 3-5, generated only]"
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ln.LangNeuronsError, match="not JSON"):
        SteeringConfig.load(tmp_path / "bad.json")


def test_rows_steered_differently_in_one_batch_equal_separate_runs(setup):
    model, tok, stats, neurons, _ = setup
    prompts = ["Q: The quick brown fox?\nA:", "Q: Все люди?\nA:", "Q: 人人?\nA:", "Q: Le chat dort?\nA:"]
    a = SteeringConfig.from_expression("-en +2*fr")
    b = SteeringConfig.from_expression("+3*ru", method="replace")
    c = SteeringConfig.from_expression("-de +4*fr", generated_only=True)
    mixed = generate(model, tok, prompts, max_new_tokens=8, steerings=[a, b, None, c], neurons=neurons, stats=stats)
    alone = {}
    for name, config in (("a", a), ("b", b), ("c", c)):
        with steer(model, neurons, stats, config=config):
            alone[name] = generate(model, tok, prompts, max_new_tokens=8)
    plain = generate(model, tok, prompts, max_new_tokens=8)
    assert mixed == [alone["a"][0], alone["b"][1], plain[2], alone["c"][3]]
    assert alone["c"] != plain  # the generated-only setting does change outputs
    assert all(not m._forward_hooks for m in model.modules())


def test_stop_strings_cut_and_stop_early(setup):
    model, tok, _, _, _ = setup
    full = generate(model, tok, ["Q: The quick?\nA:"], max_new_tokens=12)[0]
    stop = full.split()[1] if len(full.split()) > 1 else full[:2]
    cut_text = generate(model, tok, ["Q: The quick?\nA:"], max_new_tokens=12, stop_strings=[stop])[0]
    assert cut_text == full[: full.find(stop)].strip()


def test_a_config_with_a_neuron_share_steers_lapes_neurons_at_that_share(setup):
    """`top_rate` makes the steering use LAPE's set at that share on the statistics, as if that set were given."""
    model, tok, stats, _, ids = setup
    plain = acts(model, ids)
    with steer(model, ln.lape(stats, top_rate=0.3), stats, "-en +de"):
        given = acts(model, ids)
    with steer(model, None, stats, "-en +de", top_rate=0.3) as s:
        shared = acts(model, ids)
        assert s.config.describe() == "-en +1*de [add, top 0.3]"
    for a, b, c in zip(given, shared, plain):
        assert torch.equal(a, b) and not torch.equal(a, c)  # the same edit, and an edit
    prompts = ["Q: The dog?\nA:", "Q: Der Hund?\nA:"]
    with steer(model, None, stats, "-en +de", top_rate=0.3):
        alone = generate(model, tok, prompts[:1], max_new_tokens=6)
    config = ln.SteeringConfig({"de": 1.0}, {"en": 0.0}, top_rate=0.3)  # per row, without a neuron set
    mixed = generate(model, tok, prompts, max_new_tokens=6, steerings=[config, None], stats=stats)
    assert mixed == [alone[0], generate(model, tok, prompts[1:], max_new_tokens=6)[0]]
    with pytest.raises(ln.LangNeuronsError, match="pass stats="):
        steer(model, None, None, "+de", top_rate=0.3).__enter__()
    with pytest.raises(ln.LangNeuronsError, match=r"top_rate=1.5"):
        ln.SteeringConfig({"de": 1.0}, top_rate=1.5)
