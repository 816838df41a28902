"""Tests of thresholding, marker enrichment, ground-truth evaluation and their figures."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact

from memaudit.evaluation.detection import evaluate_truth
from memaudit.evaluation.figures import plot_per_step_auc
from memaudit.threshold.cutoff import threshold_scores
from memaudit.threshold.enrichment import marker_enrichment
from memaudit.threshold.figures import plot_score_distribution


def _tables(d_mem: np.ndarray, has_marker: np.ndarray | None = None):
    ids = [f"{i:016x}" for i in range(len(d_mem))]
    scores = pd.DataFrame({"prompt_id": ids, "d_mem": d_mem})
    prompts = pd.DataFrame(
        {
            "prompt_id": ids[::-1],
            "text": [f"prompt {i}" for i in range(len(d_mem))][::-1],
            "has_marker": (np.zeros(len(d_mem), bool) if has_marker is None else has_marker[::-1]),
        }
    )
    return scores, prompts


def test_percentile_threshold_picks_exactly_the_top_percent() -> None:
    rng = np.random.default_rng(0)
    d_mem = rng.lognormal(size=1000)
    scores, prompts = _tables(d_mem)
    table, threshold = threshold_scores(scores, prompts)
    assert table["memorized"].sum() == 10
    top = set(scores.loc[np.argsort(-d_mem)[:10], "prompt_id"])
    assert set(table.loc[table["memorized"], "prompt_id"]) == top
    assert table["rank"].tolist() == list(range(1, 1001))
    assert table["d_mem"].is_monotonic_decreasing and "text" in table.columns
    _, t95 = threshold_scores(scores, prompts, percentile=95)
    assert t95 < threshold


def test_zscore_and_value_thresholds() -> None:
    d_mem = np.array([1.0, 1.0, 1.0, 1.0, 10.0, 2.0])
    scores, prompts = _tables(d_mem)
    table, threshold = threshold_scores(scores, prompts, method="zscore", z=1.5)
    assert threshold == pytest.approx(d_mem.mean() + 1.5 * d_mem.std(ddof=1))
    assert table["memorized"].sum() == 1
    table, threshold = threshold_scores(scores, prompts, method="value", value=2.0)
    assert threshold == 2.0 and table["memorized"].sum() == 1  # strictly above: 2.0 is not
    with pytest.raises(ValueError, match="value"):
        threshold_scores(scores, prompts, method="value")
    with pytest.raises(ValueError, match="method"):
        threshold_scores(scores, prompts, method="median")


def test_threshold_rejects_mismatched_tables() -> None:
    scores, prompts = _tables(np.arange(5.0))
    with pytest.raises(ValueError, match="1 prompt\\(s\\) without a score"):
        threshold_scores(scores.iloc[1:], prompts)


def test_marker_enrichment_against_hand_computation() -> None:
    # a=6 memorized with marker, b=4 without; c=90 rest with, d=900 without.
    memorized = np.array([True] * 10 + [False] * 990)
    marker = np.array([True] * 6 + [False] * 4 + [True] * 90 + [False] * 900)
    result = marker_enrichment(pd.DataFrame({"memorized": memorized, "has_marker": marker}))
    assert result["share_marker_memorized"] == pytest.approx(0.6)
    assert result["share_marker_rest"] == pytest.approx(90 / 990)
    assert result["odds_ratio"] == pytest.approx(6 * 900 / (4 * 90))
    se = math.sqrt(1 / 6 + 1 / 4 + 1 / 90 + 1 / 900)
    low, high = result["odds_ratio_ci95"]
    assert low == pytest.approx(15.0 * math.exp(-1.959964 * se), rel=1e-5)
    assert high == pytest.approx(15.0 * math.exp(1.959964 * se), rel=1e-5)
    assert result["fisher_p"] == pytest.approx(fisher_exact([[6, 4], [90, 900]])[1])
    assert result["fisher_p"] < 1e-3 and not result["haldane_corrected"]


def test_marker_enrichment_haldane_correction_for_empty_cell() -> None:
    memorized = np.array([True] * 5 + [False] * 95)
    marker = np.array([True] * 5 + [True] * 20 + [False] * 75)  # b = 0
    result = marker_enrichment(pd.DataFrame({"memorized": memorized, "has_marker": marker}))
    assert result["haldane_corrected"]
    assert result["odds_ratio"] == pytest.approx(5.5 * 75.5 / (0.5 * 20.5))
    assert result["fisher_p"] == pytest.approx(fisher_exact([[5, 0], [20, 75]])[1])


def _scores_with_norms(per_step_means: np.ndarray, n_gen: int, rng) -> pd.DataFrame:
    """Norms [prompts, gens, steps] around given per-step means, flattened like the engine."""
    n_prompts, n_steps = per_step_means.shape
    norms = per_step_means[:, None, :] + 0.01 * rng.standard_normal((n_prompts, n_gen, n_steps))
    return pd.DataFrame(
        {
            "prompt_id": [f"p{i:04d}" for i in range(n_prompts)],
            "d_mem": norms.mean(axis=(1, 2)),
            "norms": [row.reshape(-1).astype(np.float32) for row in norms],
            "n_generations": n_gen,
            "n_steps": n_steps,
        }
    )


def test_truth_perfect_random_and_inverted_steps(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    n, n_steps, n_gen = 400, 6, 2
    planted = np.zeros(n, bool)
    planted[:20] = True
    # Planted prompts score high on the first steps and *low* on the last two.
    means = rng.uniform(1.0, 2.0, size=(n, n_steps))
    means[planted, :4] += 5.0
    means[planted, 4:] -= 0.9
    table = _scores_with_norms(means, n_gen, rng)
    truth = pd.DataFrame({"prompt_id": table.loc[planted, "prompt_id"], "planted_id": range(20)})
    metrics, per_step = evaluate_truth(table, truth, n_gen, n_steps, top_k=(10, 20, 50))
    first = metrics["windows"]["first_step"]
    assert first["auc"] == 1.0 and first["tpr_at_1pct_fpr"] == 1.0
    assert first["precision_at_10"] == 1.0 and first["precision_at_20"] == 1.0
    assert first["precision_at_50"] == pytest.approx(20 / 50)
    assert metrics["windows"]["configured"]["auc"] == metrics["windows"]["all_steps"]["auc"]
    assert per_step["step"].tolist() == list(range(n_steps))
    assert (per_step["auc"].iloc[:4] == 1.0).all()
    assert (per_step["auc"].iloc[4:] < 0.3).all()
    assert metrics["steps_with_inverted_ranking"] == [4, 5]
    assert per_step["auc_first_k"].iloc[0] == 1.0
    plot_per_step_auc(per_step, tmp_path / "per_step.png")
    assert (tmp_path / "per_step.png").stat().st_size > 0 and (tmp_path / "per_step.pdf").exists()

    # Random scores: AUC near chance.
    noise = _scores_with_norms(rng.uniform(1.0, 2.0, size=(n, n_steps)), n_gen, rng)
    metrics, _ = evaluate_truth(noise, truth, n_gen, n_steps)
    assert abs(metrics["windows"]["all_steps"]["auc"] - 0.5) < 0.15


def test_truth_rejects_wrong_shapes_and_single_class() -> None:
    rng = np.random.default_rng(2)
    table = _scores_with_norms(rng.uniform(size=(10, 3)), 2, rng)
    truth = pd.DataFrame({"prompt_id": table["prompt_id"][:2]})
    with pytest.raises(ValueError, match="expected 4 x 3"):
        evaluate_truth(table, truth, 4, 3)
    with pytest.raises(ValueError, match="both classes"):
        evaluate_truth(table, pd.DataFrame({"prompt_id": ["nope"]}), 2, 3)


def test_score_distribution_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    scores, prompts = _tables(rng.lognormal(size=500))
    table, threshold = threshold_scores(scores, prompts)
    for log_y in (False, True):
        png = tmp_path / f"fig2_{log_y}.png"
        plot_score_distribution(table, threshold, png, log_y=log_y)
        assert png.stat().st_size > 0 and png.with_suffix(".pdf").exists()
