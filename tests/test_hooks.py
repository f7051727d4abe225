"""The one hook module: reading, editing, stopping, clean-up on error, prompt/generation phase, OPT's flat layout."""

import pytest
import torch
from tiny import SAMPLE, capture, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.core.hooks import Hooks, StopForward, cached_tokens
from langneurons.core.sites import find_sites
from langneurons.steering.config import SteeringConfig
from langneurons.steering.edits import steer
from langneurons.steering.generation import generate


def no_hooks_left(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_reads_and_edits_match_a_plain_hook_and_everything_is_removed_after_an_error():
    model = make_tiny("llama", dtype=torch.float64)
    sites = find_sites(model)
    ids = torch.tensor([[1, 40, 50, 60, 70]])
    base_acts = capture(model, sites.acts, ids)
    base_down_in = capture(model, sites.downs, ids, inputs=True)
    with torch.no_grad():
        base = model(ids).logits
    seen, inputs = [], []
    with pytest.raises(RuntimeError, match="boom"), Hooks(sites, phase=model) as hooks:
        hooks.read(sites.acts[0], seen.append)
        hooks.read(sites.downs[1], inputs.append, input=True)
        hooks.edit(sites.acts[1], lambda a: a * 0)
        with torch.no_grad():
            edited = model(ids).logits
        raise RuntimeError("boom")
    assert no_hooks_left(model)
    torch.testing.assert_close(seen[0], base_acts[0], rtol=0, atol=0)
    assert not inputs[0].any()  # layer 1's down projection read the zeroed activation
    assert not torch.equal(edited, base)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, base, rtol=0, atol=0)
    # an input edit is what the module reads; with_input passes the module's input to an output edit
    got = []
    with Hooks(sites) as hooks:
        hooks.edit(sites.downs[0], lambda x: x + 1, input=True)
        hooks.edit(sites.downs[0], lambda out, x: got.append((out, x)), with_input=True)
        with torch.no_grad():
            model(ids)
    out, x = got[0]
    torch.testing.assert_close(x, base_down_in[0] + 1)
    torch.testing.assert_close(out, sites.downs[0](base_down_in[0] + 1))
    assert no_hooks_left(model)


def test_stop_after_a_layer_skips_the_rest():
    model = make_tiny("llama")
    sites = find_sites(model)
    calls = []
    with Hooks(sites) as hooks:
        hooks.read(sites.acts[0], lambda _a: calls.append(0), stop=True)
        hooks.read(sites.acts[1], lambda _a: calls.append(1))
        hooks.read(sites.layers[0], lambda _h: calls.append("layer 0"))
        assert hooks.run(model.base_model, input_ids=torch.tensor([[1, 5, 6]])) is None
        assert calls == [0]
        with pytest.raises(StopForward):  # outside `run` the stop propagates
            model.base_model(input_ids=torch.tensor([[1, 5, 6]]))
    assert no_hooks_left(model)
    out = Hooks.run(model.base_model, input_ids=torch.tensor([[1, 5, 6]]))
    assert out.last_hidden_state.shape == (1, 3, 32)


def test_phase_during_generate():
    model = make_tiny("llama")
    sites = find_sites(model)
    prompt = torch.tensor([[1, 40, 41, 42, 43], [1, 50, 51, 52, 53]])
    phases = []
    with Hooks(sites, phase=model) as hooks:
        hooks.read(sites.acts[0], lambda a: phases.append((hooks.prompt_phase, a.shape[1])))
        model.generate(prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    assert phases == [(True, 5), (False, 1), (False, 1), (False, 1)]
    assert no_hooks_left(model)
    assert cached_tokens((), {}) == 0


def test_opt_flat_activations_are_shown_and_edited_as_batch_seq_width():
    model = make_tiny("opt", dtype=torch.float64)
    sites = find_sites(model)
    assert sites.spec.flat_tokens
    ids = torch.tensor([[1, 40, 41, 42], [1, 50, 51, 52], [1, 60, 61, 62]])
    flat = capture(model, sites.acts, ids)  # what the module itself returns: [batch * seq, width]
    assert flat[0].shape == (12, 48)
    seen = []
    scale = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)[:, None, None]  # one factor per row
    with Hooks(sites) as hooks:
        hooks.read(sites.acts[0], seen.append)
        hooks.edit(sites.acts[1], lambda a: a * scale)
        hooks.read(sites.downs[1], seen.append, input=True)
        with torch.no_grad():
            model(ids)
    assert seen[0].shape == (3, 4, 48)
    torch.testing.assert_close(seen[0], flat[0].view(3, 4, 48), rtol=0, atol=0)
    expected = flat[1].view(3, 4, 48) * scale
    torch.testing.assert_close(seen[1], expected)
    # row by row, by hand: row i's activations times i
    for row in range(3):
        torch.testing.assert_close(seen[1][row], row * flat[1][4 * row : 4 * row + 4])
    assert no_hooks_left(model)


def test_rows_steered_differently_on_opt_equal_separate_runs():
    """Per-row steering tables [batch, 1, N] apply to OPT's flat activations through the [batch, seq, N] view."""
    model, tok = make_tiny("opt", dtype=torch.float64), tiny_tokenizer()
    langs = ["en", "fr", "ru"]
    stats = ln.collect_stats(model, tok, ln.from_texts({k: SAMPLE[k] * 8 for k in langs}, heldout_every=0),
                             max_tokens=60, window=16, progress=False)
    masks = torch.rand(len(langs), 2, 48, generator=torch.Generator().manual_seed(0)) < 0.3
    neurons = ln.NeuronSet(langs, masks, {"model": {"id": "tiny"}})
    prompts = ["Q: The quick brown fox?\nA:", "Q: Все люди?\nA:", "Q: Le chat dort?\nA:"]
    a, b = SteeringConfig.from_expression("-en +4*fr"), SteeringConfig.from_expression("+6*ru", method="scale")
    mixed = generate(model, tok, prompts, max_new_tokens=6, steerings=[a, None, b], neurons=neurons, stats=stats)
    alone = {}
    for name, config in (("a", a), ("b", b)):
        with steer(model, neurons, stats, config=config):
            alone[name] = generate(model, tok, prompts, max_new_tokens=6)
    plain = generate(model, tok, prompts, max_new_tokens=6)
    assert mixed == [alone["a"][0], plain[1], alone["b"][2]]
    assert alone["a"] != plain and alone["b"] != plain
    assert no_hooks_left(model)
