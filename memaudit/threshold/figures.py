"""Fig. 2: the distribution of d_mem with the threshold."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from memaudit.plotting import MEMORIZED_COLOR, ORDINARY_COLOR, save_figure, use_style


def plot_score_distribution(
    table: pd.DataFrame,
    threshold: float,
    png: str | Path,
    log_y: bool = False,
    column: str = "d_mem",
    label: str = "d_mem",
) -> None:
    """Fig. 2: every unique prompt's score (``column``, the thresholded one) by rank
    (memorized in red) and a histogram; ``label`` names the score on the axes.

    Writes ``png`` and a PDF beside it.
    """
    use_style()
    ordered = table.sort_values(column, ascending=False, kind="mergesort")
    scores = ordered[column].to_numpy(dtype=np.float64)
    memorized = scores > threshold
    ranks = np.arange(1, len(scores) + 1)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(10, 4), gridspec_kw={"width_ratios": [3, 2]}, constrained_layout=True
    )
    left.scatter(ranks[~memorized], scores[~memorized], s=6, color=ORDINARY_COLOR, label="other")
    left.scatter(
        ranks[memorized],
        scores[memorized],
        s=10,
        color=MEMORIZED_COLOR,
        label=f"memorized (n={int(memorized.sum())})",
    )
    left.axhline(threshold, color=MEMORIZED_COLOR, linestyle="--", linewidth=1)
    left.set_xscale("log")
    left.set_xlabel(f"rank of prompt (1 = highest {label})")
    left.set_ylabel(label)
    left.set_title(f"{len(scores):,} unique prompts")
    left.legend(loc="upper right", frameon=True)
    bins = np.histogram_bin_edges(scores, bins=min(60, max(10, len(scores) // 20)))
    right.hist(scores[~memorized], bins=bins, color=ORDINARY_COLOR, alpha=0.85)
    right.hist(scores[memorized], bins=bins, color=MEMORIZED_COLOR, alpha=0.95)
    right.axvline(threshold, color=MEMORIZED_COLOR, linestyle="--", linewidth=1)
    right.set_xlabel(label)
    right.set_ylabel("prompts")
    if log_y:
        left.set_yscale("log")
        right.set_yscale("log")
    right.set_title(f"threshold {threshold:.4g}")
    save_figure(fig, png)
