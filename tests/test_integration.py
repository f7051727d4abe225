"""The real embedded model (gemma-3-270m, GELU-tanh gated MLP) over the real embedded corpus (UDHR)."""

import json
import re

import pytest
import torch
import torch.nn.functional as F
from tiny import capture

import langneurons as ln
from langneurons.cli.main import main
from langneurons.data.windows import pack_windows


@pytest.fixture(scope="module")
def udhr5():
    return ln.udhr(["en", "de", "ru", "zh", "ar"])


def test_statistics_match_gelu_of_the_gate_computed_by_hand(gemma, udhr5):
    model, tok = gemma
    stats = ln.collect_stats(model, tok, udhr5.select(["de", "zh"]), max_tokens=300, window=128, batch_size=2,
                             progress=False)
    layers = model.model.layers
    for k, lang in enumerate(["de", "zh"]):
        count = torch.zeros(18, 2048, dtype=torch.long)
        total = torch.zeros(18, 2048, dtype=torch.float64)
        for ids in pack_windows(tok, udhr5.documents(lang), 128, 300):
            assert ids[0] == tok.bos_token_id == 2
            inputs = capture(model, [layer.mlp for layer in layers], ids[None], inputs=True)
            with torch.no_grad():
                for i, layer in enumerate(layers):
                    gate = inputs[i][0, 1:] @ layer.mlp.gate_proj.weight.T  # BOS left out
                    a = F.gelu(gate, approximate="tanh").double()
                    count[i] += (a > 0).sum(0)
                    total[i] += a.sum(0)
        assert stats.n_tokens[k] == 300
        # Activations within float32 rounding of 0 may flip sign between two matmul orders: allow a handful.
        assert (stats.over_zero[k] - count).abs().sum() <= 5
        torch.testing.assert_close(stats.sum[k], total, rtol=1e-4, atol=1e-3)


def test_lape_finds_late_layer_language_neurons(gemma, udhr5):
    model, tok = gemma
    stats = ln.collect_stats(model, tok, udhr5, max_tokens=1200, window=512, progress=False)
    assert stats.n_tokens.tolist() == [1200] * 5
    p = stats.activation_probability()
    assert 0.2 < float(p.mean()) < 0.5  # GELU-tanh fires on about a third of tokens
    neurons = ln.lape(stats, top_rate=0.01)
    assert neurons.meta["settings"]["selected"] == 369  # 1% of 18 x 2048
    assert neurons.count() <= 369
    for lang in ("de", "ru", "zh", "ar"):
        assert neurons.count(lang) >= 10, lang
    # Language neurons sit mostly in the last layers (as in Tang et al. and the design notes).
    per_layer = neurons.masks.any(0).sum(-1)
    assert per_layer[12:].sum() > per_layer[:12].sum()
    # Scripts do not share neurons much: Russian and Chinese overlap less than each is large.
    overlap = neurons.overlap()
    ru, zh = neurons.languages.index("ru"), neurons.languages.index("zh")
    assert overlap[ru, zh] < min(overlap[ru, ru], overlap[zh, zh]) / 2


def test_demo_command(gemma, tmp_path, capsys):
    out = tmp_path / "demo"
    args = ["demo", "--languages", "en,de,ru", "--max-tokens", "400", "--questions", "1", "--output-dir", str(out),
            "--quiet"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["tokens"] == {"en": 400, "de": 400, "ru": 400}
    assert summary["model"]["id"] == "google/gemma-3-270m"
    assert (out / "neurons_per_layer.png").stat().st_size > 10_000
    assert ln.NeuronSet.load(out / "neurons.safetensors").shape == (18, 2048)
    assert set(summary["forcing"]["per_target"]) == {"en", "de", "ru"}
    assert set(summary["perplexity"]) == {"neurons", "random"}
    assert (out / "forcing" / "forcing.json").exists() and (out / "perplexity" / "perplexity.json").exists()
    assert summary["kind"] == "demo summary" and summary["runs"] == 1
    assert json.loads((out / "forcing" / "forcing.json").read_text())["kind"] == "forcing"
    html = (out / "report.html").read_text("utf-8")
    # the report opens with findings computed from this run, and read every file the demo wrote
    headings = re.findall(r"<h2 [^>]*>([^<]+)</h2>", html)
    assert headings[:2] == ["Findings", "Overview"], headings
    for title in ("Where the language neurons sit", "Selectivity of deactivation", "Forcing the output language",
                  "Perplexity without intervention"):
        assert title in html, title
    assert "No file was skipped." in html and "Skipped files" not in html
    printed = capsys.readouterr().out
    assert "distinct neurons" in printed and "Open the report" in printed
    assert main(args) == 0  # a rerun keeps the finished stages, and its seconds add to the first run's
    assert "kept the grid of an earlier run" in capsys.readouterr().out
    again = json.loads((out / "summary.json").read_text())
    assert again["runs"] == 2
    for stage, seconds in summary["seconds"].items():
        assert again["seconds"][stage] >= seconds, stage
    assert again["seconds"]["total"] == pytest.approx(sum(v for k, v in again["seconds"].items() if k != "total"),
                                                      abs=0.2)
