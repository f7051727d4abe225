"""The per-language sums base, through both of its kinds: shapes, zeros, selection, merging, files, summaries."""

import pytest
import torch

from langneurons.core.errors import LangNeuronsError
from langneurons.identify import RelevanceStats
from langneurons.stats.activation import ActivationStats, empty_stats


def relevance(langs, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = len(langs)
    n = torch.randint(10, 100, (k,), generator=g)
    r = torch.randn(k, 2, 5, generator=g, dtype=torch.float64)
    return RelevanceStats(list(langs), n, -n.double() * 2, r, r.abs() + 1, {"model": {"id": "m"}})


def test_shapes_are_checked_for_each_kind():
    n = torch.tensor([3, 4])
    with pytest.raises(LangNeuronsError, match="statistics tensor 'sum' has shape \\(2, 2, 4\\)"):
        ActivationStats(["en", "de"], n, torch.zeros(2, 2, 5, dtype=torch.long), torch.zeros(2, 2, 4))
    with pytest.raises(LangNeuronsError, match="'hidden_sum' has shape \\(2, 3, 8\\)"):
        ActivationStats(["en", "de"], n, torch.zeros(2, 2, 5, dtype=torch.long), torch.zeros(2, 2, 5),
                        hidden_sum=torch.zeros(2, 3, 8))
    with pytest.raises(LangNeuronsError, match="relevance tensor 'log_prob' has shape \\(3,\\)"):
        RelevanceStats(["en", "de"], n, torch.zeros(3), torch.zeros(2, 2, 5), torch.zeros(2, 2, 5))
    with pytest.raises(LangNeuronsError, match="duplicate languages in relevance"):
        RelevanceStats(["en", "en"], n, torch.zeros(2), torch.zeros(2, 2, 5), torch.zeros(2, 2, 5))
    with pytest.raises(LangNeuronsError, match="no relevance for language 'xx'"):
        relevance(["en"]).index("xx")


def test_zeros_hold_the_asked_tensors_in_their_types():
    s = empty_stats(["en", "de", "fr"], 2, 5, {}, hidden_size=8, track_sq=False)
    assert s.shape == (3, 2, 5) and s.sum_sq is None and s.hidden_sum.shape == (3, 2, 8)
    assert s.over_zero.dtype == s.n_tokens.dtype == torch.long and s.sum.dtype == s.hidden_sum.dtype == torch.float64
    r = RelevanceStats.zeros(["en"], 4, 6, {})
    assert set(r.tensors()) == {"n_tokens", "log_prob", "relevance", "abs_relevance"} and r.log_prob.shape == (1,)


def test_relevance_select_merge_roundtrip_and_summary(tmp_path):
    a, b = relevance(["en", "de", "fr"]), relevance(["fr", "ru"], seed=1)
    sub = a.select(["fr", "en"])
    assert sub.languages == ["fr", "en"] and torch.equal(sub.relevance[0], a.relevance[2])
    m = a + b
    assert m.languages == ["en", "de", "fr", "ru"] and m.meta["merged"] == 2
    torch.testing.assert_close(m.abs_relevance[2], a.abs_relevance[2] + b.abs_relevance[0])
    assert int(m.n_tokens[2]) == int(a.n_tokens[2] + b.n_tokens[0])
    path = tmp_path / "r.safetensors"
    m.save(path)
    back = RelevanceStats.load(path)
    assert back.languages == m.languages and all(torch.equal(back.tensors()[k], t) for k, t in m.tensors().items())
    with pytest.raises(LangNeuronsError, match="holds 'relevance', expected 'stats'"):
        ActivationStats.load(path)
    row = m.summary()[1]
    k = 1
    assert row["language"] == "de" and row["tokens"] == int(m.n_tokens[k])
    assert row["nll"] == pytest.approx(-float(m.log_prob[k]) / float(m.n_tokens[k]), abs=1e-4)
    assert row["relevance"] == pytest.approx(float(m.relevance[k].sum()) / float(m.n_tokens[k]), abs=1e-4)
    assert row["abs_relevance"] == pytest.approx(float(m.abs_relevance[k].sum()) / float(m.n_tokens[k]), abs=1e-4)


def test_activation_merge_keeps_optional_tensors_only_where_both_have_them():
    a = empty_stats(["en"], 2, 5, {}, hidden_size=8)
    b = empty_stats(["de"], 2, 5, {}, track_sq=False)
    a.sum += 1.5
    b.over_zero += 2
    m = a + b
    assert m.sum_sq is None and m.hidden_sum is None
    assert torch.equal(m.sum[0], torch.full((2, 5), 1.5, dtype=torch.float64)) and not m.sum[1].any()
    assert torch.equal(m.over_zero[1], torch.full((2, 5), 2))
    row = m.summary()[0]
    assert row == {"language": "en", "tokens": 0, "mean_p": 0.0, "mean_activation": 1.5}
