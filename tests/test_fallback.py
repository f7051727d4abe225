"""Fallback: each step equals generating under the cumulative deactivation, distributions, artifacts, errors."""

import json

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.data.prompts import STOP_STRINGS
from langneurons.steering.edits import steer
from langneurons.steering.generation import Decoding, generate
from langneurons.tasks.fallback import FallbackResult, distribution, run_fallback, step_label

LANGS = ["en", "de", "fr", "ru"]
PROMPTS = SAMPLE["ru"] + ["Все люди", "Собака"]


@pytest.fixture(scope="module")
def setup():
    model = make_tiny("llama", dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    masks = torch.rand(len(LANGS), 2, 48, generator=g) < 0.3
    neurons = ln.NeuronSet(LANGS, masks, {"model": {"id": "tiny"}, "method": "hand-made"})
    return model, tiny_tokenizer(), neurons


@pytest.fixture(scope="module")
def result(setup):
    model, tok, neurons = setup
    return run_fallback(model, tok, neurons, "ru", prompts=PROMPTS, decoding=Decoding(max_new_tokens=6, batch_size=7),
                        identifier="script", progress=False)


def test_each_step_equals_generating_under_the_cumulative_deactivation(setup, result):
    model, tok, neurons = setup
    order = result.settings["order"]
    assert order == ["ru", "en", "de", "fr"]  # the prompt language first, then the set's order
    assert [s["deactivated"] for s in result.steps] == [order[:k] for k in range(len(order) + 1)]
    assert [s["label"] for s in result.steps] == ["none", "-ru", "-ru -en", "-ru -en -de", "-ru -en -de -fr"]
    outputs = [[r["output"] for r in result.samples if r["step"] == k] for k in range(len(order) + 1)]
    assert outputs[0] == generate(model, tok, PROMPTS, max_new_tokens=6, stop_strings=STOP_STRINGS)
    for k in range(1, len(order) + 1):
        with steer(model, neurons, None, " ".join(f"-{lang}" for lang in order[:k])):
            assert outputs[k] == generate(model, tok, PROMPTS, max_new_tokens=6, stop_strings=STOP_STRINGS)
    assert len({tuple(o) for o in outputs}) > 1  # deactivation changed something


def test_distributions_and_samples(result):
    assert len(result.samples) == len(PROMPTS) * len(result.steps)
    for step in result.steps:
        assert sum(step["distribution"].values()) == pytest.approx(1.0)
        assert sum(step["counts"].values()) == len(PROMPTS)
        rows = [r for r in result.samples if r["step"] == step["step"]]
        assert step["empty"] == sum(r["output"] == "" for r in rows)
        assert all(r["deactivated"] == step["deactivated"] for r in rows)
    shares, counts = distribution(["ru", "", "en", "ru"])
    assert shares == {"ru": 0.5, "en": 0.25, "none": 0.25} and counts == {"ru": 2, "en": 1, "none": 1}
    assert step_label([]) == "none" and step_label(["ru", "en"]) == "-ru -en"


def test_artifacts_written(result, tmp_path):
    paths = result.save(tmp_path / "out")
    summary = json.loads(paths["summary"].read_text("utf-8"))
    assert summary["language"] == "ru" and len(summary["steps"]) == 5
    settings = summary["settings"]
    assert settings["generation"]["decoding"] == "greedy" and settings["generation"]["max_new_tokens"] == 6
    assert settings["model"]["id"] == "unnamed-llama" and settings["neurons"]["method"] == "hand-made"
    assert settings["prompts"] == "user" and settings["identifier"] == "script"
    rows = [json.loads(line) for line in paths["samples"].read_text("utf-8").splitlines()]
    assert rows == result.samples
    assert paths["png"].stat().st_size > 0 and paths["svg"].stat().st_size > 0
    assert not list((tmp_path / "out").glob(".*.tmp"))
    from langneurons.figures.charts import fallback_bars  # the plot also takes the saved JSON

    assert [p.suffix for p in fallback_bars(summary, tmp_path / "again.png")] == [".png", ".svg"]


def test_explicit_order_and_value(setup):
    model, tok, neurons = setup
    res = run_fallback(model, tok, neurons, "sw", order=["de"], prompts=PROMPTS[:2], value=-1.0,
                       decoding=Decoding(max_new_tokens=3),
                       identifier="script", progress=False)
    assert [s["label"] for s in res.steps] == ["none", "-de"] and res.settings["value"] == -1.0
    with steer(model, neurons, None, "-de", value=-1.0):
        assert [r["output"] for r in res.samples if r["step"] == 1] == generate(
            model, tok, PROMPTS[:2], max_new_tokens=3, stop_strings=STOP_STRINGS)


def test_bad_requests_are_clear(setup):
    model, tok, neurons = setup
    empty = ln.NeuronSet(LANGS, neurons.masks & torch.tensor([True, False, True, True]).view(-1, 1, 1))
    cases = [
        ({"language": "xx"}, "not in the neuron set"),  # no order: the prompt language must be in the set
        ({"language": "ru", "order": ["ru", "ja"]}, "'ja' has no neurons"),
        ({"language": "ru", "order": ["ru", "ru"]}, "twice"),
        ({"language": "ru", "order": []}, "empty"),
        ({"language": "ru", "prompts": []}, "non-empty"),
        ({"language": "ru", "prompts": ["ok", ""]}, "non-empty"),
        ({"language": "ru", "identifier": "nope"}, "unknown language identifier"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ln.LangNeuronsError, match=message):
            run_fallback(model, tok, neurons, **{"prompts": PROMPTS, **kwargs})
    with pytest.raises(ln.LangNeuronsError, match="'de' has no neurons"):
        run_fallback(model, tok, empty, "ru", order=["de"], prompts=PROMPTS)
    assert "de" not in run_fallback(model, tok, empty, "ru", prompts=PROMPTS[:1], decoding=Decoding(max_new_tokens=1),
                                    identifier="script", progress=False).settings["order"]
    with pytest.raises(ln.LangNeuronsError, match="no built-in questions"):
        run_fallback(model, tok, ln.NeuronSet(["qq"], neurons.masks[:1]), "qq")
    other = ln.NeuronSet(LANGS, torch.zeros(len(LANGS), 3, 48, dtype=torch.bool) | True)
    with pytest.raises(ln.LangNeuronsError, match="does not fit"):
        run_fallback(model, tok, other, "ru", prompts=PROMPTS)


def test_russian_prompts_on_the_real_model(gemma, tmp_path):
    model, tok = gemma
    stats = ln.collect_stats(model, tok, ln.udhr(["ru", "en", "de", "zh"]), max_tokens=600, progress=False)
    neurons = ln.lape(stats, top_rate=0.01)
    res = run_fallback(model, tok, neurons, "ru", decoding=Decoding(max_new_tokens=24), progress=False)
    assert isinstance(res, FallbackResult) and res.settings["prompts"] == "builtin:eval"
    assert res.settings["order"][0] == "ru" and len(res.steps) == len(res.settings["order"]) + 1
    first = res.steps[0]["distribution"]
    assert first.get("ru", 0) + first.get("en", 0) >= 0.5
    summary = json.loads(res.save(tmp_path)["summary"].read_text("utf-8"))
    assert summary["settings"]["model"]["id"] == "google/gemma-3-270m"
    assert summary["settings"]["neurons"]["method"] == "lape"
    assert [s["step"] for s in summary["steps"]] == list(range(len(res.steps)))
