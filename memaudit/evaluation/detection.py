"""Detection against the demo's planted truth: AUC, TPR at 1 % FPR, precision at k, per step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from memaudit.scoring.gather import d_mem_from_norms, norms_matrix


def ranking_metrics(labels: np.ndarray, scores: np.ndarray, top_k: Sequence[int]) -> dict[str, Any]:
    """ROC AUC, TPR at 1 % FPR and precision of the top k of one score vector, in O(n log n)
    without a ROC curve (the detectors' bootstrap calls it thousands of times); equal to
    scikit-learn's (tested).

    AUC is the Mann-Whitney statistic with tied scores counted half; TPR at 1 % FPR is the
    share of positives strictly above the (k+1)-th highest negative, k = ⌊0.01 · negatives⌋
    (the largest TPR of a threshold ``score >= t`` whose FPR is at most 1 %).
    """
    labels = np.asarray(labels, dtype=bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    ranks = rankdata(scores)
    auc = (ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    allowed = int(np.floor(0.01 * n_neg + 1e-12))
    negatives = np.sort(scores[~labels])[::-1]
    above = scores[labels] > negatives[allowed] if allowed < n_neg else np.ones(n_pos, bool)
    tpr = float(above.sum() / n_pos)
    out: dict[str, Any] = {"auc": float(auc), "tpr_at_1pct_fpr": tpr}
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
        "windows": {name: ranking_metrics(labels, s, top_k) for name, s in windows.items()},
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
