"""The command line on a tiny model saved to a folder: collect, identify, merge, info, and one-line errors."""

import json

import pytest
import torch
from tiny import SAMPLE, make_tiny, tiny_tokenizer

from langneurons.cli.main import main
from langneurons.core.errors import LangNeuronsError
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    make_tiny("llama").save_pretrained(root / "model")
    tiny_tokenizer().save_pretrained(root / "model")
    (root / "texts").mkdir()
    for lang, texts in SAMPLE.items():
        (root / "texts" / f"{lang}.txt").write_text("\n\n".join(t for _ in range(10) for t in texts), "utf-8")
    return root


def collect(workdir, out, *extra):
    return main(["collect", "--model", str(workdir / "model"), "--corpus", str(workdir / "texts"),
                 "--max-tokens", "120", "--window", "16", "--quiet", "-o", str(out), *extra])


def test_collect_identify_info_merge(workdir, tmp_path, capsys):
    assert collect(workdir, tmp_path / "a.safetensors", "--languages", "en,de,ru") == 0
    assert collect(workdir, tmp_path / "b.safetensors", "--languages", "fr,zh") == 0
    assert main(["merge", str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors"),
                 "-o", str(tmp_path / "all.safetensors")]) == 0
    merged = ActivationStats.load(tmp_path / "all.safetensors")
    assert merged.languages == ["en", "de", "ru", "fr", "zh"] and merged.n_tokens.tolist() == [120] * 5
    assert merged.meta["model"]["id"].endswith("model") and merged.meta["site"]["n_neurons"] == 48
    assert main(["identify", str(tmp_path / "all.safetensors"), "--top-rate", "0.1",
                 "--plot", str(tmp_path / "plot.png"), "-o", str(tmp_path / "n.safetensors")]) == 0
    neurons = NeuronSet.load(tmp_path / "n.safetensors")
    assert neurons.meta["method"] == "lape" and neurons.meta["settings"]["top_rate"] == 0.1
    assert neurons.masks.any(0).sum() <= round(0.1 * 2 * 48)
    assert (tmp_path / "plot.png").stat().st_size > 0 and (tmp_path / "plot.svg").exists()
    capsys.readouterr()
    assert main(["info", str(tmp_path / "n.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "neurons of" in out and "method lape" in out
    assert main(["info", "--json", str(tmp_path / "all.safetensors")]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["kind"] == "stats" and meta["n_tokens"]["zh"] == 120


def test_frequency_method(workdir, tmp_path):
    assert collect(workdir, tmp_path / "s.safetensors", "--languages", "en,ru") == 0
    assert main(["identify", str(tmp_path / "s.safetensors"), "--method", "frequency", "--per-language", "3",
                 "-o", str(tmp_path / "f.safetensors")]) == 0
    neurons = NeuronSet.load(tmp_path / "f.safetensors")
    assert neurons.meta["method"] == "frequency" and all(neurons.count(k) <= 3 for k in ("en", "ru"))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "missing.safetensors"], "no such file"),
        (["merge", "one.safetensors", "-o", "m.safetensors"], "at least two"),
        (["identify", "missing.safetensors"], "no such file"),
        (["collect", "--model", "no/such/dir/", "--corpus", "{texts}"], "no such model"),
        (["collect", "--model", "{model}", "--corpus", "{texts}", "--languages", "en,xx"], "unknown language"),
        (["collect", "--model", "{model}", "--corpus", "{texts}", "--max-tokens", "0"],
         "--max-tokens: 0 is out of range"),
        (["collect", "--model", "{model}", "--corpus", "{empty}"], "no <lang>.txt or <lang>.jsonl files"),
    ],
)
def test_bad_input_is_one_line(workdir, tmp_path, capsys, argv, message):
    (tmp_path / "empty").mkdir()
    paths = {"texts": workdir / "texts", "model": workdir / "model", "empty": tmp_path / "empty"}
    argv = [a.format(**paths) for a in argv] + ["-o", str(tmp_path / "out.safetensors")] * (argv[0] == "collect")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("langneurons: error:") and message in err and "\n" not in err, err
    assert not (tmp_path / "out.safetensors").exists()


def test_neuron_set_for_another_model_is_refused():
    neurons = NeuronSet(["en"], torch.zeros(1, 18, 2048, dtype=torch.bool), {"model": {"id": "google/gemma-3-270m"}})
    message = r"made for google/gemma-3-270m \(18 layers x 2048 neurons\) does not fit unnamed-llama \(2 x 48\)"
    with pytest.raises(LangNeuronsError, match=message):
        neurons.check_model(make_tiny("llama"))
    NeuronSet(["en"], torch.zeros(1, 2, 48, dtype=torch.bool)).check_model(make_tiny("llama"))


def test_languages_lists_udhr_codes(capsys):
    assert main(["languages", "--search", "german"]) == 0
    out = capsys.readouterr().out
    assert "deu_1996" in out and "de" in out


def test_help_texts_name_every_command_and_default(capsys):
    from langneurons.cli.main import build_parser

    parser = build_parser()
    top = parser.format_help()
    commands = parser._subparsers._group_actions[0].choices
    for name in commands:
        assert name in top, name
    assert "compare" in (parser.description or "")
    for name in ("info", "identify", "report", "demo"):
        assert commands[name].description, name  # --help opens with what the command does
    identify = commands["identify"].format_help()
    assert identify.count("(default 0.95)") == 2
