"""Translation task: metrics against sacrebleu's own calls, UDHR alignment, the file loader, a tiny-model run."""

import json
from pathlib import Path

import pytest
import sacrebleu
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

import langneurons as ln
from langneurons.cli.main import main
from langneurons.core.errors import LangNeuronsError
from langneurons.data.parallel import (
    DEFAULT_TEMPLATE,
    FLORES,
    ParallelData,
    language_name,
    load_parallel,
    local_parallel,
    parse_pairs,
    translation_prompt,
    udhr_parallel,
)
from langneurons.data.udhr import udhr_articles
from langneurons.steering.config import ForcingSetting
from langneurons.steering.edits import steer
from langneurons.steering.generation import Decoding, generate
from langneurons.tasks import translation
from langneurons.tasks.metrics import bleu, bleu_tokenizer, chrf, translation_scores
from langneurons.tasks.translation import STOP, run_translation

FIXTURES = Path(__file__).parent / "fixtures" / "translation"
UDHR = FIXTURES / "udhr"
PARALLEL = FIXTURES / "parallel.jsonl"

HYPS = ["The cat sat on the mat.", "A dog barks loudly at night", "", "Freedom for all people"]
REFS = ["The cat is sitting on the mat.", "The dog barks loudly at night.", "Nothing here.", "Freedom for all people"]
ZH_HYPS = ["人人生而自由,在尊严上一律平等。", "他们赋有理性。"]
ZH_REFS = ["人人生而自由,在尊严和权利上一律平等。", "他们赋有理性和良心。"]
JA_HYPS = ["すべての人間は生まれながらにして自由です。", "犬が寝ている"]
JA_REFS = ["すべての人間は、生まれながらにして自由である。", "犬は寝ています。"]


# ----------------------------------------------------------------------------------------------------------
# Metrics


def test_chrf_and_bleu_equal_sacrebleus_own_calls():
    for hyps, refs, lang, tok in ((HYPS, REFS, "en", "13a"), (ZH_HYPS, ZH_REFS, "zh", "zh"),
                                  (JA_HYPS, JA_REFS, "ja", "char")):
        assert chrf(hyps, refs).score == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=1e-9)
        expected = sacrebleu.corpus_bleu(hyps, [refs], tokenize=tok).score
        assert bleu(hyps, refs, lang).score == pytest.approx(expected, abs=1e-9)
        scores = translation_scores(hyps, refs, lang)
        assert f"tok:{tok}|" in scores["bleu"].signature and scores["bleu"].signature.startswith("nrefs:1|")
        assert "nc:6|nw:0|space:no" in scores["chrf"].signature
    # the tokenizer matters: Chinese with 13a sees one "word" per sentence
    assert bleu(ZH_HYPS, ZH_REFS, "zh").score != pytest.approx(bleu(ZH_HYPS, ZH_REFS, tokenize="13a").score)
    assert chrf(REFS, REFS).score == pytest.approx(100) and bleu(REFS, REFS).score == pytest.approx(100)


def test_bleu_tokenizer_per_language():
    assert [bleu_tokenizer(c) for c in ("zh", "zh-Hant", "cmn_Hans", "yue", "ZH")] == ["zh"] * 5
    assert [bleu_tokenizer(c) for c in ("ja", "ko", "th", "jpn_Jpan", "kor_Hang", "ja-JP", "my")] == ["char"] * 7
    assert [bleu_tokenizer(c) for c in ("en", "de", "ru", "ar", "hi", "deu_Latn", "sr-Cyrl")] == ["13a"] * 7
    with pytest.raises(LangNeuronsError, match="empty"):
        bleu_tokenizer("")


def test_metric_errors():
    with pytest.raises(LangNeuronsError, match="2 hypotheses but 1 references"):
        chrf(["a", "b"], ["a"])
    with pytest.raises(LangNeuronsError, match="not a string"):
        bleu("abc", "abc")
    with pytest.raises(LangNeuronsError, match="no segments"):
        chrf([], [])
    with pytest.raises(LangNeuronsError, match="tokenizer 'nope' is not usable"):
        bleu(["a"], ["a"], tokenize="nope")


# ----------------------------------------------------------------------------------------------------------
# Data


def test_udhr_articles_aligned_by_number_in_fixture():
    articles = udhr_articles(["en", "de", "ru"], UDHR)
    assert sorted(articles["en"]) == sorted(articles["de"]) == list(range(1, 13))
    assert sorted(articles["ru"]) == list(range(1, 12))  # Russian lacks article 12; the preamble is never one
    assert articles["de"][7] == "Jeder hat das Recht Nummer 7."
    assert articles["en"][5] == "Everyone has right number 5.\nEveryone has right number 5b."
    # the same texts as the documents of udhr(): preamble first, then the articles in order
    docs = list(ln.udhr(["en"], UDHR).documents("en", "all"))
    assert docs[1:] == [articles["en"][k] for k in range(1, 13)]


def test_udhr_parallel_paragraphs_and_splits():
    data = udhr_parallel(["en", "de", "ru"], "all", UDHR)
    assert data.examples == ["1"]
    assert data.ids == ["2", "3", "4", "5.1", "5.2", "6", "7", "8", "9", "10", "11"]  # 12: missing in Russian
    assert data.texts["de"]["5.2"] == "Jeder hat das Recht Nummer 5b."
    assert data.texts["en"]["11"] == "Everyone has right number 11. Everyone has right number 11b."  # kept whole
    assert data.texts["ru"]["11"] == "Каждый имеет право номер 11."
    assert data.description["heldout_articles"] == [9]  # document 9 (the preamble is document 0)
    assert udhr_parallel(["en", "ru"], "heldout", UDHR).ids == ["9"]
    train = udhr_parallel(["en", "ru"], "train", UDHR).ids
    assert train == ["2", "3", "4", "5.1", "5.2", "6", "7", "8", "10", "11"]
    assert data.segments("en", "ru", 2) == [("2", "Everyone has right number 2.", "Каждый имеет право номер 2."),
                                           ("3", "Everyone has right number 3.", "Каждый имеет право номер 3.")]
    with pytest.raises(LangNeuronsError, match="use all, train or heldout"):
        udhr_parallel(["en"], "dev", UDHR)


def test_embedded_udhr_alignment():
    langs = ["en", "de", "fr", "ru", "zh", "ar"]
    try:
        articles = udhr_articles(langs)
    except LangNeuronsError as e:
        pytest.skip(f"embedded UDHR not available: {e}")
    for lang in langs:
        assert sorted(articles[lang]) == list(range(1, 31))
        assert [a.count("\n") for _, a in sorted(articles[lang].items())] == \
               [a.count("\n") for _, a in sorted(articles["en"].items())]
    data = udhr_parallel(langs)
    assert data.description["heldout_articles"] == [9, 19, 29]
    assert len(data.ids) == 49 and data.ids[:3] == ["2.1", "2.2", "3"]
    assert all(i in data.texts[lang] for lang in langs for i in data.ids)


def test_local_parallel_file_and_folder(tmp_path):
    data = local_parallel(PARALLEL)
    assert data.examples == ["s0"] and data.ids == ["s1", "2", "s3", "s4", "s5"]
    assert data.segments("en", "ru") == [("s1", "The dog sleeps.", "Собака спит."),
                                         ("2", "The cat eats.", "Кошка ест."), ("s3", "Water is good.", "Вода хороша."),
                                         ("s5", "The sun is hot.", "Солнце горячее.")]  # s4 has no Russian
    assert data.example_pairs("en", "de", 1) == [("All people are free.", "Alle Menschen sind frei.")]
    with pytest.raises(LangNeuronsError, match="use shots <= 1"):
        data.example_pairs("en", "de", 2)
    with pytest.raises(LangNeuronsError, match="no language 'fr'"):
        data.segments("en", "fr")
    folder = tmp_path / "folder"
    folder.mkdir()
    lines = PARALLEL.read_text("utf-8").splitlines()
    (folder / "a.jsonl").write_text("\n".join(lines[:6]) + "\n", "utf-8")
    (folder / "b.jsonl").write_text("\n".join(lines[6:]) + "\n", "utf-8")
    assert local_parallel(folder).texts == data.texts
    assert load_parallel(str(PARALLEL), ["en"]).ids == data.ids


@pytest.mark.parametrize(("text", "message"), [
    ('{"id": "1", "lang": "en"}', "write"), ('{"id": true, "lang": "en", "text": "x"}', "write"),
    ("not json", "not valid JSON"),
    ('{"id": 1, "lang": "en", "text": "a"}\n{"id": "1", "lang": "en", "text": "b"}', "appears twice"),
    ('{"id": 1, "lang": "en", "text": "a"}', "fewer than two ids"),
])
def test_local_parallel_errors(tmp_path, text, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(text + "\n", "utf-8")
    with pytest.raises(LangNeuronsError, match=message):
        local_parallel(path)


def test_load_parallel_errors(tmp_path):
    with pytest.raises(LangNeuronsError, match="no such file or folder"):
        load_parallel(tmp_path / "missing.jsonl", ["en"])
    with pytest.raises(LangNeuronsError, match=r"no \.jsonl files"):
        load_parallel(tmp_path, ["en"])
    with pytest.raises(LangNeuronsError, match="--split applies to udhr and flores only"):
        load_parallel(PARALLEL, ["en"], split="heldout")


def test_flores_loader_reads_configs_aligned_by_id(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load(name, config, split, **kwargs):
        calls.append((name, config, split))
        rows = {"eng_Latn": ["One.", "Two.", "Three."], "cmn_Hans": ["一。", "二。", "三。"]}[config]
        return [{"id": i + 1, "text": t, "iso_639_3": config[:3], "iso_15924": config[4:]} for i, t in enumerate(rows)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    data = load_parallel("flores", ["en", "zh"])
    assert calls == [(FLORES, "eng_Latn", "devtest"), (FLORES, "cmn_Hans", "devtest")]
    assert data.examples == ["1"] and data.segments("en", "zh") == [("2", "Two.", "二。"), ("3", "Three.", "三。")]
    with pytest.raises(LangNeuronsError, match="no FLORES"):
        load_parallel("flores", ["xx"])

    def offline(*args, **kwargs):
        raise ConnectionError("no connection")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(LangNeuronsError, match=r"could not load .*'deu_Latn'.*no connection; it is gated"):
        load_parallel("flores", ["deu_Latn"], split="dev")


def test_prompt_template_names_and_shots():
    prompt = translation_prompt(DEFAULT_TEMPLATE, "The dog sleeps.", "en", "de", [("Hello.", "Hallo.")])
    assert prompt == ("Translate from English to German.\nEnglish: Hello.\nGerman: Hallo.\n\n"
                      "Translate from English to German.\nEnglish: The dog sleeps.\nGerman:")
    assert translation_prompt("{src}>{tgt} {source} =", "x", "en", "xx", names={"xx": "Xish"}) == "en>xx x ="
    assert language_name("cmn_Hans") == "Chinese" and language_name("de", {"de": "Deutsch"}) == "Deutsch"
    with pytest.raises(LangNeuronsError, match="no language name known for 'xx'"):
        translation_prompt(DEFAULT_TEMPLATE, "x", "en", "xx")
    with pytest.raises(LangNeuronsError, match="use the fields"):
        translation_prompt("{lang}: {source}", "x", "en", "de")
    with pytest.raises(LangNeuronsError, match=r"has no \{source\} field"):
        translation_prompt("{src_name} to {tgt_name}:", "x", "en", "de")
    assert parse_pairs("en-de, en-zh") == [("en", "de"), ("en", "zh")]
    with pytest.raises(LangNeuronsError, match="write source-target"):
        parse_pairs("en-zh-Hant")


# ----------------------------------------------------------------------------------------------------------
# A run on a tiny model


@pytest.fixture(scope="module")
def setup():
    model, tok = make_tiny("llama", dtype=torch.float64), tiny_tokenizer()
    langs = ["en", "de", "ru"]
    stats = ln.collect_stats(model, tok, ln.from_texts({k: SAMPLE[k] * 8 for k in langs}, 0), max_tokens=100,
                             window=16, progress=False)
    return model, tok, stats, ln.lape(stats, top_rate=0.2, filter_rate=0.5, bar_rate=0.5)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_run_outputs_scores_and_resume(setup, tmp_path, monkeypatch):
    model, tok, stats, neurons = setup
    setting = ForcingSetting("add", 2.0, deactivate_source=False)
    kwargs = {"data": PARALLEL, "output_dir": tmp_path, "n": 3, "steering": setting,
              "decoding": Decoding(max_new_tokens=6, batch_size=4), "progress": False}
    result = run_translation(model, tok, neurons, stats, [("en", "de"), ("en", "ru")], **kwargs)
    rows = _rows(result.files["samples"])
    assert len(rows) == 2 * 2 * 3 and result.summary["generated"]["rows"] == 12
    assert {r["id"] for r in rows if r["pair"] == "en-ru"} == {"s1", "2", "s3"}
    assert all(path.exists() for path in result.files.values()) and result.files["png"].suffix == ".png"
    # every output equals generating its prompt alone, unsteered or inside steer(...) with the same settings
    for row in (next(r for r in rows if r["pair"] == "en-ru" and r["setting"] == s) for s in ("baseline", "steered")):
        prompt = translation_prompt(DEFAULT_TEMPLATE, row["source"], "en", "ru")
        assert row["max_new_tokens"] == 6  # min(cap 6, ...)
        if row["setting"] == "steered":
            assert row["steering"] == "+2*ru [add]"
            with steer(model, neurons, stats, "+2*ru"):
                alone = generate(model, tok, [prompt], max_new_tokens=6, stop_strings=STOP)
        else:
            alone = generate(model, tok, [prompt], max_new_tokens=6, stop_strings=STOP)
        assert row["output"] == alone[0]
    # the summary is recomputed from the JSONL with sacrebleu and plain counts
    saved = json.loads(result.files["summary"].read_text("utf-8"))
    assert saved["kind"] == "results" and saved["task"] == "translation" and saved["settings"]["pairs"] == [
        "en-de", "en-ru"]
    for pair, tokenize in (("en-de", "13a"), ("en-ru", "13a")):
        cell = saved["summary"]["pairs"][pair]
        for label in ("baseline", "steered"):
            mine = [r for r in rows if r["pair"] == pair and r["setting"] == label]
            hyps, refs = [r["output"] for r in mine], [r["reference"] for r in mine]
            assert cell[label]["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score, abs=0.006)
            assert cell[label]["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs], tokenize=tokenize).score,
                                                        abs=0.006)
            target = pair[-2:]
            assert cell[label]["target_share"] == pytest.approx(
                sum(bool(r["output"]) and r["identified"] == target for r in mine) / 3, abs=1e-4)
        assert cell["delta"]["chrf"] == pytest.approx(cell["steered"]["chrf"] - cell["baseline"]["chrf"], abs=1e-9)
        assert cell["delta"]["bleu"] == pytest.approx(cell["steered"]["bleu"] - cell["baseline"]["bleu"], abs=1e-9)
        assert cell["signatures"]["bleu"].startswith("nrefs:1|") and "tok:13a" in cell["signatures"]["bleu"]
    # resume: a rerun generates nothing; a lost row is generated again, and only that one
    prompts: list[str] = []
    real = translation.generate
    monkeypatch.setattr(translation, "generate", lambda m, t, p, *a, **kw: prompts.extend(p) or real(m, t, p, *a, **kw))
    again = run_translation(model, tok, neurons, stats, [("en", "de"), ("en", "ru")], **kwargs)
    assert prompts == [] and again.summary["pairs"] == result.summary["pairs"]
    assert again.summary["generated"]["reused"] == 12
    lines = result.files["samples"].read_text("utf-8").splitlines()
    result.files["samples"].write_text("\n".join(lines[:-1]) + "\n", "utf-8")
    third = run_translation(model, tok, neurons, stats, [("en", "de"), ("en", "ru")], **kwargs)
    assert len(prompts) == 1 and third.summary["pairs"] == result.summary["pairs"]
    # other settings are refused unless fresh
    with pytest.raises(LangNeuronsError, match="other settings"):
        run_translation(model, tok, neurons, stats, [("en", "de")], **{**kwargs, "shots": 1})
    prompts.clear()
    run_translation(model, tok, neurons, stats, [("en", "de")], **{**kwargs, "shots": 1, "fresh": True})
    assert len(prompts) == 6 and prompts[0].startswith("Translate from English to German.\nEnglish: All people")


def test_deactivate_source_calibrated_plan_and_baseline_only(setup, tmp_path):
    model, tok, stats, neurons = setup
    data = ParallelData({"en": {"a": "The dog.", "b": "The cat."}, "ru": {"a": "Собака.", "b": "Кошка."}},
                        ["b"], ["a"], {"source": "test"})
    plan = {"ru": ForcingSetting("replace", top_rate=0.3, deactivate_source=True)}
    result = run_translation(model, tok, neurons, stats, [("en", "ru")], data=data, output_dir=tmp_path / "a",
                             steering=plan, decoding=Decoding(max_new_tokens=5), plot=False, progress=False)
    steered = next(s for s in result.samples if s["setting"] == "steered")
    other = ln.lape(stats, top_rate=0.3)
    terms = "-en +1*ru" if "en" in other.languages and other.count("en") else "+1*ru"
    expected = f"{terms} [replace, top 0.3]"
    assert steered["steering"] == expected and "png" not in result.files
    with steer(model, other, stats, expected.split(" [")[0].replace("1*", ""), method="replace"):
        alone = generate(model, tok, [translation_prompt(DEFAULT_TEMPLATE, "The cat.", "en", "ru")],
                         max_new_tokens=5, stop_strings=STOP)
    assert steered["output"] == alone[0]
    base = run_translation(model, tok, None, None, [("en", "ru")], data=data, output_dir=tmp_path / "b",
                           steering=None, decoding=Decoding(max_new_tokens=5), progress=False)
    assert [s["setting"] for s in base.samples] == ["baseline"] and "delta" not in base.summary["pairs"]["en-ru"]
    assert base.samples[0]["output"] == next(s for s in result.samples if s["setting"] == "baseline")["output"]
    with pytest.raises(LangNeuronsError, match="no steering setting for target"):
        run_translation(model, tok, neurons, stats, [("en", "ru")], data=data, output_dir=tmp_path / "c",
                        steering={"de": plan["ru"]})
    with pytest.raises(LangNeuronsError, match="needs a neuron set"):
        run_translation(model, tok, None, stats, [("en", "ru")], data=data, output_dir=tmp_path / "d")
    with pytest.raises(LangNeuronsError, match="two different languages"):
        run_translation(model, tok, neurons, stats, [("en", "en")], data=data, output_dir=tmp_path / "e")


# ----------------------------------------------------------------------------------------------------------
# Command line


def test_cli_translation(setup, tmp_path, capsys):
    model, tok, stats, neurons = setup
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    stats.save(tmp_path / "stats.safetensors")
    neurons.save(tmp_path / "neurons.safetensors")
    common = ["--model", str(tmp_path / "model"), "--neurons", str(tmp_path / "neurons.safetensors"),
              "--stats", str(tmp_path / "stats.safetensors")]
    out = tmp_path / "out"
    assert main(["evaluate", "translation", *common, "--source", "en", "--targets", "de,ru", "--data", str(PARALLEL),
                 "--n", "2", "--max-new-tokens", "4", "--alpha", "2", "--mode", "deactivate-source", "--quiet",
                 "--output-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "baseline chrF" in printed and "delta chrF" in printed and "nrefs:1|case:mixed|eff:no|tok:13a" in printed
    saved = json.loads((out / "translation.json").read_text("utf-8"))
    assert saved["settings"]["steering"]["ru"]["deactivate_source"] is True
    assert saved["settings"]["generation"]["max_new_tokens"] == 4 and len(saved["summary"]["ids"]["en-ru"]) == 2
    assert (out / "translation.png").exists()
    assert main(["evaluate", "translation", *common, "--pairs", "en-de", "--source", "en"]) == 2
    assert main(["evaluate", "translation", *common, "--pairs", "en-de", "--data", str(PARALLEL),
                 "--split", "heldout"]) == 2
    assert "--split applies to udhr and flores only" in capsys.readouterr().err
    assert main(["evaluate", "--list"]) == 0 and "translation" in capsys.readouterr().out


def test_local_parallel_keeps_a_line_separator_inside_a_text(tmp_path):
    """A raw U+2028 inside a JSON string (as json.dumps(ensure_ascii=False) writes it) is not a line end."""
    rows = [{"id": "1", "lang": "en", "text": "one\u2028two"}, {"id": "1", "lang": "de", "text": "eins"},
            {"id": "2", "lang": "en", "text": "three"}, {"id": "2", "lang": "de", "text": "drei"}]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    data = local_parallel(path)
    assert data.texts["en"]["1"] == "one two" and data.texts["de"]["2"] == "drei"
