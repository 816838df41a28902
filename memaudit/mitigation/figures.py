"""Fig. 4 (generations per strategy beside the training image) and the diversity figure."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from memaudit.mitigation.spec import derived_seed
from memaudit.plotting import (
    MARKER_COLOR,
    MEMORIZED_COLOR,
    ORDINARY_COLOR,
    save_figure,
    save_message_figure,
    use_style,
)

# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def figure_prompts(evaluation: pd.DataFrame, n_prompts: int) -> list[str]:
    """Prompts shown in Fig. 4: most strategies generated first, then highest original d_mem."""
    if not len(evaluation) or n_prompts < 1:
        return []
    done = evaluation[evaluation["status"] == "generated"]
    original = done[done["strategy"] == "original"].set_index("prompt_id")["d_mem"]
    counts = done.groupby("prompt_id").size()
    keys = sorted(
        counts.index,
        key=lambda p: (-int(counts[p]), -float(original.get(p, -math.inf)), p),
    )
    return keys[:n_prompts]


def plot_mitigation_grid(
    evaluation: pd.DataFrame,
    png: str | Path,
    strategies: Sequence[str],
    n_prompts: int = 2,
    n_seeds: int = 6,
    training_image: Callable[[str], np.ndarray] | None = None,
    copy_threshold: float | None = None,
) -> None:
    """Fig. 4: per shown prompt, one row per strategy and a row of nearest training images.

    Columns are the first ``n_seeds`` seeds (the same x_T in every row). The last row shows,
    for each seed, the training image nearest to the *original* prompt's generation (with its
    similarity; red frame = copy), when copy detection ran (``training_image`` maps a
    train_id to pixels).
    """
    # 1. The prompts shown and their generated rows, in strategy order
    use_style()
    shown = figure_prompts(evaluation, n_prompts)
    if not shown:
        save_message_figure(png, "no mitigated prompt to show", height=1.5)
        return
    blocks = []
    for pid in shown:
        rows = evaluation[(evaluation["prompt_id"] == pid) & (evaluation["status"] == "generated")]
        rows = rows.set_index("strategy").reindex(
            [s for s in strategies if s in set(rows["strategy"])]
        )
        blocks.append((pid, rows))
    k = max(1, min(n_seeds, int(max(r["n_seeds"].max() for _, r in blocks))))
    with_nearest = training_image is not None
    # 2. One sub-figure per prompt: its generations, then its nearest training images
    heights = [len(r) + int(with_nearest) for _, r in blocks]
    fig = plt.figure(
        figsize=(1.05 * k + 2.6, 1.05 * sum(heights) + 0.45 * len(blocks)), layout="constrained"
    )
    subfigs = np.atleast_1d(fig.subfigures(len(blocks), 1, height_ratios=heights))
    cache: dict[str, np.ndarray] = {}
    for sub, (pid, rows) in zip(subfigs, blocks, strict=True):
        axes = np.atleast_2d(sub.subplots(len(rows) + int(with_nearest), k, squeeze=False))
        text = str(rows["text"].iloc[0])
        short = text if len(text) <= 110 else text[:107] + "..."
        sub.suptitle(f"{short}\n({rows['selection_reason'].iloc[0]}, prompt {pid})", fontsize=7)
        _draw_generations(axes, rows, k, cache)
        if with_nearest:
            _draw_nearest_training(axes[len(rows)], rows, k, training_image, copy_threshold)
    save_figure(fig, png)


def _draw_generations(
    axes: np.ndarray, rows: pd.DataFrame, k: int, cache: dict[str, np.ndarray]
) -> None:
    """One axes row per strategy: its first ``k`` seeds, labelled with diversity and copies.

    ``cache`` keeps each chunk's images once loaded (a chunk holds many prompts)."""
    for r, (strategy, row) in enumerate(rows.iterrows()):
        chunk = row["chunk"]
        if chunk not in cache:
            with np.load(chunk, allow_pickle=False) as archive:
                cache[chunk] = archive["images"]
        images = cache[chunk][int(row["row"])]
        for c in range(k):
            ax = axes[r, c]
            ax.imshow(images[c], cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"seed {c}", fontsize=7)
        label = f"{strategy}\ndiv {row['diversity']:.3f}"
        if np.isfinite(row.get("copy_rate", np.nan)):
            label += f"\ncopy {100 * row['copy_rate']:.0f} %"
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)


def _draw_nearest_training(
    axes: np.ndarray,
    rows: pd.DataFrame,
    k: int,
    training_image: Callable[[str], np.ndarray],
    copy_threshold: float | None,
) -> None:
    """The training image nearest to each seed of the original prompt (red frame = copy)."""
    original = rows.loc["original"] if "original" in rows.index else rows.iloc[0]
    ids = original.get("nearest_train_ids")
    sims = original.get("nearest_similarities")
    for c in range(k):
        ax = axes[c]
        ax.set_xticks([])
        ax.set_yticks([])
        if ids is None or c >= len(ids):
            ax.axis("off")
            continue
        ax.imshow(training_image(str(ids[c])), cmap="gray", vmin=0, vmax=1)
        copied = copy_threshold is not None and float(sims[c]) > copy_threshold
        ax.set_xlabel(f"sim {float(sims[c]):.3f}", fontsize=6)
        if copied:
            for spine in ax.spines.values():
                spine.set_edgecolor(MEMORIZED_COLOR)
                spine.set_linewidth(2)
    axes[0].set_ylabel(
        "nearest training\n(to original)", rotation=0, ha="right", va="center", fontsize=7
    )


def plot_mitigation_diversity(
    evaluation: pd.DataFrame,
    summary: pd.DataFrame,
    png: str | Path,
    strategies: Sequence[str],
    memorization_threshold: float | None = None,
) -> None:
    """Diversity (per prompt and mean with 95 % CI), mitigated d_mem and copy rate per strategy."""
    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), constrained_layout=True)
    present = [s for s in strategies if s in set(summary.get("strategy", pd.Series([])))]
    done = evaluation[evaluation["status"] == "generated"] if len(evaluation) else evaluation
    overall = summary[summary["group"] == "all"].set_index("strategy") if len(summary) else None
    for ax, column, title in (
        (axes[0], "diversity", "diversity (mean pairwise RMS L2)"),
        (axes[1], "d_mem", "d_mem of the mitigated prompt"),
    ):
        _draw_per_prompt(ax, done, present, column)
        if overall is not None and column == "diversity":
            means = overall.loc[present, "diversity_mean"].to_numpy()
            low = overall.loc[present, "diversity_ci_low"].to_numpy()
            high = overall.loc[present, "diversity_ci_high"].to_numpy()
            ax.errorbar(
                range(len(present)),
                means,
                yerr=[means - low, high - means],
                fmt="_",
                color="black",
                ms=14,
                capsize=3,
                label="mean, 95 % CI",
            )
        if column == "d_mem" and memorization_threshold is not None:
            ax.axhline(
                memorization_threshold,
                color=MEMORIZED_COLOR,
                ls="--",
                lw=1,
                label="memorization threshold",
            )
        ax.set_xticks(range(len(present)), present, rotation=30)
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    _draw_copy_rates(axes[2], overall, present)
    save_figure(fig, png)


def _draw_per_prompt(ax: Any, done: pd.DataFrame, present: Sequence[str], column: str) -> None:
    """``column`` of every generated row, planted and other prompts apart, jittered by a hash
    of the prompt id (so a prompt keeps its place whatever else is drawn)."""
    x = {s: i for i, s in enumerate(present)}
    for planted, color, name in (
        (True, MARKER_COLOR, "planted"),
        (False, ORDINARY_COLOR, "other"),
    ):
        part = done[done["planted"] == planted] if len(done) else done
        if not len(part):
            continue
        xs = np.array([x[s] for s in part["strategy"]], dtype=float)
        jitter = (np.array([derived_seed(p) % 1000 for p in part["prompt_id"]]) / 1000 - 0.5) * 0.3
        ax.scatter(xs + jitter, part[column], s=9, color=color, alpha=0.6, label=name)
        # Thin lines join one prompt's strategies: the comparison is paired.
        for _, one in part.assign(_x=xs + jitter).groupby("prompt_id"):
            one = one.sort_values("_x")
            ax.plot(one["_x"], one[column], color=color, alpha=0.2, lw=0.6)


def _draw_copy_rates(ax: Any, overall: pd.DataFrame | None, present: Sequence[str]) -> None:
    """Copy rate per strategy with its interval and, on the demo, how often a planted
    prompt's nearest training image is its own planted image; a note when copy detection
    was skipped."""
    if overall is None or not np.isfinite(overall["copy_rate"]).any():
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "copy detection skipped\n(no training images configured)",
            ha="center",
            va="center",
        )
        return
    rates = 100 * overall.loc[present, "copy_rate"].to_numpy()
    low = 100 * overall.loc[present, "copy_rate_ci_low"].to_numpy()
    high = 100 * overall.loc[present, "copy_rate_ci_high"].to_numpy()
    nearest = 100 * overall.loc[present, "planted_nearest_rate"].to_numpy(np.float64)
    xs = np.arange(len(present), dtype=float)
    with_nearest = bool(np.isfinite(nearest).any())  # the demo: planted truth is known
    width = 0.4 if with_nearest else 0.8
    shift = width / 2 if with_nearest else 0.0
    ax.bar(xs - shift, rates, width, color=MEMORIZED_COLOR, alpha=0.8, label="copy")
    ax.errorbar(
        xs - shift,
        rates,
        yerr=[rates - low, high - rates],
        fmt="none",
        color="black",
        capsize=3,
    )
    top = float(np.nanmax(high))
    if with_nearest:
        ax.bar(
            xs + shift,
            nearest,
            width,
            color=MARKER_COLOR,
            alpha=0.8,
            label="planted prompts: nearest is\ntheir own planted image",
        )
        top = max(top, float(np.nanmax(nearest)))
        ax.legend(fontsize=7, loc="upper left")
    ax.set_ylim(0, max(5.0, 1.15 * top))
    ax.set_ylabel("generations (%)")
    ax.set_xticks(range(len(present)), present, rotation=30)
    ax.set_title("copy rate (95 % CI over prompts)")
