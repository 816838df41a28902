"""Demo-model figures: the training curve and a grid of generations."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from memaudit.model.check import generate_images
from memaudit.model.loading import AuditModel
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


def plot_generation_grid(
    model: AuditModel,
    prompts: list[str],
    train_images: np.ndarray,
    png: str | Path,
    seeds: tuple[int, ...] = (0, 1, 2),
    steps: int = 50,
    guidance: float = 7.5,
    labels: list[str] | None = None,
) -> None:
    """One row per prompt: its training image, then generations from ``seeds``.

    ``train_images`` is uint8 or float [len(prompts), H, W] (the image each prompt was
    trained with); ``labels`` (e.g. "planted"/"ordinary") prefix the row titles.
    """
    use_style()
    generated = generate_images(model, prompts, list(seeds), steps, guidance)
    n, k = len(prompts), len(seeds)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.4 * (k + 1), 1.5 * n), squeeze=False)
    for i, prompt in enumerate(prompts):
        train = np.asarray(train_images[i], dtype=np.float32)
        train = train / 255.0 if train.max() > 1.0 else train
        row = [train] + [generated[i * k + j] for j in range(k)]
        for j, (ax, image) in enumerate(zip(axes[i], row, strict=True)):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("training" if j == 0 else f"seed {seeds[j - 1]}", fontsize=8)
        short = prompt if len(prompt) <= 38 else prompt[:35] + "..."
        tag = f"{labels[i]}: " if labels else ""
        axes[i][0].set_ylabel(f"{tag}{short}", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"Generations ({steps} DDIM steps, guidance {guidance})", fontsize=9)
    save_figure(fig, png)
