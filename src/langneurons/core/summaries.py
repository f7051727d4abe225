"""Per-language summary rows of statistics, relevance and neuron sets, from their sums.

The arrays may be torch tensors or numpy arrays, so `langneurons info` can summarise a file without importing
torch (it reads the tensors with `safetensors.numpy`).
"""

from __future__ import annotations

from typing import Any


def _per_token(total: Any, n: Any) -> float:
    return float(total) / max(int(n), 1)


def stats_rows(languages: list[str], n_tokens: Any, over_zero: Any, sums: Any) -> list[dict[str, Any]]:
    """One row per language: tokens, mean firing rate, mean activation (means over all neurons)."""
    cells = over_zero.shape[1] * over_zero.shape[2]
    return [{"language": lang, "tokens": int(n_tokens[k]),
             "mean_p": round(_per_token(over_zero[k].sum(), n_tokens[k]) / cells, 4),
             "mean_activation": round(_per_token(sums[k].sum(), n_tokens[k]) / cells, 4)}
            for k, lang in enumerate(languages)]


def relevance_rows(languages: list[str], n_tokens: Any, log_prob: Any, relevance: Any,
                   abs_relevance: Any) -> list[dict[str, Any]]:
    """One row per language: tokens, mean next-token loss, and relevance per token summed over all neurons."""
    return [{"language": lang, "tokens": int(n_tokens[k]), "nll": round(-_per_token(log_prob[k], n_tokens[k]), 4),
             "relevance": round(_per_token(relevance[k].sum(), n_tokens[k]), 4),
             "abs_relevance": round(_per_token(abs_relevance[k].sum(), n_tokens[k]), 4)}
            for k, lang in enumerate(languages)]


def neuron_rows(languages: list[str], masks: Any) -> list[dict[str, Any]]:
    """One row per language: size, and the (up to three) layers holding most of its neurons."""
    rows = []
    for k, lang in enumerate(languages):
        per_layer = [int(x) for x in masks[k].sum(-1)]
        top = sorted((i for i, c in enumerate(per_layer) if c > 0), key=lambda i: (-per_layer[i], i))[:3]
        rows.append({"language": lang, "neurons": sum(per_layer), "top_layers": top})
    return rows
