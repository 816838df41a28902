"""Tests of the synthetic set: settings, the frequency draw, x_T, chunked generation, gather."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from memaudit.config import schema_defaults
from memaudit.diffusion import initial_noise
from memaudit.model.loading import AuditModel
from memaudit.model.training import build_demo_model
from memaudit.synthetic.chunks import (
    INDEX_COLUMNS,
    gather_chunks,
    generation_summary,
    read_chunk,
    write_chunk,
)
from memaudit.synthetic.sampling import (
    chunk_bounds,
    draw_prompts,
    generate_chunk,
    generate_images,
    image_noise,
    synthetic_seed,
)
from memaudit.synthetic.spec import SyntheticSpec
from memaudit.text import prompt_id
from tests.tiny_components import TINY_CAPTIONS, OutOfMemoryUnet, tiny_train_spec

TEXTS_FILE = "results/prompts/texts.parquet"
SPEC = SyntheticSpec(n_images=7, steps=2, guidance=3.0, seed=3, batch_size=4)
# Images computed in other batch shapes agree to float rounding, which can tip a pixel across
# a uint8 rounding boundary: at most one grey level apart (as in the mitigation tests).
GREY_LEVELS = 1


def texts_table(counts: list[int], captions: list[str] | None = None) -> pd.DataFrame:
    captions = list(captions or TINY_CAPTIONS)[: len(counts)]
    return pd.DataFrame(
        {
            "prompt_id": [prompt_id(t) for t in captions],
            "text": captions,
            "n_reports": np.asarray(counts, dtype=np.int64),
        }
    )


def assert_images_close(actual: np.ndarray, expected: np.ndarray) -> None:
    assert actual.shape == expected.shape and actual.dtype == expected.dtype == np.uint8
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= GREY_LEVELS, f"{int((diff > GREY_LEVELS).sum())} pixels differ more"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and a shared CPU is not oversubscribed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> AuditModel:
    """The tiny pixel-space demo model (1x16x16), cross-attention amplified 10x so that the
    prompt matters, as in a trained model."""
    model = build_demo_model(list(TINY_CAPTIONS), tiny_train_spec())
    with torch.no_grad():
        for name, module in model.unet.named_modules():
            if name.endswith("attn2"):
                module.to_v.weight.mul_(10.0)
                module.to_out[0].weight.mul_(10.0)
    return model


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


def test_spec_defaults_come_from_the_schema_and_workflow_keys_are_ignored() -> None:
    defaults = schema_defaults("synthetic")
    spec = SyntheticSpec.from_dict({"enabled": False, "chunks": 9})
    for name in ("n_images", "steps", "guidance", "seed", "batch_size", "bootstrap"):
        assert getattr(spec, name) == defaults[name]
    assert SyntheticSpec.from_dict({"n_images": 3, "batch_size": 2}).n_images == 3


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"n_images": 0}, "synthetic.n_images"),
        ({"steps": 2.5}, "synthetic.steps"),
        ({"guidance": float("nan")}, "synthetic.guidance"),
        ({"batch_size": "big"}, "synthetic.batch_size"),
        ({"bootstrap": -1}, "synthetic.bootstrap"),
        ({"n_image": 4}, "synthetic.n_image"),
    ],
)
def test_spec_rejects_bad_values_naming_the_key(values: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        SyntheticSpec.from_dict(values)


# --------------------------------------------------------------------------------------------
# The frequency draw
# --------------------------------------------------------------------------------------------


def test_draw_is_deterministic_and_a_larger_draw_keeps_the_first_images() -> None:
    texts = texts_table([5, 1, 3, 2])
    first = draw_prompts(texts, 30, seed=4)
    assert list(first.columns) == ["image", "prompt_id", "text", "n_reports"]
    assert first["image"].tolist() == list(range(30))
    pd.testing.assert_frame_equal(first, draw_prompts(texts, 30, seed=4))
    pd.testing.assert_frame_equal(first.head(12), draw_prompts(texts, 12, seed=4))
    other = draw_prompts(texts, 30, seed=5)
    assert other["prompt_id"].tolist() != first["prompt_id"].tolist()
    by_id = texts.set_index("prompt_id")
    assert (first["text"].to_numpy() == by_id.loc[first["prompt_id"], "text"].to_numpy()).all()
    assert (first["n_reports"].to_numpy() == by_id.loc[first["prompt_id"], "n_reports"]).all()


def test_draw_does_not_depend_on_the_row_order_of_the_table() -> None:
    texts = texts_table([5, 1, 3, 2, 7, 4])
    shuffled = texts.sample(frac=1.0, random_state=1).reset_index(drop=True)
    assert shuffled["prompt_id"].tolist() != texts["prompt_id"].tolist()
    pd.testing.assert_frame_equal(draw_prompts(texts, 50, 0), draw_prompts(shuffled, 50, 0))


def test_draw_is_proportional_to_report_counts() -> None:
    counts = [1, 2, 3, 4, 0, 10]
    texts = texts_table(counts)
    n = 40_000
    drawn = draw_prompts(texts, n, seed=0)["prompt_id"].value_counts()
    expected = np.asarray(counts) / sum(counts)
    for pid, p in zip(texts["prompt_id"], expected, strict=True):
        share = drawn.get(pid, 0) / n
        # a binomial share's sd is at most 0.0025 here: 0.012 is about five of them
        assert share == pytest.approx(p, abs=0.012), pid
    assert texts["prompt_id"].iloc[4] not in drawn.index  # a text of no report is never drawn


def test_more_images_than_prompts_is_fine() -> None:
    drawn = draw_prompts(texts_table([1, 1]), 40, seed=2)
    assert len(drawn) == 40 and drawn["prompt_id"].nunique() == 2


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (texts_table([]), "texts.parquet has no prompts"),
        (texts_table([1, 2]).drop(columns="n_reports"), "no 'n_reports' column"),
        (pd.concat([texts_table([1])] * 2, ignore_index=True), "more than once"),
        (texts_table([1, -2]), "whole numbers >= 0"),
        (texts_table([1, 2]).assign(n_reports=[1.0, np.nan]), "whole numbers >= 0"),
        (texts_table([0, 0]), "every n_reports is 0"),
    ],
    ids=["empty", "no-counts", "duplicate", "negative", "nan", "all-zero"],
)
def test_bad_texts_tables_are_clear_errors_naming_the_file(table, message) -> None:
    with pytest.raises(ValueError, match=message) as error:
        draw_prompts(table, 5, seed=0, source=TEXTS_FILE)
    assert TEXTS_FILE in str(error.value)


# --------------------------------------------------------------------------------------------
# x_T and chunks
# --------------------------------------------------------------------------------------------


def test_image_noise_row_j_is_initial_noise_row_j_drawn_alone() -> None:
    shape = (1, 4, 4)
    full = initial_noise(shape, 6, synthetic_seed(9))
    torch.testing.assert_close(image_noise(shape, [5, 2], 9), full[[5, 2]], rtol=0, atol=0)
    assert not torch.equal(image_noise(shape, [0], 9), image_noise(shape, [0], 10))
    assert image_noise(shape, [], 9).shape == (0, *shape)


def test_chunk_bounds_cover_every_image_once() -> None:
    for n, total in ((7, 3), (5, 7), (1, 1)):
        bounds = [chunk_bounds(n, i, total) for i in range(total)]
        covered = [j for lo, hi in bounds for j in range(lo, hi)]
        assert covered == list(range(n))
    with pytest.raises(ValueError, match="chunk index"):
        chunk_bounds(5, 3, 3)


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def _chunked(model, texts, spec, total, folder: Path):
    paths = []
    for i in range(total):
        images, index = folder / f"{i}.npz", folder / f"{i}.parquet"
        stats = generate_chunk(model, texts, i, total, spec, images, index, TEXTS_FILE)
        assert stats["chunk_index"] == i and stats["chunk_total"] == total
        paths.append((index, images, stats))
    return paths


def test_chunking_and_batch_size_change_no_image(model: AuditModel, tmp_path: Path) -> None:
    texts = texts_table([3, 1, 2, 1])
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    one = _chunked(model, texts, SPEC, 1, tmp_path / "one")
    other = SyntheticSpec(**{**SPEC.__dict__, "batch_size": 1})
    many = _chunked(model, texts, other, 3, tmp_path / "many")
    table, images = gather_chunks([p[0] for p in one], [p[1] for p in one], SPEC.n_images)
    # chunks given out of order: the gather sorts by image index
    parts = many[::-1]
    table3, images3 = gather_chunks([p[0] for p in parts], [p[1] for p in parts], SPEC.n_images)
    pd.testing.assert_frame_equal(table, table3)
    assert images.shape == (SPEC.n_images, 16, 16)
    assert_images_close(images3, images)
    pd.testing.assert_frame_equal(
        table[["image", "prompt_id", "text", "n_reports"]],
        draw_prompts(texts, SPEC.n_images, SPEC.seed),
    )
    # every image has its own x_T: no two images are alike, even of one prompt
    flat = images.reshape(len(images), -1).astype(np.int16)
    assert all(np.abs(flat[a] - flat[b]).max() > 2 for a in range(7) for b in range(a))
    summary = generation_summary([p[2] for p in many])
    assert summary["images"] == SPEC.n_images and summary["images_per_s"] > 0
    json.dumps(summary, allow_nan=False)


def test_more_chunks_than_images_leaves_empty_chunks(model: AuditModel, tmp_path: Path) -> None:
    spec = SyntheticSpec(n_images=2, steps=1, guidance=1.0, seed=0, batch_size=2)
    parts = _chunked(model, texts_table([1, 1, 1]), spec, 4, tmp_path)
    assert sorted(p[2]["images"] for p in parts) == [0, 0, 1, 1]
    table, images = gather_chunks([p[0] for p in parts], [p[1] for p in parts], 2)
    assert table["image"].tolist() == [0, 1] and images.shape == (2, 16, 16)


def test_out_of_memory_halves_the_batch_and_keeps_the_images(model: AuditModel) -> None:
    draws = draw_prompts(texts_table([2, 1, 1]), 4, seed=1)
    spec = SyntheticSpec(n_images=4, steps=2, guidance=3.0, seed=1, batch_size=4)
    reference, _ = generate_images(model, draws, spec)
    fake = copy.copy(model)
    fake.unet = OutOfMemoryUnet(model.unet, max_rows=2 * 2)  # 2 images x 2 branches per call
    images, stats = generate_images(fake, draws, spec)
    assert stats["batch_size_final"] == 2 and stats["oom_halvings"] == 1
    assert_images_close(images, reference)


def test_empty_prompt_table_stops_generation_naming_the_file(
    model: AuditModel, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="texts.parquet has no prompts"):
        generate_chunk(
            model,
            texts_table([]),
            0,
            1,
            SPEC,
            tmp_path / "a.npz",
            tmp_path / "a.parquet",
            TEXTS_FILE,
        )
    assert not list(tmp_path.iterdir())  # nothing written


# --------------------------------------------------------------------------------------------
# Chunk files and the gather
# --------------------------------------------------------------------------------------------


def _fake_chunk(folder: Path, name: str, images: range, ids: list[str]) -> tuple[Path, Path]:
    index = pd.DataFrame(
        {
            "image": np.asarray(list(images), dtype=np.int64),
            "prompt_id": ids,
            "text": [f"text {p}" for p in ids],
            "n_reports": np.ones(len(ids), dtype=np.int64),
        }
    )
    pixels = np.full((len(ids), 4, 4), 7, dtype=np.uint8) + np.arange(len(ids))[:, None, None]
    write_chunk(index, pixels.astype(np.uint8), folder / f"{name}.npz", folder / f"{name}.parquet")
    return folder / f"{name}.parquet", folder / f"{name}.npz"


def test_gather_checks_pairs_and_coverage_and_sets_planted(tmp_path: Path) -> None:
    a = _fake_chunk(tmp_path, "a", range(0, 2), ["p", "q"])
    b = _fake_chunk(tmp_path, "b", range(2, 3), ["p"])
    table, images = gather_chunks([a[0], b[0]], [a[1], b[1]], 3, planted_ids=["p"])
    assert list(table.columns) == list(INDEX_COLUMNS)
    assert table["planted"].tolist() == [True, False, True]
    assert images[:, 0, 0].tolist() == [7, 8, 7]
    unplanted, _ = gather_chunks([a[0], b[0]], [a[1], b[1]], 3)
    assert not unplanted["planted"].any()
    with pytest.raises(ValueError, match="token mismatch"):
        gather_chunks([a[0]], [b[1]])
    with pytest.raises(ValueError, match=r"expected images 0\.\.2 once each \(0 duplicated, 1"):
        gather_chunks([a[0]], [a[1]], 3)
    with pytest.raises(ValueError, match="2 duplicated"):
        gather_chunks([a[0], a[0]], [a[1], a[1]])
    # the gathered pair is written and read back like a chunk
    write_chunk(table, images, tmp_path / "all.npz", tmp_path / "all.parquet")
    back, pixels = read_chunk(tmp_path / "all.npz", tmp_path / "all.parquet")
    pd.testing.assert_frame_equal(back, table)
    np.testing.assert_array_equal(pixels, images)
