"""Analysis figures: each writes PNG and SVG from small synthetic inputs; the numbers behind them are checked
against hand-written loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from langneurons.cli.main import main
from langneurons.core.errors import LangNeuronsError
from langneurons.figures import neurons as figures
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats

LANGS = ["en", "de", "ru", "zh", "sr-Latn"]
LAYERS, NEURONS = 3, 16


def _neurons(seed: int = 0) -> NeuronSet:
    g = torch.Generator().manual_seed(seed)
    masks = torch.rand(len(LANGS), LAYERS, NEURONS, generator=g) < 0.3
    return NeuronSet(list(LANGS), masks, {"method": "synthetic"})


def _stats(seed: int = 0) -> ActivationStats:
    g = torch.Generator().manual_seed(seed)
    n = torch.tensor([100, 80, 120, 90, 60])
    over = (torch.rand(len(LANGS), LAYERS, NEURONS, generator=g) * n.view(-1, 1, 1)).long()
    total = torch.rand(len(LANGS), LAYERS, NEURONS, generator=g, dtype=torch.float64)
    return ActivationStats(list(LANGS), n, over, total, meta={"model": {"id": "tiny"}})


def _check_written(paths: list, tmp_path) -> None:
    """A PNG and an SVG, both real images with content."""
    assert [p.suffix for p in paths] == [".png", ".svg"]
    png, svg = paths
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and png.stat().st_size > 5000
    assert "<svg" in svg.read_text("utf-8")[:2000]
    assert not [p for p in tmp_path.rglob(".*.tmp")], "temporary files left behind"


@pytest.mark.parametrize("draw", [
    lambda out: figures.share_per_layer(_neurons(), out),
    lambda out: figures.overlap_matrix(_neurons(), out),
    lambda out: figures.script_specialisation(_neurons(), out),
    lambda out: figures.firing_rate_per_layer(_stats(), out),
    lambda out: figures.activation_profile(_stats(), [(0, 3), (2, 15)], out, _neurons()),
    lambda out: figures.activation_profile(_stats(), [(1, 1)], out),
    lambda out: figures.table_heatmap({"en": {"en": 2.1, "de": 3.5}, "de": {"en": 3.0}}, out, "NLL matrix",
                                      "deactivated", "evaluated"),
    lambda out: figures.table_heatmap({"a": {"x": -0.2, "y": 0.4}, "b": {"x": 0.1, "y": None}}, out,
                                      "deltas", diverging=True),
], ids=["share", "overlap", "script", "firing", "profile", "profile-plain", "table", "table-diverging"])
def test_figure_writes_png_and_svg(draw, tmp_path):
    _check_written(draw(tmp_path / "sub" / "fig.png"), tmp_path)


def test_neuron_figures_draws_every_figure(tmp_path):
    out = figures.neuron_figures(_neurons(), tmp_path, _stats(), prefix="x_")
    assert set(out) == {"neurons_per_layer", "share_per_layer", "script_specialisation", "overlap", "firing_rate",
                        "profiles"}
    for paths in out.values():
        _check_written(paths, tmp_path)
        assert paths[0].name.startswith("x_")
    assert set(figures.neuron_figures(_neurons(), tmp_path / "no_stats")) == {
        "neurons_per_layer", "share_per_layer", "script_specialisation", "overlap"}


def test_cluster_order_puts_planted_similar_languages_together():
    g = torch.Generator().manual_seed(3)
    base = torch.rand(6, 4, 50, generator=g) < 0.2
    base[4] = base[1].clone()  # "ru" is a near copy of "de"
    base[4, 0, :3] = ~base[4, 0, :3]
    neurons = NeuronSet(["en", "de", "fr", "es", "ru", "zh"], base)
    order = figures.cluster_order(neurons.jaccard().numpy())
    assert sorted(order) == list(range(6))
    assert abs(order.index(1) - order.index(4)) == 1


def test_cluster_order_two_obvious_pairs():
    sim = np.array([[1.0, 0.1, 0.9, 0.0],
                    [0.1, 1.0, 0.2, 0.8],
                    [0.9, 0.2, 1.0, 0.1],
                    [0.0, 0.8, 0.1, 1.0]])
    order = figures.cluster_order(sim)
    assert abs(order.index(0) - order.index(2)) == 1 and abs(order.index(1) - order.index(3)) == 1
    with pytest.raises(LangNeuronsError):
        figures.cluster_order(np.ones((2, 3)))


def test_script_groups_match_a_loop_over_neurons():
    neurons = _neurons(1)
    got = figures.script_groups(neurons)
    latin = {"en", "de", "sr-Latn"}  # by hand: ru and zh are the other scripts
    expected = {name: np.zeros(LAYERS, dtype=int) for name in figures.SCRIPT_CLASSES}
    for layer, j in itertools.product(range(LAYERS), range(NEURONS)):
        owners = [lang for k, lang in enumerate(LANGS) if neurons.masks[k, layer, j]]
        lat = [x for x in owners if x in latin]
        other = [x for x in owners if x not in latin]
        if lat and other:
            expected["Latin and non-Latin languages"][layer] += 1
        elif lat:
            expected["one Latin-script language" if len(lat) == 1 else "several Latin-script languages"][layer] += 1
        elif other:
            key = "one non-Latin-script language" if len(other) == 1 else "several non-Latin-script languages"
            expected[key][layer] += 1
    for name in figures.SCRIPT_CLASSES:
        assert got[name].tolist() == expected[name].tolist(), name
    # an empty Latin list leaves only sr-Latn Latin (by its tag): Latin-only neurons are sr-Latn's own
    custom = figures.script_groups(neurons, latin=set())
    only_sr = (neurons.mask("sr-Latn") & ~neurons.masks[:-1].any(0)).sum(-1)
    assert custom["one Latin-script language"].tolist() == only_sr.tolist()
    assert custom["several Latin-script languages"].tolist() == [0] * LAYERS
    assert figures.is_latin("sr-Latn", set()) and figures.is_latin("de") and not figures.is_latin("ru")


def test_signature_neurons_find_a_planted_neuron():
    stats = _stats()
    over = stats.over_zero.clone()
    over[:, 2, 5] = 0
    over[LANGS.index("ru"), 2, 5] = stats.n_tokens[LANGS.index("ru")]  # fires on every ru token, never elsewhere
    stats = ActivationStats(list(LANGS), stats.n_tokens, over, stats.sum)
    masks = torch.zeros(len(LANGS), LAYERS, NEURONS, dtype=torch.bool)
    masks[LANGS.index("ru"), 2, 5] = masks[LANGS.index("ru"), 0, 0] = True
    masks[LANGS.index("en"), 1, 7] = True
    found = figures.signature_neurons(stats, NeuronSet(list(LANGS), masks))
    assert ("ru", 2, 5) in found and ("en", 1, 7) in found and len(found) == 2


def test_bad_inputs_raise_clear_errors(tmp_path):
    with pytest.raises(LangNeuronsError, match="outside"):
        figures.activation_profile(_stats(), [(LAYERS, 0)], tmp_path / "x.png")
    with pytest.raises(LangNeuronsError, match="empty"):
        figures.table_heatmap({}, tmp_path / "x.png", "empty")
    with pytest.raises(LangNeuronsError, match="two languages"):
        figures.overlap_matrix(_neurons().select(["en"]), tmp_path / "x.png")
    wrong = NeuronSet(list(LANGS), torch.zeros(len(LANGS), LAYERS + 1, NEURONS, dtype=torch.bool))
    with pytest.raises(LangNeuronsError, match="does not fit"):
        figures.neuron_figures(wrong, tmp_path, _stats())


def test_plot_command(tmp_path, capsys):
    _neurons().save(tmp_path / "neurons.safetensors")
    _stats().save(tmp_path / "stats.safetensors")
    out = tmp_path / "figs"
    assert main(["plot", str(tmp_path / "neurons.safetensors"), "--stats", str(tmp_path / "stats.safetensors"),
                 "--neuron", "1:2", "-o", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "activation_profile.png" in names and "overlap.svg" in names and len(names) == 14
    assert main(["plot", str(tmp_path / "neurons.safetensors"), "--neuron", "1:2"]) == 2
    assert main(["plot", str(tmp_path / "neurons.safetensors"), "--stats", str(tmp_path / "stats.safetensors"),
                 "--neuron", "one", "-o", str(out)]) == 2
    assert "LAYER:INDEX" in capsys.readouterr().err


def test_cell_labels_contrast_with_the_drawn_colour(monkeypatch, tmp_path):
    """On a shared scale (as the perplexity heatmaps use) cells near its dark end get white text, whatever the
    values' own range; the rule is checked against luminances computed here."""
    from matplotlib import colormaps

    from langneurons.figures import charts as plots

    drawn = {}
    monkeypatch.setattr(plots, "_save", lambda fig, path: drawn.setdefault("fig", fig) and [])
    values = np.array([[0.01, 0.02], [0.03, 0.04]])  # the low end of a 0..1 scale: all near-black in magma
    plots.heatmap(values, ["a", "b"], ["x", "y"], tmp_path / "h.png", "shared scale", vmin=0.0, vmax=1.0,
                  cmap="magma")
    colours = [t.get_color() for t in drawn["fig"].axes[0].texts]
    assert colours == ["white"] * 4
    for value, expected in ((0.05, "white"), (0.95, "black")):  # magma: near-black at 0, pale yellow at 1
        r, g, b, _ = colormaps["magma"](value)
        lum = sum(w * (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4)
                  for w, c in zip((0.2126, 0.7152, 0.0722), (r, g, b)))
        assert (lum > 0.179) == (expected == "black")
        assert plots.text_colour((r, g, b, 1.0)) == expected
