"""langneurons: find the language-specific neurons of a transformer LM and steer its output language.

The names below are imported on first use, so `import langneurons` (and the command line's `--help`) does not
load torch or transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from langneurons.core.version import __version__

_EXPORTS: dict[str, str] = {
    "ActivationStats": "langneurons.stats.activation",
    "Calibration": "langneurons.steering.calibration",
    "Corpus": "langneurons.data.corpus",
    "FinetuneDelta": "langneurons.tasks.finetune",
    "LangNeuronsError": "langneurons.core.errors",
    "LangNeuronsWarning": "langneurons.core.errors",
    "NeuronSet": "langneurons.identify.neurons",
    "RelevanceStats": "langneurons.stats.relevance",
    "Steering": "langneurons.steering.edits",
    "SteeringConfig": "langneurons.steering.config",
    "apply_finetune": "langneurons.tasks.finetune",
    "collect_relevance": "langneurons.stats.relevance",
    "collect_stats": "langneurons.stats.collect",
    "compare_methods": "langneurons.tasks.compare",
    "crane": "langneurons.identify",
    "find_sites": "langneurons.core.sites",
    "finetuned": "langneurons.tasks.finetune",
    "frequency_contrast": "langneurons.identify",
    "from_texts": "langneurons.data.corpus",
    "generate": "langneurons.steering.generation",
    "hf_dataset": "langneurons.data.hf",
    "lape": "langneurons.identify",
    "lm_eval_model": "langneurons.tasks.harness",
    "load_model": "langneurons.core.models",
    "matched_sets": "langneurons.tasks.compare",
    "option_logprobs": "langneurons.tasks.scoring",
    "parse_expression": "langneurons.steering.config",
    "random_like": "langneurons.identify",
    "steer": "langneurons.steering.edits",
    "text_files": "langneurons.data.files",
    "udhr": "langneurons.data.udhr",
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'langneurons' has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
