"""Masking comparison: exactly the selected neurons are zeroed, losses match a hand computation, determinism under
a seed, resumable cells, transfer to another model of the same shape, and the `compare` command."""

import argparse
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny import SAMPLE, capture, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.cli.main import build_parser, main
from langneurons.core.sites import find_sites
from langneurons.data.windows import heldout_windows
from langneurons.identify import collect_relevance
from langneurons.identify.crane import CONTRASTS
from langneurons.report.report import build_report
from langneurons.steering.edits import steer
from langneurons.steering.generation import Decoding
from langneurons.tasks.compare import (
    compare_forcing,
    compare_methods,
    matched_sets,
    selectivity_bars,
    selectivity_table,
)

TEXTS = {lang: [f"{i}: {t}" for i in range(12) for t in texts] for lang, texts in SAMPLE.items()}
LANGS = ["en", "de", "ru"]


def tiny(seed: int = 0, model_type: str = "llama"):
    model = make_tiny(model_type, seed)
    model.langneurons_id = f"tiny-{model_type}-{seed}"
    return model


@pytest.fixture(scope="module")
def setup():
    """A model, its statistics, relevance and LAPE set, and held-out windows of three languages."""
    model, tok = tiny(), tiny_tokenizer()
    corpus = ln.from_texts({x: TEXTS[x] for x in LANGS}, heldout_every=3)
    stats = ln.collect_stats(model, tok, corpus, max_tokens=150, window=16, progress=False)
    relevance = collect_relevance(model, tok, corpus, max_tokens=150, window=16, progress=False)
    reference = ln.lape(stats, top_rate=0.1, filter_rate=0.5, bar_rate=0.5)
    windows = heldout_windows(tok, corpus, LANGS, max_tokens=60, window=16)
    return model, tok, stats, relevance, reference, windows


def test_masking_zeroes_exactly_the_selected_neurons(setup):
    model, _, _, _, reference, windows = setup
    sites = find_sites(model)
    ids = torch.tensor([windows["de"][0]])
    lang = next(x for x in LANGS if reference.count(x) > 0)
    before = capture(model, sites.downs, ids, inputs=True)
    with steer(model, reference, None, f"-{lang}"):
        after = capture(model, sites.downs, ids, inputs=True)
    first = int(reference.mask(lang).any(-1).nonzero()[0])  # the first layer with neurons of `lang`
    for layer in range(sites.n_layers):
        mask = reference.mask(lang)[layer]
        assert bool((before[layer][..., mask] != 0).all())
        assert bool((after[layer][..., mask] == 0).all())
        if layer <= first:  # later layers also see the edit through the residual stream
            assert torch.equal(after[layer][..., ~mask], before[layer][..., ~mask])


def hand_nll(model, rows, zero: torch.Tensor | None) -> float:
    """Mean next-token NLL with the neurons of `zero` [L, N] set to 0 by a hand-written pre-hook on each down
    projection (independent of steering), from the full model's logits."""
    sites = find_sites(model)
    handles = []
    if zero is not None:
        for layer, down in enumerate(sites.downs):
            keep = (~zero[layer]).float()
            handles.append(down.register_forward_pre_hook(lambda _m, args, keep=keep: (args[0] * keep,)))
    try:
        with torch.no_grad():
            total = sum(float(F.cross_entropy(model(input_ids=torch.tensor([r])).logits[0, :-1].double(),
                                              torch.tensor(r[1:]), reduction="sum")) for r in rows)
    finally:
        for h in handles:
            h.remove()
    return total / sum(len(r) - 1 for r in rows)


def test_losses_and_selectivity_match_a_hand_computation(setup):
    model, _, stats, relevance, reference, windows = setup
    sets = matched_sets(reference, stats, relevance, seed=0)
    assert list(sets) == ["lape", "crane-grad_x_input", "frequency", "random"]
    result = compare_methods(model, sets, windows, batch_size=2)
    base = {y: hand_nll(model, windows[y], None) for y in LANGS}
    for y in LANGS:
        assert result["baseline"][y] == pytest.approx(base[y], rel=1e-5)
    checked = 0
    for name, s in sets.items():
        got = result["methods"][name]
        for x in LANGS:
            if s.count(x) == 0:
                continue
            delta = {y: hand_nll(model, windows[y], s.mask(x)) - base[y] for y in LANGS}
            for y in LANGS:
                assert got["delta"][x][y] == pytest.approx(delta[y], rel=1e-4, abs=1e-6)
            others = sum(delta[y] for y in LANGS if y != x) / (len(LANGS) - 1)
            selectivity = got["per_language"][x]["selectivity"]
            if others > 1e-5:
                assert selectivity == pytest.approx(delta[x] / others, rel=1e-2)
                checked += 1
            elif others < -1e-5:
                assert selectivity is None
    assert checked > 0
    # equal budgets: no method has more neurons than the reference in any language
    for name in sets:
        assert all(result["methods"][name]["sizes"][x] <= reference.count(x) for x in LANGS), name
    assert [result["methods"]["random"]["sizes"][x] for x in LANGS] == [reference.count(x) for x in LANGS]
    rows = selectivity_table(result)
    assert [r["set"] for r in rows] == list(sets) and set(LANGS) <= set(rows[0])


def test_deterministic_under_a_seed_and_resumable(setup, tmp_path):
    model, _, stats, relevance, reference, windows = setup
    first = compare_methods(model, matched_sets(reference, stats, relevance, seed=3), windows)
    second = compare_methods(model, matched_sets(reference, stats, relevance, seed=3), windows,
                             log_path=tmp_path / "cells.jsonl")
    other = matched_sets(reference, stats, relevance, seed=4)
    assert not torch.equal(other["random"].masks, matched_sets(reference, seed=3)["random"].masks)
    for name in first["methods"]:
        assert first["methods"][name]["delta"] == second["methods"][name]["delta"]
    assert first["baseline"] == second["baseline"]
    lines = (tmp_path / "cells.jsonl").read_text().splitlines()
    conditions = 1 + sum(1 for m in first["methods"].values() for x in LANGS if m["sizes"][x] > 0)
    assert len(lines) == conditions * len(LANGS)
    # a rerun measures nothing again: every cell comes from the log (a poisoned cell shows through)
    rows = [json.loads(line) for line in lines]
    rows[0]["windows"][0] += first["tokens"][rows[0]["language"]]  # the language's mean loss + 1
    (tmp_path / "cells.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = compare_methods(model, matched_sets(reference, stats, relevance, seed=3), windows,
                            log_path=tmp_path / "cells.jsonl")
    assert again["baseline"][rows[0]["language"]] == pytest.approx(second["baseline"][rows[0]["language"]] + 1.0)
    # another random set: only its cells are measured, the others' come from the log
    before = len(lines)
    mixed = compare_methods(model, other, windows, log_path=tmp_path / "cells.jsonl")
    new = (tmp_path / "cells.jsonl").read_text().splitlines()[before:]
    assert {json.loads(line)["set"] for line in new} == {"random"}
    assert mixed["methods"]["crane-grad_x_input"] == again["methods"]["crane-grad_x_input"]
    with pytest.raises(ln.LangNeuronsError, match="other settings"):
        shorter = {y: [w[:-1] for w in ws] for y, ws in windows.items()}  # other text: cells are not reusable
        compare_methods(model, other, shorter, log_path=tmp_path / "cells.jsonl")


def test_transfer_to_a_model_of_the_same_shape(setup, tmp_path):
    model, _, stats, relevance, reference, windows = setup
    sibling = tiny(seed=1)
    sets = matched_sets(reference, stats, relevance, seed=0)
    on_base = compare_methods(model, sets, windows)
    on_sibling = compare_methods(sibling, sets, windows)
    assert on_sibling["model"] == "tiny-llama-1" and on_base["model"] == "tiny-llama-0"
    assert on_sibling["baseline"] != on_base["baseline"]
    crane_set = sets["crane-grad_x_input"]
    x = next(x for x in LANGS if crane_set.count(x) > 0)
    expected = hand_nll(sibling, windows["en"], crane_set.mask(x)) - hand_nll(sibling, windows["en"], None)
    assert on_sibling["methods"]["crane-grad_x_input"]["delta"][x]["en"] == pytest.approx(expected, rel=1e-4, abs=1e-6)
    files = selectivity_bars([on_base, on_sibling], tmp_path / "sel.png")
    assert [f.suffix for f in files] == [".png", ".svg"] and all(f.stat().st_size > 0 for f in files)
    shallow = make_tiny("llama")
    shallow.model.layers = shallow.model.layers[:1]
    with pytest.raises(ln.LangNeuronsError, match=r"set 'lape'.*does not fit"):
        compare_methods(shallow, sets, windows)


def test_bootstrap_intervals_match_a_hand_loop(setup):
    """The intervals are percentiles over replicates that resample each language's windows (the same draws for
    every condition); recomputed here replicate by replicate from per-window losses measured by hand."""
    model, _, _, _, _, windows = setup
    reference = ln.NeuronSet(LANGS, torch.rand(3, 2, 48, generator=torch.Generator().manual_seed(0)) < 0.3)
    sets = {"lape": reference}  # a dense set: large loss increases, selectivity defined in many replicates
    replicates, seed = 200, 5
    result = compare_methods(model, sets, windows, batch_size=3, replicates=replicates, seed=seed)
    masked = [x for x in LANGS if reference.count(x) > 0]

    def per_window(zero):
        return {y: [hand_nll(model, [w], zero) * (len(w) - 1) for w in windows[y]] for y in LANGS}

    base = per_window(None)
    cond = {x: per_window(reference.mask(x)) for x in masked}
    rng = np.random.default_rng(seed)
    draws = {y: rng.integers(0, len(windows[y]), size=(replicates, len(windows[y]))) for y in LANGS}
    sel = {x: [] for x in masked}
    means, pooled = [], []
    for b in range(replicates):
        def mean(sums, y, b=b):
            idx = draws[y][b]
            return sum(sums[y][i] for i in idx) / sum(len(windows[y][i]) - 1 for i in idx)

        own, others = {}, {}
        for x in masked:
            delta = {y: mean(cond[x], y) - mean(base, y) for y in LANGS}
            own[x], others[x] = delta[x], sum(delta[y] for y in LANGS if y != x) / (len(LANGS) - 1)
            sel[x].append(own[x] / others[x] if others[x] > 0 else np.nan)
        defined = [sel[x][-1] for x in masked if not np.isnan(sel[x][-1])]
        means.append(sum(defined) / len(defined) if defined else np.nan)
        den = sum(others.values()) / len(masked)
        pooled.append(sum(own.values()) / len(masked) / den if den > 0 else np.nan)

    def pct(values):
        v = np.array(values)
        v = v[~np.isnan(v)]
        return None if v.size < replicates / 2 else list(np.percentile(v, [2.5, 97.5]))

    ci = result["methods"]["lape"]["ci"]
    for got, expected in [(ci["mean_selectivity"], pct(means)), (ci["ratio"], pct(pooled)),
                          *[(ci["selectivity"][x], pct(sel[x])) for x in masked]]:
        assert (got is None) == (expected is None)
        if got is not None:
            assert got == pytest.approx(expected, rel=1e-2, abs=1e-2)  # ratios of small float32 differences
    assert any(v is not None for v in ci["selectivity"].values())
    single = compare_methods(model, sets, {y: w[:1] for y, w in windows.items()}, replicates=50)
    assert single["methods"]["lape"]["ci"] == {"selectivity": {}, "mean_selectivity": None, "ratio": None}


def test_forcing_per_set(setup, tmp_path):
    """Each set forces `-src +tgt` on the same questions; success counts only off-diagonal prompts."""
    model, tok, stats, _, reference, _ = setup
    sets = {"lape": reference, "random": ln.random_like(reference, 0)}
    result = compare_forcing(model, tok, sets, stats, LANGS, n_questions=2, decoding=Decoding(max_new_tokens=4),
                             identifier="script", replicates=100, out_dir=tmp_path)
    for name, s in sets.items():
        f = result["methods"][name]
        targets = [t for t in LANGS if s.count(t) > 0]
        assert f["targets"] == sorted(targets) and f["prompts"] == len(targets) * (len(LANGS) - 1) * 2
        samples = [json.loads(line) for line in (tmp_path / f"forcing_{name}_samples.jsonl").read_text().splitlines()]
        off = [r for r in samples if r["source"] != r["target"]]
        assert f["fluent_success"] == pytest.approx(sum(r["fluent_success"] for r in off) / len(off), abs=1e-4)
        lo, hi = f["ci"]["fluent_success"]
        assert lo <= f["fluent_success"] + 1e-9 and f["fluent_success"] <= hi + 1e-9
        assert all(r["steering"] and "-" in json.dumps(r["steering"]) for r in off)
    with pytest.raises(ln.LangNeuronsError, match="n_questions must be positive"):
        compare_forcing(model, tok, sets, stats, LANGS, n_questions=0)


def test_compare_command(tmp_path, capsys):
    model, tok = tiny(), tiny_tokenizer()
    for name, m in (("base", model), ("chat", tiny(seed=1))):
        m.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    (tmp_path / "texts").mkdir()
    for lang in LANGS:
        (tmp_path / "texts" / f"{lang}.txt").write_text("\n\n".join(TEXTS[lang]), "utf-8")
    common = ["--model", str(tmp_path / "base"), "--corpus", str(tmp_path / "texts"), "--heldout-every", "3",
              "--window", "16", "--quiet"]
    assert main(["collect", *common, "--max-tokens", "90", "-o", str(tmp_path / "s.safetensors")]) == 0
    assert main(["collect", "--relevance", *common, "--max-tokens", "90", "-o", str(tmp_path / "r.safetensors")]) == 0
    assert main(["collect", "--relevance", "--rule", "attnlrp", *common, "--max-tokens", "90",
                 "-o", str(tmp_path / "lrp.safetensors")]) == 0
    assert main(["identify", str(tmp_path / "s.safetensors"), "--top-rate", "0.1", "--filter-rate", "0.5",
                 "--bar-rate", "0.5", "-o", str(tmp_path / "n.safetensors")]) == 0
    out = tmp_path / "cmp"
    argv = ["compare", *common, "--neurons", str(tmp_path / "n.safetensors"),
            "--stats", str(tmp_path / "s.safetensors"), "--relevance", str(tmp_path / "r.safetensors"),
            str(tmp_path / "lrp.safetensors"), "--transfer", str(tmp_path / "chat"), "--max-tokens", "45",
            "--output-dir", str(out), "--forcing-questions", "1", "--max-new-tokens", "4", "--identifier", "script",
            "--replicates", "200"]
    capsys.readouterr()
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "selectivity and forcing on" in printed and "(transfer)" in printed and "crane-attnlrp" in printed
    assert "forcing fluent [95% CI]" in printed and "mean [95% CI]" in printed
    data = json.loads((out / "compare.json").read_text())
    assert data["kind"] == "results" and data["task"] == "compare"
    results = data["summary"]["results"]
    assert [r["transfer"] for r in results] == [False, True]
    sets = {"lape", "crane-grad_x_input", "crane-attnlrp", "frequency", "random"}
    assert set(results[0]["methods"]) == sets and "forcing" not in results[1]
    forcing = results[0]["forcing"]["methods"]
    assert set(forcing) <= sets and all(0 <= f["fluent_success"] <= 1 for f in forcing.values())
    assert (out / "forcing_lape.json").exists()
    assert (out / "selectivity.png").exists() and (out / "selectivity.svg").exists()
    assert ln.NeuronSet.load(out / "neurons_crane-attnlrp.safetensors").meta["method"] == "crane"
    report = build_report(out, tmp_path / "report.html")
    md = report.markdown.read_text("utf-8")
    assert "forcing fluent \\[95% CI\\]" in md and "crane-attnlrp" in md  # Markdown escapes the brackets
    assert report.used.get("selectivity.png") == "compare.json"
    assert main(argv) == 0  # a rerun reads every cell from the logs
    assert json.loads((out / "compare.json").read_text())["summary"]["results"][0]["methods"] == results[0]["methods"]


def test_contrast_choices_on_the_command_line_are_cranes():
    """`identify` and `compare` write the choices out (so `--help` need not import torch); they must stay CRANE's."""
    for name in ("identify", "compare"):
        parser = build_parser([name])  # a command's options are added only when it is the one asked for
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
        assert tuple(next(a for a in commands[name]._actions if a.dest == "contrast").choices) == CONTRASTS
