"""Fallback: deactivate languages one after another and watch which language the model answers in instead.

Prompts are in one language. Step 0 generates unsteered; step k deactivates the neurons of the first k languages
of `order` (default: the prompt language, then the set's other languages in the set's order). Every step runs in
one batched `generate` call, each copy of the prompts with its own deactivation, and each output's language is
identified. The result is the distribution of output languages per step.
"""


from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import transformers

from langneurons.core.artifacts import write_atomic
from langneurons.core.distributed import is_main
from langneurons.core.errors import LangNeuronsError
from langneurons.core.provenance import model_meta
from langneurons.core.version import __version__
from langneurons.data.prompts import STOP_STRINGS, question_prompt, questions
from langneurons.identify.neurons import NeuronSet
from langneurons.steering.config import SteeringConfig
from langneurons.steering.generation import Decoding, generate
from langneurons.tasks.lid import get_identifier
from langneurons.tasks.results import FALLBACK_KIND, write_kind

if TYPE_CHECKING:
    from transformers import PreTrainedModel

NONE = "none"  # the distribution's label for outputs without a language (empty or letterless)


@dataclass
class FallbackResult:
    """Output languages per step of cumulative deactivation.

    `steps[k]`: {"step", "label", "deactivated", "distribution" (language -> share, "none" for no language),
    "counts", "empty"}. `samples`: one row per step and prompt with the output and its identified language.
    """

    language: str
    steps: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    settings: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """What fallback.json holds: the settings and the steps (without the per-sample outputs)."""
        return {"task": "fallback", "language": self.language, "settings": self.settings, "steps": self.steps}

    def save(self, out_dir: str | Path) -> dict[str, Path]:
        """Write fallback.json, fallback_samples.jsonl and fallback.png/.svg (atomically); returns the paths."""
        from langneurons.figures.charts import fallback_bars

        if not is_main():  # under torchrun rank 0 writes
            return {}
        out = Path(out_dir)
        paths = {"summary": out / "fallback.json", "samples": out / "fallback_samples.jsonl"}
        write_kind(paths["summary"], FALLBACK_KIND, self.summary())
        lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in self.samples)
        write_atomic(paths["samples"], lambda p: p.write_text(lines, "utf-8"))
        png, svg = fallback_bars(self, out / "fallback.png")
        return {**paths, "png": png, "svg": svg}


def step_label(deactivated: Sequence[str]) -> str:
    """"none" for step 0, else the deactivated languages as an expression ("-ru -en")."""
    return " ".join(f"-{lang}" for lang in deactivated) or NONE


def distribution(languages: Sequence[str]) -> tuple[dict[str, float], dict[str, int]]:
    """Share and count of each identified language ("" counted as "none"), most frequent first."""
    counts = Counter(lang or NONE for lang in languages)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return {k: v / len(languages) for k, v in ranked}, dict(ranked)


def default_order(neurons: NeuronSet, language: str) -> list[str]:
    """The prompt language first, then the set's other languages that have neurons, in the set's order."""
    return [language] + [lang for lang in neurons.languages if lang != language and neurons.count(lang) > 0]


def _check(neurons: NeuronSet, language: str, order: Sequence[str] | None) -> list[str]:
    """The deactivation order, after checking every language has neurons in the set."""
    if order is None:
        if language not in neurons.languages:
            raise LangNeuronsError(
                f"language '{language}' is not in the neuron set ({', '.join(neurons.languages)}); "
                "pass order= to choose which languages to deactivate"
            )
        order = default_order(neurons, language)
    order = list(order)
    if not order:
        raise LangNeuronsError("order is empty; name at least one language to deactivate")
    if len(set(order)) != len(order):
        raise LangNeuronsError(f"order {order} names a language twice; name each once")
    for lang in order:
        if lang not in neurons.languages or neurons.count(lang) == 0:
            raise LangNeuronsError(
                f"language '{lang}' has no neurons in this set ({', '.join(neurons.languages)}); "
                "leave it out of order or use a larger top_rate"
            )
    return order


def run_fallback(
    model: PreTrainedModel,
    tok: Any,
    neurons: NeuronSet,
    language: str,
    order: Sequence[str] | None = None,
    prompts: Sequence[str] | None = None,
    value: float = 0.0,
    decoding: Decoding = Decoding(),
    identifier: str = "fasttext",
    progress: bool = True,
) -> FallbackResult:
    """Deactivate the languages of `order` cumulatively (neurons set to `value`) and identify the output languages.

    `prompts`: the prompts, all in `language` (default: the built-in eval questions of `language`, as
    "Q: ...\\nA:" or, in the chat format, as the user's message). All steps are generated in one batched call
    (`decoding`, cut at `prompts.STOP_STRINGS`).
    """
    decoding = decoding.resolved(tok)
    fmt = decoding.prompt_format
    order = _check(neurons, language, order)
    source = "user" if prompts is not None else "builtin:eval"
    prompts = list(prompts) if prompts is not None else [question_prompt(q, fmt) for q in questions(language, "eval")]
    if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise LangNeuronsError("prompts must be a non-empty list of non-empty strings")
    lid = get_identifier(identifier)
    neurons.check_model(model)
    deactivated = [order[:k] for k in range(len(order) + 1)]
    configs = [SteeringConfig(deactivate=dict.fromkeys(d, value)) if d else None for d in deactivated]
    start = time.perf_counter()
    outputs = generate(model, tok, prompts * len(configs), decoding, stop_strings=STOP_STRINGS,
                       steerings=[c for c in configs for _ in prompts], neurons=neurons, progress=progress)
    seconds = time.perf_counter() - start
    found = lid.identify(outputs)
    steps, samples, n = [], [], len(prompts)
    for k, d in enumerate(deactivated):
        rows = range(k * n, (k + 1) * n)
        shares, counts = distribution([found[r].language for r in rows])
        steps.append({"step": k, "label": step_label(d), "deactivated": d, "distribution": shares,
                      "counts": counts, "empty": sum(not outputs[r] for r in rows)})
        samples += [{"step": k, "deactivated": d, "prompt_index": i, "prompt": prompts[i], "output": outputs[r],
                     "language": found[r].language, "confidence": round(found[r].confidence, 4)}
                    for i, r in enumerate(rows)]
    settings = {
        "language": language, "order": order, "value": value, "prompts": source, "n_prompts": n,
        "identifier": identifier, "generation": decoding.record(tok, STOP_STRINGS),
        "prompt_format": fmt,
        "model": model_meta(model),
        "neurons": {"method": neurons.meta.get("method"), "settings": neurons.meta.get("settings", {}),
                    "counts": {lang: neurons.count(lang) for lang in neurons.languages}},
        "versions": {"langneurons": __version__, "torch": torch.__version__,
                     "transformers": transformers.__version__},
        "seconds": round(seconds, 2),
    }
    return FallbackResult(language, steps, samples, settings)


