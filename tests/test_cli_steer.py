"""generate, evaluate forcing/fallback and calibrate from the command line, on a tiny model in a folder."""

import json

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

from langneurons.cli.main import main
from langneurons.steering.calibration import Calibration


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("steer")
    make_tiny("llama").save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    (root / "texts").mkdir()
    for lang in ("en", "de", "ru"):
        (root / "texts" / f"{lang}.txt").write_text("\n\n".join(SAMPLE[lang] * 10), "utf-8")
    model = ["--model", str(root / "model")]
    assert main(["collect", *model, "--corpus", str(root / "texts"), "--max-tokens", "100", "--window", "16",
                 "--quiet", "-o", str(root / "stats.safetensors")]) == 0
    assert main(["identify", str(root / "stats.safetensors"), "--top-rate", "0.2", "--filter-rate", "0.5",
                 "--bar-rate", "0.5", "-o", str(root / "neurons.safetensors")]) == 0
    return root, [*model, "--neurons", str(root / "neurons.safetensors"), "--stats", str(root / "stats.safetensors")]


def test_generate_side_by_side(files, capsys):
    root, common = files
    out = root / "gen.jsonl"
    assert main(["generate", *common, "--steer", "-en +2*ru", "--prompt", "Q: Why?\nA:", "--questions", "de",
                 "--max-new-tokens", "5", "--quiet", "--threads", "1", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 9 and rows[0]["steering"] == "-en +2*ru [add]" and rows[0]["prompt_format"] == "plain"
    assert torch.get_num_threads() == 1
    assert "baseline [" in capsys.readouterr().out
    assert main(["generate", *common, "--steer", "+ru", "--prompt", "x", "--prompt-format", "chat"]) == 2
    assert "no chat template" in capsys.readouterr().err


def test_generate_at_a_neuron_share_needs_only_statistics(files, capsys):
    """--top-rate edits LAPE's neurons at that share, computed from --stats: no neuron set file."""
    root, common = files
    model, stats = common[:2], ["--stats", str(root / "stats.safetensors")]
    out = root / "gen_share.jsonl"
    assert main(["generate", *model, *stats, "--steer", "-en +2*ru", "--top-rate", "0.2", "--prompt", "Q: Why?\nA:",
                 "--max-new-tokens", "5", "--quiet", "-o", str(out)]) == 0
    assert json.loads(out.read_text().splitlines()[0])["steering"] == "-en +2*ru [add, top 0.2]"
    capsys.readouterr()
    assert main(["generate", *model, "--steer", "+ru", "--top-rate", "0.2", "--prompt", "x"]) == 2
    assert "give --stats" in capsys.readouterr().err


def test_evaluate_forcing_sweep_and_fallback(files, capsys):
    root, common = files
    assert main(["evaluate", "forcing", *common, "--sources", "en,de", "--targets", "ru", "--sweep", "add:1,2 replace",
                 "--max-new-tokens", "4", "--identifier", "script", "--quiet", "--output-dir", str(root / "f")]) == 0
    saved = json.loads((root / "f" / "forcing.json").read_text())
    assert saved["settings"]["labels"] == ["-src 1x add", "-src 2x add", "-src replace", "baseline"]
    assert (root / "f" / "forcing_samples.jsonl").exists() and (root / "f" / "forcing_0.png").exists()
    assert main(["evaluate", "fallback", *common[:4], "--language", "de", "--max-new-tokens", "4",
                 "--quiet", "--output-dir", str(root / "b")]) == 0
    assert json.loads((root / "b" / "fallback.json").read_text())["steps"][0]["deactivated"] == []
    assert main(["evaluate", "--list"]) == 0
    assert "forcing" in capsys.readouterr().out


def test_calibrate_then_steer_with_it(files, capsys):
    root, common = files
    cal_path = root / "cal.json"
    assert main(["calibrate", *common[:2], "--stats", str(root / "stats.safetensors"), "--targets", "ru,de",
                 "--max-new-tokens", "3", "--identifier", "script", "--quiet", "-o", str(cal_path)]) == 0
    cal = Calibration.load(cal_path)
    # the script identifier cannot name German ("und-Latn"), so nothing works for de: a warning and no setting
    assert set(cal.settings) == {"ru"} and len(cal.scores["ru"]) == 6 and set(cal.meta["failed"]) == {"de"}
    assert "no setting is stored for 'de'" in capsys.readouterr().err
    assert main(["evaluate", "forcing", *common, "--sources", "en", "--targets", "ru", "--calibrated",
                 str(cal_path), "--max-new-tokens", "3", "--identifier", "script", "--quiet",
                 "--output-dir", str(root / "fc")]) == 0
    plan = json.loads((root / "fc" / "forcing.json").read_text())["settings"]["plan"]["calibrated"]
    assert plan["ru"]["method"] == cal.settings["ru"].method
    assert main(["generate", *common, "--steer", "-en +ru", "--calibrated", str(cal_path), "--prompt", "Q: x\nA:",
                 "--max-new-tokens", "3", "--quiet"]) == 0


def test_errors(files, capsys):
    root, common = files
    assert main(["generate", *common, "--prompt", "x"]) == 2
    assert "--steer" in capsys.readouterr().err
    assert main(["generate", *common, "--steer", "+xx", "--prompt", "x"]) == 2
    assert "--steer names 'xx', which has no neurons" in capsys.readouterr().err
    assert main(["evaluate", "forcing", *common, "--sources", "en", "--targets", "ru", "--calibrated",
                 str(root / "missing.json")]) == 2
    assert "run `langneurons calibrate` first" in capsys.readouterr().err


def test_calibrate_and_forcing_on_a_questions_file(files, capsys):
    root, common = files
    qfile = root / "questions.jsonl"
    rows = [{"lang": lang, "question": f"{text} {i}", **({"split": "dev"} if i % 2 else {})}
            for lang in ("en", "de", "ru") for i, text in enumerate(SAMPLE[lang] * 3)]
    qfile.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    cal_path = root / "cal_q.json"
    assert main(["calibrate", *common[:2], "--stats", str(root / "stats.safetensors"), "--targets", "ru",
                 "--questions-file", str(qfile), "--max-new-tokens", "2", "--identifier", "script", "--quiet",
                 "-o", str(cal_path)]) == 0
    meta = Calibration.load(cal_path).meta
    # two off-diagonal sources (en, de): 6 questions each in the first round, so one prompt is 1/12 of a score
    assert meta["questions"] == "user" and meta["first_round_questions_per_source"] == 6
    assert main(["evaluate", "forcing", *common, "--sources", "en", "--targets", "ru", "--questions-file", str(qfile),
                 "--split", "dev", "--max-new-tokens", "2", "--identifier", "script", "--quiet",
                 "--output-dir", str(root / "fq")]) == 0
    samples = [json.loads(line) for line in (root / "fq" / "forcing_samples.jsonl").read_text().splitlines()]
    dev_en = [r["question"] for r in rows if r["lang"] == "en" and r.get("split") == "dev"]
    assert sorted({s["prompt"] for s in samples}) == sorted(f"Q: {q}\nA:" for q in dev_en)
    only_dev = root / "questions_dev.jsonl"  # no eval questions: the eval split is empty
    only_dev.write_text("".join(json.dumps({**r, "split": "dev"}, ensure_ascii=False) + "\n" for r in rows), "utf-8")
    capsys.readouterr()
    assert main(["evaluate", "forcing", *common, "--sources", "en", "--targets", "ru", "--questions-file",
                 str(only_dev), "--split", "eval", "--quiet", "--output-dir", str(root / "fq_empty")]) == 2
    assert "no questions for 'en' in this split (eval)" in capsys.readouterr().err
