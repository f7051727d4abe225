"""The cache directory: converted models and fetched corpora live here."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_dir(*parts: str) -> Path:
    """`$LANGNEURONS_CACHE` (default: the user's cache dir) joined with `parts`, created on demand."""
    root = os.environ.get("LANGNEURONS_CACHE") or platformdirs.user_cache_dir("langneurons")
    path = Path(root).joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path
