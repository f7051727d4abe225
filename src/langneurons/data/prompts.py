"""Question prompts for language-forcing experiments, and cutting a model's continuation down to its answer.

The built-in set (`data/questions.json`) holds 12 short open questions, parallel across 25 languages; questions
0-7 form the "eval" split and 8-11 a disjoint "dev" split for calibration. A user's own file in the same schema
(or a plain `{"lang": [questions]}` mapping) is read with `load_questions`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from langneurons.core.errors import LangNeuronsError

SPLITS = ("eval", "dev", "all")
SCHEMA_VERSION = 1

# Cut a continuation at the first of these: the model starting the next question (also with the full-width
# colon Chinese and Japanese answers use), a second answer, or a run of blank lines.
STOP_STRINGS: list[str] = ["\nQ:", "\nQ：", "Q：", "\n\nQ", "\nA:", "\nA：", "\n\n\n"]


def qa_prompt(question: str) -> str:
    """The prompt for one question: `"Q: {question}\\nA:"`."""
    return f"Q: {question}\nA:"


def question_prompt(question: str, prompt_format: str) -> str:
    """The prompt text for one question in a resolved prompt format (`generation.resolve_prompt_format`): the
    `Q:/A:` frame for "plain", the bare question as the user's message for "chat"."""
    if prompt_format not in ("chat", "plain"):
        raise LangNeuronsError(f"question_prompt needs a resolved format, 'chat' or 'plain', not {prompt_format!r}")
    return question if prompt_format == "chat" else qa_prompt(question)


def cut_continuation(text: str) -> str:
    """`text` up to the first stop string (see `STOP_STRINGS`), stripped of surrounding whitespace."""
    return cut(text, STOP_STRINGS)


def question_languages() -> list[str]:
    """The language codes of the built-in question set, in file order."""
    return list(_builtin())


def questions(language: str, split: str = "eval") -> list[str]:
    """The built-in questions of `language` in `split` ("eval", "dev" or "all")."""
    data = _builtin()
    if language not in data:
        raise LangNeuronsError(
            f"no built-in questions for language {language!r}; available: {', '.join(data)} "
            "(or load your own file with load_questions)"
        )
    if split not in SPLITS:
        raise LangNeuronsError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    return list(data[language][split])


def load_questions(path: str | Path) -> dict[str, dict[str, list[str]]]:
    """Read a question file: `{language: {"eval": [...], "dev": [...], "all": [...]}}`.

    A `.jsonl` file has one question a line, `{"lang": "de", "question": "...", "split": "dev"}`; "split" is
    optional ("eval" or "dev"; without it the question is "eval"). Other files are JSON: either the built-in schema
    (`{"version": 1, "splits": {"eval": [indices], "dev": [indices]}, "questions": {language: [questions]}}`,
    splits optional) or a plain `{language: [questions]}` mapping, whose
    questions are all "eval". "all" keeps every question in file order.
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        return _read_jsonl(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LangNeuronsError(f"question file {path} not found; check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LangNeuronsError(f"question file {path} is not valid UTF-8 JSON ({e}); fix the file") from None
    return _parse(raw, str(path))


def _read_jsonl(path: Path) -> dict[str, dict[str, list[str]]]:
    """Questions from JSONL lines `{"lang", "question", "split"?}`, in file order per language."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise LangNeuronsError(f"question file {path} not found; check the path") from None
    except UnicodeDecodeError as e:
        raise LangNeuronsError(f"question file {path} is not UTF-8 ({e}); fix the file") from None
    out: dict[str, dict[str, list[str]]] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise LangNeuronsError(f"{path}:{number}: not JSON ({e.msg}); write one JSON object a line") from None
        lang, question, split = (row.get(k) if isinstance(row, dict) else None for k in ("lang", "question", "split"))
        if not (isinstance(lang, str) and lang.strip() and isinstance(question, str) and question.strip()):
            raise LangNeuronsError(f'{path}:{number}: write {{"lang": "de", "question": "...", "split": "dev"}} '
                                   "with a non-empty lang and question")
        if split not in (None, "eval", "dev"):
            raise LangNeuronsError(f"{path}:{number}: split {split!r}; use 'eval', 'dev' or leave it out")
        entry = out.setdefault(lang.strip(), {"eval": [], "dev": [], "all": []})
        entry[split or "eval"].append(question)
        entry["all"].append(question)
    if not out:
        raise LangNeuronsError(f"question file {path} has no questions; add JSON lines {{lang, question}}")
    return out


@functools.cache
def _builtin() -> dict[str, dict[str, list[str]]]:
    """The built-in question set, parsed once."""
    source = resources.files("langneurons") / "data" / "questions.json"
    return _parse(json.loads(source.read_text(encoding="utf-8")), "the built-in question set")


def _parse(raw: Any, where: str) -> dict[str, dict[str, list[str]]]:
    """Validate a question file's content and split every language's questions."""
    if not isinstance(raw, dict) or not raw:
        raise LangNeuronsError(f"{where}: expected a JSON object of languages or with a 'questions' key")
    if "questions" in raw:
        if raw.get("version", SCHEMA_VERSION) != SCHEMA_VERSION:
            raise LangNeuronsError(
                f"{where}: version {raw['version']!r} is not supported; use version {SCHEMA_VERSION}"
            )
        per_language, splits = _question_lists(raw["questions"], where), raw.get("splits")
    else:
        per_language, splits = _question_lists(raw, where), None
    if splits is None:
        return {lang: {"eval": qs, "dev": [], "all": list(qs)} for lang, qs in per_language.items()}
    counts = {len(qs) for qs in per_language.values()}
    if len(counts) != 1:
        raise LangNeuronsError(
            f"{where}: with 'splits', every language needs the same number of questions (parallel); "
            f"found counts {sorted(counts)}"
        )
    indices = _split_indices(splits, counts.pop(), where)
    return {
        lang: {"eval": [qs[i] for i in indices["eval"]], "dev": [qs[i] for i in indices["dev"]], "all": qs}
        for lang, qs in per_language.items()
    }


def _question_lists(mapping: Any, where: str) -> dict[str, list[str]]:
    """Check a `{language: [non-empty question strings]}` mapping."""
    if not isinstance(mapping, dict) or not mapping:
        raise LangNeuronsError(f"{where}: 'questions' must be a non-empty object {{language: [questions]}}")
    out: dict[str, list[str]] = {}
    for lang, qs in mapping.items():
        if not lang.strip():
            raise LangNeuronsError(f"{where}: a language code is empty; use codes such as 'en'")
        if not isinstance(qs, list) or not qs:
            raise LangNeuronsError(f"{where}: language {lang!r} needs a non-empty list of questions")
        for i, q in enumerate(qs):
            if not isinstance(q, str) or not q.strip():
                raise LangNeuronsError(f"{where}: question {i} of {lang!r} is not a non-empty string; fix it")
        out[lang] = list(qs)
    return out


def _split_indices(splits: Any, n: int, where: str) -> dict[str, list[int]]:
    """Check `{"eval": [indices], "dev": [indices]}` against `n` questions per language."""
    if not isinstance(splits, dict) or not set(splits) <= {"eval", "dev"}:
        raise LangNeuronsError(f"{where}: 'splits' must be an object with keys 'eval' and/or 'dev' (index lists)")
    out: dict[str, list[int]] = {}
    for name in ("eval", "dev"):
        idx = splits.get(name, [])
        if not isinstance(idx, list) or not all(type(i) is int and 0 <= i < n for i in idx):
            raise LangNeuronsError(f"{where}: split {name!r} must list question indices in 0..{n - 1}")
        if len(set(idx)) != len(idx):
            raise LangNeuronsError(f"{where}: split {name!r} lists an index twice; list each once")
        out[name] = idx
    if set(out["eval"]) & set(out["dev"]):
        raise LangNeuronsError(f"{where}: splits 'eval' and 'dev' share indices; make them disjoint")
    return out


def cut(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first stop string, stripped."""
    end = min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))
    return text[:end].strip()
