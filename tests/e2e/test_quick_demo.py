"""End-to-end: the quick demo (config/quick.yaml), run once per session from an empty folder.

The run is the session fixture ``quick_run`` (tests/conftest.py): through the SLURM profile on a
throw-away cluster where one can be started (CI), else locally with ``--cores 2``. The demo
knows its ground truth, so the checks below are scientific, not cosmetic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import QUICK, QuickRun, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(quick_run: QuickRun) -> Path:
    return quick_run.workdir


def test_prompts_cover_every_report_and_every_planted_caption(run: Path):
    prompts = pd.read_parquet(run / "results/prompts/prompts.parquet")
    report_map = pd.read_parquet(run / "results/prompts/report_map.parquet")
    summary = json.loads((run / "results/prompts/summary.json").read_text())
    truth = pd.read_parquet(run / "results/demo/corpus/truth.parquet")
    studies = pd.read_parquet(run / "results/demo/corpus/studies.parquet")

    assert summary["reports_read"] == len(studies)
    assert summary["reports_used"] + sum(summary["skipped"].values()) == len(studies)
    assert summary["reports_used"] == len(report_map)
    assert prompts["prompt_id"].is_unique
    assert int(prompts["n_reports"].sum()) == len(report_map)
    # every planted caption is one prompt used by exactly its copies
    counts = prompts.set_index("prompt_id")["n_reports"]
    for row in truth.itertuples():
        assert counts.get(row.prompt_id) == row.n_copies, row.text
    # markers are flagged where the text has them
    assert (prompts["has_marker"] == prompts["text"].str.contains("___", regex=False)).all()
    # heavy head: a normal impression repeats far more than any planted caption
    assert prompts["n_reports"].max() > truth["n_copies"].max()


def test_prompt_figure_written(run: Path):
    for suffix in (".png", ".pdf"):
        path = run / f"results/prompts/prompt_frequency{suffix}"
        assert path.stat().st_size > 1000


def test_rerun_is_a_no_op(run: Path):
    proc = snakemake("-n", "--cores", "2", workdir=run, overlays=(QUICK,))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_corpus_images_match_studies(run: Path):
    images = np.load(run / "results/demo/corpus/images.npy")
    studies = pd.read_parquet(run / "results/demo/corpus/studies.parquet")
    assert images.shape[0] == len(studies) and images.dtype == np.uint8


def test_detection_finds_the_planted_prompts(run: Path):
    metrics = json.loads((run / "results/evaluation/detection.json").read_text())
    truth = pd.read_parquet(run / "results/demo/corpus/truth.parquet")
    assert metrics["n_planted_scored"] == len(truth)
    # the quick model memorizes its planted captions: the full trajectory ranks them on top
    assert metrics["windows"]["all_steps"]["auc"] >= 0.95, metrics["windows"]
    assert metrics["windows"]["first_step"]["auc"] > 0.5, metrics["windows"]
    per_step = pd.read_parquet(run / "results/evaluation/per_step_auc.parquet")
    assert len(per_step) == metrics["n_steps"]


def test_every_detector_is_scored_compared_and_costed(run: Path):
    scores = pd.read_parquet(run / "results/scoring/scores.parquet")
    summary = json.loads((run / "results/evaluation/detectors.json").read_text())
    table = pd.read_parquet(run / "results/evaluation/detectors.parquet")
    names = ["wen", "sharpness", "anisotropy", "bright_ending", "attention_entropy"]
    for name in names:
        assert np.isfinite(scores[f"score_{name}"]).all(), name
    np.testing.assert_array_equal(scores["score"], scores["score_wen"])  # the primary
    rows = table.set_index("detector")
    assert list(rows.index) == [*names, "rank_average"]
    # the table's Wen AUC is detection.json's all-steps AUC (the configured window)
    detection = json.loads((run / "results/evaluation/detection.json").read_text())
    assert rows.loc["wen", "auc"] == pytest.approx(detection["windows"]["configured"]["auc"])
    assert (rows["auc_low"] <= rows["auc"]).all() and (rows["auc"] <= rows["auc_high"]).all()
    # costs were counted in the scoring jobs: the first-step detectors are far cheaper
    assert (
        rows.loc["attention_entropy", "unet_rows_per_prompt"]
        < rows.loc["wen", "unet_rows_per_prompt"] / 5
    )
    assert rows.loc["sharpness", "backward_rows_per_prompt"] > 0
    assert summary["memorized_sets"]["wen"]["jaccard"] == 1.0
    assert "adopted" in summary["combination"]
    assert (run / "results/evaluation/detectors.png").stat().st_size > 5000


def test_demo_model_reproduces_planted_images_only(run: Path):
    check = json.loads((run / "results/model/memorization_check.json").read_text())
    assert check["planted_reproduced_fraction"] >= 0.75, check
    assert check["planted_seed_agreement"] > check["ordinary_seed_agreement"] + 0.3, check


def test_threshold_and_marker_enrichment(run: Path):
    stats = json.loads((run / "results/threshold/threshold.json").read_text())
    ranked = pd.read_parquet(run / "results/threshold/ranked_prompts.parquet")
    assert stats["n_memorized"] == int(ranked["memorized"].sum()) >= 1
    assert stats["n_prompts"] == len(ranked)
    assert 0 < stats["fisher_p"] <= 1


def test_attribution_covers_every_planted_prompt(run: Path):
    summary = json.loads((run / "results/attribution/summary.json").read_text())
    truth = pd.read_parquet(run / "results/demo/corpus/truth.parquet")
    words = pd.read_parquet(run / "results/attribution/words.parquet")
    assert set(truth["prompt_id"]) <= set(words["prompt_id"])
    n_triggers = int(truth["trigger_word"].notna().sum())
    assert summary["trigger"]["gradient"]["n_prompts"] == n_triggers
    # every trigger word is found as one word unit and ranked
    triggers = words[words["is_trigger"]]
    assert triggers["prompt_id"].nunique() == n_triggers
    assert triggers["rank"].notna().all()


def test_planted_keys_are_checked_and_the_methods_scored_against_them(run: Path):
    truth = pd.read_parquet(run / "results/demo/corpus/truth.parquet")
    keys = pd.read_parquet(run / "results/attribution/keys.parquet")
    check = json.loads((run / "results/attribution/keys.json").read_text())
    # every key (keyed captions) and candidate key (composed triggers) is checked on the model
    assert set(keys["prompt_id"]) == set(truth.loc[truth["key_text"].notna(), "prompt_id"])
    keyed = keys[keys["kind"] != "composed"]
    assert check["counts"]["keyed"]["checked"] == len(keyed) >= 2
    # the check recomputes the scores table's d_mem for the prompt with its key
    assert check["d_mem_scores_max_abs_difference"] < 1e-4
    # without its key a keyed caption is a frequent ordinary caption: the quick model must
    # find most keys causal, and a causal key's generations leave the planted image
    assert check["counts"]["keyed"]["causal_fraction"] >= 0.5, check["counts"]
    causal = keys[keys["causal"]]
    assert (causal["d_mem_without_key"] < causal["ordinary_p90"]).all()
    summary = json.loads((run / "results/attribution/summary.json").read_text())
    compared = summary["methods"]
    assert compared["keys"]["causal"] == int(keys["causal"].sum())
    per = compared["per_method"]
    assert set(per) == {
        "gradient",
        "grad_x_input",
        "integrated_gradients",
        "occlusion_delete",
        "occlusion_replace",
    }
    best = per[compared["best"]]
    assert best["key_top1"] >= max(p["key_top1"] for p in per.values())
    assert best["key_top1"] > best["chance_top1"], per
    assert summary["primary_method"] == compared["best"]
    assert summary["marker_controlled"]["method"] == compared["best"]
    table = pd.read_parquet(run / "results/attribution/method_comparison.parquet")
    assert set(table["method"]) == set(per)
    assert (run / "results/figures/attribution_methods.png").stat().st_size > 1000


def test_mitigation_table_has_every_strategy(run: Path):
    summary = pd.read_parquet(run / "results/mitigation/summary.parquet")
    evaluation = pd.read_parquet(run / "results/mitigation/evaluation.parquet")
    expected = {"original", "rwa", "rna", "remove", "gni", "cwr", "rt", "embopt"}
    assert expected <= set(summary["strategy"])
    assert (evaluation["diversity"].dropna() >= 0).all()
    for name in ("fig4_mitigation_grid", "mitigation_diversity", "fig3_token_attribution"):
        assert (run / f"results/figures/{name}.png").stat().st_size > 10_000, name


def test_copy_detector_is_trained_and_judged_against_the_planted_truth(run: Path):
    card = json.loads((run / "results/copy_detection/detector/model_card.json").read_text())
    curve = card["training"]["curve"]["loss"]
    assert card["settings"]["input_size"] == 16 and card["weights"]["format"] == "safetensors"
    assert np.mean(curve[-5:]) < np.mean(curve[:5])  # the contrastive loss went down
    validity = json.loads((run / "results/copy_detection/summary.json").read_text())
    assert list(validity["embeddings"]) == ["learned", "pixels"]
    table = pd.read_parquet(run / "results/copy_detection/validity.parquet")
    for name, block in validity["embeddings"].items():
        rows = table[(table["embedding"] == name) & (table["source"] == "mitigation")]
        planted = rows[rows["planted"]]
        # the recall is the planted generations' share of own-image copies, by prompt
        by_prompt = planted.groupby("prompt_id")["own_copy"].mean().mean()
        assert block["mitigation"]["copy_recall"]["rate"] == pytest.approx(by_prompt)
        # the false-copy rate is the ordinary generations' share of copies (the control
        # prompts and any unplanted mitigation prompt), by prompt
        ordinary = rows[~rows["planted"]]
        controls = pd.read_parquet(run / "results/copy_detection/controls/prompts.parquet")
        assert set(controls["prompt_id"]) <= set(ordinary["prompt_id"])
        assert len(controls) == 4
        false = ordinary.groupby("prompt_id")["copy"].mean().mean()
        assert block["mitigation"]["false_copy_rate"]["rate"] == pytest.approx(false)
        held = table[(table["embedding"] == name) & (table["source"] == "heldout")]
        assert len(held) == block["n_heldout"] > 0
        assert np.mean(held["similarity"] > block["threshold"]) <= 0.05 + 1e-9
    assert (run / "results/figures/copy_detection_roc.png").stat().st_size > 10_000


def test_synthetic_set_reports_its_copy_fraction(run: Path):
    summary = json.loads((run / "results/synthetic/summary.json").read_text())
    copies = pd.read_parquet(run / "results/synthetic/copies.parquet")
    assert summary["n_images"] == len(copies) == 64
    assert summary["copy_fraction"] == pytest.approx(copies["copy"].mean())
    low, high = summary["copy_fraction_ci"]
    assert low <= summary["copy_fraction"] <= high
    planted = summary["planted"]
    assert planted["n_planted_images"] == int(copies["planted"].sum())
    assert (run / "results/figures/synthetic_copies.png").stat().st_size > 10_000
