"""Tests of copy detection's image sets: modes and bit depths, missing and undecodable files."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from memaudit.copy_detection.embedding import Embedder
from memaudit.copy_detection.images import (
    check_policy,
    find_images,
    read_image,
    unreadable_reason,
)
from memaudit.copy_detection.reference import build_reference
from memaudit.copy_detection.spec import EmbeddingSpec

SIDE = 8  # pixels embedding of 8 x 8 downsampled images


def smooth_image(seed: int, shape: tuple[int, int] = (24, 20)) -> np.ndarray:
    """A smooth 8-bit gray image (so that JPEG keeps it faithfully), distinct per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape)
    value = sum(
        rng.uniform(0.2, 1) * np.sin(2 * np.pi * (rng.uniform(0.3, 1.2) * (x * a + y * b)) + p)
        for a, b, p in rng.uniform(-1, 1, (4, 3))
    )
    value = (value - value.min()) / (value.max() - value.min())
    return np.round(20 + 215 * value).astype(np.uint8)


def save_as(gray: np.ndarray, path: Path, kind: str) -> None:
    """``gray`` written in another mode or bit depth that reads back as the same gray."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "gray8":
        Image.fromarray(gray).save(path)
    elif kind == "gray16":  # mode I;16: v * 257 / 65535 == v / 255
        image = Image.fromarray(gray.astype(np.uint16) * 257)
        assert image.mode == "I;16"
        image.save(path)
    elif kind == "rgb_jpeg":
        Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(path, quality=95)
    elif kind == "rgba":  # alpha is dropped
        alpha = np.random.default_rng(0).integers(0, 256, gray.shape, dtype=np.uint8)
        Image.fromarray(np.dstack([gray, gray, gray, alpha])).save(path)
    elif kind == "palette":  # gray ramp palette, indices = gray levels
        image = Image.frombytes("P", gray.shape[::-1], gray.tobytes())
        image.putpalette([v for i in range(256) for v in (i, i, i)])
        image.save(path)
    else:
        raise AssertionError(kind)


def pixels(side: int = SIDE) -> Embedder:
    return Embedder(EmbeddingSpec(kind="pixels", side=side))


def outputs(folder: Path) -> list[Path]:
    return [folder / n for n in ("e.npy", "i.parquet", "h.parquet", "r.json")]


def config(tmp_path: Path, **extra: object) -> dict:
    return {
        "embedding": "pixels",
        "side": SIDE,
        "train_images": str(tmp_path / "train"),
        "heldout_images": str(tmp_path / "held"),
        **extra,
    }


def write_set(folder: Path, seeds: range, kind: str = "gray8") -> dict[str, np.ndarray]:
    """Images under ``folder`` (two subfolders); returns relative path -> gray pixels."""
    written = {}
    for seed in seeds:
        suffix = ".jpg" if kind == "rgb_jpeg" else ".png"
        rel = f"s{seed % 2}/img{seed:03d}{suffix}"
        gray = smooth_image(seed, (24 + seed % 5, 20 + seed % 3))  # mixed sizes
        save_as(gray, folder / rel, kind)
        written[rel] = gray
    return written


def truncated_png(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(smooth_image(99, (64, 64))).save(buffer, format="PNG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.mark.parametrize("kind", ["gray16", "rgb_jpeg", "rgba", "palette"])
def test_every_mode_reads_as_the_same_gray_image_and_embedding(tmp_path: Path, kind: str) -> None:
    gray = smooth_image(1)
    save_as(gray, tmp_path / "gray.png", "gray8")
    other = tmp_path / ("other.jpg" if kind == "rgb_jpeg" else "other.png")
    save_as(gray, other, kind)
    with Image.open(other) as handle:  # the file really is in that mode
        assert handle.mode == {"gray16": "I;16", "rgb_jpeg": "RGB", "rgba": "RGBA"}.get(kind, "P")
    expected, image = read_image(tmp_path / "gray.png"), read_image(other)
    np.testing.assert_allclose(expected, gray / 255.0)
    assert image.shape == gray.shape and image.dtype == np.float64
    assert image.min() >= 0.0 and image.max() <= 1.0
    atol = 0.03 if kind == "rgb_jpeg" else 1e-12  # JPEG is lossy, the others exact
    np.testing.assert_allclose(image, expected, rtol=0, atol=atol)
    a, b = pixels()([expected, image])
    assert float(a @ b) == pytest.approx(1.0, abs=1e-4 if kind == "rgb_jpeg" else 1e-6)


def test_folder_of_mixed_modes_and_sizes_embeds_like_gray_pngs(tmp_path: Path) -> None:
    grays = {}
    for i, kind in enumerate(["gray8", "gray16", "rgb_jpeg", "rgba", "palette"]):
        grays |= write_set(tmp_path / "train", range(3 * i, 3 * i + 3), kind)
    write_set(tmp_path / "held", range(50, 53))
    meta = build_reference(config(tmp_path, batch_size=4), *outputs(tmp_path))
    index = pd.read_parquet(tmp_path / "i.parquet")
    assert index["train_id"].tolist() == sorted(grays)
    expected = pixels()([grays[rel] / 255.0 for rel in sorted(grays)])
    similarity = np.sum(np.load(tmp_path / "e.npy") * expected, axis=1)
    np.testing.assert_allclose(similarity, 1.0, atol=1e-4)
    assert meta["n_train"] == 15 and meta["n_heldout"] == 3
    assert meta["skipped"]["train"] == {"missing": 0, "unreadable": 0, "examples": []}


def test_read_image_names_truncated_and_garbage_files(tmp_path: Path) -> None:
    truncated_png(tmp_path / "cut.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    for name in ("cut.png", "junk.png", "absent.png"):
        with pytest.raises(ValueError, match=f"cannot read the image .*{name}"):
            read_image(tmp_path / name)
        assert name in unreadable_reason(tmp_path / name)
    save_as(smooth_image(2), tmp_path / "ok.png", "gray8")
    assert unreadable_reason(tmp_path / "ok.png") is None


def test_missing_listed_file_is_an_error_naming_it_or_a_counted_skip(tmp_path: Path) -> None:
    present = write_set(tmp_path / "train", range(4))
    write_set(tmp_path / "held", range(50, 53))
    listing = tmp_path / "train.txt"
    listing.write_text("\n".join([*present, "s0/gone.png", "s1/lost.png"]) + "\n")
    cfg = config(tmp_path, train_list=str(listing))
    with pytest.raises(ValueError, match=r"copy_detection\.train_list.*s0/gone\.png.*unreadable"):
        build_reference(cfg, *outputs(tmp_path))
    assert not any(f.exists() for f in outputs(tmp_path))
    meta = build_reference({**cfg, "unreadable": "skip"}, *outputs(tmp_path))
    assert meta["n_train"] == 4
    assert meta["skipped"]["train"] == {
        "missing": 2,
        "unreadable": 0,
        "examples": ["s0/gone.png", "s1/lost.png"],
    }
    assert json.loads((tmp_path / "r.json").read_text())["skipped"] == meta["skipped"]
    assert pd.read_parquet(tmp_path / "i.parquet")["train_id"].tolist() == sorted(present)
    found = find_images(tmp_path / "train", "k", listing, unreadable="skip")
    assert found.paths == sorted(present) and found.missing == ["s0/gone.png", "s1/lost.png"]


def test_undecodable_files_stop_the_run_or_are_skipped_with_rows_aligned(tmp_path: Path) -> None:
    good = write_set(tmp_path / "train", range(7))
    truncated_png(tmp_path / "train/s0/img001b.png")  # sorts between good images
    (tmp_path / "train/s1/img004b.png").write_bytes(b"not a png at all")
    truncated_png(tmp_path / "train/s1/img006b.png")  # the last batch: bad files only
    (tmp_path / "train/s1/img006c.jpg").write_bytes(b"\xff\xd8\xff\xe0 broken jpeg")
    held = write_set(tmp_path / "held", range(50, 54))
    (tmp_path / "held/s0/bad.png").write_bytes(b"")
    cfg = config(tmp_path, batch_size=3)
    message = r"copy_detection\.train_images: cannot read .*img001b.*copy_detection\.unreadable"
    with pytest.raises(ValueError, match=message):
        build_reference(cfg, *outputs(tmp_path))
    assert not any(f.exists() for f in outputs(tmp_path))
    meta = build_reference({**cfg, "unreadable": "skip"}, *outputs(tmp_path))
    assert meta["skipped"]["train"] == {
        "missing": 0,
        "unreadable": 4,
        "examples": ["s0/img001b.png", "s1/img004b.png", "s1/img006b.png", "s1/img006c.jpg"],
    }
    assert meta["skipped"]["heldout"] == {"missing": 0, "unreadable": 1, "examples": ["s0/bad.png"]}
    index = pd.read_parquet(tmp_path / "i.parquet")
    assert index["train_id"].tolist() == sorted(good)
    expected = pixels()([good[rel] / 255.0 for rel in sorted(good)])
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, atol=1e-6)
    heldout = pd.read_parquet(tmp_path / "h.parquet")
    assert heldout["heldout_id"].tolist() == sorted(held) and meta["n_heldout"] == 4


def test_empty_heldout_set_needs_a_fixed_threshold(tmp_path: Path) -> None:
    write_set(tmp_path / "train", range(3))
    (tmp_path / "held").mkdir()
    (tmp_path / "held/readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match=r"copy_detection\.heldout_images: no PNG/JPG images"):
        build_reference(config(tmp_path), *outputs(tmp_path))
    write_set(tmp_path / "held", range(50, 52))
    with pytest.raises(
        ValueError, match=r"copy_detection\.heldout_images: .*copy_detection\.heldout_limit 0"
    ):
        build_reference(config(tmp_path, heldout_limit=0), *outputs(tmp_path))
    for path in (tmp_path / "held").rglob("*.png"):
        path.write_bytes(b"broken")
    with pytest.raises(ValueError, match=r"copy_detection\.heldout_images: .*2 unreadable"):
        build_reference(config(tmp_path, unreadable="skip"), *outputs(tmp_path))
    assert not any(f.exists() for f in outputs(tmp_path))
    meta = build_reference(config(tmp_path, unreadable="skip", threshold=0.9), *outputs(tmp_path))
    assert meta["n_heldout"] == 0 and meta["skipped"]["heldout"]["unreadable"] == 2


def test_training_folder_without_readable_images_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "train/sub").mkdir(parents=True)
    (tmp_path / "train/sub/notes.txt").write_text("not an image")
    write_set(tmp_path / "held", range(50, 52))
    with pytest.raises(ValueError, match=r"copy_detection\.train_images: no PNG/JPG images"):
        build_reference(config(tmp_path), *outputs(tmp_path))
    truncated_png(tmp_path / "train/sub/cut.png")
    with pytest.raises(
        ValueError, match=r"copy_detection\.train_images: no readable .*1 unreadable"
    ):
        build_reference(config(tmp_path, unreadable="skip"), *outputs(tmp_path))
    assert not any(f.exists() for f in outputs(tmp_path))


def test_unknown_unreadable_policy_names_the_key(tmp_path: Path) -> None:
    assert check_policy(None) == "error" and check_policy("skip") == "skip"
    with pytest.raises(ValueError, match=r"copy_detection\.unreadable must be one of"):
        check_policy("ignore")
    write_set(tmp_path / "train", range(2))
    with pytest.raises(ValueError, match=r"copy_detection\.unreadable"):
        build_reference(config(tmp_path, unreadable="warn"), *outputs(tmp_path))
