"""The files of the synthetic set: an ``.npz`` of uint8 images and a parquet index per chunk,
gathered into one pair of the same form.

Both files of a pair carry one content token (SHA-256 of the images and of the index's image
and prompt columns), so a job killed between the two writes never leaves a pair that a later
rule would trust. Reading needs numpy and pandas only: the gather and the figure run on CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memaudit.atomic import atomic_parquet, atomic_write

#: Columns of a chunk index: one row per image of the chunk, in image order.
DRAW_COLUMNS = ("image", "prompt_id", "text", "n_reports")
#: Columns of the gathered index (``planted``: the prompt is a planted demo caption).
INDEX_COLUMNS = (*DRAW_COLUMNS, "planted")


def content_token(index: pd.DataFrame, images: np.ndarray) -> str:
    """SHA-256 of the images (bytes and shape) and of the (image, prompt_id) rows."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(str(tuple(images.shape)).encode())
    for key in zip(index["image"], index["prompt_id"], strict=True):
        digest.update(repr((int(key[0]), str(key[1]))).encode())
    return digest.hexdigest()


def write_chunk(
    index: pd.DataFrame, images: np.ndarray, images_path: str | Path, index_path: str | Path
) -> str:
    """Write uint8 images [n, H, W] (``.npz``: ``images``, ``token``) and their index parquet
    (one row per image, in the same order, with the same ``token``); returns the token."""
    if len(index) != len(images):
        raise ValueError(f"{len(index)} index rows but {len(images)} images")
    token = content_token(index, images)
    atomic_write(
        images_path,
        lambda handle: np.savez_compressed(handle, images=images, token=np.array(token)),
    )
    atomic_parquet(index.assign(token=token), index_path)
    return token


def read_chunk(images_path: str | Path, index_path: str | Path) -> tuple[pd.DataFrame, np.ndarray]:
    """(index, images) of one pair written by :func:`write_chunk`, checked to belong together."""
    index = pd.read_parquet(index_path)
    with np.load(images_path, allow_pickle=False) as archive:
        images, token = archive["images"], str(archive["token"])
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"{images_path} holds {images.dtype} images of shape {images.shape}, "
            "expected uint8 [n, H, W]"
        )
    tokens = set(index["token"]) if len(index) else {token}
    if tokens != {token} or len(index) != len(images):
        raise ValueError(
            f"{index_path} does not belong to {images_path} (token mismatch or "
            f"{len(index)} rows for {len(images)} images): re-run the rule that wrote them"
        )
    return index.drop(columns="token"), images


def gather_chunks(
    index_paths: Sequence[str | Path],
    images_paths: Sequence[str | Path],
    n_images: int | None = None,
    planted_ids: Iterable[str] | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The whole set from its chunks: the index (:data:`INDEX_COLUMNS`) and uint8 images.

    Checks every pair, that the chunks' images are 0..N-1 each exactly once (N =
    ``n_images`` when given) and that all images have one size. ``planted_ids`` (the demo's
    planted captions) sets ``planted``; without it every image is ``planted=False``.
    """
    if len(index_paths) != len(images_paths):
        raise ValueError(f"{len(index_paths)} chunk indexes but {len(images_paths)} image files")
    frames, stacks = [], []
    for index_path, images_path in zip(index_paths, images_paths, strict=True):
        frame, images = read_chunk(images_path, index_path)
        frames.append(frame)
        stacks.append(images)
    shapes = {tuple(s.shape[1:]) for s in stacks if len(s)}
    if len(shapes) > 1:
        raise ValueError(f"the chunks hold images of different sizes: {sorted(shapes)}")
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=DRAW_COLUMNS)
    # the size of the images (an empty chunk's [0, H, W] array carries one too)
    sizes = [tuple(s.shape[1:]) for s in stacks if len(s)] + [tuple(s.shape[1:]) for s in stacks]
    side = sizes[0] if sizes else (0, 0)
    images = (
        np.concatenate([s.reshape(-1, *side) for s in stacks])
        if stacks
        else np.zeros((0, *side), dtype=np.uint8)
    )
    order = np.argsort(table["image"].to_numpy(dtype=np.int64), kind="stable")
    table, images = table.iloc[order].reset_index(drop=True), images[order]
    expected = len(table) if n_images is None else int(n_images)
    got = table["image"].to_numpy(dtype=np.int64)
    if len(got) != expected or not np.array_equal(got, np.arange(expected)):
        duplicates = int(pd.Series(got).duplicated().sum())
        missing = len(set(range(expected)) - set(got.tolist()))
        raise ValueError(
            f"the chunks hold {len(got)} images, expected images 0..{expected - 1} once each "
            f"({duplicates} duplicated, {missing} missing): were they made with other settings?"
        )
    planted = set(planted_ids) if planted_ids is not None else set()
    table["planted"] = table["prompt_id"].isin(planted).to_numpy(dtype=bool)
    return table[list(INDEX_COLUMNS)], images


def generation_summary(chunk_stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The generation speed of the whole set from its chunks' statistics: images, seconds of
    sampling (summed over chunks, so images/s is per generation job) and each chunk's record."""
    images = sum(int(s.get("images") or 0) for s in chunk_stats)
    seconds = sum(float(s.get("generation_seconds") or 0.0) for s in chunk_stats)
    devices = sorted({str(s["device"]) for s in chunk_stats if s.get("device")})
    return {
        "images": images,
        "generation_seconds": seconds,
        "images_per_s": images / seconds if seconds > 0 and images else None,
        "devices": devices,
        "chunks": [dict(s) for s in chunk_stats],
    }
