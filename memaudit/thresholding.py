"""Call prompts memorized, test marker enrichment (finding 2) and check scores against truth.

- :func:`threshold_scores` — memorized = d_mem strictly above a threshold (default: the 99th
  percentile of all unique prompts, i.e. the top 1 %).
- :func:`marker_enrichment` — share of prompts with the de-identification marker among
  memorized prompts vs the rest, odds ratio with a 95 % Woolf confidence interval and Fisher's
  exact test.
- :func:`plot_score_distribution` — the ranked scores (Fig. 2) with a histogram.
- :func:`evaluate_truth` / :func:`plot_per_step_auc` — with planted memorized prompts (the demo
  corpus), ROC AUC, TPR at 1 % FPR and precision at k for several step windows, and the AUC of
  every sampling step on its own and of the first k steps together.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from sklearn.metrics import roc_auc_score, roc_curve

from memaudit.figures import MEMORIZED_COLOR, ORDINARY_COLOR, save_figure, use_style
from memaudit.scores import d_mem_from_norms, norms_matrix

METHODS = ("percentile", "zscore", "value")
_Z_95 = float(scipy_stats.norm.ppf(0.975))


def score_threshold(
    values: np.ndarray | Sequence[float],
    method: str = "percentile",
    percentile: float = 99.0,
    z: float = 3.0,
    value: float | None = None,
) -> float:
    """The d_mem threshold by ``method``.

    ``percentile``: numpy's linear-interpolation percentile of the scores; ``zscore``: mean +
    z × sample standard deviation (ddof=1); ``value``: ``value`` itself.
    """
    scores = np.asarray(values, dtype=np.float64)
    if method not in METHODS:
        raise ValueError(f"threshold method must be one of {list(METHODS)}, got {method!r}")
    if method == "value":
        if value is None or not math.isfinite(value):
            raise ValueError("threshold method 'value' needs a finite threshold value")
        return float(value)
    if scores.size == 0:
        raise ValueError("no scores to threshold")
    if not np.isfinite(scores).all():
        raise ValueError(f"{int((~np.isfinite(scores)).sum())} score(s) are not finite")
    if method == "percentile":
        if not 0 <= percentile <= 100:
            raise ValueError(f"threshold percentile must be in [0, 100], got {percentile!r}")
        return float(np.percentile(scores, percentile))
    if scores.size < 2:
        raise ValueError("threshold method 'zscore' needs at least two scores")
    return float(scores.mean() + z * scores.std(ddof=1))


def threshold_scores(
    scores: pd.DataFrame,
    prompts: pd.DataFrame,
    method: str = "percentile",
    percentile: float = 99.0,
    z: float = 3.0,
    value: float | None = None,
) -> tuple[pd.DataFrame, float]:
    """Join scores to prompts and flag memorized prompts (d_mem strictly above the threshold).

    Returns the table (prompt columns + ``d_mem``, ``rank`` (1 = highest score) and
    ``memorized``; sorted by rank; stored norms are left out) and the threshold. Every scored
    prompt must be in ``prompts`` and every prompt scored; otherwise the error counts them.
    """
    for name, table, column in (
        ("scores", scores, "d_mem"),
        ("scores", scores, "prompt_id"),
        ("prompts", prompts, "prompt_id"),
    ):
        if column not in table.columns:
            raise ValueError(f"{name} table has no {column!r} column")
    scored, listed = set(scores["prompt_id"]), set(prompts["prompt_id"])
    if len(scored) != len(scores):
        raise ValueError(f"scores table has {len(scores) - len(scored)} duplicate prompt_id(s)")
    unscored, unknown = listed - scored, scored - listed
    if unscored or unknown:
        raise ValueError(
            f"scores and prompts disagree: {len(unscored)} prompt(s) without a score "
            f"(e.g. {sorted(unscored)[:3]}), {len(unknown)} score(s) of unknown prompts "
            f"(e.g. {sorted(unknown)[:3]})"
        )
    threshold = score_threshold(scores["d_mem"], method, percentile, z, value)
    extra = [c for c in prompts.columns if c in scores.columns and c != "prompt_id"]
    table = prompts.drop(columns=extra).merge(
        scores[["prompt_id", "d_mem"]], on="prompt_id", how="inner", validate="one_to_one"
    )
    table = table.sort_values(["d_mem", "prompt_id"], ascending=[False, True], kind="mergesort")
    table = table.reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1, dtype=np.int64)
    table["memorized"] = table["d_mem"].to_numpy() > threshold
    return table, threshold


def marker_enrichment(table: pd.DataFrame, marker_column: str = "has_marker") -> dict[str, Any]:
    """Finding 2 as numbers: is the marker over-represented among memorized prompts?

    With a = memorized with marker, b = memorized without, c = the rest with, d = the rest
    without: shares a/(a+b) and c/(c+d), the odds ratio ad/(bc) with a 95 % confidence
    interval by Woolf's log method (Haldane's correction: 0.5 added to every cell when one is
    0) and the two-sided p-value of Fisher's exact test on the uncorrected counts.
    """
    for column in ("memorized", marker_column):
        if column not in table.columns:
            raise ValueError(f"threshold table has no {column!r} column")
    memorized = table["memorized"].astype(bool).to_numpy()
    marker = table[marker_column].astype(bool).to_numpy()
    a = int((memorized & marker).sum())
    b = int((memorized & ~marker).sum())
    c = int((~memorized & marker).sum())
    d = int((~memorized & ~marker).sum())
    corrected = min(a, b, c, d) == 0
    ca, cb, cc, cd = (x + 0.5 for x in (a, b, c, d)) if corrected else (a, b, c, d)
    log_or = math.log((ca * cd) / (cb * cc))
    se = math.sqrt(1 / ca + 1 / cb + 1 / cc + 1 / cd)
    _, fisher_p = scipy_stats.fisher_exact([[a, b], [c, d]], alternative="two-sided")
    return {
        "n_prompts": a + b + c + d,
        "n_memorized": a + b,
        "n_with_marker": a + c,
        "memorized_with_marker": a,
        "memorized_without_marker": b,
        "rest_with_marker": c,
        "rest_without_marker": d,
        "share_marker_memorized": a / (a + b) if a + b else None,
        "share_marker_rest": c / (c + d) if c + d else None,
        "odds_ratio": math.exp(log_or),
        "odds_ratio_ci95": [math.exp(log_or - _Z_95 * se), math.exp(log_or + _Z_95 * se)],
        "haldane_corrected": corrected,
        "fisher_p": float(fisher_p),
    }


def plot_score_distribution(
    table: pd.DataFrame, threshold: float, png: str | Path, log_y: bool = False
) -> None:
    """Fig. 2: every unique prompt's d_mem by rank (memorized in red) and a histogram.

    Writes ``png`` and a PDF beside it.
    """
    use_style()
    ordered = table.sort_values("d_mem", ascending=False, kind="mergesort")
    scores = ordered["d_mem"].to_numpy(dtype=np.float64)
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
    left.set_xlabel("rank of prompt (1 = highest d_mem)")
    left.set_ylabel("d_mem")
    left.set_title(f"{len(scores):,} unique prompts")
    left.legend(loc="upper right", frameon=True)
    bins = np.histogram_bin_edges(scores, bins=min(60, max(10, len(scores) // 20)))
    right.hist(scores[~memorized], bins=bins, color=ORDINARY_COLOR, alpha=0.85)
    right.hist(scores[memorized], bins=bins, color=MEMORIZED_COLOR, alpha=0.95)
    right.axvline(threshold, color=MEMORIZED_COLOR, linestyle="--", linewidth=1)
    right.set_xlabel("d_mem")
    right.set_ylabel("prompts")
    if log_y:
        left.set_yscale("log")
        right.set_yscale("log")
    right.set_title(f"threshold {threshold:.4g}")
    save_figure(fig, png)


def _window_metrics(labels: np.ndarray, scores: np.ndarray, top_k: Sequence[int]) -> dict:
    """AUC, TPR at 1 % FPR and precision of the top k for one score vector."""
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    out: dict[str, Any] = {
        "auc": float(roc_auc_score(labels, scores)),
        "tpr_at_1pct_fpr": float(tpr[fpr <= 0.01].max()),
    }
    order = np.argsort(-scores, kind="mergesort")
    for k in top_k:
        out[f"precision_at_{k}"] = float(labels[order[:k]].mean()) if k <= len(labels) else None
    return out


def evaluate_truth(
    scores_with_norms: pd.DataFrame,
    truth: pd.DataFrame,
    n_generations: int,
    n_steps: int,
    top_k: Sequence[int] = (10, 20, 50),
) -> tuple[dict[str, Any], pd.DataFrame]:
    """How well d_mem finds the planted (truly memorized) prompts.

    Positives are the ``prompt_id`` values of ``truth``. Metrics — ROC AUC, TPR at 1 % FPR
    (the largest TPR on the ROC curve with FPR <= 0.01) and precision of the top k — are given
    for the configured window (the ``d_mem`` column), the first step alone and all computed
    steps. The per-step table holds, for every sampling step, the AUC of that step's norm
    (mean over generations) and the AUC of the first k steps together.
    """
    for column in ("prompt_id", "d_mem", "norms"):
        if column not in scores_with_norms.columns:
            raise ValueError(f"scores table has no {column!r} column")
    if "prompt_id" not in truth.columns:
        raise ValueError("truth table has no 'prompt_id' column")
    norms = norms_matrix(scores_with_norms)
    if norms.shape[1:] != (n_generations, n_steps):
        raise ValueError(
            f"stored norms are {norms.shape[1]} generations x {norms.shape[2]} steps, "
            f"expected {n_generations} x {n_steps}"
        )
    positives = set(truth["prompt_id"])
    labels = scores_with_norms["prompt_id"].isin(positives).to_numpy()
    n_pos = int(labels.sum())
    if n_pos == 0 or n_pos == len(labels):
        raise ValueError(
            f"{n_pos} of {len(labels)} scored prompts are planted; AUC needs both classes"
        )
    windows = {
        "configured": scores_with_norms["d_mem"].to_numpy(dtype=np.float64),
        "first_step": d_mem_from_norms(norms, (0, 1)),
        "all_steps": d_mem_from_norms(norms, (0, None)),
    }
    metrics: dict[str, Any] = {
        "n_prompts": len(labels),
        "n_planted_scored": n_pos,
        "n_planted_not_scored": len(positives - set(scores_with_norms["prompt_id"])),
        "n_generations": n_generations,
        "n_steps": n_steps,
        "windows": {name: _window_metrics(labels, s, top_k) for name, s in windows.items()},
    }
    per_step_scores = norms.mean(axis=1)  # [prompts, steps]
    cumulative = np.cumsum(per_step_scores, axis=1) / np.arange(1, n_steps + 1)
    per_step = pd.DataFrame(
        {
            "step": np.arange(n_steps, dtype=np.int64),
            "auc": [roc_auc_score(labels, per_step_scores[:, k]) for k in range(n_steps)],
            "auc_first_k": [roc_auc_score(labels, cumulative[:, k]) for k in range(n_steps)],
        }
    )
    inverted = per_step.loc[per_step["auc"] < 0.5, "step"].tolist()
    metrics["steps_with_inverted_ranking"] = inverted
    metrics["best_step"] = int(per_step.loc[per_step["auc"].idxmax(), "step"])
    return metrics, per_step


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
