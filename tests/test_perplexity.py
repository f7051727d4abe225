"""Perplexity matrix: mean NLL against a hand loop, deactivation through the neurons only, the matrix summary
recomputed from the saved cells, resuming, and the CLI on a tiny model in a folder."""

import json

import pytest
import torch
from tiny import SAMPLE, TINY_CONFIGS, make_tiny, tiny_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM

import langneurons.tasks.perplexity as ppl
from langneurons.cli.main import main
from langneurons.core.errors import LangNeuronsError
from langneurons.core.sites import find_sites
from langneurons.data.corpus import from_texts
from langneurons.identify import random_like
from langneurons.identify.neurons import NeuronSet
from langneurons.steering.edits import steer

LANGS = ["en", "de", "ru"]


def hand_nll(model, windows):
    """Mean -log_softmax of each next token, one unpadded window at a time, float64."""
    total, count = 0.0, 0
    for w in windows:
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([w])).logits[0].double(), -1)
        for t in range(len(w) - 1):
            total -= float(logp[t, w[t + 1]])
            count += 1
    return total / count


def softcapped_gemma():
    config = AutoConfig.for_model("gemma3_text", **TINY_CONFIGS["gemma3_text"], final_logit_softcapping=3.0)
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2", "cohere", "gemma3"])
def test_mean_nll_matches_hand_loop(family):
    model = softcapped_gemma() if family == "gemma3_text" else make_tiny(family)
    windows = {"a": [[1, 5, 9, 20, 33, 7], [1, 40], [1, 8, 9, 10, 11, 12, 13, 14, 15]], "b": [[1, 3, 4]]}
    got = ppl.mean_nll(model, windows, batch_size=3)
    for lang, rows in windows.items():
        assert got[lang] == pytest.approx(hand_nll(model, rows), abs=1e-5)
    assert ppl.mean_nll(model, windows, batch_size=1)["a"] == pytest.approx(got["a"], abs=1e-5)


def test_mean_nll_rejects_windows_without_targets():
    with pytest.raises(LangNeuronsError, match="no token to predict"):
        ppl.mean_nll(make_tiny("llama"), {"en": [[1]]})


def test_heldout_windows_are_the_heldout_documents_with_bos():
    tok = tiny_tokenizer()
    docs = [f"{s} {i}" for i, s in enumerate(SAMPLE["de"] * 4)]
    corpus = from_texts({"de": docs}, heldout_every=2)
    windows = ppl.heldout_windows(tok, corpus, ["de"], window=12)["de"]
    expected = [t for d in docs[1::2] for t in tok(d + "\n\n", add_special_tokens=False).input_ids]
    assert all(w[0] == tok.bos_token_id and len(w) <= 12 for w in windows)
    assert [t for w in windows for t in w[1:]] == expected
    limited = ppl.heldout_windows(tok, corpus, ["de"], max_tokens=15, window=12)["de"]
    assert sum(len(w) - 1 for w in limited) == 15
    with pytest.raises(LangNeuronsError, match="no heldout text"):
        ppl.heldout_windows(tok, from_texts({"de": docs[:1]}, heldout_every=2), ["de"])


def _neurons(model, masks: dict[str, list[tuple[int, int]]]) -> NeuronSet:
    """A neuron set from {language: [(layer, neuron), ...]}."""
    layers, n = find_sites(model).shape
    m = torch.zeros(len(masks), layers, n, dtype=torch.bool)
    for k, cells in enumerate(masks.values()):
        for layer, j in cells:
            m[k, layer, j] = True
    return NeuronSet(list(masks), m, {"method": "hand"})


def test_deactivation_acts_through_its_neurons_only():
    model = make_tiny("llama")
    windows = {"x": [[1, 5, 9, 20, 33, 7, 8, 30], [1, 40, 41, 42]]}
    neurons = _neurons(model, {"de": [(0, 3), (1, 7), (1, 11)], "en": [(0, 5)]})
    base = ppl.mean_nll(model, windows)["x"]
    with steer(model, neurons, None, "-de", value=-0.5):
        steered = ppl.mean_nll(model, windows)["x"]
    # the same edit by an independent hook on the activation modules
    sites = find_sites(model)

    def edit(layer):
        def hook(_m, _i, out):
            out = out.clone()
            out[..., neurons.mask("de")[layer]] = -0.5
            return out
        return hook

    handles = [act.register_forward_hook(edit(i)) for i, act in enumerate(sites.acts)]
    try:
        by_hand = hand_nll(model, windows["x"])
    finally:
        for h in handles:
            h.remove()
    assert steered == pytest.approx(by_hand, abs=1e-5) and abs(steered - base) > 1e-4
    with steer(model, neurons, None, "-de", deactivation="scale", beta=1.0):  # an identity edit
        assert ppl.mean_nll(model, windows)["x"] == base


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ppl")
    model, tok = make_tiny("llama"), tiny_tokenizer()
    corpus = from_texts({lang: [f"{s} {i}" for i, s in enumerate(SAMPLE[lang] * 6)] for lang in LANGS},
                        heldout_every=2)
    # ru has no neurons: evaluated, never deactivated
    neurons = _neurons(model, {"en": [(0, j) for j in range(10)], "de": [(1, j) for j in range(20, 36)], "ru": []})
    result = ppl.run_perplexity(model, tok, neurons, corpus, LANGS, value=3.0, window=16, batch_size=3, output_dir=out,
                                progress=False)
    result.save(out)
    return out, model, tok, neurons, corpus, result


def test_matrix_summary_recomputed_from_saved_cells(tiny_run):
    out, *_ = tiny_run
    cells = [json.loads(line) for line in (out / "perplexity_cells.jsonl").read_text().splitlines()]
    saved = json.loads((out / "perplexity.json").read_text())
    summary = saved["summary"]
    assert saved["kind"] == "results" and saved["task"] == "perplexity" and saved["settings"]["control"] is True
    assert summary["deactivated"] == ["en", "de"] and len(cells) == 3 + 2 * 2 * 3
    base = {c["language"]: c["nll"] for c in cells if c["set"] == "baseline"}
    for name in ("neurons", "random"):
        delta = {x: {c["language"]: c["nll"] - base[c["language"]] for c in cells
                     if c["set"] == name and c["deactivated"] == x} for x in ("en", "de")}
        got = summary["sets"][name]
        diag = (delta["en"]["en"] + delta["de"]["de"]) / 2
        off = sum(delta["en"][y] for y in ("de", "ru")) / 4 + sum(delta["de"][y] for y in ("en", "ru")) / 4
        for x, row in delta.items():
            assert got["delta"][x] == pytest.approx(row, abs=1e-12)
        assert got["diagonal_mean"] == pytest.approx(diag, abs=1e-12)
        assert got["off_diagonal_mean"] == pytest.approx(off, abs=1e-12)
        assert got["ratio"] == (pytest.approx(diag / off) if off > 0 else None)
        for x in ("en", "de"):
            others = [v for y, v in delta[x].items() if y != x]
            assert got["per_language"][x]["own_hurt_most"] == (delta[x][x] > max(others))
            assert got["per_language"][x]["most_hurt"] == max(delta[x], key=delta[x].get)
    assert any(abs(v) > 1e-4 for row in summary["sets"]["neurons"]["delta"].values() for v in row.values())
    for suffix in ("png", "svg"):
        assert (out / f"perplexity_neurons.{suffix}").exists() and (out / f"perplexity_random.{suffix}").exists()


def test_random_control_cells(tiny_run):
    _, model, tok, neurons, corpus, result = tiny_run
    assert result.sets == {"neurons": "hand", "random": "random"} and result.counts == {"en": 10, "de": 16}
    windows = ppl.heldout_windows(tok, corpus, ["ru"], window=16)
    with steer(model, random_like(neurons, seed=0), None, "-de", value=3.0):
        assert ppl.mean_nll(model, windows, 3)["ru"] == result.nll("random")["de"]["ru"]
    assert result.nll("random")["de"]["ru"] != result.nll("neurons")["de"]["ru"]


def test_rerun_skips_finished_cells(tiny_run, monkeypatch):
    out, model, tok, neurons, corpus, first = tiny_run
    calls = []
    real = ppl.mean_nll
    monkeypatch.setattr(ppl, "mean_nll", lambda m, w, b: calls.append(sorted(w)) or real(m, w, b))
    again = ppl.run_perplexity(model, tok, neurons, corpus, LANGS, value=3.0, window=16, batch_size=3, output_dir=out,
                               progress=False)
    assert calls == [] and again.summary()["sets"] == first.summary()["sets"]
    log = out / "perplexity_cells.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines[:-2]) + "\n" + lines[-2][:10])  # two rows lost, one half written
    resumed = ppl.run_perplexity(model, tok, neurons, corpus, LANGS, value=3.0, window=16, batch_size=3, output_dir=out,
                                 progress=False)
    assert calls == [["de", "ru"]]  # the last condition (random, -de) lost its de and ru rows
    assert resumed.summary()["sets"] == first.summary()["sets"]
    with pytest.raises(LangNeuronsError, match="other settings"):
        ppl.run_perplexity(model, tok, neurons, corpus, LANGS, value=-1.0, window=16, output_dir=out,
                           progress=False)


def test_errors(tiny_run):
    _, model, tok, neurons, corpus, _ = tiny_run
    with pytest.raises(LangNeuronsError, match="has neurons"):
        ppl.run_perplexity(model, tok, neurons, corpus, ["ru"], progress=False)
    with pytest.raises(LangNeuronsError, match="unknown deactivation"):
        ppl.run_perplexity(model, tok, neurons, corpus, method="zero", progress=False)


def test_cli(tmp_path, capsys):
    model = make_tiny("llama")
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    (tmp_path / "texts").mkdir()
    for lang in LANGS:
        (tmp_path / "texts" / f"{lang}.txt").write_text("\n\n".join(SAMPLE[lang] * 6), "utf-8")
    _neurons(model, {"en": [(0, 1), (1, 2)], "de": [(1, 5)], "ru": [(0, 9)]}).save(tmp_path / "n.safetensors")
    args = ["evaluate", "perplexity", "--model", str(tmp_path / "model"), "--neurons", str(tmp_path / "n.safetensors"),
            "--corpus", str(tmp_path / "texts"), "--heldout-every", "2", "--window", "16", "--quiet",
            "--output-dir", str(tmp_path / "out")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "ΔNLL with hand neurons deactivated" in printed and "ΔNLL with random neurons" in printed
    assert "own language hurt most for" in printed and "-ru" in printed
    summary = json.loads((tmp_path / "out" / "perplexity.json").read_text())["summary"]
    assert summary["languages"] == LANGS and set(summary["sets"]) == {"neurons", "random"}
    assert main([*args, "--no-control", "--deactivation", "scale", "--beta", "0.5", "--fresh"]) == 0
    assert set(json.loads((tmp_path / "out" / "perplexity.json").read_text())["summary"]["sets"]) == {"neurons"}
    assert main([*args, "--languages", "en,xx"]) == 2
    assert "unknown language" in capsys.readouterr().err
