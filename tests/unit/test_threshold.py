"""Tests of the threshold stage: the cutoff, marker enrichment and Fig. 2."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import fisher_exact

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


def test_the_primary_detectors_score_decides_rank_and_flag() -> None:
    rng = np.random.default_rng(1)
    d_mem = rng.lognormal(size=300)
    scores, prompts = _tables(d_mem)
    scores["score"] = -d_mem  # another detector, the opposite order
    table, threshold = threshold_scores(scores, prompts, column="score")
    assert table["score"].is_monotonic_decreasing
    assert set(table.loc[table["memorized"], "prompt_id"]) == set(
        scores.loc[np.argsort(d_mem)[:3], "prompt_id"]
    )
    np.testing.assert_array_equal(table["d_mem"], -table["score"])  # Wen's d_mem is kept
    with pytest.raises(ValueError, match="'score'"):
        threshold_scores(scores.drop(columns="score"), prompts, column="score")


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


def test_score_distribution_figure(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    scores, prompts = _tables(rng.lognormal(size=500))
    table, threshold = threshold_scores(scores, prompts)
    for log_y in (False, True):
        png = tmp_path / f"fig2_{log_y}.png"
        plot_score_distribution(table, threshold, png, log_y=log_y)
        assert png.stat().st_size > 0 and png.with_suffix(".pdf").exists()
