"""Tests of copy detection's validity on the demo truth: recall, false copies, ROC."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memaudit.copy_detection.reference import CopyReference
from memaudit.copy_detection.spec import EmbeddingSpec
from memaudit.copy_detection.validity import (
    Generations,
    judge,
    mitigation_originals,
    roc_auc,
    roc_curve,
    summarize_validity,
    synthetic_images,
)

SIDE = 8


def blobs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, SIDE, SIDE), dtype=np.uint8)


def pixel_reference(train: np.ndarray, heldout_sims: np.ndarray) -> CopyReference:
    from memaudit.copy_detection.embedding import Embedder

    spec = EmbeddingSpec(kind="pixels", side=SIDE)
    index = pd.DataFrame(
        {
            "train_id": [f"image:{i}" for i in range(len(train))],
            "image_index": np.arange(len(train)),
            "image_indices": [np.array([i]) for i in range(len(train))],
        }
    )
    return CopyReference(
        embeddings=Embedder(spec)(list(train)),
        index=index,
        threshold=float(np.percentile(heldout_sims, 95)),
        percentile=95.0,
        spec=spec,
        heldout_similarity=heldout_sims,
    )


def test_roc_auc_matches_pairwise_counting_and_the_curve_ends_at_one():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1, 1, 40), rng.normal(0, 1, 30)
    pos[:3] = neg[:3]  # ties count half
    pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
    assert roc_auc(pos, neg) == pytest.approx(pairs)
    fpr, tpr = roc_curve(pos, neg)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.isnan(roc_auc(pos, neg[:0]))


def test_judge_flags_own_copies_and_summary_counts_them():
    train = blobs(10, seed=1)
    reference = pixel_reference(train, np.linspace(0.1, 0.5, 50))
    # Planted prompt p0 (planted image 3): two exact copies and one copy of image 4.
    # Ordinary prompt o1: two fresh images.
    images = np.stack([train[3], train[3], train[4], *blobs(2, seed=9)])
    rows = pd.DataFrame(
        {
            "source": "mitigation",
            "prompt_id": ["p0", "p0", "p0", "o1", "o1"],
            "planted": [True, True, True, False, False],
            "generation": [0, 1, 2, 0, 1],
        }
    )
    truth = pd.DataFrame({"prompt_id": ["p0"], "image_index": [3]})
    table = judge("pixels", reference, [Generations(images, rows)], truth, block=3)
    generated = table[table["source"] == "mitigation"]
    assert generated["own_copy"].tolist() == [True, True, False, False, False]
    assert generated["copy"].tolist()[:3] == [True, True, True]
    assert (table["source"] == "heldout").sum() == 50
    summary = summarize_validity(table, {"pixels": reference}, resamples=50)
    block = summary["embeddings"]["pixels"]["mitigation"]
    assert block["copy_recall"]["rate"] == pytest.approx(2 / 3)
    assert block["own_nearest_rate"]["rate"] == pytest.approx(2 / 3)
    assert block["false_copy_rate"]["rate"] == pytest.approx(generated["copy"][3:].mean())
    assert summary["copy_recall"] == pytest.approx(2 / 3) and summary["embedding"] == "pixels"


def test_generation_sources_read_mitigation_chunks_and_synthetic_sets(tmp_path):
    seeds = blobs(6, seed=3).reshape(2, 3, SIDE, SIDE)
    chunk = tmp_path / "c.npz"
    np.savez(chunk, images=seeds)
    generations = pd.DataFrame(
        {
            "prompt_id": ["b", "a", "a"],
            "strategy": ["original", "original", "rwa"],
            "status": ["generated", "generated", "generated"],
            "planted": [False, True, True],
            "row": [0, 1, 0],
            "chunk": [str(chunk)] * 3,
        }
    )
    originals = mitigation_originals(generations)
    assert originals.rows["prompt_id"].tolist() == ["a"] * 3 + ["b"] * 3
    assert np.array_equal(originals.images[:3], seeds[1])
    index = pd.DataFrame({"image": [0, 1], "prompt_id": ["x", "y"], "planted": [True, False]})
    synthetic = synthetic_images(seeds[0, :2], index)
    assert synthetic.rows["planted"].tolist() == [True, False]
    with pytest.raises(ValueError, match="2 synthetic index rows but 3 images"):
        synthetic_images(seeds[0], index)
