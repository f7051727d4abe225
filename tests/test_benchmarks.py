"""Belebele, XNLI, XQuAD: option log-likelihoods against a hand loop, forced multiple choice, SQuAD EM/F1 by hand,
loaders on fixture files, the shared baseline/steered loop (files, resumption), errors and the CLI."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tiny import make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.errors import LangNeuronsError
from langneurons.generation import generate
from langneurons.scoring import multiple_choice, option_logprobs, split_template
from langneurons.stats import ActivationStats
from langneurons.steering import steer
from langneurons.tasks.belebele import run_belebele
from langneurons.tasks.benchmark_data import BENCHMARKS, SteerOptions, load_items
from langneurons.tasks.xnli import run_xnli
from langneurons.tasks.xquad import answer_tokens, exact_match, run_xquad, token_f1

FIX = Path(__file__).parent / "fixtures" / "benchmarks"
LANGS = ["en", "de", "fr"]


# ----------------------------------------------------------------------------------------------------------
# independent reference: one sequence at a time, full vocabulary, no padding


def hand_logprob(model, tok, context: str, option: str) -> tuple[float, int]:
    """Sum of log p(option tokens | context) and the option's token count, one unpadded sequence at a time."""
    stripped = context.rstrip()
    option = context[len(stripped):] + option
    ctx = tok(stripped).input_ids
    joint = tok(stripped + option).input_ids
    assert joint[: len(ctx)] == ctx  # the test texts split cleanly at the boundary
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([joint])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    total = sum(float(logp[pos - 1, joint[pos]]) for pos in range(len(ctx), len(joint)))
    return total, len(joint) - len(ctx)


def hand_choice(model, tok, context: str, options: list[str]) -> int:
    scores = [hand_logprob(model, tok, context, o)[0] / len(context[len(context.rstrip()):] + o) for o in options]
    return max(range(len(scores)), key=lambda j: (scores[j], -j))


@pytest.fixture(scope="module")
def tiny():
    model = make_tiny("llama", dtype=torch.float64)
    layers, width = 2, 48
    g = torch.Generator().manual_seed(3)
    masks = torch.rand(len(LANGS), layers, width, generator=g) < 0.25
    neurons = ln.NeuronSet(LANGS, masks, {"method": "hand-made"})
    over = torch.randint(0, 100, (len(LANGS), layers, width), generator=g)
    sums = torch.randn(len(LANGS), layers, width, generator=g, dtype=torch.float64) * 40
    stats = ActivationStats(LANGS, torch.full((len(LANGS),), 100), over, sums, None, {})
    return model, tiny_tokenizer(), neurons, stats


LONG = "All human beings are born free and equal in dignity and rights. Question: who is free? Answer: "
PAIRS = [("The quick brown fox", " jumps over the lazy dog."), ("Der Hund", " schläft."), (LONG, "All human beings"),
         ("Le chat", " dort."), ("人人生而自由，", "在尊严和权利上一律平等。"), ("Der Hund", " spielt im Park."),
         ("Собака", " спит."), (LONG, "Nobody"), ("Le chat", "!"), (LONG, "The quick brown fox jumps over the dog")]


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_option_logprobs_match_a_hand_loop(family):
    # contexts of very different lengths (padding), several options per context (a shared cache), one-token
    # options, and contexts longer than gemma3's tiny sliding window (16)
    model, tok = make_tiny(family, dtype=torch.float64), tiny_tokenizer()
    contexts, options = zip(*PAIRS)
    hand = [hand_logprob(model, tok, c, o) for c, o in PAIRS]
    assert min(h[1] for h in hand) == 1 and len(tok(LONG).input_ids) > 16
    got = option_logprobs(model, tok, contexts, options, batch_size=4)
    assert got == pytest.approx([h[0] for h in hand], abs=1e-8)
    per_token = option_logprobs(model, tok, contexts, options, batch_size=100, normalize="token")
    assert per_token == pytest.approx([t / n for t, n in hand], abs=1e-8)
    per_char = option_logprobs(model, tok, contexts, options, batch_size=1, normalize="char")
    chars = [len(c[len(c.rstrip()):] + o) for c, o in PAIRS]
    assert per_char == pytest.approx([t / k for (t, _), k in zip(hand, chars)], abs=1e-8)
    assert all(h[0] < 0 for h in hand)


class Planted(torch.nn.Module):
    """A 'model' whose next-token logits are the same everywhere: `favoured` tokens get +12."""

    def __init__(self, vocab: int, favoured: list[int]):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 4)
        self.bias = torch.zeros(vocab)
        self.bias[favoured] = 12.0
        self.langneurons_id = "planted"

    def get_input_embeddings(self):
        return self.emb

    def forward(self, input_ids, logits_to_keep=0, **_):
        logits = self.bias.expand(*input_ids.shape, -1)
        cache = SimpleNamespace(batch_select_indices=lambda indices: None)  # no state: nothing to copy
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits,
                               past_key_values=cache)


def test_multiple_choice_is_forced_by_planted_logits(tmp_path):
    tok = tiny_tokenizer()
    x = tok(" xxxx", add_special_tokens=False).input_ids
    others = {t for c in "qzk" for t in tok(f" {c * 4}", add_special_tokens=False).input_ids}
    favoured = sorted(set(x) - others)
    assert favoured  # "x" has tokens that no other option has
    model = Planted(len(tok), favoured)
    # the "xxxx" option is the right one in items 0-2, a wrong one in item 3: accuracy 3/4 by construction
    where, answers = [0, 2, 3, 1], [1, 3, 4, 1]
    rows = []
    for i, (pos, ans) in enumerate(zip(where, answers)):
        opts = ["qqqq", "zzzz", "kkkk"]
        opts.insert(pos, "xxxx")
        rows.append({"flores_passage": f"Passage number {i}.", "question": "Which one?",
                     **{f"mc_answer{k + 1}": o for k, o in enumerate(opts)}, "correct_answer_num": ans})
    (tmp_path / "en.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), "utf-8")
    for normalize in ("sum", "token", "char"):
        result = run_belebele(model, tok, None, None, ["en"], data=tmp_path, normalize=normalize,
                              output_dir=tmp_path / normalize, batch_size=3, progress=False)
        assert result.scores["en"]["baseline"] == {"accuracy": 0.75, "n": 4}
        samples = [json.loads(line) for line in (tmp_path / normalize / "belebele_samples.jsonl").open()]
        assert [s["prediction"] for s in samples] == where
        assert result.activated == [] and "heatmap" not in result.files


def test_multiple_choice_agrees_with_the_hand_loop(tiny):
    model, tok, _, _ = tiny
    items = load_items("belebele", "en", FIX / "belebele")
    contexts, options = [], []
    for it in items:
        fields = {"passage": it["passage"], "question": it["question"]}
        pairs = [split_template("{passage}\nQ: {question}\nA: {label}", fields, o) for o in it["options"]]
        contexts.append(pairs[0][0])
        options.append([o for _, o in pairs])
    got = multiple_choice(model, tok, contexts, options, batch_size=5, normalize="char")
    assert [g[0] for g in got] == [hand_choice(model, tok, c, o) for c, o in zip(contexts, options)]
    assert all(len(g[1]) == 4 for g in got)


def test_split_template():
    ctx, opt = split_template("{premise}, right? {label}, {hypothesis}", {"premise": "P.", "hypothesis": "H."}, "Yes")
    assert (ctx, opt) == ("P., right? ", "Yes, H.")
    with pytest.raises(LangNeuronsError, match="no \\{label\\}"):
        split_template("{premise}", {"premise": "P"}, "Yes")
    with pytest.raises(LangNeuronsError, match="placeholder \\{nope\\} is unknown"):
        split_template("{nope} {label}", {"premise": "P"}, "Yes")


# ----------------------------------------------------------------------------------------------------------
# SQuAD exact match and token F1, by hand


def test_exact_match_and_f1_by_hand():
    assert exact_match("The Eiffel Tower!", ["eiffel tower"], "en") == 1.0  # case, punctuation, article
    assert exact_match("Eiffel", ["eiffel tower"], "en") == 0.0
    assert token_f1("in Paris France", ["Paris"], "en") == pytest.approx(0.5)  # P 1/3, R 1
    assert token_f1("a a b", ["a b b"], "de") == pytest.approx(2 / 3)  # multiset overlap 2, not set overlap
    assert token_f1("Paris", ["London", "Paris city"], "en") == pytest.approx(2 / 3)  # best gold: P 1, R 1/2
    assert token_f1("Berlin", ["Paris"], "en") == 0.0
    assert answer_tokens("the cat", "de") == ["the", "cat"] and answer_tokens("the cat", "en") == ["cat"]
    assert exact_match("", ["the"], "en") == 1.0 and token_f1("", ["cat"], "en") == 0.0


def test_chinese_is_scored_by_characters():
    assert answer_tokens("北京大学", "zh") == ["北", "京", "大", "学"]
    assert token_f1("北京大学", ["北京"], "zh") == pytest.approx(2 / 3)  # P 2/4, R 2/2
    assert exact_match("北京。", ["北京"], "zh") == 1.0  # full-width punctuation dropped
    assert answer_tokens("1911年", "zh") == ["1911", "年"]
    assert token_f1("约6400公里", ["6400公里"], "zh") == pytest.approx(2 * (3 / 4) / (3 / 4 + 1))  # P 3/4, R 1
    assert answer_tokens("สวัสดี", "th") == list("สวัสดี")


# ----------------------------------------------------------------------------------------------------------
# loaders


def test_loaders_on_fixture_files(tmp_path):
    items = load_items("belebele", "de", FIX / "belebele")
    assert len(items) == 6 and items[0]["answer"] == 1 and len(items[0]["options"]) == 4
    assert items[0]["options"][1] == "Sonntags" and items[0]["source_id"] == "fixture/1#1"
    assert len(load_items("belebele", "en", FIX / "belebele", n=2)) == 2
    shutil.copy(FIX / "belebele" / "en.jsonl", tmp_path / "eng_Latn.jsonl")  # a file named by the hub config
    assert load_items("belebele", "en", tmp_path)[2]["question"] == "How long is the journey to the coast?"
    assert load_items("belebele", "en", FIX / "belebele" / "en.jsonl")[0]["answer"] == 1  # one file
    assert load_items("belebele", "en", tmp_path / "eng_Latn.jsonl")[0]["answer"] == 1
    with pytest.raises(LangNeuronsError, match=r"not named de\.jsonl"):
        load_items("belebele", "de", tmp_path / "eng_Latn.jsonl")
    mixed = load_items("xnli", "de", FIX / "xnli_mixed.jsonl")  # rows with a "language" field
    assert [m["label"] for m in mixed] == [0, 1, 2] and mixed[0]["premise"].startswith("Die Kinder")
    xq = load_items("xquad", "zh", FIX / "xquad")
    assert xq[0]["answers"] == ["约6400公里", "6400公里"] and xq[1]["source_id"] == "zh-1"
    assert BENCHMARKS["belebele"].config("en") == "eng_Latn" and BENCHMARKS["belebele"].config("zho_Hant") == "zho_Hant"
    assert BENCHMARKS["xquad"].config("zh") == "xquad.zh" and BENCHMARKS["xnli"].config("sw") == "sw"


def test_hub_loader_asks_for_the_right_config(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    rows = {"facebook/xnli": {"premise": "P", "hypothesis": "H", "label": 2},
            "facebook/belebele": json.loads((FIX / "belebele" / "en.jsonl").read_text("utf-8").splitlines()[0])}

    def fake(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([rows[name]] * 5)

    monkeypatch.setattr(datasets, "load_dataset", fake)
    assert [it["label"] for it in load_items("xnli", "de", "hub", n=3)] == [2, 2, 2]
    assert load_items("belebele", "ru", "hub", n=1, split="dev")[0]["answer"] == 1
    assert calls == [("facebook/xnli", "de", "test", True), ("facebook/belebele", "rus_Cyrl", "dev", True)]

    def broken(*args, **kwargs):
        raise ConnectionError("no route to host\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", broken)
    with pytest.raises(LangNeuronsError) as e:
        load_items("xquad", "zh", "hub")
    assert "could not load google/xquad (xquad.zh, split validation): no route to host;" in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_input_gives_one_line_errors(tmp_path, tiny):
    cases = []
    with pytest.raises(LangNeuronsError) as e:
        load_items("xnli", "xx", "hub")
    cases.append((e, "xnli has no language 'xx'"))
    with pytest.raises(LangNeuronsError) as e:
        load_items("belebele", "qq", "hub")
    cases.append((e, "or a config such as eng_Latn"))
    row = {"flores_passage": "P", "mc_answer1": "a", "mc_answer2": "b", "mc_answer3": "c", "mc_answer4": "d",
           "correct_answer_num": "1"}
    (tmp_path / "en.jsonl").write_text(json.dumps(row) + "\n", "utf-8")
    with pytest.raises(LangNeuronsError) as e:
        load_items("belebele", "en", tmp_path)
    cases.append((e, "row 1: missing field 'question'"))
    (tmp_path / "de.jsonl").write_text(json.dumps({**row, "question": "Q", "correct_answer_num": "5"}) + "\n")
    with pytest.raises(LangNeuronsError) as e:
        load_items("belebele", "de", tmp_path)
    cases.append((e, "correct_answer_num 5 is not 1, 2, 3 or 4"))
    with pytest.raises(LangNeuronsError) as e:
        load_items("belebele", "fr", tmp_path)
    cases.append((e, "no fr.jsonl or fra_Latn.jsonl"))
    with pytest.raises(LangNeuronsError) as e:
        load_items("xnli", "en", FIX / "xnli" / "de.jsonl")
    cases.append((e, "no 'language' field and the file is not named en.jsonl"))
    with pytest.raises(LangNeuronsError) as e:
        load_items("xquad", "en", tmp_path / "missing")
    cases.append((e, "no such file or folder"))
    model, tok, neurons, stats = tiny
    with pytest.raises(LangNeuronsError) as e:
        run_belebele(model, tok, neurons, stats, ["en"], data=FIX / "belebele", output_dir=tmp_path,
                     steering=SteerOptions(generated_only=True))
    cases.append((e, "generated_only has no effect"))
    with pytest.raises(LangNeuronsError) as e:
        run_xnli(model, tok, None, None, ["en"], data=FIX / "xnli", activate=["de"], output_dir=tmp_path)
    cases.append((e, "activating languages needs a neuron set"))
    with pytest.raises(LangNeuronsError) as e:
        run_xnli(model, tok, neurons, stats, ["en"], data=FIX / "xnli", activate=["ja"], output_dir=tmp_path)
    cases.append((e, "language 'ja' has no neurons"))
    with pytest.raises(LangNeuronsError) as e:
        run_belebele(model, tok, None, None, ["en"], data=FIX / "belebele", template="bogus", output_dir=tmp_path)
    cases.append((e, "unknown template 'bogus'"))
    for err, text in cases:
        message = str(err.value)
        assert text in message and "\n" not in message


# ----------------------------------------------------------------------------------------------------------
# the shared loop end to end on a tiny model


def test_belebele_end_to_end_and_resume(tiny, tmp_path):
    model, tok, neurons, stats = tiny
    out = tmp_path / "bel"
    kwargs = {"n": 4, "data": FIX / "belebele", "template": "{passage}\nQ: {question}\nA: {label}",
              "activate": ["de", "fr"], "output_dir": out, "batch_size": 5, "progress": False}
    result = run_belebele(model, tok, neurons, stats, ["en", "de"], **kwargs)
    assert set(result.files) == {"json", "samples", "heatmap"}
    assert result.files["heatmap"].stat().st_size > 0 and (out / "belebele_delta.svg").exists()
    summary = json.loads((out / "belebele.json").read_text("utf-8"))
    assert summary["kind"] == "results" and summary["task"] == "belebele"
    assert summary["settings"]["steering"]["method"] == "add" and summary["model"]["id"] == "unnamed-llama"
    samples = [json.loads(line) for line in (out / "belebele_samples.jsonl").open()]
    assert len(samples) == 2 * 3 * 4  # data languages x (baseline + 2 activated) x items
    # every cell equals an independent computation under the same steering
    for lang in ("en", "de"):
        items = load_items("belebele", lang, FIX / "belebele", n=4)
        contexts = [f"{it['passage']}\nQ: {it['question']}\nA: " for it in items]
        for activated in (None, "de", "fr"):
            if activated is None:
                expected = [hand_choice(model, tok, c, it["options"]) for c, it in zip(contexts, items)]
            else:
                with steer(model, neurons, stats, f"+{activated}"):
                    expected = [hand_choice(model, tok, c, it["options"]) for c, it in zip(contexts, items)]
            rows = sorted((s for s in samples if s["language"] == lang and s["activated"] == activated),
                          key=lambda s: s["index"])
            assert [r["prediction"] for r in rows] == expected
            acc = sum(e == it["answer"] for e, it in zip(expected, items)) / 4
            assert summary["summary"]["scores"][lang][activated or "baseline"]["accuracy"] == pytest.approx(acc)
            if activated:
                delta = summary["summary"]["delta"]["accuracy"]["table"][lang][activated]
                assert delta == pytest.approx(acc - summary["summary"]["scores"][lang]["baseline"]["accuracy"])
    steered = [s["scores"] for s in samples if s["activated"] == "de"]
    assert steered != [s["scores"] for s in samples if s["activated"] is None]  # steering changed the scores
    # resume: a rerun computes nothing; a truncated file is completed with the same rows
    calls = []
    handle = model.register_forward_hook(lambda *_: calls.append(1))
    try:
        again = run_belebele(model, tok, neurons, stats, ["en", "de"], **kwargs)
        assert calls == [] and again.scores == result.scores
        lines = (out / "belebele_samples.jsonl").read_text("utf-8").splitlines(keepends=True)
        (out / "belebele_samples.jsonl").write_text("".join(lines[:-5]) + lines[-5][:10], "utf-8")
        third = run_belebele(model, tok, neurons, stats, ["en", "de"], **kwargs)
        assert calls and third.scores == result.scores
    finally:
        handle.remove()
    assert sorted((out / "belebele_samples.jsonl").read_text("utf-8").splitlines()) == sorted(
        line.rstrip("\n") for line in lines)
    with pytest.raises(LangNeuronsError, match="other settings"):
        run_belebele(model, tok, neurons, stats, ["en"], **{**kwargs, "normalize": "sum"})


def test_xnli_right_template_matches_hand_sentences(tiny, tmp_path):
    model, tok, neurons, stats = tiny
    result = run_xnli(model, tok, neurons, stats, ["en", "de"], data=FIX / "xnli", activate=["en"],
                      normalize="sum", output_dir=tmp_path, batch_size=4, progress=False,
                      steering=SteerOptions(deactivate_source=True))
    samples = [json.loads(line) for line in (tmp_path / "xnli_samples.jsonl").open()]
    words = {"en": ("right?", ["Yes", "Also", "No"]), "de": ("richtig?", ["Ja", "Auch", "Nein"])}
    for lang, (right, labels) in words.items():
        items = load_items("xnli", lang, FIX / "xnli")
        expected = []
        for it in items:
            scores = [hand_logprob(model, tok, f"{it['premise']}, {right}", f" {w}, {it['hypothesis']}")[0]
                      for w in labels]
            expected.append(max(range(3), key=lambda j: (scores[j], -j)))
        rows = sorted((s for s in samples if s["language"] == lang and s["activated"] is None),
                      key=lambda s: s["index"])
        assert [r["prediction"] for r in rows] == expected
    assert {s["steering"] for s in samples if s["activated"] == "en"} == {"+en", "-de +en"}
    assert result.settings["labels"]["de"] == {"entailment": "Ja", "neutral": "Auch", "contradiction": "Nein"}
    assert result.delta().shape == (2, 1)


def test_xquad_end_to_end(tiny, tmp_path):
    model, tok, neurons, stats = tiny
    result = run_xquad(model, tok, neurons, stats, ["en", "zh"], data=FIX / "xquad", activate=["fr"],
                       max_new_tokens=5, output_dir=tmp_path, batch_size=2, progress=False)
    samples = [json.loads(line) for line in (tmp_path / "xquad_samples.jsonl").open()]
    items = load_items("xquad", "zh", FIX / "xquad")
    prompts = [f"{it['context']}\nQuestion: {it['question']}\nAnswer:" for it in items]
    with steer(model, neurons, stats, "+fr"):
        expected = generate(model, tok, prompts, max_new_tokens=5, stop_strings=["\n"])
    rows = sorted((s for s in samples if s["language"] == "zh" and s["activated"] == "fr"), key=lambda s: s["index"])
    assert [r["prediction"] for r in rows] == expected
    assert result.scores["zh"]["fr"]["f1"] == pytest.approx(sum(r["f1"] for r in rows) / 3, abs=1e-4)
    assert result.metrics == ("f1", "exact_match") and (tmp_path / "xquad_delta.png").exists()
    saved = json.loads((tmp_path / "xquad.json").read_text("utf-8"))
    assert saved["settings"]["generation"]["decoding"] == "greedy" and saved["settings"]["generation"]["stop_strings"]


# ----------------------------------------------------------------------------------------------------------
# command line


@pytest.fixture(scope="module")
def cli_files(tmp_path_factory, tiny):
    _, _, neurons, stats = tiny
    root = tmp_path_factory.mktemp("bench")
    make_tiny("llama").save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    neurons.save(root / "neurons.safetensors")
    stats.save(root / "stats.safetensors")
    return root, ["--model", str(root / "model"), "--neurons", str(root / "neurons.safetensors"),
                  "--stats", str(root / "stats.safetensors")]


def test_cli_smoke(cli_files, capsys):
    from langneurons.cli import main

    root, common = cli_files
    assert main(["evaluate", "belebele", *common, "--languages", "en,de", "--activate", "fr", "--data",
                 str(FIX / "belebele"), "--n", "2", "--quiet", "--output-dir", str(root / "b")]) == 0
    saved = json.loads((root / "b" / "belebele.json").read_text("utf-8"))
    assert saved["summary"]["activated"] == ["fr"] and saved["summary"]["scores"]["de"]["baseline"]["n"] == 2
    assert "baseline" in capsys.readouterr().out
    assert main(["evaluate", "xnli", *common, "--languages", "en", "--activate", "none", "--data",
                 str(FIX / "xnli"), "--template", "tfn", "--n", "3", "--quiet", "--output-dir", str(root / "x")]) == 0
    assert json.loads((root / "x" / "xnli.json").read_text("utf-8"))["summary"]["activated"] == []
    assert main(["evaluate", "xquad", *common, "--languages", "zh", "--activate", "de,en", "--data",
                 str(FIX / "xquad"), "--max-new-tokens", "3", "--quiet", "--output-dir", str(root / "q")]) == 0
    assert (root / "q" / "xquad_delta.png").exists()
    assert main(["evaluate", "--list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("belebele", "xnli", "xquad"))
    for task in ("belebele", "xnli", "xquad"):
        assert main(["evaluate", task, "--help"]) == 0
        assert "--template" in capsys.readouterr().out
    assert main(["evaluate", "xnli", *common, "--languages", "xx", "--quiet", "--output-dir", str(root / "e")]) != 0


def test_calibrated_steering_per_activated_language(tiny, tmp_path):
    from langneurons.calibrate import Calibration
    from langneurons.tasks.forcing import ForcingSetting

    model, tok, neurons, stats = tiny
    cal = Calibration({"de": ForcingSetting("replace"), "fr": ForcingSetting("add", 3.0)})
    cal.save(tmp_path / "cal.json")
    result = run_belebele(model, tok, neurons, stats, ["en"], n=3, data=FIX / "belebele", output_dir=tmp_path,
                          steering=SteerOptions(calibrated=str(tmp_path / "cal.json")), progress=False)
    assert result.activated == ["de", "fr"]  # the calibrated targets
    assert result.settings["steering"]["calibrated"]["fr"]["alpha"] == 3.0
    samples = [json.loads(line) for line in (tmp_path / "belebele_samples.jsonl").open()]
    items = load_items("belebele", "en", FIX / "belebele", n=3)
    contexts = [f"{it['passage']}\nQuestion: {it['question']}\nAnswer: " for it in items]
    for lang in ("de", "fr"):
        with steer(model, neurons, stats, f"+{lang}", calibrated=cal):
            expected = [hand_choice(model, tok, c, it["options"]) for c, it in zip(contexts, items)]
        rows = sorted((s for s in samples if s["activated"] == lang), key=lambda s: s["index"])
        assert [r["prediction"] for r in rows] == expected
