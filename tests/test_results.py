"""Task results: resumable per-sample JSONL and the summary file."""

import json

import pytest

from langneurons.core.errors import LangNeuronsError
from langneurons.tasks.results import SampleLog, read_results, write_results


def test_sample_log_resumes_and_skips_written_rows(tmp_path):
    path = tmp_path / "samples.jsonl"
    log = SampleLog(path, ["lang", "i"], {"alpha": 1})
    log.add([{"lang": "fr", "i": 0, "out": "a"}, {"lang": "fr", "i": 1, "out": "b"}])
    log.add([{"lang": "fr", "i": 0, "out": "changed"}])  # already there: kept as first written
    with path.open("a", encoding="utf-8") as f:
        f.write('{"lang": "de", "i": 0, "ou')  # an interrupted write
    again = SampleLog(path, ["lang", "i"], {"alpha": 1})
    assert len(again) == 2
    assert {"lang": "fr", "i": 1} in again and {"lang": "de", "i": 0} not in again
    assert again[{"lang": "fr", "i": 0}]["out"] == "a"
    again.add([{"lang": "de", "i": 0, "out": "c"}])
    rows = [json.loads(line) for line in path.read_text("utf-8").splitlines()]
    assert [r["out"] for r in rows] == ["a", "b", "c"]


def test_sample_log_refuses_other_settings_unless_fresh(tmp_path):
    path = tmp_path / "samples.jsonl"
    SampleLog(path, ["i"], {"alpha": 1}).add([{"i": 0}])
    with pytest.raises(LangNeuronsError, match="other settings"):
        SampleLog(path, ["i"], {"alpha": 2})
    assert len(SampleLog(path, ["i"], {"alpha": 2}, fresh=True)) == 0


def test_results_round_trip(tmp_path):
    path = write_results(tmp_path / "r.json", {"task": "x", "settings": {"a": 1}}, {"score": 0.5})
    data = read_results(path)
    assert data["summary"] == {"score": 0.5} and data["task"] == "x"
    (tmp_path / "other.json").write_text('{"kind": "calibration"}')
    with pytest.raises(LangNeuronsError, match="not a results file"):
        read_results(tmp_path / "other.json")


def test_artifacts_get_a_normal_file_mode(tmp_path):
    import os

    import torch

    from langneurons.core.artifacts import save_tensors

    umask = os.umask(0)
    os.umask(umask)
    save_tensors(tmp_path / "a.safetensors", "k", {"x": torch.zeros(2)}, {})
    assert (tmp_path / "a.safetensors").stat().st_mode & 0o777 == 0o666 & ~umask
