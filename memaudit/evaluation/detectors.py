"""Detectors side by side against the demo's planted truth: quality with intervals, cost, the
memorized sets they flag, and whether combining them helps.

numpy/pandas/scikit-learn only (the rule runs in ``envs/core.yaml``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from sklearn.metrics import roc_curve

from memaudit.bootstrap import bootstrap_rng
from memaudit.evaluation.detection import ranking_metrics
from memaudit.scoring.catalog import CATALOG
from memaudit.threshold.cutoff import score_threshold

# Published detection figures on the usual benchmark (500 memorized LAION prompts vs 500
# ordinary, Stable Diffusion 1.4): (AUC, TPR at 1 % FPR, setting). Wen, Jeon and Chen from Jeon
# et al. (ICML 2025), Table 1; Asthana from Asthana & Belagiannis (ICLR 2026). Ren et al.
# report no figure on that benchmark in the form used here.
PUBLISHED: dict[str, list[tuple[float, float, str]]] = {
    "wen": [(0.976, 0.896, "first step, 1 generation"), (0.996, 0.982, "50 steps, 4 gen.")],
    "sharpness": [(0.987, 0.908, "x_T, 1 generation"), (0.998, 0.982, "x_T, 4 generations")],
    "anisotropy": [(0.994, 0.935, "1 generation"), (0.999, 0.984, "4 generations")],
    "bright_ending": [(0.997, 0.980, "4 generations, full trajectory")],
    "attention_entropy": [],
}
COMBINED = "rank_average"


def _stratified_intervals(
    labels: np.ndarray,
    scores: np.ndarray,
    top_k: Sequence[int],
    resamples: int,
    seed: int,
    key: str,
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of the metrics, resampling positives and negatives apart (so
    every resample has both classes and the class sizes of the data)."""
    if resamples <= 0:
        return {}
    rng = bootstrap_rng(seed, f"detectors|{key}")
    pos, neg = np.flatnonzero(labels), np.flatnonzero(~labels)
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        rows = np.concatenate([rng.choice(pos, size=len(pos)), rng.choice(neg, size=len(neg))])
        for name, value in ranking_metrics(labels[rows], scores[rows], top_k).items():
            if value is not None:
                draws.setdefault(name, []).append(value)
    return {
        name: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        for name, v in draws.items()
    }


def rank_average(scores: Mapping[str, np.ndarray]) -> np.ndarray:
    """The combined detector: the mean over detectors of each prompt's rank fraction (ties
    averaged). It uses the scores alone, never the truth."""
    columns = [rankdata(np.asarray(v, dtype=np.float64)) / len(v) for v in scores.values()]
    return np.mean(columns, axis=0)


def detector_costs(chunk_stats: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Per detector: UNet rows, derivative rows and seconds per prompt, summed over chunks."""
    totals: dict[str, dict[str, float]] = {}
    n_prompts = sum(int(s["n_prompts"]) for s in chunk_stats)
    for stats in chunk_stats:
        if "detectors" not in stats:
            raise ValueError("a scoring chunk's statistics have no 'detectors' costs")
        for name, cost in stats["detectors"].items():
            entry = totals.setdefault(name, {"unet_rows": 0, "backward_rows": 0, "seconds": 0.0})
            for field in entry:
                entry[field] += float(cost[field])
    per = max(1, n_prompts)
    return {
        name: {
            "unet_rows_per_prompt": t["unet_rows"] / per,
            "backward_rows_per_prompt": t["backward_rows"] / per,
            "seconds_per_1000_prompts": 1000.0 * t["seconds"] / per,
        }
        for name, t in totals.items()
    }


def compare_detectors(
    scores: pd.DataFrame,
    truth: pd.DataFrame,
    chunk_stats: Sequence[Mapping[str, Any]],
    primary: str,
    threshold: Mapping[str, Any],
    top_k: Sequence[int] = (10, 20, 50),
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """Every scored detector (``score_<name>`` columns) against the planted truth.

    Returns (summary, table, roc):

    - table: one row per detector (and the rank-average combination): AUC, TPR at 1 % FPR and
      precision at k with stratified-bootstrap 95 % intervals, UNet rows, derivative rows and
      seconds per 1,000 prompts (measured in the scoring chunks), the published figures;
    - summary: the table as records, the memorized set each detector would flag with the
      configured ``threshold`` block (its size, overlap and Jaccard index with the primary's),
      and whether the combination beats the best single detector by more than their intervals;
    - roc: the ROC curve points of every detector (for the figure).
    """
    names = [c[len("score_") :] for c in scores.columns if c.startswith("score_")]
    if primary not in names:
        raise ValueError(f"scores table has no score_{primary} column (the primary detector)")
    if "prompt_id" not in truth.columns:
        raise ValueError("truth table has no 'prompt_id' column")
    labels = scores["prompt_id"].isin(set(truth["prompt_id"])).to_numpy()
    if labels.all() or not labels.any():
        raise ValueError(
            f"{int(labels.sum())} of {len(labels)} prompts are planted; AUC needs both"
        )
    values = {n: scores[f"score_{n}"].to_numpy(dtype=np.float64) for n in names}
    bad = [n for n, v in values.items() if not np.isfinite(v).all()]
    if bad:
        raise ValueError(f"detector(s) {bad} gave non-finite scores")
    costs = detector_costs(chunk_stats)
    candidates = {**values, COMBINED: rank_average(values)}
    rows, roc_parts = [], []
    for name, vector in candidates.items():
        metrics = ranking_metrics(labels, vector, top_k)
        intervals = _stratified_intervals(labels, vector, top_k, resamples, seed, name)
        row: dict[str, Any] = {
            "detector": name,
            "label": CATALOG[name].label if name in CATALOG else "rank average of all detectors",
            **metrics,
        }
        for metric, (low, high) in intervals.items():
            row[f"{metric}_low"], row[f"{metric}_high"] = low, high
        cost = costs.get(name)
        if name == COMBINED:
            cost = {
                field: sum(costs[n][field] for n in names if n in costs)
                for field in next(iter(costs.values()), {})
            }
        row.update(cost or {})
        published = PUBLISHED.get(name, [])
        row["published"] = "; ".join(f"{a:.3f} / {t:.3f} ({s})" for a, t, s in published)
        rows.append(row)
        fpr, tpr, _ = roc_curve(labels, vector)
        roc_parts.append(pd.DataFrame({"detector": name, "fpr": fpr, "tpr": tpr}))
    table = pd.DataFrame(rows)
    summary: dict[str, Any] = {
        "n_prompts": int(len(labels)),
        "n_planted": int(labels.sum()),
        "primary": primary,
        "resamples": int(resamples),
        "detectors": table.to_dict(orient="records"),
        "memorized_sets": _memorized_sets(
            scores["prompt_id"].to_numpy(), values, primary, threshold
        ),
        "combination": _combination_verdict(table, names),
    }
    return summary, table, pd.concat(roc_parts, ignore_index=True)


def _memorized_sets(
    ids: np.ndarray, values: Mapping[str, np.ndarray], primary: str, cfg: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    flagged = {
        name: set(
            ids[
                v
                > score_threshold(
                    pd.Series(v), cfg["method"], cfg["percentile"], cfg["z"], cfg["value"]
                )
            ]
        )
        if cfg["method"] != "value" or name == primary
        else None
        for name, v in values.items()
    }
    reference = flagged[primary]
    out = {}
    for name, chosen in flagged.items():
        if chosen is None:  # a fixed value is a threshold on the primary's scale only
            out[name] = {"n_flagged": None, "overlap_with_primary": None, "jaccard": None}
            continue
        union = chosen | reference
        out[name] = {
            "n_flagged": len(chosen),
            "overlap_with_primary": len(chosen & reference),
            "jaccard": len(chosen & reference) / len(union) if union else 1.0,
        }
    return out


def _combination_verdict(table: pd.DataFrame, names: Sequence[str]) -> dict[str, Any]:
    """Does the rank average beat the best single detector by more than the intervals (its
    lower AUC bound above the best's upper bound)?"""
    singles = table[table["detector"].isin(names)]
    best = singles.sort_values("auc", ascending=False, kind="mergesort").iloc[0]
    combined = table[table["detector"] == COMBINED].iloc[0]
    # without intervals (no resamples) nothing can be shown to beat anything
    beats = "auc_low" in table.columns and bool(combined["auc_low"] > best["auc_high"])
    return {
        "best_single": str(best["detector"]),
        "best_single_auc": float(best["auc"]),
        "combined_auc": float(combined["auc"]),
        "beats_best_by_more_than_intervals": beats,
        "adopted": beats,
        "verdict": (
            f"the rank average (AUC {combined['auc']:.4f}) beats {best['detector']} "
            f"(AUC {best['auc']:.4f}) by more than their 95 % intervals"
            if beats
            else f"the rank average (AUC {combined['auc']:.4f}) does not beat the best single "
            f"detector, {best['detector']} (AUC {best['auc']:.4f}), by more than their 95 % "
            "intervals: not adopted"
        ),
    }
