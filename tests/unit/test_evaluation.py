"""Tests of the evaluation stage: detection against the demo's planted truth and its figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memaudit import provenance
from memaudit.evaluation.detection import evaluate_truth
from memaudit.evaluation.figures import plot_per_step_auc

SCRIPTS = Path(__file__).resolve().parents[2] / "workflow" / "scripts"


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


def test_detection_rule_code_excludes_the_figure_and_the_plot_rule_has_it() -> None:
    """A per-step plot edit redraws the plot and re-runs no evaluation (code versions)."""
    compute = provenance.module_closure(
        provenance.script_modules(SCRIPTS / "evaluate_detection.py")
    )
    plot = provenance.module_closure(provenance.script_modules(SCRIPTS / "plot_per_step_auc.py"))
    assert "evaluation.detection" in compute
    assert not [m for m in compute if m == "plotting" or m.endswith(".figures")], compute
    assert "evaluation.figures" in plot and "evaluation.detection" not in plot, plot
