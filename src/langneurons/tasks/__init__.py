"""Evaluation tasks, run by `langneurons evaluate TASK`.

Every task module defines `SUMMARY` (one line), `add_arguments(parser)` and `main(args)`; its Python API is a
`run_*` function. Results go through `langneurons.tasks.results`: one JSON summary plus a per-sample JSONL that a
rerun continues.
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

TASKS: dict[str, str] = {
    "forcing": "langneurons.tasks.forcing",
    "fallback": "langneurons.tasks.fallback",
    "translation": "langneurons.tasks.translation",
    "lm-eval": "langneurons.tasks.harness",
    "perplexity": "langneurons.tasks.perplexity",
    "logit-lens": "langneurons.tasks.logit_lens",
}


def task_module(name: str) -> ModuleType:
    """The module of a registered task."""
    return import_module(TASKS[name])
