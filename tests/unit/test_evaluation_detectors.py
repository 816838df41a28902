"""Tests of the detectors' comparison against the planted truth (pure numpy/pandas)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from memaudit.evaluation.detectors import (
    COMBINED,
    PUBLISHED,
    compare_detectors,
    detector_costs,
    rank_average,
)
from memaudit.evaluation.figures import plot_detectors

N, POSITIVES = 300, 12
THRESHOLD = {"method": "percentile", "percentile": 96, "z": 3, "value": None}


def _scores(separations: dict[str, float], seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"p{i:04d}" for i in range(N)]
    labels = np.arange(N) < POSITIVES
    table = pd.DataFrame({"prompt_id": ids})
    for name, shift in separations.items():
        table[f"score_{name}"] = rng.normal(size=N) + shift * labels
    return table, pd.DataFrame({"prompt_id": ids[:POSITIVES]})


def _stats(names, rows_per_prompt=None, chunks=2):
    rows_per_prompt = rows_per_prompt or {n: 10 * (i + 1) for i, n in enumerate(names)}
    per_chunk = N // chunks
    return [
        {
            "n_prompts": per_chunk,
            "detectors": {
                n: {
                    "unet_rows": rows_per_prompt[n] * per_chunk,
                    "backward_rows": 0,
                    "seconds": 0.5,
                }
                for n in names
            },
        }
        for _ in range(chunks)
    ]


def test_table_has_every_detector_with_intervals_cost_and_published_figures():
    shifts = {"wen": 4.0, "sharpness": 1.0, "anisotropy": 0.0}
    scores, truth = _scores(shifts)
    summary, table, roc = compare_detectors(
        scores, truth, _stats(list(shifts)), "wen", THRESHOLD, top_k=(5, 10), resamples=200
    )
    assert list(table["detector"]) == [*shifts, COMBINED]
    labels = scores["prompt_id"].isin(truth["prompt_id"]).to_numpy()
    for name in shifts:
        row = table.set_index("detector").loc[name]
        assert row["auc"] == pytest.approx(roc_auc_score(labels, scores[f"score_{name}"]))
        assert row["auc_low"] <= row["auc"] <= row["auc_high"]
        assert row["tpr_at_1pct_fpr_low"] <= row["tpr_at_1pct_fpr"] <= row["tpr_at_1pct_fpr_high"]
        assert 0 <= row["precision_at_5"] <= 1
    rows = table.set_index("detector")
    assert rows.loc["sharpness", "unet_rows_per_prompt"] == pytest.approx(20)
    assert rows.loc["wen", "seconds_per_1000_prompts"] == pytest.approx(1000 * 1.0 / N)
    assert "0.996" in rows.loc["wen", "published"]
    assert rows.loc["wen", "auc"] > rows.loc["sharpness", "auc"] > rows.loc["anisotropy", "auc"]
    assert set(roc["detector"]) == set(table["detector"])
    assert summary["n_planted"] == POSITIVES and summary["primary"] == "wen"


def test_intervals_are_reproducible_and_named_by_detector():
    shifts = {"wen": 2.0, "sharpness": 2.0}
    scores, truth = _scores(shifts)
    first = compare_detectors(scores, truth, _stats(list(shifts)), "wen", THRESHOLD)[1]
    again = compare_detectors(scores, truth, _stats(list(shifts)), "wen", THRESHOLD)[1]
    pd.testing.assert_frame_equal(first, again)


def test_memorized_sets_overlap_with_the_primary():
    scores, truth = _scores({"wen": 5.0, "sharpness": 0.0})
    scores["score_bright_ending"] = scores["score_wen"] * 2 + 1  # same order as wen
    summary, _, _ = compare_detectors(
        scores, truth, _stats(["wen", "sharpness", "bright_ending"]), "wen", THRESHOLD
    )
    sets = summary["memorized_sets"]
    assert sets["wen"]["jaccard"] == 1.0
    assert sets["bright_ending"] == sets["wen"]  # a monotone transform flags the same prompts
    assert sets["wen"]["n_flagged"] == int(
        (scores["score_wen"] > np.percentile(scores["score_wen"], 96)).sum()
    )
    assert sets["sharpness"]["jaccard"] < 1.0
    assert sets["sharpness"]["overlap_with_primary"] <= sets["sharpness"]["n_flagged"]


def test_a_fixed_value_threshold_only_applies_to_the_primary():
    scores, truth = _scores({"wen": 5.0, "sharpness": 1.0})
    value = {**THRESHOLD, "method": "value", "value": 2.5}
    summary, _, _ = compare_detectors(scores, truth, _stats(["wen", "sharpness"]), "wen", value)
    assert summary["memorized_sets"]["sharpness"]["jaccard"] is None
    assert summary["memorized_sets"]["wen"]["n_flagged"] == int((scores["score_wen"] > 2.5).sum())


def test_the_combination_is_not_adopted_unless_it_clearly_beats_the_best():
    scores, truth = _scores({"wen": 6.0, "sharpness": 0.3, "anisotropy": 0.3})
    summary, _, _ = compare_detectors(
        scores, truth, _stats(["wen", "sharpness", "anisotropy"]), "wen", THRESHOLD
    )
    verdict = summary["combination"]
    assert verdict["best_single"] == "wen"
    assert verdict["adopted"] is False and "not adopted" in verdict["verdict"]


def test_the_combination_is_adopted_when_it_clearly_beats_the_best():
    """Two detectors that each see half the positives: their rank average sees all of them."""
    rng = np.random.default_rng(1)
    n, pos = 2000, 200
    labels = np.arange(n) < pos
    ids = [f"q{i:05d}" for i in range(n)]
    half = np.arange(n) < pos // 2
    scores = pd.DataFrame(
        {
            "prompt_id": ids,
            "score_wen": rng.normal(size=n) + 8.0 * (labels & half),
            "score_sharpness": rng.normal(size=n) + 8.0 * (labels & ~half),
        }
    )
    truth = pd.DataFrame({"prompt_id": ids[:pos]})
    stats = [
        {
            "n_prompts": n,
            "detectors": {
                k: {"unet_rows": n, "backward_rows": 0, "seconds": 1.0}
                for k in ("wen", "sharpness")
            },
        }
    ]
    summary, _, _ = compare_detectors(scores, truth, stats, "wen", THRESHOLD, resamples=200)
    assert summary["combination"]["adopted"] is True, summary["combination"]


def test_rank_average_uses_ranks_only():
    a = np.array([1.0, 5.0, 3.0])
    b = np.array([10.0, 30.0, 20.0])
    np.testing.assert_allclose(rank_average({"a": a, "b": b}), rank_average({"a": a**3, "b": b}))
    assert np.argmax(rank_average({"a": a, "b": b})) == 1


def test_costs_sum_over_chunks_per_prompt():
    costs = detector_costs(_stats(["wen", "anisotropy"], {"wen": 400, "anisotropy": 4}, chunks=3))
    assert costs["wen"]["unet_rows_per_prompt"] == pytest.approx(400)
    assert costs["anisotropy"]["seconds_per_1000_prompts"] == pytest.approx(1000 * 1.5 / 300)
    with pytest.raises(ValueError, match="no 'detectors' costs"):
        detector_costs([{"n_prompts": 3}])


def test_bad_inputs_fail_with_a_clear_message():
    scores, truth = _scores({"wen": 1.0})
    with pytest.raises(ValueError, match="score_sharpness"):
        compare_detectors(scores, truth, _stats(["wen"]), "sharpness", THRESHOLD)
    with pytest.raises(ValueError, match="needs both"):
        compare_detectors(scores, truth.iloc[:0], _stats(["wen"]), "wen", THRESHOLD)
    broken = scores.copy()
    broken.loc[3, "score_wen"] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        compare_detectors(broken, truth, _stats(["wen"]), "wen", THRESHOLD)


def test_published_figures_cover_every_detector():
    from memaudit.scoring.catalog import CATALOG

    assert set(PUBLISHED) == set(CATALOG)


def test_figure_is_written(tmp_path):
    shifts = {"wen": 3.0, "sharpness": 1.0}
    scores, truth = _scores(shifts)
    _, table, roc = compare_detectors(scores, truth, _stats(list(shifts)), "wen", THRESHOLD)
    plot_detectors(roc, table, tmp_path / "detectors.png")
    assert (tmp_path / "detectors.png").stat().st_size > 5000
    assert (tmp_path / "detectors.pdf").exists()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_metrics_equal_scikit_learn_with_ties(seed):
    from sklearn.metrics import roc_curve

    from memaudit.evaluation.detection import ranking_metrics

    rng = np.random.default_rng(seed)
    n = 450
    labels = rng.random(n) < 0.1
    scores = np.round(rng.normal(size=n) + 1.5 * labels, 1)  # many ties
    fast = ranking_metrics(labels, scores, (10,))
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    assert fast["auc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert fast["tpr_at_1pct_fpr"] == pytest.approx(float(tpr[fpr <= 0.01].max()))
