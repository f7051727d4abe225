"""LAPE against a hand-worked example and an independent pure-Python implementation."""

import importlib
import math
import random

import pytest
import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.identify import frequency_contrast, lape, random_like
from langneurons.stats.activation import ActivationStats


def make_stats(p_rows: list[list[list[float]]], n: int = 10) -> ActivationStats:
    over_zero = torch.tensor([[[round(v * n) for v in layer] for layer in lang] for lang in p_rows])
    k = over_zero.shape[0]
    langs = ["en", "de", "fr", "ru", "zh"][:k]
    return ActivationStats(langs, torch.full((k,), n), over_zero, over_zero.double(), None, {})


def test_hand_worked_example():
    # en fires on neuron 0, de on neuron 1; neuron 2 is shared (max entropy); neuron 3 never fires (entropy 0,
    # but it must be dropped by the filter since its probability exceeds the threshold in no language).
    stats = make_stats([[[0.9, 0.1, 0.5, 0.0]], [[0.1, 0.9, 0.5, 0.0]]])
    # sorted p: 0 0 .1 .1 .5 .5 .9 .9 -> the 6th smallest (0.75 quantile) is 0.5
    ns = lape(stats, top_rate=0.5, filter_rate=0.75, bar_rate=0.75)
    assert ns.meta["settings"]["filter_threshold"] == 0.5
    assert ns.mask("en")[0].tolist() == [True, False, False, False]
    assert ns.mask("de")[0].tolist() == [False, True, False, False]
    # top_rate 0.25 keeps one neuron; the tie (equal entropy) goes to the first position
    ns = lape(stats, top_rate=0.25, filter_rate=0.75, bar_rate=0.75)
    assert ns.count("en") == 1 and ns.count("de") == 0


def reference_lape(p, top_rate, filter_rate, bar_rate):
    """Independent loop version of Tang et al.'s procedure on nested lists p[k][l][j]."""
    K, L, N = len(p), len(p[0]), len(p[0][0])
    flat = sorted(v for lang in p for layer in lang for v in layer)

    def kth(rate):
        return flat[min(len(flat), max(1, round(len(flat) * rate))) - 1]

    tau, bar = kth(filter_rate), kth(bar_rate)
    scored = []
    for layer in range(L):
        for j in range(N):
            col = [p[k][layer][j] for k in range(K)]
            if not any(v > tau for v in col):
                continue
            s = sum(col)
            h = -sum((v / s) * math.log(v / s) for v in col if v > 0) if s > 0 else 0.0
            scored.append((h, layer * N + j))
    scored.sort()
    keep = [pos for _, pos in scored[: round(L * N * top_rate)]]
    return {k: sorted(pos for pos in keep if p[k][pos // N][pos % N] > bar) for k in range(K)}


@pytest.mark.parametrize("seed", range(5))
def test_matches_reference_loop(seed):
    rng = random.Random(seed)
    n = 1000
    p = [[[rng.randrange(n + 1) / n for _ in range(16)] for _ in range(3)] for _ in range(4)]
    # make some neurons language-specific so selection is not trivial
    for k in range(4):
        for j in range(k * 3, k * 3 + 3):
            for other in range(4):
                p[other][2][j] = 0.95 if other == k else rng.randrange(50) / n
    stats = make_stats(p, n)
    got = lape(stats, top_rate=0.1, filter_rate=0.8, bar_rate=0.85)
    want = reference_lape(p, 0.1, 0.8, 0.85)
    for k, lang in enumerate(stats.languages):
        assert got.mask(lang).flatten().nonzero().flatten().tolist() == want[k]


def test_lape_errors():
    stats = make_stats([[[0.5, 0.2]], [[0.1, 0.4]]])
    with pytest.raises(LangNeuronsError, match="top_rate"):
        lape(stats, top_rate=0)
    with pytest.raises(LangNeuronsError, match="at least two"):
        lape(stats.select(["en"]))


def test_frequency_contrast_and_random_control():
    stats = make_stats([[[0.9, 0.1, 0.5, 0.8]], [[0.1, 0.9, 0.5, 0.2]]])
    ns = frequency_contrast(stats, per_language=2)
    # en margins: .8, -.8, 0, .6 -> neurons 0 and 3; de margins: -.8, .8, 0, -.6 -> only neuron 1 is positive
    assert ns.mask("en")[0].nonzero().flatten().tolist() == [0, 3]
    assert ns.mask("de")[0].nonzero().flatten().tolist() == [1]
    rnd = random_like(ns, seed=1)
    assert torch.equal(rnd.per_layer(), ns.per_layer())
    assert torch.equal(random_like(ns, seed=1).masks, rnd.masks)


def test_lape_at_share_is_lape_computed_once(monkeypatch):
    lape_module = importlib.import_module("langneurons.identify.lape")  # the package exports the function lape

    rng = random.Random(0)
    stats = make_stats([[[rng.random() for _ in range(40)] for _ in range(2)] for _ in range(3)])
    calls = []
    real = lape_module.lape
    monkeypatch.setattr(lape_module, "lape", lambda s, top_rate: calls.append(top_rate) or real(s, top_rate=top_rate))
    first = lape_module.lape_at_share(stats, 0.05)
    assert lape_module.lape_at_share(stats, 0.05) is first and calls == [0.05]
    assert torch.equal(first.masks, real(stats, top_rate=0.05).masks)
    other = make_stats([[[rng.random() for _ in range(40)] for _ in range(2)] for _ in range(3)])
    lape_module.lape_at_share(other, 0.05)
    assert calls == [0.05, 0.05]  # another statistics object is computed anew
