"""The images copy detection compares with: listing, reading (any bit depth), the demo's set.

For real runs the training and held-out sets are folders of PNG/JPG files (recursive, e.g.
MIMIC-CXR-JPG), optionally restricted by a list file and cut to a deterministic
pseudo-random subset (:func:`find_images`, :func:`list_images`); files are read as grayscale
floats in [0, 1] whatever their bit depth, colour mode or size (:func:`read_image`). A listed
file that is missing, or a file that cannot be decoded, is an error naming it, or with
``copy_detection.unreadable: skip`` left out and counted (:func:`unreadable_reason`). On the
demo the training set is the corpus images the model was trained on, one per distinct image
(:func:`demo_training_images`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def as_float_image(image: np.ndarray) -> np.ndarray:
    """One grayscale image as float64 in [0, 1] (uint8 is divided by 255, uint16 by 65535)."""
    array = np.asarray(image)
    if array.ndim != 2:
        raise ValueError(f"expected a 2-D grayscale image, got shape {array.shape}")
    if array.dtype == np.uint8:
        return array.astype(np.float64) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float64) / 65535.0
    return array.astype(np.float64)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# What to do with a listed image that is missing or cannot be decoded (config key below).
UNREADABLE_KEY = "copy_detection.unreadable"
UNREADABLE_POLICIES = ("error", "skip")
# Salt of the subset that ``limit`` keeps. It still carries the name of the module this code
# came from: changing it would change which images a configured limit selects.
_SUBSET_SALT = "memaudit-copies"


def read_image(path: str | Path, side_hint: int | None = None) -> np.ndarray:
    """A PNG/JPG file as a grayscale float64 image in [0, 1], whatever its mode.

    8-bit gray is divided by 255, 16-bit gray (mode ``I;16``) by 65535; colour, palette and
    alpha images are converted to luma (alpha is dropped). For JPEGs, ``side_hint`` lets the
    decoder scale down in the DCT domain (up to 8x, never below twice the hint), which makes
    reading 3000-pixel radiographs several times faster. A missing, truncated or undecodable
    file is a ValueError naming it.
    """
    try:
        with Image.open(path) as handle:
            if side_hint and handle.format == "JPEG":
                handle.draft("L", (2 * side_hint, 2 * side_hint))
            if handle.mode.startswith("I;16"):
                return np.asarray(handle, dtype=np.float64) / 65535.0
            if handle.mode == "I":  # 16-bit gray in a 32-bit container
                array = np.asarray(handle, dtype=np.float64)
                if array.size and (array.min() < 0 or array.max() > 65535):
                    raise ValueError(
                        f"32-bit gray values in [{array.min():.0f}, {array.max():.0f}] do not "
                        "fit 16 bits"
                    )
                return array / 65535.0
            return np.asarray(handle.convert("L"), dtype=np.float64) / 255.0
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"cannot read the image {path}: {err}") from err


def unreadable_reason(path: str | Path, side_hint: int | None = None) -> str | None:
    """Why :func:`read_image` cannot read ``path`` (missing, truncated, not an image), or
    None when it can. Decodes the whole file."""
    try:
        read_image(path, side_hint)
    except ValueError as err:
        return str(err)
    return None


def hash_order(names: Iterable[str], salt: str) -> list[str]:
    """``names`` in a deterministic pseudo-random order (SHA-256 of salt + name)."""
    return sorted(names, key=lambda n: hashlib.sha256(f"{salt}:{n}".encode()).hexdigest())


def check_policy(unreadable: str | None) -> str:
    """The config ``copy_detection.unreadable`` value (None: the default ``error``)."""
    policy = "error" if unreadable is None else unreadable
    if policy not in UNREADABLE_POLICIES:
        raise ValueError(
            f"{UNREADABLE_KEY} must be one of {list(UNREADABLE_POLICIES)}, got {unreadable!r}"
        )
    return policy


@dataclass(frozen=True)
class ImageList:
    """The images of a folder chosen for embedding, and listed ones that are not there."""

    paths: list[str]  # relative POSIX paths, sorted
    missing: list[str] = field(default_factory=list)  # listed but absent (skip policy only)


def find_images(
    folder: str | Path,
    key: str,
    list_file: str | Path | None = None,
    limit: int | None = None,
    list_key: str = "copy_detection.train_list",
    unreadable: str | None = "error",
) -> ImageList:
    """The PNG/JPG files under ``folder`` (recursive) to embed; may be empty.

    ``list_file`` (a text file with one relative path per line, or a CSV/TSV with a ``path``
    column) restricts the set. A listed file that does not exist is an error naming
    ``list_key`` under the ``unreadable`` policy ``error`` (config ``copy_detection.unreadable``);
    under ``skip`` it is left out and returned in ``missing``. ``limit`` then keeps a
    deterministic pseudo-random subset of that size (by path hash, independent of listing
    order). ``key`` names the folder's config key in errors.
    """
    policy = check_policy(unreadable)
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{key}: the image folder {str(folder)!r} does not exist")
    missing: list[str] = []
    if list_file is not None:
        listed = sorted(set(_read_list(Path(list_file), list_key)))
        missing = [p for p in listed if not (root / p).is_file()]
        if missing and policy == "error":
            raise ValueError(
                f"{list_key}: {len(missing)} listed image(s) are not under {root}, "
                f"e.g. {missing[:3]} (set {UNREADABLE_KEY}: skip to leave them out)"
            )
        absent = set(missing)
        paths = [p for p in listed if p not in absent]
    else:
        paths = sorted(
            p.relative_to(root).as_posix()
            for p in root.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
    if limit is not None:
        paths = sorted(hash_order(paths, _SUBSET_SALT)[: int(limit)])
    return ImageList(paths, missing)


def list_images(
    folder: str | Path,
    key: str,
    list_file: str | Path | None = None,
    limit: int | None = None,
    list_key: str = "copy_detection.train_list",
) -> list[str]:
    """Relative POSIX paths of the PNG/JPG files under ``folder`` (recursive), sorted.

    As :func:`find_images` with the ``error`` policy (a listed file that does not exist is
    an error); no images at all is an error naming ``key``.
    """
    paths = find_images(folder, key, list_file, limit, list_key).paths
    if not paths:
        raise ValueError(f"{key}: no PNG/JPG images under {str(folder)!r}")
    return paths


def _read_list(path: Path, key: str) -> list[str]:
    if not path.is_file():
        raise ValueError(f"{key}: the list file {str(path)!r} does not exist")
    if path.suffix.lower() in (".csv", ".tsv"):
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
        if "path" not in table.columns:
            raise ValueError(f"{key}: the list file {path} has no 'path' column")
        entries = table["path"].astype(str).tolist()
    else:
        entries = path.read_text(encoding="utf-8").splitlines()
    return [Path(e.strip()).as_posix() for e in entries if e.strip()]


def demo_training_images(
    studies: pd.DataFrame, report_map: pd.DataFrame, images: np.ndarray
) -> tuple[np.ndarray, pd.DataFrame]:
    """The distinct images the demo model was trained on, and their index table.

    Training pairs are the studies whose report became a prompt (``report_map``), as
    :func:`memaudit.model.training.demo_training_pairs` builds them. Identical images (those
    of a planted caption's copies) are kept once, at their lowest ``images.npy`` row; the
    table lists every row sharing the image (``image_indices``) and how many training studies
    used it.
    """
    for name, table, column in (
        ("studies", studies, "image_index"),
        ("studies", studies, "study_id"),
        ("report_map", report_map, "study_id"),
    ):
        if column not in table.columns:
            raise ValueError(f"{name} table has no {column!r} column")
    used = set(report_map["study_id"].dropna().astype("int64"))
    rows = sorted(
        int(i)
        for sid, i in zip(studies["study_id"], studies["image_index"], strict=True)
        if int(sid) in used
    )
    images = np.asarray(images)
    if rows and (rows[0] < 0 or rows[-1] >= len(images)):
        raise ValueError(f"studies image_index out of range for {len(images)} images")
    groups: dict[bytes, list[int]] = {}
    for row in rows:
        groups.setdefault(hashlib.sha1(images[row].tobytes()).digest(), []).append(row)
    members = sorted(groups.values(), key=lambda g: g[0])
    firsts = [g[0] for g in members]
    index = pd.DataFrame(
        {
            "train_id": [f"image_index:{i}" for i in firsts],
            "image_index": np.asarray(firsts, dtype=np.int64),
            "path": pd.Series([None] * len(firsts), dtype=object),
            "image_indices": [np.asarray(g, dtype=np.int64) for g in members],
            "n_studies": np.asarray([len(g) for g in members], dtype=np.int64),
        }
    )
    chosen = images[firsts] if firsts else images[:0]
    return chosen, index


def training_image_loader(
    index: pd.DataFrame, pixels: str | Path | None = None
) -> Callable[[str], np.ndarray]:
    """A function train_id -> grayscale float image in [0, 1], for figures.

    Demo training images come from the ``images.npy`` array (``pixels``) by ``image_index``;
    folder images are read from their ``path``.
    """
    rows = index.set_index("train_id")
    array = np.load(pixels, mmap_mode="r") if pixels else None

    def load(train_id: str) -> np.ndarray:
        if train_id not in rows.index:
            raise ValueError(f"training image {train_id!r} is not in the training index")
        row = rows.loc[train_id]
        if array is not None and int(row["image_index"]) >= 0:
            return as_float_image(np.asarray(array[int(row["image_index"])]))
        if row["path"] is None:
            raise ValueError(f"training image {train_id!r} has neither pixels nor a path")
        return read_image(row["path"])

    return load
