"""Shared figure style: one palette and one save routine (PNG + PDF).

Only ``*/figures.py`` modules import it: computation never imports plotting, so a style edit
redraws figures and re-runs nothing else.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # figures are files: never open a display

import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from memaudit.atomic import atomic_write  # noqa: E402

MEMORIZED_COLOR = "#c0392b"
ORDINARY_COLOR = "#34495e"
MARKER_COLOR = "#e67e22"


def use_style() -> None:
    """Apply the house plot style (call once before drawing)."""
    sns.set_theme(context="paper", style="whitegrid", font_scale=1.1)


def save_figure(fig: plt.Figure, png_path: str | Path, dpi: int = 150) -> None:
    """Save ``fig`` as ``png_path`` and a PDF beside it (same stem), then close it."""
    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write(png_path, lambda h: fig.savefig(h, format="png", dpi=dpi, bbox_inches="tight"))
        pdf = png_path.with_suffix(".pdf")
        atomic_write(pdf, lambda h: fig.savefig(h, format="pdf", bbox_inches="tight"))
    finally:
        plt.close(fig)


def save_message_figure(png_path: str | Path, message: str, height: float = 2.0) -> None:
    """A figure that only says why there is nothing to draw (PNG and PDF, as save_figure)."""
    fig, ax = plt.subplots(figsize=(6, height))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    save_figure(fig, png_path)
