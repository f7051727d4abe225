"""XQuAD metrics: SQuAD exact match and token F1, for the XQuAD task of the harness path (`evaluate lm-eval`).

Answers are normalised as in SQuAD (lowercase, punctuation removed, and for English the articles a/an/the), then
split into tokens at whitespace, with every character of a whitespace-free script (Han, kana, Thai, Lao, Khmer,
Myanmar, Tibetan) a token of its own. Exact match and the F1 of the multiset token overlap take the best gold
answer. lm-evaluation-harness's own XQuAD metric cannot replace this: it imports
`transformers.data.metrics.squad_metrics` (gone in transformers 5), compares with the first gold answer only and
splits Chinese or Thai text at spaces only (so F1 there is exact match).
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Sequence
from typing import Any

_ARTICLES = {"en": re.compile(r"\b(a|an|the)\b")}
# scripts written without spaces between words: each character is a token
_CHAR_SCRIPTS = re.compile(
    "([\u0e00-\u0eff\u0f00-\u0fff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff"
    "\uf900-\ufaff\U00020000-\U0002ffff])"
)


def answer_tokens(text: str, language: str) -> list[str]:
    """SQuAD-normalised tokens of an answer: lowercased, punctuation dropped, English articles dropped, split at
    whitespace, and characters of whitespace-free scripts split apart."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in string.punctuation and not unicodedata.category(ch).startswith("P"))
    if language in _ARTICLES:
        text = _ARTICLES[language].sub(" ", text)
    return [t for t in _CHAR_SCRIPTS.split(text) for t in t.split()]


def exact_match(prediction: str, answers: Sequence[str], language: str) -> float:
    """1.0 if the normalised prediction equals some normalised gold answer, else 0.0."""
    pred = answer_tokens(prediction, language)
    return max(float(pred == answer_tokens(a, language)) for a in answers)


def token_f1(prediction: str, answers: Sequence[str], language: str) -> float:
    """The best F1, over the gold answers, of the multiset overlap of normalised tokens."""
    pred = answer_tokens(prediction, language)
    best = 0.0
    for answer in answers:
        gold = answer_tokens(answer, language)
        if not pred or not gold:
            best = max(best, float(pred == gold))
            continue
        same = sum((Counter(pred) & Counter(gold)).values())
        if same:
            precision, recall = same / len(pred), same / len(gold)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


def process_results(doc: dict[str, Any], results: Sequence[str], language: str = "en") -> dict[str, float]:
    """lm-evaluation-harness `process_results` of the XQuAD task YAML: exact match and F1 of the generated answer
    against every gold answer (bind `language` with functools.partial)."""
    answers = list(doc["answers"]["text"])
    return {"exact_match": exact_match(results[0], answers, language), "f1": token_f1(results[0], answers, language)}
