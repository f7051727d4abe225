"""Figures, saved as PNG and SVG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from langneurons.core.artifacts import atomic_path
from langneurons.identify.neurons import NeuronSet


def _save(fig: plt.Figure, path: str | Path) -> list[Path]:
    """Save `fig` as `path` with .png and .svg suffixes (atomically); returns the files written."""
    base = Path(path).with_suffix("")
    out = []
    for suffix in (".png", ".svg"):
        target = base.with_suffix(suffix)
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=suffix[1:], dpi=150, bbox_inches="tight")
        out.append(target)
    plt.close(fig)
    return out


def text_colour(rgba: Any) -> str:
    """Black or white, whichever reads better on a cell drawn in `rgba`: black where the colour's relative
    luminance (WCAG, from linearised sRGB) is above 0.179, the point where both contrast ratios are equal."""
    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgba[:3])
    return "black" if 0.2126 * r + 0.7152 * g + 0.0722 * b > 0.179 else "white"


def _cell_colour(im: Any, value: float) -> str:
    """The text colour for a value drawn by the image `im` (its own colour map and scale)."""
    return text_colour(im.cmap(im.norm(value)))


def neurons_per_layer(neurons: NeuronSet, path: str | Path, title: str | None = None) -> list[Path]:
    """Heatmap of neuron counts, languages x layers, with the counts written in the cells."""
    counts = neurons.per_layer().numpy()
    n_lang, n_layers = counts.shape
    fig, (ax, bar) = plt.subplots(
        1, 2, figsize=(max(6.0, 0.45 * n_layers + 2.5), 0.45 * n_lang + 1.6),
        gridspec_kw={"width_ratios": [n_layers, 2.2]},
    )
    im = ax.imshow(counts, cmap="viridis", aspect="auto")
    ax.set_xticks(range(n_layers), [str(i) for i in range(n_layers)])
    ax.set_yticks(range(n_lang), neurons.languages)
    ax.set_xlabel("layer")
    for (k, layer), value in np.ndenumerate(counts):
        if value:
            ax.text(layer, k, str(value), ha="center", va="center", fontsize=7, color=_cell_colour(im, value))
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="neurons")
    totals = counts.sum(1)
    bar.barh(range(n_lang), totals, color="#4c72b0")
    bar.set_yticks(range(n_lang), [])
    bar.invert_yaxis()
    bar.set_xlabel("total")
    for k, value in enumerate(totals):
        bar.text(value, k, f" {value}", va="center", fontsize=7)
    method = neurons.meta.get("method", "")
    ax.set_title(title or f"Language neurons per layer ({method}, {neurons.count()} distinct)")
    return _save(fig, path)


def fallback_bars(result: Any, path: str | Path, top: int = 8) -> list[Path]:
    """Stacked bars of output-language shares per fallback step (a `FallbackResult` or its fallback.json dict).

    The `top` most frequent output languages keep their own colour; the rest are merged into "other", and outputs
    without a language are "none".
    """
    summary = result.summary() if hasattr(result, "summary") else result
    steps = summary["steps"]
    totals: dict[str, float] = {}
    for step in steps:
        for lang, share in step["distribution"].items():
            if lang != "none":
                totals[lang] = totals.get(lang, 0.0) + share
    kept = sorted(totals, key=lambda lang: (-totals[lang], lang))[:top]
    shares = {lang: [s["distribution"].get(lang, 0.0) for s in steps] for lang in kept}
    shares["other"] = [sum(v for k, v in s["distribution"].items() if k not in kept and k != "none") for s in steps]
    shares["none"] = [s["distribution"].get("none", 0.0) for s in steps]
    colours = dict(zip(kept, matplotlib.color_sequences["tab10"]))
    colours.update({"other": "#bbbbbb", "none": "#444444"})
    labels = [s["label"] for s in steps]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.65 * len(steps) + 2.5), 4.2))
    bottom = np.zeros(len(steps))
    for lang, values in shares.items():
        if any(values):
            ax.bar(range(len(steps)), values, bottom=bottom, color=colours[lang], label=lang, width=0.75,
                   edgecolor="white", linewidth=0.5)
            bottom += np.asarray(values)
    ax.set_xticks(range(len(steps)), labels, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of outputs")
    ax.set_xlabel("languages deactivated (cumulative)")
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], title="output language", loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=8, frameon=False)
    n = summary.get("settings", {}).get("n_prompts")
    ax.set_title(f"Fallback: output languages of '{summary['language']}' prompts" + (f" (n={n})" if n else ""))
    return _save(fig, path)


def translation_bars(summary: dict[str, Any], path: str | Path) -> list[Path]:
    """chrF and target-language share per pair, one bar per setting (a translation run's summary)."""
    names = list(summary["pairs"])
    labels = [label for label in summary["mean"] if label != "delta"]  # "baseline", then "steered" if it ran
    x, width = np.arange(len(names)), 0.8 / len(labels)
    fig, axes = plt.subplots(1, 2, figsize=(max(6.0, 1.4 * len(names) + 3), 3.6))
    for ax, key, title in zip(axes, ("chrf", "target_share"), ("chrF", "outputs in the target language")):
        for i, label in enumerate(labels):
            ax.bar(x + (i - (len(labels) - 1) / 2) * width, [summary["pairs"][p][label][key] for p in names],
                   width, label=label)
        ax.set_xticks(x, names)
        ax.set_title(title)
    axes[1].set_ylim(0, 1)
    axes[0].legend()
    return _save(fig, path)


def heatmap(values: np.ndarray, rows: list[str], cols: list[str], path: str | Path, title: str,
            row_label: str = "", col_label: str = "", fmt: str = "{:.2f}", vmin: float | None = None,
            vmax: float | None = None, cmap: str = "viridis") -> list[Path]:
    """A labelled matrix with the value written in each cell (NaN cells left blank)."""
    values = np.asarray(values, dtype=float)
    fig, ax = plt.subplots(figsize=(0.6 * len(cols) + 2.2, 0.5 * len(rows) + 1.6))
    im = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel(col_label)
    ax.set_ylabel(row_label)
    for (i, j), v in np.ndenumerate(values):
        if np.isfinite(v):
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=7, color=_cell_colour(im, v))
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02)
    ax.set_title(title)
    return _save(fig, path)


def logit_lens_lines(summary: dict[str, Any], path: str | Path, columns: int = 5) -> list[Path]:
    """Logit lens per layer (a `LogitLensResult.summary()` or logit_lens.json's summary): one panel per prompt
    language and condition, stacked areas of the top-k candidates' script shares and the mean entropy (dashed gold
    line, right axis)."""
    scripts, conditions, languages = summary["scripts"], summary["conditions"], summary["languages"]
    colours = dict(zip(scripts, [*matplotlib.color_sequences["tab10"][:len(scripts) - 2], "#bbbbbb", "#444444"]))
    cols = min(columns, len(languages))
    blocks = -(-len(languages) // cols)
    top = 1.1 * max(s["entropy"] for by_lang in summary["layers"].values() for steps in by_lang.values() for s in steps)
    fig, axes = plt.subplots(blocks * len(conditions), cols, figsize=(3.1 * cols + 1.6, 2.3 * blocks * len(conditions)),
                             squeeze=False, sharex=True, sharey=True)
    for c, condition in enumerate(conditions):
        for k, lang in enumerate(languages):
            ax = axes[c * blocks + k // cols][k % cols]
            steps = summary["layers"][condition][lang]
            layers = [s["layer"] for s in steps]
            ax.stackplot(layers, [[s["shares"][x] for s in steps] for x in scripts],
                         colors=[colours[x] for x in scripts], labels=scripts, linewidth=0)
            ax.set_ylim(0, 1)
            ax.set_xlim(layers[0], layers[-1])
            ax.set_title(f"{lang} · {condition}", fontsize=8)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            twin = ax.twinx()
            twin.plot(layers, [s["entropy"] for s in steps], color="gold", linestyle="--", linewidth=1.5)
            twin.set_ylim(0, top or 1.0)
            twin.tick_params(labelsize=7)
            ax.tick_params(labelsize=7)
        for k in range(len(languages), blocks * cols):
            axes[c * blocks + k // cols][k % cols].axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("layer", fontsize=8)
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles[::-1], names[::-1], title="script of top-k", loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=8, frameon=False)
    fig.suptitle("Logit lens: script shares of the top-k next-token candidates (areas), "
                 "entropy in nats (dashed, right axis)")
    fig.tight_layout()
    return _save(fig, path)
