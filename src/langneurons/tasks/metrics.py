"""Translation metrics: corpus-level chrF and BLEU with sacrebleu, with the BLEU tokenizer chosen by target script.

sacrebleu's tokenizers that need downloads or extra packages (ja-mecab, ko-mecab, spm, flores101/200) are never
chosen automatically: Chinese gets "zh", scripts written without spaces between words (Japanese, Thai, Lao,
Khmer, Burmese, Tibetan) and Korean get "char", every other language "13a". Pass `tokenize=` to override.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from langneurons.core.errors import LangNeuronsError

# ISO 639-1/3 codes and ISO 15924 scripts per BLEU tokenizer (anything else: "13a")
_ZH_LANGUAGES = frozenset({"zh", "zho", "chi", "cmn", "yue", "wuu", "lzh", "gan", "hak", "nan"})
_CHAR_LANGUAGES = frozenset({"ja", "jpn", "ko", "kor", "th", "tha", "lo", "lao", "km", "khm", "my", "mya", "bo",
                             "bod", "dz", "dzo"})
_ZH_SCRIPTS = frozenset({"hans", "hant", "hani"})
_CHAR_SCRIPTS = frozenset({"jpan", "hira", "kana", "kore", "hang", "thai", "laoo", "khmr", "mymr", "tibt"})


@dataclass(frozen=True)
class Score:
    """A corpus-level score and sacrebleu's signature of how it was computed."""

    score: float
    signature: str


def bleu_tokenizer(language: str) -> str:
    """sacrebleu's BLEU tokenizer for a target language: "zh", "char" or "13a".

    `language`: ISO 639-1/3 ("zh", "ja", "cmn"), BCP-47 ("zh-Hant", "ja-JP") or FLORES-style ("jpn_Jpan") codes;
    a script subtag decides where there is one ("zh-Hans" -> zh, "kor_Hang" -> char).
    """
    parts = [p.lower() for p in language.replace("_", "-").split("-") if p]
    if not parts:
        raise LangNeuronsError(f"language code {language!r} is empty; pass a code such as 'de' or 'zh'")
    scripts = [p for p in parts[1:] if len(p) == 4]
    if scripts:
        if scripts[0] in _ZH_SCRIPTS:
            return "zh"
        return "char" if scripts[0] in _CHAR_SCRIPTS else "13a"
    if parts[0] in _ZH_LANGUAGES:
        return "zh"
    return "char" if parts[0] in _CHAR_LANGUAGES else "13a"


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> Score:
    """Corpus-level chrF (sacrebleu's defaults: character 6-grams, beta 2, whitespace ignored), one reference."""
    from sacrebleu.metrics import CHRF

    _check(hypotheses, references)
    metric = CHRF()
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return Score(result.score, str(metric.get_signature()))


def bleu(hypotheses: Sequence[str], references: Sequence[str], language: str | None = None,
         tokenize: str | None = None) -> Score:
    """Corpus-level BLEU, one reference; the tokenizer is `tokenize` or `bleu_tokenizer(language)` ("13a" if
    neither is given)."""
    from sacrebleu.metrics import BLEU

    _check(hypotheses, references)
    chosen = tokenize or (bleu_tokenizer(language) if language else "13a")
    try:
        metric = BLEU(tokenize=chosen)
    except Exception as e:  # sacrebleu raises several types for unknown or uninstalled tokenizers
        raise LangNeuronsError(f"BLEU tokenizer {chosen!r} is not usable ({e}); use 13a, zh, char or intl") from None
    result = metric.corpus_score(list(hypotheses), [list(references)])
    return Score(result.score, str(metric.get_signature()))


def translation_scores(hypotheses: Sequence[str], references: Sequence[str], language: str) -> dict[str, Score]:
    """{"chrf": ..., "bleu": ...} of outputs in `language` against their references."""
    return {"chrf": chrf(hypotheses, references), "bleu": bleu(hypotheses, references, language)}


def _check(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if isinstance(hypotheses, str) or isinstance(references, str):
        raise LangNeuronsError("pass lists of strings (one hypothesis and one reference per segment), not a string")
    if len(hypotheses) != len(references):
        raise LangNeuronsError(f"{len(hypotheses)} hypotheses but {len(references)} references; pass one each")
    if not hypotheses:
        raise LangNeuronsError("no segments to score; pass at least one hypothesis and reference")
