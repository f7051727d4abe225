"""The built-in question set, prompts, question files and cutting continuations."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from langneurons.core.errors import LangNeuronsError
from langneurons.data.prompts import (
    STOP_STRINGS,
    cut_continuation,
    load_questions,
    qa_prompt,
    question_languages,
    questions,
)

FIRST_TEN = ["en", "de", "fr", "es", "ru", "ar", "hi", "zh", "ja", "ko"]
# How a question ends in each script; "?" everywhere else (Hindi and Thai use "?" in modern text, too).
QUESTION_MARK = {"zh": "？", "ja": "？", "ar": "؟", "fa": "؟", "el": ";"}
TRADITIONAL_ONLY = "們麼時個說會為這裡樣學歡國長飯難過準備題場裏後"


def raw_builtin() -> dict:
    return json.loads(resources.files("langneurons").joinpath("data", "questions.json").read_text(encoding="utf-8"))


def test_builtin_set_shape() -> None:
    langs = question_languages()
    assert len(langs) >= 24 and langs[:10] == FIRST_TEN
    raw = raw_builtin()
    assert raw["version"] == 1 and raw["splits"] == {"eval": list(range(8)), "dev": list(range(8, 12))}
    for lang in langs:
        every, ev, dev = questions(lang, "all"), questions(lang), questions(lang, "dev")
        assert (len(every), len(ev), len(dev)) == (12, 8, 4), lang
        assert ev + dev == every and not set(ev) & set(dev), lang
        assert len(set(every)) == 12, f"{lang}: a question is repeated"


def test_questions_are_clean() -> None:
    for lang in question_languages():
        for q in questions(lang, "all"):
            assert q == q.strip() and "\n" not in q, (lang, q)
            assert not any(c.isdigit() for c in q), (lang, q)
            assert q.endswith(QUESTION_MARK.get(lang, "?")), (lang, q)
        if lang == "es":
            assert all(q.startswith("¿") for q in questions(lang, "all"))


def test_scripts_are_right() -> None:
    assert not any(c in TRADITIONAL_ONLY for q in questions("zh", "all") for c in q), "zh must be simplified"
    ja = "".join(questions("ja", "all"))
    assert any("\u3040" <= c <= "\u309f" for c in ja), "Japanese needs kana"
    fa, ar = "".join(questions("fa", "all")), "".join(questions("ar", "all"))
    assert "ي" not in fa and "ك" not in fa, "Persian uses ی and ک"
    assert "ی" not in ar and "ک" not in ar, "Arabic uses ي and ك"
    assert all("\u0900" <= c <= "\u097f" for q in questions("hi", "all") for c in q if c.isalpha())


def test_questions_errors() -> None:
    with pytest.raises(LangNeuronsError, match="available: en, de"):
        questions("xx")
    with pytest.raises(LangNeuronsError, match="unknown split"):
        questions("en", "train")


def test_questions_returns_a_copy() -> None:
    questions("en").clear()
    assert len(questions("en")) == 8


def test_qa_prompt() -> None:
    prompt = qa_prompt(questions("de")[0])
    assert prompt.startswith("Q: ") and prompt.endswith("\nA:")


def write(tmp_path: Path, content: object) -> Path:
    path = tmp_path / "q.json"
    path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


def test_load_questions_full_schema(tmp_path: Path) -> None:
    content = {"version": 1, "splits": {"eval": [2, 0], "dev": [1]},
               "questions": {"en": ["A?", "B?", "C?"], "de": ["A-de?", "B-de?", "C-de?"]}}
    data = load_questions(write(tmp_path, content))
    assert list(data) == ["en", "de"]
    assert data["en"] == {"eval": ["C?", "A?"], "dev": ["B?"], "all": ["A?", "B?", "C?"]}
    assert data["de"]["dev"] == ["B-de?"]


def test_load_questions_without_splits(tmp_path: Path) -> None:
    data = load_questions(write(tmp_path, {"questions": {"en": ["A?"], "fr": ["B ?", "C ?"]}}))
    assert data["fr"] == {"eval": ["B ?", "C ?"], "dev": [], "all": ["B ?", "C ?"]}


def test_load_questions_simple_mapping(tmp_path: Path) -> None:
    data = load_questions(write(tmp_path, {"en": ["Why?", "How?"], "de": ["Warum?"]}))
    assert data == {"en": {"eval": ["Why?", "How?"], "dev": [], "all": ["Why?", "How?"]},
                    "de": {"eval": ["Warum?"], "dev": [], "all": ["Warum?"]}}


def test_load_questions_builtin_file_round_trip(tmp_path: Path) -> None:
    data = load_questions(write(tmp_path, raw_builtin()))
    assert list(data) == question_languages()
    assert data["ko"]["dev"] == questions("ko", "dev")


@pytest.mark.parametrize(("content", "match"), [
    ([], "expected a JSON object"),
    ({}, "expected a JSON object"),
    ({"en": "Why?"}, "non-empty list"),
    ({"en": []}, "non-empty list"),
    ({"en": ["Why?", "  "]}, "question 1 of 'en'"),
    ({"en": ["Why?", 3]}, "question 1 of 'en'"),
    ({"questions": []}, "non-empty object"),
    ({"version": 2, "questions": {"en": ["A?"]}}, "version 2"),
    ({"questions": {"en": ["A?", "B?"], "de": ["A?"]}, "splits": {"eval": [0]}}, "same number"),
    ({"questions": {"en": ["A?", "B?"]}, "splits": {"eval": [0, 2]}}, r"indices in 0\.\.1"),
    ({"questions": {"en": ["A?", "B?"]}, "splits": {"eval": [0], "dev": [0]}}, "disjoint"),
    ({"questions": {"en": ["A?", "B?"]}, "splits": {"eval": [0, 0]}}, "twice"),
    ({"questions": {"en": ["A?", "B?"]}, "splits": {"test": [0]}}, "keys 'eval' and/or 'dev'"),
    ({"questions": {"en": ["A?", "B?"]}, "splits": {"eval": "0"}}, "indices"),
])
def test_load_questions_errors(tmp_path: Path, content: object, match: str) -> None:
    with pytest.raises(LangNeuronsError, match=match):
        load_questions(write(tmp_path, content))


def test_load_questions_bad_files(tmp_path: Path) -> None:
    with pytest.raises(LangNeuronsError, match="not found"):
        load_questions(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(LangNeuronsError, match="not valid UTF-8 JSON"):
        load_questions(bad)


@pytest.mark.parametrize("stop", STOP_STRINGS)
def test_cut_continuation_each_stop_string(stop: str) -> None:
    assert cut_continuation(f" Because it is calm.{stop} Why not?") == "Because it is calm."


def test_cut_continuation_cases() -> None:
    assert "Q：" in STOP_STRINGS and "\nQ:" in STOP_STRINGS
    assert cut_continuation(" 因为大自然让人放松。Q：为什么") == "因为大自然让人放松。"
    assert cut_continuation("  Weil es ruhig ist.\n\n") == "Weil es ruhig ist."
    assert cut_continuation("One.\n\n\nTwo.\nQ: three") == "One."  # the earliest stop wins
    assert cut_continuation("First line.\nSecond line.") == "First line.\nSecond line."
    assert cut_continuation("\nQ: next question") == ""
