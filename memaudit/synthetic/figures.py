"""The synthetic set's most similar copies beside their nearest training images."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from memaudit.plotting import MEMORIZED_COLOR, save_figure, save_message_figure, use_style

_COLUMNS = 8  # pairs per row of the grid


def shown_images(copies: pd.DataFrame, n_shown: int) -> tuple[pd.DataFrame, bool]:
    """The rows drawn: the ``n_shown`` most similar copies, or, when no image is a copy, the
    most similar images; and whether they are copies. Ties go to the lower image index."""
    ranked = copies.sort_values(["similarity", "image"], ascending=[False, True], kind="stable")
    any_copy = bool(ranked["copy"].any()) if len(ranked) else False
    if any_copy:
        ranked = ranked[ranked["copy"]]
    return ranked.head(max(0, int(n_shown))), any_copy


def figure_title(
    n_images: int, n_copies: int, n_shown: int, are_copies: bool, threshold: float | None
) -> str:
    """What the grid shows: the most similar copies, or, when there are none, saying so."""
    limit = f" > {threshold:.3f}" if threshold is not None else ""
    if are_copies:
        return (
            f"{n_copies} of {n_images} synthetic images are copies (similarity{limit}): "
            f"the {n_shown} most similar, above their nearest training images"
        )
    return (
        f"none of the {n_images} synthetic images is a copy (similarity{limit}): the "
        f"{n_shown} most similar images, above their nearest training images"
    )


def _short(train_id: str, room: int = 18) -> str:
    """A training id short enough for a label (a file name, not its folders)."""
    name = Path(str(train_id)).name or str(train_id)
    return name if len(name) <= room else "…" + name[-(room - 1) :]


def plot_synthetic_copies(
    copies: pd.DataFrame,
    images: np.ndarray,
    png: str | Path,
    n_shown: int = 8,
    training_image: Callable[[str], np.ndarray] | None = None,
    threshold: float | None = None,
) -> None:
    """A grid of the most similar copies (top: the synthetic image, below: its nearest
    training image, with the similarity; red frame = copy), PNG and PDF.

    ``copies`` is ``copies.parquet`` (``image`` indexes ``images``, uint8 [N, H, W]);
    ``training_image`` maps a train_id to pixels (None: the training row is left out). No
    prompt text is drawn, only prompt ids.
    """
    # 1. What is shown, and the title that says what it is
    use_style()
    shown, are_copies = shown_images(copies, n_shown)
    n_copies = int(copies["copy"].sum()) if len(copies) else 0
    if not len(shown):
        save_message_figure(png, "no synthetic image to show", height=1.5)
        return
    title = figure_title(len(copies), n_copies, len(shown), are_copies, threshold)
    # 2. Pairs in rows of up to _COLUMNS: the synthetic image, then its training image
    columns = min(_COLUMNS, len(shown))
    blocks = math.ceil(len(shown) / columns)
    per_block = 2 if training_image is not None else 1
    fig, axes = plt.subplots(
        blocks * per_block,
        columns,
        figsize=(1.35 * columns + 0.6, 1.55 * blocks * per_block + 0.6),
        squeeze=False,
        layout="constrained",
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        ax.axis("off")
    for k, row in enumerate(shown.itertuples(index=False)):
        top = axes[(k // columns) * per_block, k % columns]
        top.axis("on")
        top.imshow(images[int(row.image)], cmap="gray", vmin=0, vmax=255)
        planted = " (planted)" if bool(row.planted) else ""
        top.set_title(f"image {int(row.image)}{planted}\nsim {row.similarity:.3f}", fontsize=6)
        top.set_xlabel(f"prompt {str(row.prompt_id)[:10]}", fontsize=5)
        if bool(row.copy):
            for spine in top.spines.values():
                spine.set_edgecolor(MEMORIZED_COLOR)
                spine.set_linewidth(2)
        if training_image is not None:
            below = axes[(k // columns) * per_block + 1, k % columns]
            below.axis("on")
            below.imshow(training_image(str(row.nearest_train_id)), cmap="gray", vmin=0, vmax=1)
            below.set_xlabel(f"train {_short(row.nearest_train_id)}", fontsize=5)
    fig.suptitle(textwrap.fill(title, max(48, 16 * columns)), fontsize=8)
    save_figure(fig, png)
