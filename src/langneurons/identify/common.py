"""What every identification method records about its input."""

from __future__ import annotations

from typing import Any

from langneurons.stats.activation import ActivationStats


def provenance(stats: ActivationStats, method: str, **settings: Any) -> dict[str, Any]:
    """Metadata of a neuron set: the method, its settings, and where the statistics came from."""
    return {
        "method": method,
        "settings": settings,
        "model": stats.meta.get("model", {}),
        "site": stats.meta.get("site", {}),
        "corpus": stats.meta.get("corpus", {}),
        "n_tokens": dict(zip(stats.languages, stats.n_tokens.tolist())),
    }
