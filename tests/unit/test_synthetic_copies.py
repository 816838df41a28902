"""Tests of the synthetic set's copy detection, its summary and its figure (synthetic data)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from memaudit.copy_detection.embedding import Embedder
from memaudit.copy_detection.search import nearest_neighbours
from memaudit.copy_detection.spec import EmbeddingSpec
from memaudit.synthetic.copies import (
    COPY_COLUMNS,
    copy_line,
    copy_table,
    detect_copies,
    summarize_copies,
)
from memaudit.synthetic.figures import figure_title, plot_synthetic_copies, shown_images

DIM, N_TRAIN = 64, 20


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    rows = rng.standard_normal((n, DIM))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


def train_index(n: int = N_TRAIN) -> pd.DataFrame:
    """A demo-style training index: row r stands for corpus image r (row 3 also for 11)."""
    members = [np.asarray([r], dtype=np.int64) for r in range(n)]
    members[3] = np.asarray([3, 11], dtype=np.int64)
    return pd.DataFrame(
        {
            "train_id": [f"image_index:{r}" for r in range(n)],
            "image_index": np.arange(n, dtype=np.int64),
            "image_indices": members,
            "n_studies": [len(m) for m in members],
        }
    )


@pytest.fixture
def scene():
    """Ten images: 0, 1 and 5 are exact copies (0 and 5 of its planted prompt's image 11,
    which training row 3 stands for; 1 of row 7), the rest random directions."""
    rng = np.random.default_rng(0)
    train = unit_rows(rng, N_TRAIN)
    queries = unit_rows(rng, 10)
    queries[[0, 5]] = train[3]
    queries[1] = train[7]
    index = pd.DataFrame(
        {
            "image": np.arange(10, dtype=np.int64),
            "prompt_id": ["planted"] * 4 + ["ordinary"] * 6,
            "planted": [True] * 4 + [False] * 6,
        }
    )
    index.loc[5, ["prompt_id", "planted"]] = ["planted", True]
    truth = pd.DataFrame({"prompt_id": ["planted"], "image_index": [11]})
    similarity, nearest = nearest_neighbours(queries, train)
    return index, similarity, nearest, truth


def test_copy_table_flags_exact_copies_and_the_own_planted_image(scene) -> None:
    index, similarity, nearest, truth = scene
    table = copy_table(index, similarity, nearest, train_index(), 0.9, truth)
    assert list(table.columns) == list(COPY_COLUMNS)
    assert table["copy"].tolist() == [i in (0, 1, 5) for i in range(10)]
    assert table.loc[[0, 5], "nearest_train_id"].tolist() == ["image_index:3"] * 2
    assert table.at[1, "nearest_train_id"] == "image_index:7"
    assert table.loc[[0, 1, 5], "similarity"].to_numpy() == pytest.approx(1.0, abs=1e-5)
    # image 1 copies a training image, but not its own prompt's planted image
    assert table["own_planted_copy"].tolist() == [i in (0, 5) for i in range(10)]
    assert (table["own_planted_nearest"] >= table["own_planted_copy"]).all()
    without_truth = copy_table(index, similarity, nearest, train_index(), 0.9)
    assert not without_truth["own_planted_nearest"].any()
    assert without_truth["copy"].tolist() == table["copy"].tolist()


def test_copy_table_rejects_mismatched_inputs(scene) -> None:
    index, similarity, nearest, truth = scene
    with pytest.raises(ValueError, match="10 images but 9 similarities"):
        copy_table(index, similarity[:9], nearest[:9], train_index(), 0.9)
    with pytest.raises(ValueError, match="out of range for 5 training images"):
        copy_table(index, similarity, nearest, train_index(5), 0.9)
    with pytest.raises(ValueError, match="truth table has no 'image_index'"):
        copy_table(index, similarity, nearest, train_index(), 0.9, truth[["prompt_id"]])


def test_summary_fraction_interval_and_planted_split(scene) -> None:
    index, similarity, nearest, truth = scene
    table = copy_table(index, similarity, nearest, train_index(), 0.9, truth)
    summary = summarize_copies(table, 0.9, 95.0, 500, seed=1, demo=True, embedding="pixels")
    json.dumps(summary, allow_nan=False)
    assert summary["n_images"] == 10 and summary["n_copies"] == 3
    assert summary["copy_fraction"] == pytest.approx(0.3)
    lo, hi = summary["copy_fraction_ci"]
    assert 0.0 <= lo <= 0.3 <= hi <= 1.0 and lo < hi
    assert summary["copied_train_images"] == [
        {"train_id": "image_index:3", "n_copies": 2},
        {"train_id": "image_index:7", "n_copies": 1},
    ]
    planted = summary["planted"]
    assert planted["n_planted_images"] == 5 and planted["planted_image_share"] == 0.5
    assert planted["copy_fraction_planted"] == pytest.approx(3 / 5)  # images 0, 1, 5
    assert planted["copy_fraction_ordinary"] == 0.0
    assert planted["copy_fraction_ordinary_ci"] == [0.0, 0.0]
    plo, phi = planted["copy_fraction_planted_ci"]
    assert plo <= 0.6 <= phi
    assert planted["copies_from_planted_share"] == 1.0
    assert planted["own_planted_copy_fraction"] == pytest.approx(2 / 5)
    # the same inputs give the same interval; another seed another one
    again = summarize_copies(table, 0.9, 95.0, 500, seed=1, demo=True)
    assert again["copy_fraction_ci"] == summary["copy_fraction_ci"]
    assert "planted" not in summarize_copies(table, 0.9, None, 500, seed=1)
    line = copy_line(summary)
    assert "3 of 10 images are copies" in line and "30.0 %" in line and "0.9000" in line


def test_detect_copies_embeds_every_image_in_any_batch(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    training = rng.integers(0, 256, (12, 16, 16), dtype=np.uint8)
    spec = EmbeddingSpec(kind="pixels", side=8)
    reference = SimpleNamespace(
        spec=spec,
        embeddings=Embedder(spec)(list(training)),
        index=train_index(12),
        threshold=0.95,
    )
    images = rng.integers(0, 256, (5, 16, 16), dtype=np.uint8)
    images[2] = training[4]
    index = pd.DataFrame(
        {"image": np.arange(5), "prompt_id": list("abcde"), "planted": [False] * 5}
    )
    table = detect_copies(images, index, reference, batch_size=2)
    assert table["copy"].tolist() == [False, False, True, False, False]
    assert table.at[2, "nearest_train_id"] == "image_index:4"
    assert table.at[2, "similarity"] == pytest.approx(1.0, abs=1e-5)
    pd.testing.assert_frame_equal(table, detect_copies(images, index, reference, batch_size=64))
    with pytest.raises(ValueError, match="5 synthetic images but 4 index rows"):
        detect_copies(images, index.head(4), reference)


def test_figure_shows_the_most_similar_copies_or_says_there_are_none(scene, tmp_path: Path) -> None:
    index, similarity, nearest, truth = scene
    table = copy_table(index, similarity, nearest, train_index(), 0.9, truth)
    shown, are_copies = shown_images(table, 8)
    assert are_copies and shown["image"].tolist() == [0, 1, 5]  # copies only, ties by image
    none = table.assign(copy=False)
    shown, are_copies = shown_images(none, 4)
    assert not are_copies and len(shown) == 4
    assert shown["similarity"].is_monotonic_decreasing
    assert figure_title(10, 3, 3, True, 0.9).startswith("3 of 10 synthetic images are copies")
    assert figure_title(10, 0, 4, False, 0.9).startswith("none of the 10 synthetic images is")
    images = np.random.default_rng(0).integers(0, 256, (10, 16, 16), dtype=np.uint8)
    for name, frame in (("copies", table), ("none", none)):
        plot_synthetic_copies(
            frame, images, tmp_path / f"{name}.png", 8, lambda _: np.zeros((16, 16)), 0.9
        )
        assert (tmp_path / f"{name}.png").stat().st_size > 0
        assert (tmp_path / f"{name}.pdf").exists()
    plot_synthetic_copies(table.head(0), images, tmp_path / "empty.png")
    assert (tmp_path / "empty.png").exists()
