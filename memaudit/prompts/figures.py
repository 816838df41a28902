"""Prompt-stage figure: how often each unique prompt occurs."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt

from memaudit.plotting import MARKER_COLOR, ORDINARY_COLOR, save_figure, use_style

FREQUENCY_BINS = (0, 1, 5, 20, 100, float("inf"))
FREQUENCY_LABELS = ("1", "2–5", "6–20", "21–100", ">100")


def plot_prompt_frequency(prompts, summary: dict, png_path: str | Path) -> None:
    """Rank-frequency of unique prompts (log-log) and marker prevalence by frequency bin.

    ``prompts`` is the prompts table (``n_reports``, ``has_marker``). No prompt text is drawn,
    so the figure is safe to share.
    """
    import numpy as np
    import pandas as pd

    use_style()
    fig, (ax_rank, ax_bins) = plt.subplots(1, 2, figsize=(10, 4))
    counts = prompts["n_reports"].to_numpy()
    order = np.argsort(-counts, kind="stable")
    ranks = np.arange(1, len(counts) + 1)
    marker = prompts["has_marker"].to_numpy()[order]
    sorted_counts = counts[order]
    ax_rank.plot(ranks, sorted_counts, color=ORDINARY_COLOR, lw=1)
    ax_rank.scatter(
        ranks[marker], sorted_counts[marker], s=6, color=MARKER_COLOR, label="has marker", zorder=3
    )
    ax_rank.set(xscale="log", yscale="log", xlabel="prompt rank", ylabel="reports per prompt")
    ax_rank.set_title(f"{len(counts):,} unique prompts from {int(counts.sum()):,} reports")
    ax_rank.legend(loc="upper right")

    bins = pd.cut(prompts["n_reports"], FREQUENCY_BINS, labels=FREQUENCY_LABELS)
    share = prompts.groupby(bins, observed=False)["has_marker"].mean().fillna(0) * 100
    sizes = prompts.groupby(bins, observed=False).size()
    ax_bins.bar(FREQUENCY_LABELS, share.to_numpy(), color=MARKER_COLOR)
    for i, n in enumerate(sizes.to_numpy()):
        ax_bins.annotate(f"n={n:,}", (i, share.iloc[i]), ha="center", va="bottom", fontsize=8)
    overall = 100 * float(prompts["has_marker"].mean()) if len(prompts) else 0.0
    ax_bins.axhline(overall, color=ORDINARY_COLOR, ls="--", lw=1, label=f"all: {overall:.1f} %")
    ax_bins.set(xlabel="reports per prompt", ylabel="prompts with marker (%)")
    ax_bins.set_title("marker prevalence by prompt frequency")
    ax_bins.legend(loc="upper right")
    skipped = sum(summary.get("skipped", {}).values())
    fig.suptitle(f"reports read {summary.get('reports_read', 0):,}, skipped {skipped:,}")
    save_figure(fig, png_path)
