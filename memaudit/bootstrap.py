"""One percentile bootstrap for every interval the workflow reports.

Each interval is seeded by ``(seed, key)`` through a hash, where ``key`` names the quantity
(e.g. ``"planted|gradient|trigger"``, ``"rwa|all|diversity"``): an interval depends only on its
own rows and name, never on which other intervals exist or in which order they are computed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
from numpy.typing import ArrayLike

from memaudit.seeds import hashed_seed


def bootstrap_rng(seed: int, key: str) -> np.random.Generator:
    """The generator of one named interval."""
    return np.random.default_rng(hashed_seed("memaudit-bootstrap", seed, key))


def bootstrap_ci(
    columns: Mapping[str, ArrayLike],
    resamples: int,
    *,
    seed: int,
    key: str,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile intervals (``level``, default 95 %) of the means of paired columns.

    Rows are resampled together, so the columns of one unit (a prompt) stay paired. A resample
    whose mean is NaN (a NaN in the column) is left out of that column's percentiles; callers
    that want NaNs dropped row-wise drop them before. No rows, or no resamples: NaN intervals.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"bootstrap level must be in (0, 1), got {level!r}")
    lengths = {len(np.asarray(v)) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"bootstrap columns differ in length: {sorted(lengths)}")
    m = lengths.pop() if lengths else 0
    if m == 0 or resamples < 1:
        return {name: (math.nan, math.nan) for name in columns}
    draws = bootstrap_rng(seed, key).integers(0, m, size=(resamples, m))
    tail = round(50.0 * (1.0 - level), 10)  # 2.5 exactly at level 0.95
    out = {}
    for name, values in columns.items():
        means = np.asarray(values, dtype=np.float64)[draws].mean(axis=1)
        if np.isfinite(means).any():
            lo, hi = np.nanpercentile(means, [tail, 100.0 - tail])
        else:
            lo = hi = math.nan
        out[name] = (float(lo), float(hi))
    return out


def mean_ci(
    values: ArrayLike, resamples: int, *, seed: int, key: str, level: float = 0.95
) -> tuple[float, float]:
    """The interval of one column's mean, over its finite values only."""
    array = np.asarray(values, dtype=np.float64)
    return bootstrap_ci(
        {"value": array[np.isfinite(array)]}, resamples, seed=seed, key=key, level=level
    )["value"]
