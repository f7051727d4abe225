"""The identifier and the fluency guard on real outputs of gemma-3-270m and SmolLM2-135M-Instruct (steered and
unsteered, plain and chat prompts), labelled by reading them: tests/data/judging_*.jsonl (see judging_set.py).

judging_lid.jsonl: outputs mostly written in Han, Cyrillic, Arabic, Devanagari or Hangul; `script` is that script,
`label` the language read in it, or "und" where no language can be read (fragments such as "ел�ел�ел").
judging_fluency.jsonl: outputs of two or more lines; `repeated` says whether half or more of the lines are a line
and its repeats (the same line, with a label such as "B:" in front, a word changed, or cut off at the end)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from langneurons.tasks.fluency import MIN_DISTINCT_BIGRAMS, is_fluent, repeated_lines
from langneurons.tasks.lid import FastTextIdentifier

DATA = Path(__file__).parent / "data"
SCRIPT_LABELS = {"Hani": {"zh", "ja", "wuu", "yue"}, "Hang": {"ko"}, "Arab": {"ar", "fa", "ur", "arz", "ps"},
                 "Cyrl": {"ru", "uk", "bg", "sr", "mk", "be", "kk", "mhr", "tt", "ky"}, "Deva": {"hi", "mr", "ne"}}


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
        assert f.language in SCRIPT_LABELS[row["script"]] | {"und"}, (row["text"], row["script"], f)


def test_identifier_accuracy_before_and_after(lid_rows) -> None:
    readable = [r for r in lid_rows if r["label"] != "und"]
    texts, labels = [r["text"] for r in readable], [r["label"] for r in readable]
    before = FastTextIdentifier(script_check=False, floor=0.0).identify(texts)
    after = FastTextIdentifier().identify(texts)
    right_before = sum(f.language == lab for f, lab in zip(before, labels))
    right_after = sum(f.language == lab for f, lab in zip(after, labels))
    assert len(readable) >= 50
    assert right_after > right_before and right_after >= 0.9 * len(labels), (right_before, right_after)


def test_line_guard_on_real_outputs() -> None:
    data = rows("judging_fluency.jsonl")
    agree = sum(repeated_lines(r["text"]) == r["repeated"] for r in data)
    assert agree >= 0.95 * len(data)
    passed_before = sum(r["repeated"] and r["distinct_bigrams"] >= MIN_DISTINCT_BIGRAMS for r in data)
    passed_after = sum(r["repeated"] and is_fluent(r["text"], r["distinct_bigrams"]) for r in data)
    assert passed_after < passed_before / 5, (passed_before, passed_after)
    assert not [r["text"] for r in data if not r["repeated"] and repeated_lines(r["text"])]  # no clean output rejected
