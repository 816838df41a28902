"""The copy-detection reference: training embeddings, held-out neighbours, the threshold.

:func:`build_reference` embeds the training images (a folder, or the demo corpus's arrays)
and the held-out real images, finds each held-out image's nearest training image and writes
the four files of the ``embed_training_images`` rule. :class:`CopyReference` loads them back
with the copy threshold for a chosen percentile, which is all that judging a generation
needs; so a new threshold percentile re-runs no embedding.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from memaudit.atomic import atomic_npy, write_atomically
from memaudit.copy_detection.embedding import Embedder, embed_arrays, embed_files
from memaudit.copy_detection.images import (
    UNREADABLE_KEY,
    ImageList,
    check_policy,
    demo_training_images,
    find_images,
    unreadable_reason,
)
from memaudit.copy_detection.search import copy_threshold, nearest_neighbours
from memaudit.copy_detection.spec import EmbeddingSpec


@dataclass
class CopyReference:
    """What copy detection compares generations with: embeddings and the threshold."""

    embeddings: np.ndarray
    index: pd.DataFrame
    threshold: float
    percentile: float | None
    spec: EmbeddingSpec
    heldout_similarity: np.ndarray

    @classmethod
    def load(
        cls,
        embeddings: str | Path,
        index: str | Path,
        heldout: str | Path,
        reference: str | Path,
        percentile: float = 95.0,
        fixed: float | None = None,
    ) -> CopyReference:
        """From the files :func:`build_reference` wrote, with the threshold for ``percentile``."""
        meta = json.loads(Path(reference).read_text())
        spec = EmbeddingSpec(**meta["embedding"])
        heldout_table = pd.read_parquet(heldout)
        sims = heldout_table["similarity"].to_numpy(dtype=np.float64)
        return cls(
            embeddings=np.load(embeddings),
            index=pd.read_parquet(index),
            threshold=copy_threshold(sims, percentile, fixed),
            percentile=None if fixed is not None else float(percentile),
            spec=spec,
            heldout_similarity=sims,
        )

    @classmethod
    def from_files(
        cls,
        files: Mapping[str, Any],
        percentile: float = 95.0,
        fixed: float | None = None,
        prefix: str = "",
    ) -> CopyReference:
        """:meth:`load` from a mapping of the four files (a rule's named inputs):
        ``<prefix>embeddings``, ``<prefix>train_index``, ``<prefix>heldout``,
        ``<prefix>reference``."""
        return cls.load(
            *(files[f"{prefix}{name}"] for name in REFERENCE_FILES),
            percentile=percentile,
            fixed=fixed,
        )


# The input names of the four reference files, in :meth:`CopyReference.load`'s order.
REFERENCE_FILES = ("embeddings", "train_index", "heldout", "reference")


@dataclass
class _ImageSets:
    """The embedded training and held-out sets, and where they came from."""

    train: np.ndarray  # [N, d] float32
    index: pd.DataFrame  # one row per training embedding
    heldout: np.ndarray  # [M, d] float32
    heldout_ids: list[str]
    source: dict[str, Any]


def build_reference(
    cfg: Mapping[str, Any],
    out_embeddings: str | Path,
    out_index: str | Path,
    out_heldout: str | Path,
    out_reference: str | Path,
    demo: Mapping[str, Any] | None = None,
    workers: int = 2,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Embed the training and held-out images and write the copy-detection reference.

    ``cfg`` is the config ``copy_detection`` block. When ``cfg["train_images"]`` is set the
    training and held-out sets are image folders (``heldout_images`` is then required unless
    a fixed ``threshold`` is configured); otherwise ``demo`` gives the demo corpus arrays
    (``studies``, ``report_map``, ``images``, ``heldout``). Writes the training embeddings
    (``.npy`` float32 [N, d]), their index (``train_id``, ``image_index`` or ``path``), the
    held-out nearest neighbours (``heldout_id``, ``nearest_train_id``, ``similarity``) and a
    JSON description; returns that description.
    """
    # 1. Embed both sets (what to embed is checked before the embedding is loaded).
    if not cfg.get("train_images") and demo is None:
        raise ValueError(
            "copy_detection.train_images is not set and there is no demo corpus: nothing to "
            "compare generations with"
        )
    if cfg.get("train_images") and not Path(cfg["train_images"]).is_dir():
        raise ValueError(
            f"{_TRAIN_KEY}: the image folder {str(cfg['train_images'])!r} does not exist"
        )
    check_policy(cfg.get("unreadable"))
    held = cfg.get("heldout_images")
    if cfg.get("train_images") and held and not Path(held).is_dir():
        raise ValueError(f"{_HELDOUT_KEY}: the image folder {str(held)!r} does not exist")
    spec = EmbeddingSpec.from_config(cfg)
    embedder = Embedder(spec)
    batch = int(cfg.get("batch_size") or 256)
    if cfg.get("train_images"):
        sets = _embed_folders(cfg, embedder, batch, workers, progress)
    else:
        sets = _embed_demo(cfg, demo, embedder, batch, progress)
    if len(sets.train) == 0:
        raise ValueError("copy detection found no training images to embed")
    # 2. Each held-out image's nearest training image.
    sims, rows = (
        nearest_neighbours(
            sets.heldout, sets.train, embedder.device, int(cfg.get("search_block") or 65536)
        )
        if len(sets.heldout)
        else (np.zeros(0, np.float32), np.zeros(0, np.int64))
    )
    held_table = pd.DataFrame(
        {
            "heldout_id": pd.Series(sets.heldout_ids, dtype=object),
            "nearest_train_id": pd.Series(sets.index["train_id"].to_numpy()[rows], dtype=object),
            "similarity": sims.astype(np.float64),
        }
    )
    # 3. The description, then every file at once.
    quantiles = {
        f"p{q}": float(np.percentile(sims, q)) if len(sims) else None for q in (50, 90, 95, 99)
    }
    meta = {
        "embedding": dataclasses.asdict(spec),
        "dimension": int(sets.train.shape[1]),
        "n_train": len(sets.train),
        "n_train_studies": int(sets.index["n_studies"].sum()),
        "n_heldout": len(sets.heldout_ids),
        "heldout_similarity": quantiles,
        **sets.source,
    }
    atomic_npy(out_embeddings, sets.train.astype(np.float32))
    write_atomically({out_index: sets.index, out_heldout: held_table, out_reference: meta})
    return meta


_TRAIN_KEY = "copy_detection.train_images"
_HELDOUT_KEY = "copy_detection.heldout_images"
_SKIP_EXAMPLES = 5  # paths named per set in reference.json's "skipped"


def _embed_folders(
    cfg: Mapping[str, Any],
    embedder: Embedder,
    batch: int,
    workers: int,
    progress: TextIO | None,
) -> _ImageSets:
    """Training and held-out sets from the configured image folders.

    A listed image that does not exist, or a file that cannot be decoded, stops the run with
    an error naming it (``copy_detection.unreadable: error``) or is left out and counted
    (``skip``): ``source["skipped"]`` gives, per set, how many were missing, how many
    unreadable, and the first paths. No training images, or a held-out folder left with no
    images when no fixed ``threshold`` is configured, is an error naming the folder's key.
    """
    policy = check_policy(cfg.get("unreadable"))
    # 1. The training set: listed or found, then embedded with bad files checked.
    train_root = Path(cfg["train_images"])
    found = find_images(
        train_root, _TRAIN_KEY, cfg.get("train_list"), cfg.get("train_limit"), unreadable=policy
    )
    if not found.paths:
        raise ValueError(_no_images(_TRAIN_KEY, train_root, cfg.get("train_limit"), found, []))
    train = _embed_checked(
        train_root, found, _TRAIN_KEY, policy, embedder, batch, workers, progress
    )
    if not train.paths:
        raise ValueError(_no_images(_TRAIN_KEY, train_root, None, found, train.unreadable))
    index = pd.DataFrame(
        {
            "train_id": train.paths,
            "image_index": np.full(len(train.paths), -1, dtype=np.int64),
            "path": [str(train_root / p) for p in train.paths],
            "image_indices": [np.zeros(0, dtype=np.int64)] * len(train.paths),
            "n_studies": np.ones(len(train.paths), dtype=np.int64),
        }
    )
    skipped = {"train": train.skipped, "heldout": _skip_summary([], [])}
    # 2. The held-out set (may be absent, or empty, only with a fixed threshold).
    heldout = np.zeros((0, train.embeddings.shape[1]), dtype=np.float32)
    heldout_ids: list[str] = []
    if cfg.get("heldout_images"):
        held_root = Path(cfg["heldout_images"])
        limit = cfg.get("heldout_limit")
        found = find_images(held_root, _HELDOUT_KEY, None, limit, unreadable=policy)
        fixed = cfg.get("threshold") is not None
        if not found.paths and not fixed:
            raise ValueError(_no_images(_HELDOUT_KEY, held_root, limit, found, []))
        held = _embed_checked(
            held_root, found, _HELDOUT_KEY, policy, embedder, batch, workers, progress
        )
        if not held.paths and not fixed:
            raise ValueError(_no_images(_HELDOUT_KEY, held_root, None, found, held.unreadable))
        heldout, heldout_ids = held.embeddings, held.paths
        skipped["heldout"] = held.skipped
    # (no held-out folder: the threshold must then be fixed, checked where it is computed)
    source = {
        "train_images": str(train_root),
        "heldout_images": cfg.get("heldout_images"),
        "skipped": skipped,
    }
    return _ImageSets(train.embeddings, index, heldout, heldout_ids, source)


@dataclass
class _Embedded:
    """One folder's embeddings, the paths they belong to (row for row), what was left out."""

    embeddings: np.ndarray
    paths: list[str]
    missing: list[str]
    unreadable: list[str]

    @property
    def skipped(self) -> dict[str, Any]:
        return _skip_summary(self.missing, self.unreadable)


def _skip_summary(missing: list[str], unreadable: list[str]) -> dict[str, Any]:
    examples = sorted([*missing, *unreadable])[:_SKIP_EXAMPLES]
    return {"missing": len(missing), "unreadable": len(unreadable), "examples": examples}


def _embed_checked(
    root: Path,
    found: ImageList,
    key: str,
    policy: str,
    embedder: Embedder,
    batch: int,
    workers: int,
    progress: TextIO | None,
) -> _Embedded:
    """Embeddings of ``found.paths`` under ``root``, in order, batch by batch.

    Files are decoded by :func:`embed_files`'s worker threads. A batch that fails is checked
    file by file (only that batch is decoded again): an unreadable file is an error naming
    it and ``key`` under the ``error`` policy, and is left out of the rows under ``skip``;
    a failure that no file explains is raised as it is.
    """
    side = embedder.spec.prepared_side
    parts = [np.zeros((0, embedder.dimension), dtype=np.float32)]
    kept: list[str] = []
    unreadable: list[str] = []
    name = "train" if key == _TRAIN_KEY else "heldout"
    bar = tqdm(
        total=len(found.paths),
        unit="img",
        desc=f"embed {name}",
        file=progress,
        disable=not progress,
    )
    for lo in range(0, len(found.paths), batch):
        chunk = found.paths[lo : lo + batch]
        try:
            parts.append(embed_files(root, chunk, embedder, batch, workers))
        except ValueError:
            reasons = {rel: unreadable_reason(root / rel, side) for rel in chunk}
            bad = [rel for rel in chunk if reasons[rel] is not None]
            if not bad:
                raise
            if policy == "error":
                raise ValueError(
                    f"{key}: {reasons[bad[0]]} ({len(bad)} unreadable file(s) among "
                    f"{len(chunk)}); set {UNREADABLE_KEY}: skip to leave such files out"
                ) from None
            unreadable.extend(bad)
            good = [rel for rel in chunk if reasons[rel] is None]
            if good:
                parts.append(embed_files(root, good, embedder, batch, workers))
            chunk = good
        kept.extend(chunk)
        bar.update(min(batch, len(found.paths) - lo))
    bar.close()
    if progress is not None and (found.missing or unreadable):
        print(
            f"{key}: {UNREADABLE_KEY} is skip - left out {len(found.missing)} missing and "
            f"{len(unreadable)} unreadable image(s), e.g. "
            f"{_skip_summary(found.missing, unreadable)['examples']}",
            file=progress,
        )
    return _Embedded(np.concatenate(parts), kept, list(found.missing), unreadable)


def _no_images(
    key: str, root: Path, limit: int | None, found: ImageList, unreadable: list[str]
) -> str:
    """The error of an image set left empty, saying why."""
    why = []
    if limit is not None:
        why.append(f"{key.replace('_images', '_limit')} {limit}")
    if found.missing:
        why.append(f"{len(found.missing)} listed file(s) missing")
    if unreadable:
        why.append(f"{len(unreadable)} unreadable file(s) skipped")
    readable = "readable " if found.missing or unreadable else ""
    text = f"{key}: no {readable}PNG/JPG images under {str(root)!r}"
    text += f" ({', '.join(why)})" if why else ""
    if key == _HELDOUT_KEY:
        text += (
            " to calibrate the copy threshold; add held-out images, or unset "
            "copy_detection.heldout_images and set a fixed copy_detection.threshold"
        )
    return text


def _embed_demo(
    cfg: Mapping[str, Any],
    demo: Mapping[str, Any],
    embedder: Embedder,
    batch: int,
    progress: TextIO | None,
) -> _ImageSets:
    """Training and held-out sets from the demo corpus arrays (each distinct image once)."""
    images, index = demo_training_images(demo["studies"], demo["report_map"], demo["images"])
    train = embed_arrays(images, embedder, batch, progress)
    held_images = np.asarray(demo["heldout"])
    limit = cfg.get("heldout_limit")
    held_images = held_images[: int(limit)] if limit is not None else held_images
    heldout = embed_arrays(held_images, embedder, batch, progress)
    heldout_ids = [f"heldout:{i}" for i in range(len(held_images))]
    source = {"train_images": "demo corpus images.npy", "heldout_images": "heldout.npy"}
    return _ImageSets(train, index, heldout, heldout_ids, source)
