"""Percentile bootstrap: confidence intervals of statistics of resampled texts (windows, prompts)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LEVEL = 0.95
MIN_DEFINED = 0.5  # an interval needs the statistic to be defined on at least this share of the replicates


def resample(n: int, replicates: int, rng: np.random.Generator) -> np.ndarray:
    """[replicates, n] indices drawn with replacement from range(n)."""
    return rng.integers(0, n, size=(replicates, n))


def interval(values: np.ndarray | Sequence[float], level: float = LEVEL) -> list[float] | None:
    """The central `level` percentile interval of the replicates' values (NaN where the statistic is undefined,
    e.g. a ratio with a non-positive denominator); None if it is undefined on more than half of them."""
    values = np.asarray(values, dtype=float)
    defined = values[~np.isnan(values)]
    if values.size == 0 or defined.size < MIN_DEFINED * values.size:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(defined, [tail, 100 - tail])
    return [round(float(lo), 4), round(float(hi), 4)]


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > 0, NaN elsewhere (selectivity is undefined when the others are not hurt)."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out
