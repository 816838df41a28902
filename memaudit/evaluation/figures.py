"""Evaluation figure: AUC of every single-step window."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from memaudit.plotting import MEMORIZED_COLOR, ORDINARY_COLOR, save_figure, use_style


def plot_per_step_auc(per_step: pd.DataFrame, png: str | Path) -> None:
    """AUC of each sampling step and of the first k steps, with the 0.5 chance line.

    The y axis goes below 0.5 whenever a step ranks planted prompts below the rest, so an
    inverted late-step ranking shows. Writes ``png`` and a PDF beside it.
    """
    use_style()
    steps = per_step["step"].to_numpy() + 1
    fig, ax = plt.subplots(figsize=(6.5, 4), constrained_layout=True)
    ax.axhspan(0.0, 0.5, color="0.92", zorder=0)
    ax.axhline(0.5, color="0.4", linestyle=":", linewidth=1, label="chance")
    ax.plot(steps, per_step["auc"], marker="o", ms=3, color=MEMORIZED_COLOR, label="step k alone")
    ax.plot(
        steps,
        per_step["auc_first_k"],
        marker="s",
        ms=3,
        color=ORDINARY_COLOR,
        label="first k steps",
    )
    low = min(0.45, float(np.nanmin(per_step[["auc", "auc_first_k"]].to_numpy())) - 0.05)
    ax.set_ylim(max(0.0, low), 1.02)
    ax.set_xlabel("sampling step k (1 = noisiest)")
    ax.set_ylabel("ROC AUC, planted vs other prompts")
    ax.legend(loc="lower left", frameon=True)
    save_figure(fig, png)
