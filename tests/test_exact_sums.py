"""Statistics and relevance of bf16/fp16 models equal a float64 hand loop over the very activations they saw.

The model computes in its own dtype; only the summation is under test. A plain hook, registered before the
collection starts, keeps every activation (and gradient) the collection saw; the test adds them up position by
position in float64. The MLP gates are scaled up so that activations exceed 256: in fp16 `a * a` then overflows
(65504) and in bf16 sums keep about 3 digits, unless the sums are taken in float32 and float64.
"""

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.core.sites import find_sites
from langneurons.identify import collect_relevance

TEXTS = [f"{i}: {t}" for i in range(12) for texts in SAMPLE.values() for t in texts]
ARGS = {"window": 64, "batch_size": 2, "progress": False}


def loud(dtype: torch.dtype):
    """A tiny Llama in `dtype` whose neuron activations reach about 1000."""
    model = make_tiny("llama", dtype=dtype)
    model.langneurons_id = "tiny-llama"
    with torch.no_grad():
        for layer in model.model.layers:
            layer.mlp.gate_proj.weight.mul_(3000)
    return model


def keep_outputs(modules, into):
    def keep(i):
        def hook(_m, _args, out):
            into[i].append((out[0] if isinstance(out, tuple) else out).detach().clone())

        return hook

    return [m.register_forward_hook(keep(i)) for i, m in enumerate(modules)]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_activation_and_hidden_sums_equal_a_float64_hand_loop(dtype):
    model, tok = loud(dtype), tiny_tokenizer()
    sites = find_sites(model)
    acts, hidden = [[], []], [[], []]
    handles = keep_outputs(sites.acts, acts) + keep_outputs(sites.layers, hidden)
    try:
        stats = ln.collect_stats(model, tok, ln.from_texts({"en": TEXTS}, heldout_every=0), max_tokens=300,
                                 hidden=True, **ARGS)
    finally:
        for h in handles:
            h.remove()
    for layer in range(sites.n_layers):
        batches = acts[layer]
        assert batches[0].dtype == dtype and any(float(b.float().abs().max()) > 256 for b in batches)
        count = torch.zeros(sites.n_neurons, dtype=torch.long)
        total = torch.zeros(sites.n_neurons, dtype=torch.float64)
        total_sq = torch.zeros(sites.n_neurons, dtype=torch.float64)
        positions = 0
        for batch in batches:
            for window in batch:
                for a in window[1:]:  # position 0 is BOS: left out
                    a = a.double()
                    count += (a > 0).long()
                    total += a
                    total_sq += a * a
                    positions += 1
        assert int(stats.n_tokens[0]) == positions == 300
        assert torch.equal(stats.over_zero[0, layer], count)
        assert torch.isfinite(stats.sum_sq).all()
        torch.testing.assert_close(stats.sum[0, layer], total, rtol=1e-6, atol=1e-6 * float(total_sq.sqrt().max()))
        torch.testing.assert_close(stats.sum_sq[0, layer], total_sq, rtol=1e-6, atol=0)
        h_total = torch.zeros(model.config.hidden_size, dtype=torch.float64)
        for batch in hidden[layer]:
            for window in batch:
                for h in window[1:]:
                    h_total += h.double()
        torch.testing.assert_close(stats.hidden_sum[0, layer], h_total, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_relevance_sums_equal_a_float64_hand_loop(dtype):
    model, tok = loud(dtype), tiny_tokenizer()
    sites = find_sites(model)
    seen: list[list[tuple[torch.Tensor, list[torch.Tensor]]]] = [[], []]

    def keep(i):
        def hook(_m, args, _out):
            a = args[0]  # what the down projection read, as the relevance hook left it (a graph leaf at layer 0)
            if a.requires_grad:
                grad: list[torch.Tensor] = []
                seen[i].append((a.detach().clone(), grad))
                a.register_hook(lambda g: grad.append(g.detach().clone()))

        return hook

    handles = [down.register_forward_hook(keep(i)) for i, down in enumerate(sites.downs)]
    try:
        rel = collect_relevance(model, tok, ln.from_texts({"en": TEXTS}, heldout_every=0), max_tokens=120, **ARGS)
    finally:
        for h in handles:
            h.remove()
    for layer in range(sites.n_layers):
        total = torch.zeros(sites.n_neurons, dtype=torch.float64)
        total_abs = torch.zeros(sites.n_neurons, dtype=torch.float64)
        for a, (grad,) in seen[layer]:
            assert a.dtype == grad.dtype == dtype
            for window, g_window in zip(a, grad, strict=True):
                for x, g in zip(window[1:], g_window[1:], strict=True):  # BOS left out
                    r = x.double() * g.double()
                    total += r
                    total_abs += r.abs()
        assert total_abs.max() > 0
        scale = float(total_abs.max())
        torch.testing.assert_close(rel.relevance[0, layer], total, rtol=1e-6, atol=1e-6 * scale)
        torch.testing.assert_close(rel.abs_relevance[0, layer], total_abs, rtol=1e-6, atol=1e-6 * scale)
