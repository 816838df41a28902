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


def plot_detectors(roc: pd.DataFrame, table: pd.DataFrame, png: str | Path) -> None:
    """The detectors side by side: ROC curves (log false-positive rate, so the 1 % point shows)
    and cost against AUC (UNet rows per prompt, log scale, with the AUC's 95 % interval).

    Writes ``png`` and a PDF beside it.
    """
    use_style()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    rows = table.set_index("detector")
    for i, (name, curve) in enumerate(roc.groupby("detector", sort=False)):
        style = ":" if name == "rank_average" else "-"
        fpr = np.maximum(curve["fpr"].to_numpy(), 1e-3)
        left.step(
            fpr,
            curve["tpr"],
            where="post",
            linestyle=style,
            color=colors[i % len(colors)],
            label=f"{name} (AUC {rows.loc[name, 'auc']:.3f})",
        )
    left.axvline(0.01, color="0.5", linestyle=":", linewidth=1)
    left.set_xscale("log")
    left.set_xlim(1e-3, 1.0)
    left.set_ylim(0.0, 1.02)
    left.set_xlabel("false-positive rate (log; dotted: 1 %)")
    left.set_ylabel("true-positive rate (planted prompts)")
    left.legend(loc="lower right", frameon=True, fontsize=8)
    singles = table[table["detector"] != "rank_average"]
    for i, row in enumerate(singles.itertuples()):
        cost = max(float(row.unet_rows_per_prompt) + float(row.backward_rows_per_prompt), 1e-3)
        low = getattr(row, "auc_low", row.auc)
        high = getattr(row, "auc_high", row.auc)
        right.errorbar(
            cost,
            row.auc,
            yerr=[[row.auc - low], [high - row.auc]],
            fmt="o",
            color=colors[i % len(colors)],
            capsize=3,
        )
        # alternate label sides: detectors of equal cost and AUC (shared trajectory) stay legible
        right.annotate(
            row.detector,
            (cost, row.auc),
            textcoords="offset points",
            xytext=(6, 6 if i % 2 == 0 else -12),
            ha="left" if i % 2 == 0 else "right",
        )
    right.set_xscale("log")
    right.set_xlabel("UNet rows per prompt (forward + derivative, log)")
    right.set_ylabel("ROC AUC (95 % interval)")
    right.set_title("cost vs detection")
    save_figure(fig, png)
