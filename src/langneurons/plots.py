"""Figures, saved as PNG and SVG (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from langneurons.artifacts import atomic_path
from langneurons.neurons import NeuronSet


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
    top = counts.max() if counts.size else 0
    for (k, layer), value in np.ndenumerate(counts):
        if value:
            ax.text(layer, k, str(value), ha="center", va="center", fontsize=7,
                    color="black" if value > 0.6 * top else "white")
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
