"""langneurons: find the language-specific neurons of a transformer LM and steer its output language.

The names below are imported on first use, so `import langneurons` (and the command line's `--help`) does not
load torch or transformers.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ActivationStats": "langneurons.stats",
    "Calibration": "langneurons.calibrate",
    "Corpus": "langneurons.corpus",
    "FinetuneDelta": "langneurons.finetune",
    "LangNeuronsError": "langneurons.errors",
    "LangNeuronsWarning": "langneurons.errors",
    "NeuronSet": "langneurons.neurons",
    "RelevanceStats": "langneurons.identify",
    "Steering": "langneurons.steering",
    "SteeringConfig": "langneurons.steering",
    "apply_finetune": "langneurons.finetune",
    "collect_relevance": "langneurons.identify",
    "collect_stats": "langneurons.collect",
    "compare_methods": "langneurons.compare",
    "crane": "langneurons.identify",
    "find_sites": "langneurons.sites",
    "finetuned": "langneurons.finetune",
    "frequency_contrast": "langneurons.identify",
    "from_texts": "langneurons.corpus",
    "generate": "langneurons.generation",
    "hf_dataset": "langneurons.corpus",
    "lape": "langneurons.identify",
    "load_model": "langneurons.models",
    "matched_sets": "langneurons.compare",
    "option_logprobs": "langneurons.scoring",
    "parse_expression": "langneurons.steering",
    "random_like": "langneurons.identify",
    "steer": "langneurons.steering",
    "text_files": "langneurons.corpus",
    "udhr": "langneurons.corpus",
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
