"""The chunk files of the mitigation generations: an ``.npz`` of images and a parquet index.

A chunk holds uint8 images [rows, seeds, H, W] (``images``) and an index with one row per
(prompt, strategy) whose ``row`` points into them (-1 for skipped rows). Both files are written
atomically and carry the same content token, so a job killed between the two writes never
leaves a pair that the gather would trust. Reading needs no model: the gather runs on CPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memaudit.atomic import atomic_parquet, atomic_write

INDEX_COLUMNS = (
    "prompt_id",
    "strategy",
    "selection_reason",
    "planted",
    "text",
    "mitigated_text",
    "status",
    "reason",
    "n_edits",
    "row",
    "n_seeds",
    "d_mem",
    "embedding_rms_change",
    "embopt_initial_loss",
    "embopt_final_loss",
    "embopt_iterations",
)


def write_chunk(
    index: pd.DataFrame, images: np.ndarray, images_path: str | Path, index_path: str | Path
) -> str:
    """Write the images (``.npz``: ``images`` uint8, ``token``) and the index parquet.

    Each file is written to a temporary name and renamed; both carry ``token`` (SHA-256 of the
    images and of the index's prompt/strategy/row columns), which :func:`gather_chunks`
    checks, so a job killed between the two writes never yields a pair a re-run would trust.
    """
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(str(images.shape).encode())
    for key in zip(index["prompt_id"], index["strategy"], index["row"], strict=True):
        digest.update(repr(key).encode())
    token = digest.hexdigest()
    atomic_write(
        images_path,
        lambda handle: np.savez_compressed(handle, images=images, token=np.array(token)),
    )
    atomic_parquet(index.assign(token=token), index_path)
    return token


def npz_shape(archive: Any, name: str) -> tuple[int, ...]:
    """Shape of array ``name`` of an open ``.npz``, read from its header alone (the images of a
    chunk can be gigabytes; they need not be decompressed to be counted)."""
    with archive.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(member)
    return tuple(int(n) for n in shape)


def gather_chunks(
    index_paths: Sequence[str | Path],
    images_paths: Sequence[str | Path],
    expected_ids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One generations table from the chunk indexes, each row naming its ``chunk`` file.

    Checks that every index matches its ``.npz`` (same token), that no (prompt, strategy)
    appears twice and (with ``expected_ids``) that every selected prompt was generated.
    """
    if len(index_paths) != len(images_paths):
        raise ValueError(f"{len(index_paths)} chunk indexes but {len(images_paths)} image files")
    frames = []
    for index_path, images_path in zip(index_paths, images_paths, strict=True):
        frame = pd.read_parquet(index_path)
        with np.load(images_path, allow_pickle=False) as archive:
            token = str(archive["token"])
            n_rows = npz_shape(archive, "images")[0] if len(frame) else 0
        tokens = set(frame["token"]) if len(frame) else {token}
        if tokens != {token}:
            raise ValueError(f"{index_path} does not belong to {images_path} (token mismatch)")
        if len(frame) and int(frame["row"].max()) + 1 != n_rows:
            raise ValueError(
                f"{index_path} points at {frame['row'].max() + 1} rows, {n_rows} saved"
            )
        frames.append(frame.assign(chunk=str(images_path)))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(table):
        dup = table.duplicated(["prompt_id", "strategy"], keep=False)
        if dup.any():
            first = table.loc[dup, ["prompt_id", "strategy"]].iloc[0].tolist()
            raise ValueError(f"{int(dup.sum())} duplicate (prompt, strategy) rows, e.g. {first}")
    if expected_ids is not None:
        got = set(table["prompt_id"]) if len(table) else set()
        missing = sorted(set(expected_ids) - got)
        if missing:
            raise ValueError(
                f"{len(missing)} selected prompt(s) have no generations: {missing[:3]}"
            )
    if not len(table):
        return pd.DataFrame(columns=[*INDEX_COLUMNS, "token", "chunk"])
    return table.sort_values(["prompt_id", "strategy"], kind="mergesort").reset_index(drop=True)
