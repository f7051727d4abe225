"""Calibration: per target language, the steering setting with the highest fluent success on development prompts.

One fixed setting does not fit all targets (a strength that forces English breaks Russian), so each target gets
its own method, strength, neuron share and layers, chosen on the dev questions (disjoint from the eval ones, or the
user's own questions) by successive halving: every candidate on enough questions per source language that one
prompt weighs less than 10% of a target's score, then the best few on all of them. A target for which no candidate
gives a fluent success above zero gets a warning and no setting.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from typing import Any

from langneurons.core.errors import LangNeuronsError, warn
from langneurons.data.prompts import questions
from langneurons.stats.activation import ActivationStats
from langneurons.steering.calibration import Calibration
from langneurons.steering.config import ForcingSetting
from langneurons.steering.generation import Decoding
from langneurons.tasks.forcing import run_forcing

FIRST_ROUND_PROMPTS = 11  # prompts per target in the first round: one prompt is then less than 10% of a score


def default_candidates(n_layers: int) -> list[ForcingSetting]:
    """What worked on gemma-3-270m in a first sweep (replacement by the mean, and addition of the mean, both after
    deactivating the source), at three neuron shares, plus replacement in the upper half of the layers only."""
    upper = (n_layers // 2, n_layers)
    return [ForcingSetting("replace", top_rate=0.01), ForcingSetting("replace", top_rate=0.03),
            ForcingSetting("replace", top_rate=0.05), ForcingSetting("add", 1.0, top_rate=0.01),
            ForcingSetting("add", 1.0, top_rate=0.05), ForcingSetting("replace", top_rate=0.05, layers=upper)]


def calibrate(
    model: Any,
    tokenizer: Any,
    stats: ActivationStats,
    targets: Sequence[str],
    sources: Sequence[str] | None = None,
    candidates: Sequence[ForcingSetting] | None = None,
    question_set: Mapping[str, Sequence[str]] | None = None,
    keep: int = 2,
    decoding: Decoding = Decoding(),
    identifier: str = "fasttext",
    progress: bool = True,
) -> Calibration:
    """Choose a setting per target by fluent success of prompts from `sources` (default: the statistics'
    languages) on the dev questions (or `question_set`: language -> questions). Ties go to the lower NLL under the
    unsteered model. A target whose best fluent success is 0 gets a warning on stderr and no setting; it is listed
    in `meta["failed"]`."""
    sources = list(sources or stats.languages)
    candidates = list(candidates or default_candidates(stats.n_layers))
    for target in targets:
        stats.index(target)
    dev = {lang: _dev_questions(lang, question_set) for lang in sources}
    force = functools.partial(run_forcing, model, tokenizer, None, stats, sources, targets, decoding=decoding,
                              identifier=identifier, baseline=False, skip_unavailable=True, progress=progress)
    per_source = _first_round_size(sources, targets)
    first = {lang: qs[:per_source] for lang, qs in dev.items()}
    plan = {c.label(): dict.fromkeys(targets, c) for c in candidates}
    stage1 = force(plan, question_set=first, nll=False).summary()
    shortlist = {t: sorted((lab for lab in plan if t in stage1[lab]["per_target"]),
                           key=lambda lab: _rank(stage1[lab]["per_target"][t]))[:keep] for t in targets}
    empty = [t for t in targets if not shortlist[t]]
    if empty:
        raise LangNeuronsError(
            f"no candidate has neurons for {', '.join(empty)}; add candidates with a larger top_rate"
        )
    plan2 = {lab: {t: plan[lab][t] for t in targets if lab in shortlist[t]} for lab in plan}
    plan2 = {lab: per for lab, per in plan2.items() if per}
    stage2 = force(plan2, question_set=dev).summary()
    chosen, scores, failed = {}, {}, {}
    for t in targets:
        ranked = sorted(shortlist[t], key=lambda lab: _rank(stage2[lab]["per_target"].get(t)))
        best = stage2[ranked[0]]["per_target"].get(t) or {}
        scores[t] = [{"setting": lab, "stage1": stage1[lab]["per_target"].get(t),
                      "stage2": stage2[lab]["per_target"].get(t) if lab in stage2 else None} for lab in plan]
        if not best.get("fluent_success"):
            failed[t] = {"best_setting": ranked[0], "fluent_success": best.get("fluent_success"),
                         "success": best.get("success")}
            warn(f"no candidate steers towards '{t}' fluently on the dev prompts (best: {ranked[0]}, fluent "
                 f"success {best.get('fluent_success') or 0:.2f}); no setting is stored for '{t}'. Try candidates "
                 f"with a larger top_rate or strength, more statistics for '{t}', or another prompt format")
            continue
        chosen[t] = plan[ranked[0]][t]
    meta = {"sources": sources, "targets": list(targets), "keep": keep, **asdict(decoding), "identifier": identifier,
            "baseline": False, "skip_unavailable": True, "progress": progress,
            "questions": "builtin:dev" if question_set is None else "user",
            "first_round_questions_per_source": per_source, "failed": failed,
            "statistics": {"model": stats.meta.get("model"), "languages": stats.languages,
                           "n_tokens": stats.meta.get("n_tokens")}}
    return Calibration(chosen, scores, meta)


def _dev_questions(lang: str, question_set: Mapping[str, Sequence[str]] | None) -> list[str]:
    """The tuning questions of one source language: the built-in dev split, or the user's."""
    if question_set is None:
        return questions(lang, "dev")
    if not question_set.get(lang):
        raise LangNeuronsError(f"the question file has no questions for source '{lang}'; add some or drop it "
                               "from --sources")
    return list(question_set[lang])


def _first_round_size(sources: Sequence[str], targets: Sequence[str]) -> int:
    """Questions per source in the first round, so that a target's score averages at least FIRST_ROUND_PROMPTS
    prompts (its off-diagonal sources times this)."""
    off = min(sum(s != t for s in sources) for t in targets) if targets else 1
    return max(1, math.ceil(FIRST_ROUND_PROMPTS / max(1, off)))


def _rank(cell: dict[str, Any] | None) -> tuple[float, float, float]:
    """Sort key: higher fluent success, then higher success, then lower NLL."""
    if not cell:
        return (1.0, 1.0, float("inf"))
    nll = cell.get("nll")
    return (-(cell["fluent_success"] or 0.0), -(cell["success"] or 0.0), nll if nll is not None else float("inf"))
