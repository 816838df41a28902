"""Marker enrichment among the flagged prompts: odds ratio, its CI and Fisher's exact test."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from scipy import stats as scipy_stats

_Z_95 = float(scipy_stats.norm.ppf(0.975))


def marker_enrichment(table: pd.DataFrame, marker_column: str = "has_marker") -> dict[str, Any]:
    """Finding 2 as numbers: is the marker over-represented among memorized prompts?

    With a = memorized with marker, b = memorized without, c = the rest with, d = the rest
    without: shares a/(a+b) and c/(c+d), the odds ratio ad/(bc) with a 95 % confidence
    interval by Woolf's log method (Haldane's correction: 0.5 added to every cell when one is
    0) and the two-sided p-value of Fisher's exact test on the uncorrected counts.
    """
    for column in ("memorized", marker_column):
        if column not in table.columns:
            raise ValueError(f"threshold table has no {column!r} column")
    memorized = table["memorized"].astype(bool).to_numpy()
    marker = table[marker_column].astype(bool).to_numpy()
    a = int((memorized & marker).sum())
    b = int((memorized & ~marker).sum())
    c = int((~memorized & marker).sum())
    d = int((~memorized & ~marker).sum())
    corrected = min(a, b, c, d) == 0
    ca, cb, cc, cd = (x + 0.5 for x in (a, b, c, d)) if corrected else (a, b, c, d)
    log_or = math.log((ca * cd) / (cb * cc))
    se = math.sqrt(1 / ca + 1 / cb + 1 / cc + 1 / cd)
    _, fisher_p = scipy_stats.fisher_exact([[a, b], [c, d]], alternative="two-sided")
    return {
        "n_prompts": a + b + c + d,
        "n_memorized": a + b,
        "n_with_marker": a + c,
        "memorized_with_marker": a,
        "memorized_without_marker": b,
        "rest_with_marker": c,
        "rest_without_marker": d,
        "share_marker_memorized": a / (a + b) if a + b else None,
        "share_marker_rest": c / (c + d) if c + d else None,
        "odds_ratio": math.exp(log_or),
        "odds_ratio_ci95": [math.exp(log_or - _Z_95 * se), math.exp(log_or + _Z_95 * se)],
        "haldane_corrected": corrected,
        "fisher_p": float(fisher_p),
    }
