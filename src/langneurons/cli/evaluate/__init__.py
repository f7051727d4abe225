"""`langneurons evaluate TASK`: one module per task, each with `SUMMARY` (one line), `add_arguments(parser)` and
`main(args)`. The work itself is the task's `run_*` function in `langneurons.tasks`; these modules only read the
options, check them, call it and print."""

from __future__ import annotations

from importlib import import_module
from types import ModuleType

TASKS: dict[str, str] = {
    "forcing": "langneurons.cli.evaluate.forcing",
    "fallback": "langneurons.cli.evaluate.fallback",
    "translation": "langneurons.cli.evaluate.translation",
    "lm-eval": "langneurons.cli.evaluate.lm_eval",
    "perplexity": "langneurons.cli.evaluate.perplexity",
    "logit-lens": "langneurons.cli.evaluate.logit_lens",
}


def task_module(name: str) -> ModuleType:
    """The command-line module of a registered task."""
    return import_module(TASKS[name])
