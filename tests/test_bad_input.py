"""Bad input on the command line: exit code 2 and one line naming the problem and the fix, before the model loads
where that is possible; nothing lost; warnings where the input is doubtful but usable."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from tiny import SAMPLE, make_tiny, tiny_tokenizer

import langneurons.core.models
from langneurons.cli.commands import TASKS
from langneurons.cli.main import build_parser, main
from langneurons.core.artifacts import remove_stale_temps
from langneurons.core.errors import LangNeuronsError, LangNeuronsWarning
from langneurons.core.provenance import check_same_model
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats
from langneurons.steering.calibration import Calibration


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny model in a folder, a same-shaped twin in another folder, texts, statistics and a neuron set."""
    root = tmp_path_factory.mktemp("bad")
    for name, seed in (("model", 0), ("twin", 1)):
        make_tiny("llama", seed=seed).save_pretrained(root / name)
        tiny_tokenizer().save_pretrained(root / name)
    make_tiny("gpt2").save_pretrained(root / "gpt2")  # n_positions 128
    tiny_tokenizer().save_pretrained(root / "gpt2")
    (root / "texts").mkdir()
    for lang in ("en", "de", "ru"):
        (root / "texts" / f"{lang}.txt").write_text("\n\n".join(SAMPLE[lang] * 10), "utf-8")
    assert main(["collect", "--model", str(root / "model"), "--corpus", str(root / "texts"), "--max-tokens", "100",
                 "--window", "16", "--quiet", "-o", str(root / "s.safetensors")]) == 0
    assert main(["identify", str(root / "s.safetensors"), "--top-rate", "0.2", "--filter-rate", "0.5",
                 "--bar-rate", "0.5", "-o", str(root / "n.safetensors")]) == 0
    return root


@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a command loads a model (the check must come first)."""
    def refuse(*_args, **_kwargs):
        pytest.fail("the model was loaded before the bad input was found")

    monkeypatch.setattr(langneurons.core.models, "load_model", refuse)


def one_line_error(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("langneurons: error:") and "\n" not in err and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


def collect_args(root: Path, *extra: str) -> list[str]:
    return ["collect", "--model", str(root / "model"), "--corpus", str(root / "texts"), "--max-tokens", "100",
            "--window", "16", "--quiet", *extra]


def steer_args(root: Path, *extra: str) -> list[str]:
    return ["generate", "--model", str(root / "model"), "--neurons", str(root / "n.safetensors"), "--stats",
            str(root / "s.safetensors"), "--prompt", "Q: x\nA:", "--max-new-tokens", "2", "--quiet", *extra]


# --- data loss ---------------------------------------------------------------------------------------------


def test_output_that_is_an_input_is_refused(root, capsys):
    before = (root / "s.safetensors").read_bytes()
    assert main(["identify", str(root / "s.safetensors"), "-o", str(root / "s.safetensors")]) == 2
    one_line_error(capsys, "is also an input", "another file")
    assert (root / "s.safetensors").read_bytes() == before
    assert main(["merge", str(root / "s.safetensors"), str(root / "n.safetensors"), "-o",
                 str(root / "n.safetensors")]) == 2
    one_line_error(capsys, "is also an input")


def test_existing_artifact_of_another_kind_is_not_overwritten(root, tmp_path, capsys, no_model):
    target = tmp_path / "stats_copy.safetensors"
    target.write_bytes((root / "s.safetensors").read_bytes())
    assert main(["identify", str(root / "s.safetensors"), "-o", str(target)]) == 2
    one_line_error(capsys, "holds a 'stats' artifact, not 'neurons'", "choose another output path")
    assert ActivationStats.load(target).languages == ["de", "en", "ru"]
    assert main([*collect_args(root), "-o", str(root / "n.safetensors")]) == 2
    one_line_error(capsys, "holds a 'neurons' artifact, not 'stats'")
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    assert main(["calibrate", "--stats", str(root / "s.safetensors"), "-o", str(notes)]) == 2
    one_line_error(capsys, "not a langneurons artifact")
    assert notes.read_text() == '{"mine": 1}'


# --- outputs and resumes checked before the model loads ------------------------------------------------------


@pytest.mark.parametrize("where", ["folder", "parent_file", "unwritable"])
def test_outputs_are_checked_before_the_model_loads(root, tmp_path, capsys, no_model, where):
    (tmp_path / "a_file").write_text("x")
    out = {"folder": tmp_path, "parent_file": tmp_path / "a_file" / "s.safetensors",
           "unwritable": Path("/sys/langneurons-test/s.safetensors")}[where]
    needle = {"folder": "is a folder", "parent_file": "is a file, not a folder", "unwritable": "cannot write"}[where]
    assert main([*collect_args(root), "-o", str(out)]) == 2
    one_line_error(capsys, needle, "choose" if where != "folder" else "give a file name")
    assert main([*steer_args(root, "--steer", "-en +ru"), "-o", str(out)]) == 2
    one_line_error(capsys, needle)
    assert main(["evaluate", "perplexity", "--neurons", str(root / "n.safetensors"), "--corpus",
                 str(root / "texts"), "--output-dir", str(tmp_path / "a_file")]) == 2
    one_line_error(capsys, "--output-dir")


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write in any folder")
def test_read_only_folder(root, tmp_path, capsys, no_model):
    (tmp_path / "ro").mkdir(mode=0o500)
    assert main([*collect_args(root), "-o", str(tmp_path / "ro" / "s.safetensors")]) == 2
    one_line_error(capsys, "cannot write")


def test_resume_with_other_settings_is_refused_before_the_model_loads(root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "c.safetensors"
    assert main([*collect_args(root, "--languages", "en"), "-o", str(out)]) == 0
    capsys.readouterr()
    monkeypatch.setattr(langneurons.core.models, "load_model", lambda *a, **k: pytest.fail("model loaded"))
    assert main([*collect_args(root, "--languages", "en", "--window", "8"), "-o", str(out)]) == 2
    one_line_error(capsys, "checkpoint made with other settings (window", "rerun with the same settings")
    assert main([*collect_args(root, "--languages", "en", "--no-sq"), "-o", str(out)]) == 2
    one_line_error(capsys, "other settings (track_sq")


# --- nonsense that was silently accepted ----------------------------------------------------------------------


@pytest.mark.parametrize("option", [["--alpha", "nan"], ["--alpha", "inf"], ["--value", "nan"], ["--beta", "nan"],
                                    ["--value", "-inf"]])
def test_non_finite_strengths(root, capsys, no_model, option):
    assert main(steer_args(root, "--steer", "-en +ru", *option)) == 2
    one_line_error(capsys, f"argument {option[0]}", "give a finite number")


def test_expression_number_overflowing_to_inf(root, capsys, no_model):
    assert main(steer_args(root, "--steer", "-en +" + "9" * 400 + "*ru")) == 2
    one_line_error(capsys, "strength inf for 'ru'", "give a finite number")


@pytest.mark.parametrize("value", ["-5", "0"])
def test_per_language_must_be_positive(root, tmp_path, capsys, value):
    assert main(["identify", str(root / "s.safetensors"), "--method", "frequency", "--per-language", value,
                 "-o", str(tmp_path / "f.safetensors")]) == 2
    one_line_error(capsys, f"--per-language: {value} is out of range", "above 0")
    assert not (tmp_path / "f.safetensors").exists()


def test_repeated_and_malformed_corpus_mappings(root, tmp_path, capsys, no_model):
    a, b = root / "texts" / "en.txt", root / "texts" / "de.txt"
    assert main(["collect", "--corpus", f"en={a},en={b}", "-o", str(tmp_path / "x.safetensors")]) == 2
    one_line_error(capsys, "names 'en' twice", "one file per language")
    assert main(["collect", "--corpus", f"en={a},fr", "-o", str(tmp_path / "x.safetensors")]) == 2
    one_line_error(capsys, "--corpus item 'fr'", "LANG=FILE")


@pytest.mark.parametrize("languages", [",", " , ,"])
def test_empty_language_list(root, tmp_path, capsys, no_model, languages):
    assert main([*collect_args(root, "--languages", languages), "-o", str(tmp_path / "x.safetensors")]) == 2
    one_line_error(capsys, "no language in", "comma-separated")


def test_artifacts_of_another_model_of_the_same_shape(root, capsys):
    twin = ["--model", str(root / "twin")]
    args = steer_args(root, "--steer", "-en +ru")
    args[1:3] = twin
    assert main(args) == 2
    one_line_error(capsys, "was made on another model", "--allow-other-model")
    assert main([*args, "--allow-other-model"]) == 0  # a deliberate transfer
    capsys.readouterr()


def test_model_comparison_uses_id_type_and_fingerprint():
    made = {"id": "org/base", "revision": None, "type": "llama", "config_sha256": "aaaa"}
    check_same_model(made, dict(made), "x")  # the same model
    check_same_model({"id": "org/base"}, {**made, "config_sha256": "bbbb"}, "x")  # older artifacts: id only
    for field, other in (("id", "org/chat"), ("type", "mistral"), ("config_sha256", "bbbb"), ("gguf_sha256", "c")):
        current = {**made, field: other}
        recorded = {**made, "gguf_sha256": "d"} if field == "gguf_sha256" else made
        with pytest.raises(LangNeuronsError, match=f"another model \\({field} "):
            check_same_model(recorded, current, "neuron set n")
        check_same_model(recorded, current, "neuron set n", allow_other=True)
    # a model built in memory has no id ("unnamed-llama"): the type and fingerprint are still compared
    check_same_model({**made, "id": "unnamed-llama"}, made, "x")
    with pytest.raises(LangNeuronsError, match="config_sha256"):
        check_same_model({**made, "id": "unnamed-llama"}, {**made, "config_sha256": "bbbb"}, "x")


def test_collected_statistics_record_the_model_fingerprint(root):
    meta = ActivationStats.load(root / "s.safetensors").meta["model"]
    assert meta["type"] == "llama" and len(meta["config_sha256"]) == 16
    assert NeuronSet.load(root / "n.safetensors").meta["model"] == meta


def test_calibration_made_on_another_model(root, tmp_path, capsys):
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps({"kind": "calibration", "settings": {"ru": {"method": "add", "alpha": 1.0}},
                               "meta": {"statistics": {"model": {"id": "org/other", "type": "llama"}}}}))
    assert main(steer_args(root, "--steer", "-en +ru", "--calibrated", str(cal))) == 2
    one_line_error(capsys, f"calibration {cal} was made on another model", "--allow-other-model")


# --- tracebacks that became one line ------------------------------------------------------------------------------


def test_top_rate_nan(root, tmp_path, capsys):
    assert main(["identify", str(root / "s.safetensors"), "--top-rate", "nan", "-o", str(tmp_path / "n")]) == 2
    one_line_error(capsys, "--top-rate: nan is not a finite number")


def test_window_longer_than_the_position_limit(root, tmp_path, capsys):
    assert main(["collect", "--model", str(root / "gpt2"), "--corpus", str(root / "texts"), "--window", "200",
                 "--quiet", "-o", str(tmp_path / "g.safetensors")]) == 2
    one_line_error(capsys, "window=200 is longer than the model's 128 positions", "at most 128")


def test_missing_prompts_file(root, capsys, no_model):
    args = steer_args(root, "--steer", "-en +ru", "--prompts-file", str(root / "nope.txt"))
    assert main(args) == 2
    one_line_error(capsys, "--prompts-file", "no such file")


@pytest.mark.parametrize("option", [["--batch-size", "0"], ["--max-new-tokens", "-3"], ["--repetition-penalty", "0"]])
def test_generation_settings_out_of_range(root, capsys, no_model, option):
    assert main(steer_args(root, "--steer", "-en +ru", *option)) == 2
    one_line_error(capsys, f"argument {option[0]}: {float(option[1]):g}".rstrip("0"), "is out of range")


@pytest.mark.parametrize("meta", ["[1, 2]", '"text"', "3"])
def test_artifact_metadata_that_is_not_an_object(tmp_path, capsys, meta):
    path = tmp_path / "odd.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"langneurons": meta})
    assert main(["info", str(path)]) == 2
    one_line_error(capsys, "not an object", "re-create")
    assert main(["identify", str(path), "-o", str(tmp_path / "n.safetensors")]) == 2
    one_line_error(capsys, "not an object")


@pytest.mark.parametrize("settings", [{"ru": {"alpha": "strong"}}, {"ru": {"layers": "all"}}, {"ru": [1]},
                                      ["ru"], {"ru": {"method": "push"}}, {"ru": {"colour": 1}}])
def test_calibration_fields_of_the_wrong_type(tmp_path, settings):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"kind": "calibration", "settings": settings}))
    with pytest.raises(LangNeuronsError, match=r"re-run calibrate|unknown steering method"):
        Calibration.load(path)


def test_calibration_of_the_wrong_type_on_the_command_line(root, tmp_path, capsys):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"kind": "calibration", "settings": {"ru": {"alpha": "strong"}}}))
    assert main(steer_args(root, "--steer", "-en +ru", "--calibrated", str(path))) == 2
    one_line_error(capsys, "wrong type", "re-run calibrate")


def test_model_folder_with_only_a_pickle(root, tmp_path, capsys):
    (tmp_path / "m").mkdir()
    torch.save({"w": torch.zeros(1)}, tmp_path / "m" / "pytorch_model.bin")
    assert main(["collect", "--model", str(tmp_path / "m"), "--corpus", str(root / "texts"),
                 "-o", str(tmp_path / "s.safetensors")]) == 2
    one_line_error(capsys, "no config.json", "pytorch_model.bin", "save_pretrained")


# --- warnings ------------------------------------------------------------------------------------------------------


def test_budget_not_reached_and_little_text(root, tmp_path, capsys):
    assert main([*collect_args(root, "--languages", "en"), "--max-tokens", "100000", "-o",
                 str(tmp_path / "s.safetensors")]) == 0
    err = capsys.readouterr().err
    assert "langneurons: warning: 'en': the text ran out at" in err and "of the 100000 tokens" in err
    assert "too few for reliable statistics" in err and "Traceback" not in err


def test_merging_a_file_with_itself_warns(root, tmp_path, capsys):
    s = str(root / "s.safetensors")
    assert main(["merge", s, s, "-o", str(tmp_path / "m.safetensors")]) == 0
    err = capsys.readouterr().err
    assert "langneurons: warning:" in err and "is merged with itself" in err and "give each file once" in err
    merged = ActivationStats.load(tmp_path / "m.safetensors")
    assert merged.n_tokens.tolist() == [2 * n for n in ActivationStats.load(s).n_tokens.tolist()]


def test_prompt_language_without_neurons_under_src(root, tmp_path, capsys):
    # the set has en, de, ru; French prompts have no neurons to deactivate
    assert main(["evaluate", "forcing", "--model", str(root / "model"), "--neurons", str(root / "n.safetensors"),
                 "--stats", str(root / "s.safetensors"), "--sources", "fr", "--targets", "ru", "--no-baseline",
                 "--max-new-tokens", "2", "--identifier", "script", "--quiet", "--output-dir",
                 str(tmp_path / "f")]) == 0
    err = capsys.readouterr().err
    assert "warning: prompt language 'fr' has no neurons in 1 setting(s) (-src 1x add)" in err


def test_calibration_where_no_candidate_succeeds(root, monkeypatch):
    import langneurons.tasks.calibrate as calibrate_module

    class Fake:
        def __init__(self, plan, targets):
            self.plan, self.targets = plan, targets

        def summary(self):
            return {lab: {"per_target": {t: {"fluent_success": 0.0, "success": 0.0, "nll": 1.0}
                                         for t in self.targets if t in per}} for lab, per in self.plan.items()}

    monkeypatch.setattr(calibrate_module, "run_forcing", lambda m, t, n, s, src, tg, plan, **k: Fake(plan, tg))
    stats = ActivationStats.load(root / "s.safetensors")
    with pytest.warns(LangNeuronsWarning, match="no candidate steers towards 'ru'"):
        cal = calibrate_module.calibrate(None, None, stats, ["ru"], sources=["en"])
    assert cal.settings == {} and len(cal.scores["ru"]) == 6
    with pytest.raises(LangNeuronsError, match="no calibrated setting for 'ru'"):
        cal.setting("ru")


def test_text_without_blank_lines_has_no_heldout_part(tmp_path):
    from langneurons.data.files import text_files

    (tmp_path / "en.txt").write_text("\n".join(SAMPLE["en"] * 20), "utf-8")  # one paragraph per line
    corpus = text_files(tmp_path)
    with pytest.warns(LangNeuronsWarning, match="'en' has 1 document\\(s\\), so none is held out"):
        assert list(corpus.documents("en", "heldout")) == []


# --- leftovers, escaping, spelling ----------------------------------------------------------------------------------


def test_stale_temporary_files_are_removed_by_the_next_write(root, tmp_path):
    out = tmp_path / "n.safetensors"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = [tmp_path / f".n.safetensors.{dead.pid}.abc123.tmp", tmp_path / ".n.safetensors.old_one.tmp"]
    for path in stale:
        path.write_bytes(b"partial")
    old = time.time() - 2 * 3600
    os.utime(stale[1], (old, old))
    live = tmp_path / f".n.safetensors.{os.getpid()}.zzz.tmp"  # a writer still running
    live.write_bytes(b"in progress")
    young = tmp_path / ".n.safetensors.fresh.tmp"  # no writer id, recent: may belong to a live writer
    young.write_bytes(b"?")
    NeuronSet.load(root / "n.safetensors").save(out)
    assert not any(p.exists() for p in stale) and live.exists() and young.exists()
    assert NeuronSet.load(out).languages == NeuronSet.load(root / "n.safetensors").languages
    assert remove_stale_temps(out) == []


def test_report_markdown_escapes_labels_and_file_names(root, tmp_path):
    from langneurons.report.report import build_report

    run = tmp_path / "run"
    neurons = NeuronSet.load(root / "n.safetensors")
    odd = NeuronSet(["**bold**", "a|b", "<i>x</i>"], neurons.masks, dict(neurons.meta))
    odd.save(run / "set_[1]_*.safetensors")
    report = build_report(run)
    md = report.markdown.read_text("utf-8")
    assert "\\*\\*bold\\*\\*" in md and "a\\|b" in md and "\\<i\\>x\\</i\\>" in md
    assert "set\\_\\[1\\]\\_\\*" in md or "set_\\[1\\]_\\*" in md
    assert "**bold**" not in md and "<i>" not in md


def test_steer_with_a_leading_minus(root, tmp_path):
    for spelling in (["--steer", "-en"], ["--steer=-en"], ["--steer", "-en +ru"]):
        assert main([*steer_args(root, *spelling), "-o", str(tmp_path / "g.jsonl")]) == 0
        row = json.loads((tmp_path / "g.jsonl").read_text().splitlines()[0])
        assert row["steering"] == ("-en [add]" if spelling[-1] != "-en +ru" else "-en +1*ru [add]")


# --- the package root and start-up --------------------------------------------------------------------------------


def test_documented_api_at_the_package_root():
    import langneurons as ln
    from langneurons.steering.config import SteeringConfig
    from langneurons.steering.edits import steer
    from langneurons.steering.generation import generate

    assert ln.steer is steer and ln.SteeringConfig is SteeringConfig and ln.generate is generate
    assert set(ln.__all__) <= set(dir(ln))
    with pytest.raises(AttributeError):
        ln.no_such_name  # noqa: B018


def run_cli(*argv: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    """`python -m langneurons ARGV` in a fresh process, and which of torch and transformers it imported."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "langneurons", *argv], capture_output=True,
                          text=True, env=env, timeout=300)
    found = {line.rpartition("|")[2].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    done.stderr = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    return done, found & {"torch", "transformers"}


def help_commands() -> list[list[str]]:
    """`--help` of the program, of every command and of every evaluation task."""
    commands = next(a for a in build_parser([])._actions if isinstance(a, argparse._SubParsersAction)).choices
    return [["--help"], *([name, "--help"] for name in commands),
            *(["evaluate", task.name, "--help"] for task in TASKS)]


@pytest.mark.parametrize("argv", [*help_commands(), ["evaluate", "--list"],
                                  ["identify", "x.safetensors", "--top-rate", "nan"], ["collect", "--window", "0"],
                                  ["nonsense"]], ids=" ".join)
def test_help_and_usage_errors_import_neither_torch_nor_transformers(argv):
    done, heavy = run_cli(*argv)
    assert heavy == set(), heavy
    assert done.returncode == (0 if argv[-1] in ("--help", "--list") else 2)
    if done.returncode == 2:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


@pytest.mark.parametrize("name", ["s.safetensors", "n.safetensors"])
def test_info_imports_neither_torch_nor_transformers(root, name):
    done, heavy = run_cli("info", str(root / name))
    assert done.returncode == 0 and heavy == set(), done.stdout + done.stderr
    assert "language" in done.stdout and ("distinct neurons" in done.stdout) == (name == "n.safetensors")


def test_info_summary_matches_the_loaded_artifact(root, capsys):
    from langneurons.cli.options import format_table

    assert main(["info", str(root / "s.safetensors")]) == 0
    assert format_table(ActivationStats.load(root / "s.safetensors").summary()) in capsys.readouterr().out
    stats = ActivationStats.load(root / "s.safetensors")
    p = stats.over_zero.double() / stats.n_tokens.double().view(-1, 1, 1)  # by hand: mean firing rate per language
    assert [r["mean_p"] for r in stats.summary()] == [round(float(x), 4) for x in p.mean((1, 2))]
    neurons = NeuronSet.load(root / "n.safetensors")
    for row, lang in zip(neurons.summary(), neurons.languages):
        per_layer = neurons.mask(lang).sum(-1).tolist()
        assert row["neurons"] == sum(per_layer)
        assert all(per_layer[i] >= per_layer[j] for i in row["top_layers"] for j in range(len(per_layer))
                   if j not in row["top_layers"])


def test_python_dash_m():
    done, _ = run_cli("--help")
    assert done.returncode == 0 and "collect" in done.stdout and "compare" in done.stdout
    done, _ = run_cli("compare", "--help")  # a command that needs its module builds its options
    assert done.returncode == 0 and "--transfer" in done.stdout
