"""Analysis figures of a neuron set and of activation statistics (PNG + SVG, via `langneurons.figures.charts`).

Where language neurons sit (counts and share per layer), how the languages' sets overlap (Jaccard, ordered by
average-linkage clustering), whether neurons specialise by script (Latin vs other scripts), the firing rate
per layer, and the activation probability of chosen neurons across languages. `table_heatmap` draws any
`{row: {column: value}}` table (a perplexity matrix, a task's deltas) with `plots.heatmap`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.ticker import MaxNLocator

from langneurons.core.errors import LangNeuronsError
from langneurons.figures.charts import _save, heatmap, neurons_per_layer, plt
from langneurons.identify.neurons import NeuronSet
from langneurons.stats.activation import ActivationStats

# ISO 639-1/3 codes of languages normally written in the Latin script (a tag ending in "-Latn" counts too).
_LATIN_CODES = (
    "af az bs ca cs cy da de en eo es et eu fi fil fo fr fy ga gd gl ha haw hr ht hu id ig is it jv ku la lb lt lv "
    "mg mi ms mt nb nl nn no ny oc pl pt qu ro rm rw sk sl sm sn so sq st su sv sw tk tl tn tr uz vi wo xh yo zu "
    "ast bre cat ces dan deu eng est eus fin fra gle glg hrv hun ind ita lit lav mlt nld nob nor pol por ron slk "
    "slv spa sqi swa swe tur vie zul"
)
LATIN_SCRIPT = frozenset(_LATIN_CODES.split())

# Script classes of a neuron by the languages it belongs to, in drawing order, with their colours.
SCRIPT_CLASSES = {
    "one Latin-script language": "#9ecae1",
    "several Latin-script languages": "#2171b5",
    "one non-Latin-script language": "#fdae6b",
    "several non-Latin-script languages": "#d94801",
    "Latin and non-Latin languages": "#756bb1",
}


def is_latin(language: str, latin: Collection[str] | None = None) -> bool:
    """Whether `language` is written in the Latin script: in `latin` (default `LATIN_SCRIPT`) or tagged -Latn."""
    base = language.split("-")[0].split("_")[0].lower()
    return language.lower().endswith("-latn") or base in (LATIN_SCRIPT if latin is None else latin)


def _colours(n: int) -> list:
    return matplotlib.color_sequences["tab10" if n <= 10 else "tab20"] * (n // 20 + 1)


def share_per_layer(neurons: NeuronSet, path: str | Path, title: str | None = None) -> list[Path]:
    """Per layer, the share of the layer's neurons that are language neurons: one line per language, and the
    share belonging to any language."""
    counts = neurons.per_layer().numpy()
    n_layers, n_neurons = neurons.shape
    layers = np.arange(n_layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * n_layers + 3.5), 4.2))
    for lang, row, colour in zip(neurons.languages, counts, _colours(len(neurons.languages))):
        ax.plot(layers, 100 * row / n_neurons, marker="o", markersize=3, linewidth=1.2, color=colour, label=lang)
    any_lang = neurons.masks.any(0).sum(-1).numpy()
    ax.plot(layers, 100 * any_lang / n_neurons, color="black", linewidth=2.2, label="any language")
    ax.set_xticks(layers if n_layers <= 40 else layers[:: max(1, n_layers // 20)])
    ax.set_xlim(-0.5, n_layers - 0.5)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("layer")
    ax.set_ylabel(f"% of the layer's {n_neurons} neurons")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False, title="language")
    ax.set_title(title or f"Share of each layer's neurons that are language neurons ({neurons.meta.get('method', '')})")
    return _save(fig, path)


def cluster_order(similarity: np.ndarray) -> list[int]:
    """Leaf order of average-linkage (UPGMA) clustering on the distance `1 - similarity`: similar items end up
    next to each other. Ties merge the pair with the lowest indices first."""
    sim = np.asarray(similarity, dtype=float)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise LangNeuronsError(f"cluster_order needs a square similarity matrix, got shape {sim.shape}")
    dist = 1.0 - sim
    clusters = [[i] for i in range(len(sim))]
    while len(clusters) > 1:
        a, b = min(((i, j) for i in range(len(clusters)) for j in range(i + 1, len(clusters))),
                   key=lambda pair: float(dist[np.ix_(clusters[pair[0]], clusters[pair[1]])].mean()))
        clusters[a] = clusters[a] + clusters[b]
        del clusters[b]
    return clusters[0] if clusters else []


def overlap_matrix(neurons: NeuronSet, path: str | Path, title: str | None = None) -> list[Path]:
    """Jaccard overlap of the languages' neuron sets, rows and columns ordered by clustering (diagonal blank)."""
    if len(neurons.languages) < 2:
        raise LangNeuronsError("an overlap matrix needs at least two languages")
    jac = neurons.jaccard().numpy()
    order = cluster_order(jac)
    values = jac[np.ix_(order, order)].copy()
    np.fill_diagonal(values, np.nan)
    labels = [f"{neurons.languages[i]} ({neurons.count(neurons.languages[i])})" for i in order]
    return heatmap(values, labels, labels, path,
                   title or "Overlap of language neuron sets (Jaccard; clustered, neuron counts in brackets)",
                   "language", "language", vmin=0.0)


def script_groups(neurons: NeuronSet, latin: Collection[str] | None = None) -> dict[str, np.ndarray]:
    """Per layer, how many neurons belong only to Latin-script languages (one or several), only to others (one or
    several), or to both kinds: `{class: int array [layers]}` with the keys of `SCRIPT_CLASSES`."""
    masks = neurons.masks
    is_lat = torch.tensor([is_latin(lang, latin) for lang in neurons.languages], dtype=torch.bool)
    n_lat = masks[is_lat].sum(0) if is_lat.any() else torch.zeros(neurons.shape, dtype=torch.long)
    n_other = masks[~is_lat].sum(0) if (~is_lat).any() else torch.zeros(neurons.shape, dtype=torch.long)
    groups = {
        "one Latin-script language": (n_lat == 1) & (n_other == 0),
        "several Latin-script languages": (n_lat > 1) & (n_other == 0),
        "one non-Latin-script language": (n_other == 1) & (n_lat == 0),
        "several non-Latin-script languages": (n_other > 1) & (n_lat == 0),
        "Latin and non-Latin languages": (n_lat > 0) & (n_other > 0),
    }
    return {name: g.sum(-1).numpy() for name, g in groups.items()}


def script_specialisation(neurons: NeuronSet, path: str | Path, latin: Collection[str] | None = None,
                          title: str | None = None) -> list[Path]:
    """Stacked bars per layer: neurons of one or several Latin-script languages, of one or several other-script
    languages, and neurons shared across the two."""
    groups = script_groups(neurons, latin)
    n_layers = neurons.shape[0]
    lat = [lang for lang in neurons.languages if is_latin(lang, latin)]
    other = [lang for lang in neurons.languages if not is_latin(lang, latin)]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * n_layers + 3.5), 4.2))
    bottom = np.zeros(n_layers)
    for name, colour in SCRIPT_CLASSES.items():
        ax.bar(range(n_layers), groups[name], bottom=bottom, color=colour, label=name, width=0.8)
        bottom += groups[name]
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("language neurons")
    ax.set_xlim(-0.6, n_layers - 0.4)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], names[::-1], loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False,
              title="neuron belongs to")
    totals = {name: int(v.sum()) for name, v in groups.items()}
    ax.set_title(title or (f"Script specialisation: Latin ({', '.join(lat) or 'none'}) vs other "
                           f"({', '.join(other) or 'none'}); shared across: {totals['Latin and non-Latin languages']}"),
                 fontsize=10)
    return _save(fig, path)


def firing_rate_per_layer(stats: ActivationStats, path: str | Path, title: str | None = None) -> list[Path]:
    """Mean activation probability (share of tokens on which a neuron fires) per layer, one line per language."""
    p = stats.activation_probability().mean(-1).numpy()
    layers = np.arange(stats.n_layers)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.3 * stats.n_layers + 3.5), 4.2))
    for lang, row, colour in zip(stats.languages, p, _colours(len(stats.languages))):
        ax.plot(layers, row, marker="o", markersize=3, linewidth=1.2, color=colour, label=lang)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel("mean activation probability")
    ax.set_xlim(-0.5, stats.n_layers - 0.5)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, frameon=False, title="language")
    ax.set_title(title or f"How often neurons fire, per layer ({stats.model_id or 'model'})")
    return _save(fig, path)


def signature_neurons(stats: ActivationStats, neurons: NeuronSet) -> list[tuple[str, int, int]]:
    """For each language with neurons, `(language, layer, neuron)` of its neuron whose activation probability on
    that language most exceeds the highest on any other language."""
    p = stats.activation_probability()
    out = []
    for lang in neurons.languages:
        if lang not in stats.languages or not neurons.count(lang):
            continue
        k = stats.index(lang)
        others = torch.cat([p[:k], p[k + 1:]]).amax(0) if len(stats.languages) > 1 else torch.zeros_like(p[k])
        gap = torch.where(neurons.mask(lang), p[k] - others, torch.tensor(-torch.inf, dtype=p.dtype))
        layer, neuron = divmod(int(gap.flatten().argmax()), stats.n_neurons)
        out.append((lang, layer, neuron))
    return out


def activation_profile(stats: ActivationStats, units: Sequence[tuple[int, int]], path: str | Path,
                       neurons: NeuronSet | None = None, title: str | None = None) -> list[Path]:
    """Bars of the activation probability of each chosen `(layer, neuron)` on every language, one panel per
    neuron; with `neurons`, the languages the neuron belongs to are highlighted."""
    if not units:
        raise LangNeuronsError("activation_profile needs at least one (layer, neuron)")
    for layer, neuron in units:
        if not (0 <= layer < stats.n_layers and 0 <= neuron < stats.n_neurons):
            raise LangNeuronsError(f"neuron ({layer}, {neuron}) is outside the statistics' "
                                   f"{stats.n_layers} layers x {stats.n_neurons} neurons")
    p = stats.activation_probability().numpy()
    cols = min(len(units), 3)  # at most three panels a row: legible when the figure is shrunk to a page's width
    rows = -(-len(units) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(3.6 * cols, 0.3 * len(stats.languages) * cols), 2.6 * rows),
                             squeeze=False, sharey=True)
    x = np.arange(len(stats.languages))
    for ax, (layer, neuron) in zip(axes.flat, units):
        owners = [lang for lang in neurons.languages if neurons.mask(lang)[layer, neuron]] if neurons else []
        colours = ["#d94801" if lang in owners else "#6b8fb8" for lang in stats.languages]
        ax.bar(x, p[:, layer, neuron], color=colours)
        ax.set_xticks(x, stats.languages, rotation=90 if len(x) > 12 else 0, fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_title(f"layer {layer}, neuron {neuron}" + (f" ({', '.join(owners)})" if owners else ""), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes.flat[len(units):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("activation probability")
    for ax in axes[-1, :]:
        ax.set_xlabel("language")
    note = " (orange: languages the neuron belongs to)" if neurons is not None else ""
    fig.suptitle(title or f"Activation probability of chosen neurons per language{note}", fontsize=11)
    fig.tight_layout()
    return _save(fig, path)


def table_heatmap(table: Mapping[str, Mapping[str, float | None]], path: str | Path, title: str,
                  row_label: str = "", col_label: str = "", diverging: bool = False, fmt: str = "{:.2f}"
                  ) -> list[Path]:
    """A `{row: {column: value}}` table (a perplexity matrix, a task's deltas) as a heatmap; missing cells blank.
    `diverging`: a red-blue scale centred on 0 (for differences)."""
    rows = list(table)
    cols = list(dict.fromkeys(c for r in rows for c in table[r]))
    if not rows or not cols:
        raise LangNeuronsError(f"table_heatmap got an empty table for '{title}'")
    values = np.array([[np.nan if (v := table[r].get(c)) is None else float(v) for c in cols] for r in rows])
    if not diverging:
        return heatmap(values, rows, cols, path, title, row_label, col_label, fmt=fmt)
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return heatmap(values, rows, cols, path, title, row_label, col_label, fmt=fmt, vmin=-top, vmax=top, cmap="RdBu_r")


def neuron_figures(neurons: NeuronSet, out_dir: str | Path, stats: ActivationStats | None = None,
                   prefix: str = "", latin: Collection[str] | None = None) -> dict[str, list[Path]]:
    """Every analysis figure of a neuron set (and, with its statistics, the firing rates and the signature
    neurons' profiles) in `out_dir`, named `{prefix}{figure}.png/.svg`; returns the files by figure name."""
    out = Path(out_dir)
    figures = {
        "neurons_per_layer": neurons_per_layer(neurons, out / f"{prefix}neurons_per_layer.png"),
        "share_per_layer": share_per_layer(neurons, out / f"{prefix}share_per_layer.png"),
        "script_specialisation": script_specialisation(neurons, out / f"{prefix}script_specialisation.png", latin),
    }
    if len(neurons.languages) > 1:
        figures["overlap"] = overlap_matrix(neurons, out / f"{prefix}overlap.png")
    if stats is not None:
        neurons.check_shape(stats.n_layers, stats.n_neurons, stats.model_id)
        figures["firing_rate"] = firing_rate_per_layer(stats, out / f"{prefix}firing_rate.png")
        units = signature_neurons(stats, neurons)
        if units:
            figures["profiles"] = activation_profile(
                stats, [(layer, j) for _, layer, j in units], out / f"{prefix}profiles.png", neurons,
                "Activation probability per language of each language's most specific neuron "
                "(orange: languages it belongs to)")
    return figures
