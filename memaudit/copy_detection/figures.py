"""Copy-detection figure: ROC of each embedding and the similarity distributions it thresholds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from memaudit.copy_detection.validity import roc_curve
from memaudit.plotting import MEMORIZED_COLOR, ORDINARY_COLOR, save_figure, use_style

_LINES = ("-", "--", ":", "-.")


def plot_copy_validity(table: pd.DataFrame, summary: Mapping[str, Any], png: str | Path) -> None:
    """Left: ROC of the nearest-training similarity (planted vs ordinary generations) per
    embedding, the threshold's operating point marked. Right, one panel per embedding: the
    similarity of held-out reals, planted and ordinary generations, and the threshold."""
    use_style()
    embeddings = list(summary.get("embeddings", {}))
    fig, axes = plt.subplots(
        1, 1 + len(embeddings), figsize=(4.2 * (1 + len(embeddings)), 3.6), squeeze=False
    )
    roc_ax = axes[0, 0]
    roc_ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    for i, embedding in enumerate(embeddings):
        frame = table[(table["embedding"] == embedding) & (table["source"] != "heldout")]
        pos = frame.loc[frame["planted"], "similarity"].to_numpy()
        neg = frame.loc[~frame["planted"], "similarity"].to_numpy()
        block = summary["embeddings"][embedding]
        if len(pos) and len(neg):
            fpr, tpr = roc_curve(pos, neg)
            auc = block.get("roc_auc")
            label = f"{embedding} (AUC {auc:.3f})" if auc is not None else embedding
            line = roc_ax.plot(fpr, tpr, linestyle=_LINES[i % len(_LINES)], label=label)[0]
            threshold = block["threshold"]
            roc_ax.plot(
                [np.mean(neg > threshold)], [np.mean(pos > threshold)], "o", color=line.get_color()
            )
        _draw_distributions(
            axes[0, 1 + i], table[table["embedding"] == embedding], block, embedding
        )
    roc_ax.set_xlabel("false-positive rate (ordinary generations)")
    roc_ax.set_ylabel("true-positive rate (planted generations)")
    roc_ax.set_title("nearest-training similarity ROC\n(dot: held-out percentile threshold)")
    roc_ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    save_figure(fig, png)


def _draw_distributions(
    ax: Any, frame: pd.DataFrame, block: Mapping[str, Any], embedding: str
) -> None:
    groups = {
        "held-out reals": (frame[frame["source"] == "heldout"], "0.5"),
        "planted generations": (
            frame[(frame["source"] != "heldout") & frame["planted"]],
            MEMORIZED_COLOR,
        ),
        "ordinary generations": (
            frame[(frame["source"] != "heldout") & ~frame["planted"]],
            ORDINARY_COLOR,
        ),
    }
    values = frame["similarity"].to_numpy(dtype=np.float64)
    values = values[np.isfinite(values)]
    low = float(values.min()) if values.size else 0.0
    bins = np.linspace(low, 1.0, 40)
    for label, (part, color) in groups.items():
        if len(part):
            ax.hist(
                part["similarity"], bins=bins, density=True, alpha=0.5, color=color, label=label
            )
    ax.axvline(block["threshold"], color="black", linestyle="--", linewidth=1, label="threshold")
    recall = (block.get("mitigation") or {}).get("copy_recall", {}).get("rate")
    false = (block.get("mitigation") or {}).get("false_copy_rate", {}).get("rate")
    title = embedding
    if recall is not None and false is not None:
        title += f": recall {recall:.2f}, false copies {false:.2f}"
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("similarity to the nearest training image")
    ax.set_ylabel("density")
    ax.legend(fontsize=6, loc="upper left")
