"""The memorized set: a d_mem threshold (percentile, z-score or fixed value) and the flag."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

METHODS = ("percentile", "zscore", "value")


def score_threshold(
    values: np.ndarray | Sequence[float],
    method: str = "percentile",
    percentile: float = 99.0,
    z: float = 3.0,
    value: float | None = None,
) -> float:
    """The d_mem threshold by ``method``.

    ``percentile``: numpy's linear-interpolation percentile of the scores; ``zscore``: mean +
    z × sample standard deviation (ddof=1); ``value``: ``value`` itself.
    """
    scores = np.asarray(values, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"threshold method must be one of {list(METHODS)}, got {method!r}")
    if method == "value":
        if value is None or not math.isfinite(value):
            raise ValueError("threshold method 'value' needs a finite threshold value")
        return float(value)
    if scores.size == 0:
        raise ValueError("no scores to threshold")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} score(s) are not finite")
    if method == "percentile":
        if not 0 <= percentile <= 100:
            raise ValueError(f"threshold percentile must be in [0, 100], got {percentile!r}")
        return float(np.percentile(scores, percentile))
    if scores.size < 2:
        raise ValueError("threshold method 'zscore' needs at least two scores")
    return float(scores.mean() + z * scores.std(ddof=1))


def threshold_scores(
    scores: pd.DataFrame,
    prompts: pd.DataFrame,
    method: str = "percentile",
    percentile: float = 99.0,
    z: float = 3.0,
    value: float | None = None,
    column: str = "d_mem",
) -> tuple[pd.DataFrame, float]:
    """Join scores to prompts and flag memorized prompts (``column`` strictly above the
    threshold; ``score`` is the primary detector's, ``d_mem`` Wen's).

    Returns the table (prompt columns + ``d_mem``, the ``column`` when it is another, ``rank``
    (1 = highest score) and ``memorized``; sorted by rank; stored norms are left out) and the
    threshold. Every scored prompt must be in ``prompts`` and every prompt scored; otherwise
    the error counts them.
    """
    for name, table, needed in (
        ("scores", scores, "d_mem"),
        ("scores", scores, column),
        ("scores", scores, "prompt_id"),
        ("prompts", prompts, "prompt_id"),
    ):
        if needed not in table.columns:
            raise ValueError(f"{name} table has no {needed!r} column")
    scored, listed = set(scores["prompt_id"]), set(prompts["prompt_id"])
    if len(scored) != len(scores):
        raise ValueError(f"scores table has {len(scores) - len(scored)} duplicate prompt_id(s)")
    unscored, unknown = listed - scored, scored - listed
    if unscored or unknown:
        raise ValueError(
            f"scores and prompts disagree: {len(unscored)} prompt(s) without a score "
            f"(e.g. {sorted(unscored)[:3]}), {len(unknown)} score(s) of unknown prompts "
            f"(e.g. {sorted(unknown)[:3]})"
        )
    threshold = score_threshold(scores[column], method, percentile, z, value)
    kept = list(dict.fromkeys(["prompt_id", "d_mem", column]))
    extra = [c for c in prompts.columns if c in kept and c != "prompt_id"]
    table = prompts.drop(columns=extra).merge(
        scores[kept], on="prompt_id", how="inner", validate="one_to_one"
    )
    table = table.sort_values([column, "prompt_id"], ascending=[False, True], kind="mergesort")
    table = table.reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1, dtype=np.int64)
    table["memorized"] = table[column].to_numpy() > threshold
    return table, threshold
