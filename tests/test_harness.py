"""The lm-evaluation-harness path: the steered harness model against independent computations (a hand loop over the
model's logits, our generation), the plain harness model, local task YAMLs, results files and the command line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lm_eval
import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager
from tiny import make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.core.errors import LangNeuronsError
from langneurons.stats.activation import ActivationStats
from langneurons.steering.config import SteeringConfig
from langneurons.steering.edits import steer
from langneurons.steering.generation import generate
from langneurons.tasks.harness import _label, lm_eval_model, local_task, run_lm_eval
from langneurons.tasks.xquad import answer_tokens

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
LANGS = ["en", "de", "fr"]
ITEMS = [  # a two-item multiple-choice task
    {"q": "The quick brown fox jumps over the", "choices": [" lazy dog.", " cat.", " free and equal."], "label": 0},
    {"q": "Der Hund", "choices": [" schläft.", " dort.", " spielt im Park."], "label": 2},
]


@pytest.fixture(scope="module")
def tiny():
    model = make_tiny("llama", dtype=torch.float64)
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(len(LANGS), 2, 48, generator=g) < 0.25
    neurons = ln.NeuronSet(LANGS, masks, {"method": "hand-made"})
    over = torch.randint(0, 100, (len(LANGS), 2, 48), generator=g)
    sums = torch.randn(len(LANGS), 2, 48, generator=g, dtype=torch.float64) * 40
    stats = ActivationStats(LANGS, torch.full((len(LANGS),), 100), over, sums, None, {})
    return model, tiny_tokenizer(), neurons, stats


@pytest.fixture(scope="module")
def two_items(tmp_path_factory) -> Path:
    """A local two-item multiple-choice task YAML (dataset_path: json)."""
    root = tmp_path_factory.mktemp("task")
    (root / "items.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ITEMS), "utf-8")
    (root / "two_items.yaml").write_text(
        "task: two_items\ndataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {root / 'items.jsonl'}\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{q}}'\ndoc_to_choice: '{{choices}}'\n"
        "doc_to_target: label\ntarget_delimiter: ''\nmetric_list:\n  - metric: acc\n", "utf-8")
    return root / "two_items.yaml"


def hand_loglikelihood(model, tok, context: str, continuation: str) -> float:
    """log p(continuation | context): one unpadded sequence, full-vocabulary log-softmax, summed by hand."""
    ctx = tok(context).input_ids
    whole = tok(context + continuation).input_ids
    assert whole[: len(ctx)] == ctx  # the test texts split cleanly at the boundary
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=torch.tensor([whole])).logits[0].double(), -1)
    return sum(float(logp[pos - 1, whole[pos]]) for pos in range(len(ctx), len(whole)))


def evaluate(lm, task) -> dict:
    return lm_eval.simple_evaluate(model=lm, tasks=[task], task_manager=TaskManager(include_defaults=False),
                                   log_samples=True, bootstrap_iters=0)


def loglikelihoods(results: dict, task: str) -> list[list[float]]:
    samples = sorted(results["samples"][task], key=lambda s: s["doc_id"])
    return [[float(r[0][0]) for r in s["resps"]] for s in samples]


def test_steered_loglikelihoods_equal_the_hand_loop_and_option_logprobs(tiny, two_items):
    model, tok, neurons, stats = tiny
    expression = "-en +3*de"
    got = loglikelihoods(evaluate(lm_eval_model(model, tok, expression, neurons=neurons, stats=stats,
                                                batch_size=2), str(two_items)), "two_items")
    contexts = [it["q"] for it in ITEMS for _ in it["choices"]]
    options = [c for it in ITEMS for c in it["choices"]]
    with steer(model, neurons, stats, expression):
        hand = [hand_loglikelihood(model, tok, c, o) for c, o in zip(contexts, options)]
        ours = ln.option_logprobs(model, tok, contexts, options)
    unsteered = [hand_loglikelihood(model, tok, c, o) for c, o in zip(contexts, options)]
    flat = [v for row in got for v in row]
    assert flat == pytest.approx(hand, abs=1e-8) and flat == pytest.approx(ours, abs=1e-8)
    assert max(abs(a - b) for a, b in zip(hand, unsteered)) > 1e-3  # the steering changes the scores
    assert [hand_loglikelihood(model, tok, c, o) for c, o in zip(contexts, options)] == unsteered


def test_unsteered_results_equal_the_plain_harness_model(tiny, two_items):
    model, tok, _, _ = tiny
    ours = evaluate(lm_eval_model(model, tok, batch_size=2), str(two_items))
    plain = evaluate(HFLM(pretrained=model, tokenizer=tok, batch_size=2), str(two_items))
    assert loglikelihoods(ours, "two_items") == loglikelihoods(plain, "two_items")
    assert ours["results"]["two_items"]["acc,none"] == plain["results"]["two_items"]["acc,none"]
    contexts = [it["q"] for it in ITEMS for _ in it["choices"]]
    options = [c for it in ITEMS for c in it["choices"]]
    hand = [hand_loglikelihood(model, tok, c, o) for c, o in zip(contexts, options)]
    assert [v for row in loglikelihoods(ours, "two_items") for v in row] == pytest.approx(hand, abs=1e-8)


@pytest.mark.parametrize("config", [SteeringConfig({"de": 4.0}, {"en": 0.0}),
                                    SteeringConfig({"fr": 4.0}, generated_only=True)])
def test_steered_generate_until_equals_our_generate(tiny, config):
    model, tok, neurons, stats = tiny
    prompts = ["The quick brown fox", "Der Hund", "Le chat dort. Le chat", "Все люди"]
    kwargs = {"until": ["\n"], "max_gen_toks": 8, "do_sample": False}
    requests = [Instance("generate_until", {}, (p, kwargs), i) for i, p in enumerate(prompts)]
    lm = lm_eval_model(model, tok, config, neurons=neurons, stats=stats, batch_size=3)
    got = [g.strip() for g in lm.generate_until(requests, disable_tqdm=True)]
    expected = generate(model, tok, prompts, max_new_tokens=8, stop_strings=("\n",), steerings=[config] * 4,
                        neurons=neurons, stats=stats)
    assert got == expected
    assert expected != generate(model, tok, prompts, max_new_tokens=8, stop_strings=("\n",))  # steering acts


def test_local_tasks_read_the_fixture_files(tiny, tmp_path):
    model, tok, neurons, stats = tiny
    result = run_lm_eval(model, tok, ["belebele_de", "xnli_en", "xquad_zh"], ["+de"], neurons, stats,
                         data=FIX, limit=3, output_dir=tmp_path, progress=False)
    assert result.tasks == ["belebele_de", "xnli_en", "xquad_zh"] and result.conditions == ["baseline", "+de"]
    assert result.metric == {"belebele_de": "acc", "xnli_en": "acc", "xquad_zh": "f1"}
    saved = json.loads((tmp_path / "lm-eval.json").read_text("utf-8"))
    assert saved["kind"] == "results" and saved["task"] == "lm-eval"
    assert saved["settings"]["steerings"]["+de"]["activate"] == {"de": 1.0}
    harness = json.loads((tmp_path / "harness_steered1.json").read_text("utf-8"))
    assert harness["config"]["langneurons_steering"] == "+1*de [add]"
    assert harness["n-samples"]["belebele_de"]["effective"] == 3
    assert (tmp_path / "lm-eval_delta.png").exists() and (tmp_path / "harness_baseline.json").exists()
    for task in result.tasks:
        d = saved["summary"]["delta"][task]["+de"]
        scores = saved["summary"]["scores"][task]
        assert d == pytest.approx(scores["+de"][result.metric[task]] - scores["baseline"][result.metric[task]])
    assert "belebele_de" in result.table()
    from langneurons.report.report import build_report

    report = build_report(tmp_path)
    assert report.skipped == {} and "lm-evaluation-harness results" in report.used["harness_baseline.json"]
    assert "belebele_de" in report.markdown.read_text("utf-8")


def test_local_task_configs(tmp_path):
    config = local_task("xnli_de", FIX)
    assert config["doc_to_choice"].startswith('{{[premise+", richtig? Ja, "+hypothesis')
    assert config["dataset_kwargs"]["data_files"]["test"] == str((FIX / "xnli" / "de.jsonl").resolve())
    xquad = local_task("xquad_zh", FIX)
    doc = {"answers": {"text": ["约6400公里", "6400公里"]}}
    assert xquad["process_results"](doc, ["6400公里"]) == {"exact_match": 1.0, "f1": 1.0}  # the best gold answer
    assert answer_tokens("6400公里", "zh") == ["6400", "公", "里"]
    with pytest.raises(LangNeuronsError, match="no such file"):
        local_task("belebele_deu_Latn", FIX)
    with pytest.raises(LangNeuronsError, match="has no local form"):
        local_task("xcopa_de", FIX)
    (tmp_path / "xnli").mkdir()
    (tmp_path / "xnli" / "xx.jsonl").write_text(json.dumps({"premise": "P", "hypothesis": "H", "label": 1}), "utf-8")
    with pytest.raises(LangNeuronsError, match="no label words for 'xx'"):
        local_task("xnli_xx", tmp_path)


@pytest.mark.parametrize(("row", "message"), [
    ("not json", "xx.jsonl:1: not a JSON object"),
    (json.dumps({"premise": "P", "label": 1}), "xx.jsonl:1: missing field 'hypothesis'; xnli rows need"),
    (json.dumps({"premise": "P", "hypothesis": "H", "label": 3}), "label 3 is not one of 0, 1, 2"),
    ("", "xx.jsonl: no rows"),
])
def test_bad_local_rows_are_one_line_errors(tmp_path, row, message):
    (tmp_path / "xnli").mkdir()
    (tmp_path / "xnli" / "xx.jsonl").write_text(row + "\n", "utf-8")
    with pytest.raises(LangNeuronsError) as e:
        local_task("xnli_xx", tmp_path)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_harness_is_a_one_line_error(tiny, monkeypatch):
    model, tok, _, _ = tiny
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(LangNeuronsError, match=r"pip install 'langneurons\[lm-eval\]'"):
        lm_eval_model(model, tok)


def test_cli(tiny, tmp_path, capsys):
    from langneurons.cli.main import main

    _, _, neurons, stats = tiny
    make_tiny("llama").save_pretrained(tmp_path / "model")
    tiny_tokenizer().save_pretrained(tmp_path / "model")
    neurons.save(tmp_path / "n.safetensors")
    stats.save(tmp_path / "s.safetensors")
    common = ["evaluate", "lm-eval", "--model", str(tmp_path / "model"), "--neurons", str(tmp_path / "n.safetensors"),
              "--stats", str(tmp_path / "s.safetensors"), "--data", str(FIX), "--quiet"]
    assert main([*common, "--tasks", "belebele_de,xnli_en", "--steer", "-en +de", "--activate", "fr", "--limit", "2",
                 "--output-dir", str(tmp_path / "out")]) == 0
    saved = json.loads((tmp_path / "out" / "lm-eval.json").read_text("utf-8"))
    assert saved["summary"]["conditions"] == ["baseline", "-en +de", "+fr"]
    assert saved["summary"]["scores"]["xnli_en"]["+fr"]["acc"] in (0.0, 0.5, 1.0)
    assert "belebele_de" in capsys.readouterr().out
    assert main([*common, "--tasks", "xnli_zz", "--output-dir", str(tmp_path / "bad")]) == 2
    assert "xnli/zz.jsonl: no such file" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_embedded_model_through_the_harness(gemma, tmp_path):
    """gemma-3-270m (its tokenizer adds BOS): steered harness log-likelihoods equal the hand loop; files written."""
    model, tok = gemma
    stats = ln.collect_stats(model, tok, ln.udhr(["en", "de", "fr"]), max_tokens=400, window=200, progress=False)
    neurons = ln.lape(stats, top_rate=0.01)
    with steer(model, neurons, stats, "+de"):
        hand = [hand_loglikelihood(model, tok, "Der Hund", o) for o in (" schläft.", " bellt laut.")]
    lm = lm_eval_model(model, tok, "+de", neurons=neurons, stats=stats)
    got = [r[0] for r in lm.loglikelihood([Instance("loglikelihood", {}, ("Der Hund", o), i)
                                          for i, o in enumerate((" schläft.", " bellt laut."))], disable_tqdm=True)]
    assert got == pytest.approx(hand, abs=1e-3)
    result = run_lm_eval(model, tok, ["belebele_de", "belebele_en"], ["+de"], neurons, stats, data=FIX, limit=2,
                         output_dir=tmp_path, progress=False)
    assert set(result.scores["belebele_de"]) == {"baseline", "+de"} and (tmp_path / "harness_steered1.json").exists()


def test_steering_specs_compile_alike(tiny, tmp_path):
    from langneurons.steering.calibration import Calibration
    from langneurons.steering.config import ForcingSetting
    from langneurons.tasks.harness import compile_steering

    model, _, neurons, stats = tiny
    cal = Calibration({"fr": ForcingSetting("add", 3.0)})
    calibrated = compile_steering(model, "-en +fr", neurons, stats, calibrated=cal)
    assert calibrated.config.activate == {"fr": 3.0} and calibrated.config.deactivate == {"en": 0.0}
    config = SteeringConfig({"fr": 3.0}, {"en": 0.0})
    config.save(tmp_path / "setting.json")
    for spec in (config, str(tmp_path / "setting.json"), "-en +3*fr"):
        steering = compile_steering(model, spec, neurons, stats)
        assert steering.config == config
        for layer, (scale, shift) in steering.tables.items():
            assert torch.equal(scale, calibrated.tables[layer][0]) and torch.equal(shift, calibrated.tables[layer][1])
    assert compile_steering(model, None) is None


def test_steering_labels_name_configs_files_and_expressions():
    config = SteeringConfig({"de": 4.0}, {"en": 0.0})
    assert _label(config) == "-en +4*de [add]"  # a SteeringConfig has no .config: labelled from itself
    assert _label("+de") == "+de"
    assert _label(Path("runs/setting.json")) == str(Path("runs/setting.json"))
