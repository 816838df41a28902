"""Demo-model figures: the training curve and a grid of generations.

Both draw files the compute rules saved (:mod:`memaudit.model.artifacts`), so a figure edit
redraws the figure and re-runs no training and no generation.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from memaudit.model.artifacts import Generations
from memaudit.plotting import MEMORIZED_COLOR, ORDINARY_COLOR, save_figure, use_style


def plot_training_curve(losses: np.ndarray | list[float], png: str | Path) -> None:
    """Loss per step (light) and its 50-step moving average, log scale, PNG + PDF."""
    use_style()
    losses = np.asarray(losses, dtype=float)
    window = max(1, min(50, len(losses) // 5))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(losses) + 1), losses, color=ORDINARY_COLOR, alpha=0.25, lw=0.6)
    ax.plot(
        np.arange(window, len(losses) + 1),
        smooth,
        color=MEMORIZED_COLOR,
        lw=1.5,
        label=f"{window}-step mean",
    )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("noise-prediction MSE")
    ax.set_title("Demo model training")
    ax.legend(frameon=False)
    save_figure(fig, png)


def grid_rows(generations: Generations, n_planted: int = 4, n_ordinary: int = 3) -> list[int]:
    """Rows of the grid: the first ``n_planted`` planted prompts, then the first
    ``n_ordinary`` ordinary ones (the check lists ordinary prompts most frequent first)."""
    kinds = generations.kinds
    planted = [i for i, kind in enumerate(kinds) if kind == "planted"][:n_planted]
    ordinary = [i for i, kind in enumerate(kinds) if kind == "ordinary"][:n_ordinary]
    return planted + ordinary


def plot_generation_grid(
    generations: Generations,
    png: str | Path,
    n_planted: int = 4,
    n_ordinary: int = 3,
    n_seeds: int = 3,
) -> None:
    """One row per prompt (:func:`grid_rows`): its training image, then its generations from
    the first ``n_seeds`` seeds, the row title labelled planted / ordinary."""
    use_style()
    rows = grid_rows(generations, n_planted, n_ordinary)
    seeds = generations.seeds[:n_seeds]
    n, k = len(rows), len(seeds)
    if n == 0:
        raise ValueError("no planted or ordinary prompt to draw")
    fig, axes = plt.subplots(n, k + 1, figsize=(1.4 * (k + 1), 1.5 * n), squeeze=False)
    for i, row in enumerate(rows):
        train = np.asarray(generations.training[row], dtype=np.float32)
        train = train / 255.0 if train.max() > 1.0 else train
        images = [train] + [generations.images[row, j] / 255.0 for j in range(k)]
        for j, (ax, image) in enumerate(zip(axes[i], images, strict=True)):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("training" if j == 0 else f"seed {seeds[j - 1]}", fontsize=8)
        prompt = generations.texts[row]
        short = prompt if len(prompt) <= 38 else prompt[:35] + "..."
        label = f"{generations.kinds[row]}: {short}"
        axes[i][0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
    title = f"Generations ({generations.steps} DDIM steps, guidance {generations.guidance})"
    fig.suptitle(title, fontsize=9)
    save_figure(fig, png)
