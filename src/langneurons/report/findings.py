"""The "Findings" that open a report: a few headline numbers computed from a run's results, each with a one-line
reading and a warning when the sample behind it is small.

Each finding comes from one kind of result: a neuron set (where the neurons sit), a perplexity result (how
selective deactivation is, against the random control), a forcing grid (success per target, worst cells), a
translation result (chrF and outputs in the target language).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SMALL_STATS_TOKENS = 50_000  # fewer tokens per language than this: neuron sets may change with more text
SMALL_HELDOUT_TOKENS = 5_000  # fewer held-out tokens per language: NLL differences are noisy
SMALL_CELL = 20  # fewer prompts per cell: a cell's success moves in coarse steps


@dataclass
class Finding:
    """One headline: what it is about, the numbers read in one line, and the caveat of its sample (if any)."""

    title: str
    reading: str
    source: str  # the file it was computed from
    warning: str | None = None


def _span(values: Sequence[float], unit: str) -> str:
    """"150–217 tokens", "8 prompts", "1 prompt" (`unit` in the plural; an "s" dropped for exactly one)."""
    lo, hi = min(values), max(values)
    if lo == hi:
        return f"{lo:,.0f} {unit[:-1] if lo == 1 and unit.endswith('s') else unit}"
    return f"{lo:,.0f}–{hi:,.0f} {unit}"


def neuron_placement(neurons: Any, source: str, tokens: Mapping[str, int] | None = None) -> Finding | None:
    """Where a neuron set's neurons sit: the share in the last third of the layers, the peak layer, the languages
    with the fewest and the most neurons. `tokens`: the statistics' tokens per language, for the warning."""
    total = neurons.count()
    if not total:
        return None
    n_layers = neurons.shape[0]
    per_layer = neurons.masks.any(0).sum(-1).tolist()
    start = n_layers - n_layers // 3
    late = sum(per_layer[start:]) / total
    peak = max(range(n_layers), key=lambda i: per_layer[i])
    counts = {lang: neurons.count(lang) for lang in neurons.languages}
    fewest, most = min(counts, key=lambda k: counts[k]), max(counts, key=lambda k: counts[k])
    where = "cluster in the last third of the network" if late >= 0.5 else "are spread over the network"
    reading = (f"{total:,} language neurons ({100 * total / (n_layers * neurons.shape[1]):.2f}% of all) {where}: "
               f"{late:.0%} sit in {_layers(start, n_layers - 1)}, the most in layer {peak} ({per_layer[peak]}). "
               f"Per language from {counts[fewest]} ({fewest}) to {counts[most]} ({most}).")
    empty = [lang for lang, n in counts.items() if n == 0]
    if empty:
        reading += f" No neurons for {', '.join(empty)}."
    warning = None
    if tokens and min(tokens.values()) < SMALL_STATS_TOKENS:
        warning = (f"Statistics from {_span(list(tokens.values()), 'tokens')} per language: a small sample; the "
                   "sets can change with more text.")
    return Finding("Where the language neurons sit", reading, source, warning)


def _layers(first: int, last: int) -> str:
    return f"layer {first}" if first == last else f"layers {first}–{last}"


def deactivation_selectivity(summary: Mapping[str, Any], source: str) -> list[Finding]:
    """From a perplexity result: how much deactivating a language's neurons hurts that language against the
    others, beside the random control of the same size; and the baseline NLL per language."""
    sets = summary.get("sets") or {}
    tokens = summary.get("tokens") or {}
    warning = None
    if tokens and min(tokens.values()) < SMALL_HELDOUT_TOKENS:
        warning = (f"{_span(list(tokens.values()), 'held-out tokens')} per language: small; differences of a few "
                   "hundredths are within noise.")
    out = []
    main = sets.get("neurons")
    if main and main.get("diagonal_mean") is not None:
        n = len(summary.get("deactivated") or main.get("per_language") or [])
        reading = (f"Deactivating a language's neurons raises its own NLL by {main['diagonal_mean']:+.3f} nats/token "
                   f"and the other languages' by {main['off_diagonal_mean']:+.3f}"
                   + (f" (x{main['ratio']:.2f})" if main.get("ratio") is not None else "")
                   + f"; its own language is hurt most for {main['own_hurt_most']} of {n}.")
        control = sets.get("random")
        if control and control.get("diagonal_mean") is not None:
            reading += (f" Random neurons of the same size per layer: {control['diagonal_mean']:+.3f} vs "
                        f"{control['off_diagonal_mean']:+.3f}"
                        + (f" (x{control['ratio']:.2f})" if control.get("ratio") is not None else "")
                        + f", own hurt most for {control['own_hurt_most']} of {n}.")
            selective = (main["diagonal_mean"] > main["off_diagonal_mean"]
                         and main["diagonal_mean"] - main["off_diagonal_mean"]
                         > abs(control["diagonal_mean"] - control["off_diagonal_mean"]))
            reading += (" The sets are language-selective: far more than chance." if selective else
                        " The sets are not clearly more selective than random neurons.")
        out.append(Finding("Selectivity of deactivation", reading, source, warning))
    baseline = summary.get("baseline") or {}
    if baseline:
        lo, hi = min(baseline, key=lambda k: baseline[k]), max(baseline, key=lambda k: baseline[k])
        out.append(Finding("Perplexity without intervention",
                           f"Held-out NLL per token from {baseline[lo]:.3f} ({lo}) to {baseline[hi]:.3f} ({hi}); "
                           f"mean {sum(baseline.values()) / len(baseline):.3f} over {len(baseline)} languages.",
                           source, warning))
    return out


def forcing_success(data: Mapping[str, Any], source: str, worst: int = 3) -> list[Finding]:
    """From a forcing grid: per steered setting, the mean fluent success, per target, and the worst cells."""
    out = []
    summary, cells = data.get("summary") or {}, data.get("cells") or {}
    base = (summary.get("baseline") or {}).get("fluent_success")
    for label, s in summary.items():
        if label == "baseline" or not isinstance(s, Mapping) or s.get("fluent_success") is None:
            continue
        per = {t: v["fluent_success"] for t, v in (s.get("per_target") or {}).items()}
        off = {k: c for k, c in (cells.get(label) or {}).items() if k.split(">")[0] != k.split(">")[-1]}
        low = sorted(off, key=lambda k: off[k]["fluent_success"])[:worst]
        reading = (f"'{label}': fluent success {s['fluent_success']:.3f} (success {s['success']:.3f})"
                   + (f", against {base:.3f} unsteered" if base is not None else "")
                   + ". Per target: " + ", ".join(f"{t} {v:.2f}" for t, v in per.items()) + ".")
        if low:
            reading += " Worst cells (prompt>target): " + ", ".join(
                f"{k} {off[k]['fluent_success']:.2f}" for k in low) + "."
        sizes = [c.get("n") for c in off.values() if c.get("n")]
        warning = None
        if sizes and min(sizes) < SMALL_CELL:
            warning = (f"{_span(sizes, 'prompts')} per cell: each cell's success moves in steps of "
                       f"{1 / min(sizes):.3g}; read single cells with care.")
        out.append(Finding(f"Forcing the output language ({source})", reading, source, warning))
    return out


def translation_quality(summary: Mapping[str, Any], source: str) -> Finding | None:
    """From a translation result: mean chrF and share of outputs in the target language, baseline vs steered."""
    mean, pairs = summary.get("mean") or {}, summary.get("pairs") or {}
    base = mean.get("baseline")
    if not base:
        return None
    reading = (f"Mean chrF {base['chrf']:.1f} and {base['target_share']:.0%} of outputs in the target language "
               f"unsteered over {len(pairs)} pair(s)")
    steered = mean.get("steered")
    if steered:
        reading += (f"; with the target activated chrF {steered['chrf']:.1f} ({steered['chrf'] - base['chrf']:+.1f}) "
                    f"and {steered['target_share']:.0%} in the target language")
    sizes = [c["baseline"]["n"] for c in pairs.values() if isinstance(c.get("baseline"), Mapping)]
    warning = None
    if sizes and min(sizes) < 100:
        warning = f"{_span(sizes, 'sentences')} per pair: corpus-level chrF on so few sentences is rough."
    return Finding("Translation", reading + ".", source, warning)
