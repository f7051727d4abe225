"""Forcing grid on a tiny model: outputs equal steering each prompt alone, summaries equal hand counts."""

import json

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.data.prompts import STOP_STRINGS, qa_prompt
from langneurons.steering.config import ForcingSetting
from langneurons.steering.edits import steer
from langneurons.steering.generation import Decoding, generate
from langneurons.tasks.forcing import run_forcing

LANGS = ["en", "de", "ru"]
QUESTIONS = {"en": ["Why is water good?", "What is a friend?"], "de": ["Warum ist Wasser gut?", "Was ist ein Freund?"],
             "ru": ["Почему вода полезна?", "Кто такой друг?"]}


@pytest.fixture(scope="module")
def setup():
    model, tok = make_tiny("llama", dtype=torch.float64), tiny_tokenizer()
    stats = ln.collect_stats(model, tok, ln.from_texts({k: SAMPLE[k] * 8 for k in LANGS}, 0), max_tokens=100,
                             window=16, progress=False)
    return model, tok, stats, ln.lape(stats, top_rate=0.2, filter_rate=0.5, bar_rate=0.5)


def test_grid_outputs_and_summaries(setup, tmp_path):
    model, tok, stats, neurons = setup
    settings = [ForcingSetting("add", 2.0), ForcingSetting("replace", deactivate_source=False, top_rate=0.3)]
    result = run_forcing(model, tok, neurons, stats, LANGS, ["de", "ru"], settings, question_set=QUESTIONS,
                         decoding=Decoding(max_new_tokens=6, batch_size=5), identifier="script", progress=False)
    labels = result.settings["labels"]
    assert labels == ["-src 2x add", "replace top 0.3", "baseline"]
    assert len(result.samples) == 3 * len(LANGS) * 2 * 2
    # a steered row equals generating that prompt alone inside steer(...) with the same settings
    row = next(s for s in result.samples if s["setting"] == labels[0] and s["source"] == "en" and s["target"] == "ru")
    with steer(model, neurons, stats, "-en +2*ru"):
        alone = generate(model, tok, [qa_prompt(QUESTIONS["en"][row["question"]])], max_new_tokens=6,
                         stop_strings=STOP_STRINGS)
    assert row["output"] == alone[0]
    other = ln.lape(stats, top_rate=0.3)
    row = next(s for s in result.samples if s["setting"] == labels[1] and s["source"] == "de" and s["target"] == "ru")
    with steer(model, other, stats, "+ru", method="replace"):
        alone = generate(model, tok, [qa_prompt(QUESTIONS["de"][row["question"]])], max_new_tokens=6,
                         stop_strings=STOP_STRINGS)
    assert row["output"] == alone[0]
    base = [s for s in result.samples if s["setting"] == "baseline" and s["source"] == "ru"]
    plain = generate(model, tok, [qa_prompt(q) for q in QUESTIONS["ru"]], max_new_tokens=6, stop_strings=STOP_STRINGS)
    assert [s["output"] for s in base if s["target"] == "de"] == plain
    # summaries are the counts over the samples
    cell = result.cells(labels[0])[("en", "ru")]
    rows = [s for s in result.samples if s["setting"] == labels[0] and (s["source"], s["target"]) == ("en", "ru")]
    assert cell["n"] == 2 and cell["success"] == sum(s["success"] for s in rows) / 2
    off = [result.cells(labels[0])[(s, "ru")]["fluent_success"] for s in LANGS if s != "ru"]
    assert result.summary()[labels[0]]["per_target"]["ru"]["fluent_success"] == pytest.approx(sum(off) / 2)
    files = result.save(tmp_path)
    saved = json.loads(files["json"].read_text())
    assert saved["settings"]["generation"]["decoding"] == "greedy" and "en>ru" in saved["cells"][labels[0]]
    assert len(files["samples"].read_text().splitlines()) == len(result.samples)
    assert files["heatmap_0"].exists()


def test_fluent_needs_language_and_no_repetition(setup):
    model, tok, stats, neurons = setup
    result = run_forcing(model, tok, neurons, stats, ["en"], ["ru"], [ForcingSetting("add", 1.0)],
                         question_set=QUESTIONS, decoding=Decoding(max_new_tokens=6), identifier="script",
                         progress=False)
    for s in result.samples:
        assert s["fluent_success"] == (s["success"] and s["distinct_bigrams"] >= 0.5 and not s["empty"])
        assert s["success"] == (s["identified"] == "ru" and not s["empty"])


def test_unknown_language_in_question_set(setup):
    model, tok, stats, neurons = setup
    with pytest.raises(ln.LangNeuronsError, match="no language 'fr'"):
        run_forcing(model, tok, neurons, stats, ["fr"], ["ru"], [ForcingSetting()], question_set=QUESTIONS)


def test_continuation_nll_equals_unpadded_hand_computation():
    from langneurons.tasks.fluency import continuation_nll

    model, tok = make_tiny("llama", dtype=torch.float64), tiny_tokenizer()
    prompts = ["Q: Why?\nA:", "Q: The quick brown fox jumps?\nA:", "x"]
    conts = ["Because it is.", "", "Всё хорошо и 人人"]
    got = continuation_nll(model, tok, prompts, conts, batch_size=3)
    assert got[1] is None
    for p, c, g in zip(prompts, conts, got):
        if c:
            pi, ci = tok(p).input_ids, tok(" " + c, add_special_tokens=False).input_ids
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([pi + ci])).logits[0], -1)
            want = -sum(float(logp[len(pi) - 1 + k, t]) for k, t in enumerate(ci)) / len(ci)
            assert g == pytest.approx(want, abs=1e-5)


def test_one_named_bar_per_stage_with_totals_reached(setup, capsys):
    """Generation of every setting shares one bar counting distinct prompts; the NLL scoring has its own."""
    import re

    model, tok, stats, neurons = setup
    settings = [ForcingSetting("add", 2.0), ForcingSetting("replace", deactivate_source=False, top_rate=0.3)]
    run_forcing(model, tok, neurons, stats, LANGS, ["de", "ru"], settings, question_set=QUESTIONS,
                decoding=Decoding(max_new_tokens=4, batch_size=5), identifier="script", progress=True)
    err = capsys.readouterr().err.replace("\r", "\n")
    names = {m for m in re.findall(r"^([^:\n]+(?::[^:\n]+)?): +\d+%", err, re.M)}
    assert names == {"forcing: generate", "forcing: score NLL"}, names
    # distinct prompts: 2 settings x 3 sources x 2 targets x 2 questions steered, 3 x 2 unsteered (once per question)
    assert re.findall(r"forcing: generate: 100%.*? (\d+)/(\d+) ", err)[-1] == ("30", "30")
    final = re.findall(r"forcing: score NLL: 100%.*? (\d+)/(\d+) ", err)[-1]
    assert final[0] == final[1]
