"""The identifier and the fluency guard on real outputs of gemma-3-270m and SmolLM2-135M-Instruct (steered and
unsteered, plain and chat prompts), labelled by reading them: tests/data/judging_*.jsonl (see judging_set.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langneurons.fluency import MIN_DISTINCT_BIGRAMS, is_fluent, repeated_lines
from langneurons.lid import FastTextIdentifier

DATA = Path(__file__).parent / "data"
SAME_SCRIPT = [{"zh", "ja", "wuu", "yue"}, {"ko"}, {"ru", "uk", "bg", "sr", "mk", "be", "kk"},
               {"ar", "fa", "ur", "arz"}, {"hi", "mr", "ne"}]


def rows(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text("utf-8").splitlines()]


@pytest.fixture(scope="module")
def lid_rows() -> list[dict]:
    return rows("judging_lid.jsonl")


def test_the_sets_are_large_enough(lid_rows) -> None:
    fluency = rows("judging_fluency.jsonl")
    assert len(lid_rows) >= 50 and sum(r["repeated"] for r in fluency) >= 50
    assert {r["model"] for r in lid_rows} >= {"gemma-3-270m", "SmolLM2-135M-Instruct"}


def test_no_label_of_another_script(lid_rows) -> None:
    found = FastTextIdentifier().identify([r["text"] for r in lid_rows])
    for row, f in zip(lid_rows, found):
        group = next(g for g in SAME_SCRIPT if row["label"] in g)
        assert f.language in group or f.language == "und", (row["text"], row["label"], f)


def test_identifier_accuracy_before_and_after(lid_rows) -> None:
    texts, labels = [r["text"] for r in lid_rows], [r["label"] for r in lid_rows]
    before = FastTextIdentifier(script_check=False, floor=0.0).identify(texts)
    after = FastTextIdentifier().identify(texts)
    right_before = sum(f.language == lab for f, lab in zip(before, labels))
    right_after = sum(f.language == lab for f, lab in zip(after, labels))
    assert right_after > right_before and right_after >= 0.9 * len(labels), (right_before, right_after)


def test_line_guard_on_real_outputs() -> None:
    data = rows("judging_fluency.jsonl")
    agree = sum(repeated_lines(r["text"]) == r["repeated"] for r in data)
    assert agree >= 0.95 * len(data)
    passed_before = sum(r["repeated"] and r["distinct_bigrams"] >= MIN_DISTINCT_BIGRAMS for r in data)
    passed_after = sum(r["repeated"] and is_fluent(r["text"], r["distinct_bigrams"]) for r in data)
    assert passed_after < passed_before / 5, (passed_before, passed_after)
