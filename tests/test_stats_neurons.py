"""ActivationStats and NeuronSet: merging, selection, set algebra, artifacts and their errors."""

import json

import pytest
import torch

from langneurons.core.artifacts import META_KEY
from langneurons.core.errors import LangNeuronsError
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats


def rand_stats(langs, seed=0, shape=(2, 5), model="m"):
    g = torch.Generator().manual_seed(seed)
    k = len(langs)
    n = torch.randint(10, 100, (k,), generator=g)
    over = torch.randint(0, 10, (k, *shape), generator=g)
    s = torch.randn(k, *shape, generator=g, dtype=torch.float64)
    sq = s.abs() * 3
    return ActivationStats(list(langs), n, over, s, sq, {"model": {"id": model}})


def test_merge_adds_shared_languages_and_carries_others():
    a, b = rand_stats(["en", "de"], 0), rand_stats(["de", "fr"], 1)
    m = a + b
    assert m.languages == ["en", "de", "fr"]
    assert m.n_tokens.tolist() == [a.n_tokens[0], a.n_tokens[1] + b.n_tokens[0], b.n_tokens[1]]
    assert torch.equal(m.over_zero[1], a.over_zero[1] + b.over_zero[0])
    assert torch.equal(m.sum[2], b.sum[1])
    assert torch.allclose(m.sum_sq[1], a.sum_sq[1] + b.sum_sq[0])


def test_probabilities_and_means_are_per_token():
    a = rand_stats(["en", "de"])
    p = a.activation_probability()
    assert p[1, 1, 3] == pytest.approx(float(a.over_zero[1, 1, 3]) / float(a.n_tokens[1]))
    mu = a.mean_activation()
    assert mu[0, 0, 0] == pytest.approx(float(a.sum[0, 0, 0]) / float(a.n_tokens[0]))
    var = a.variance()
    assert var[0, 0, 0] == pytest.approx(max(0.0, float(a.sum_sq[0, 0, 0] / a.n_tokens[0]) - float(mu[0, 0, 0]) ** 2))


def test_merge_refuses_other_models():
    with pytest.raises(LangNeuronsError, match="different models"):
        rand_stats(["en"]) + rand_stats(["en"], shape=(3, 5))
    with pytest.raises(LangNeuronsError, match="'a' and 'b'"):
        rand_stats(["en"], model="a") + rand_stats(["en"], model="b")


def test_stats_roundtrip_and_errors(tmp_path):
    a = rand_stats(["en", "ru"])
    path = tmp_path / "s.safetensors"
    a.save(path)
    b = ActivationStats.load(path)
    assert b.languages == a.languages and torch.equal(b.over_zero, a.over_zero) and torch.equal(b.sum, a.sum)
    assert b.meta["n_tokens"] == dict(zip(a.languages, a.n_tokens.tolist()))
    assert b.meta["library_version"]
    with pytest.raises(LangNeuronsError, match="no such file"):
        ActivationStats.load(tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(path.read_bytes()[:100])
    with pytest.raises(LangNeuronsError, match="not a readable safetensors"):
        ActivationStats.load(bad)
    with pytest.raises(LangNeuronsError, match="holds 'stats', expected 'neurons'"):
        NeuronSet.load(path)
    with pytest.raises(LangNeuronsError, match="no statistics for language 'xx'"):
        a.select(["xx"])


def test_save_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "s.safetensors"
    rand_stats(["en"]).save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", boom)
    with pytest.raises(OSError):
        rand_stats(["en"], seed=5).save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.safetensors"]


def masks_of(rows):
    return torch.tensor(rows, dtype=torch.bool).view(len(rows), 1, -1)


def test_neuron_set_algebra_and_overlap():
    a = NeuronSet(["en", "de"], masks_of([[1, 1, 0, 0], [0, 1, 1, 0]]))
    b = NeuronSet(["de", "fr"], masks_of([[0, 0, 1, 1], [1, 0, 0, 0]]))
    assert (a | b).languages == ["en", "de", "fr"]
    assert (a | b).mask("de")[0].tolist() == [False, True, True, True]
    assert (a & b).languages == ["de"] and (a & b).mask("de")[0].tolist() == [False, False, True, False]
    assert (a - b).mask("de")[0].tolist() == [False, True, False, False]
    assert (a - b).mask("en")[0].tolist() == [True, True, False, False]
    assert a.overlap().tolist() == [[2, 1], [1, 2]]
    assert a.jaccard()[0, 1].item() == pytest.approx(1 / 3)
    assert a.exclusive().mask("en")[0].tolist() == [True, False, False, False]
    assert a.count() == 3 and a.count("de") == 2
    assert a.per_layer().tolist() == [[2], [2]]
    assert [t.tolist() for t in a.indices("de")] == [[1, 2]]
    assert a.combined(["en", "de"])[0].tolist() == [True, True, True, False]


def test_neuron_set_roundtrip_and_shape_check(tmp_path):
    a = NeuronSet(["en", "de"], masks_of([[1, 1, 0, 0], [0, 1, 1, 0]]), {"model": {"id": "tiny"}})
    path = tmp_path / "n.safetensors"
    a.save(path)
    b = NeuronSet.load(path)
    assert torch.equal(a.masks, b.masks) and b.meta["counts"] == {"en": 2, "de": 2}
    header = json.loads(__import__("safetensors").safe_open(str(path), "pt").metadata()[META_KEY])
    assert header["kind"] == "neurons"
    b.check_shape(1, 4)
    with pytest.raises(LangNeuronsError, match=r"made for tiny \(1 layers x 4 neurons\) does not fit"):
        b.check_shape(18, 2048)
    with pytest.raises(LangNeuronsError, match="no neurons for language 'ja'"):
        b.mask("ja")
