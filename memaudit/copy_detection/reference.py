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

from memaudit.atomic import atomic_npy, write_atomically
from memaudit.copy_detection.embedding import Embedder, embed_arrays, embed_files
from memaudit.copy_detection.images import demo_training_images, list_images
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
    # 1. Embed both sets.
    spec = EmbeddingSpec.from_config(cfg)
    embedder = Embedder(spec)
    batch = int(cfg.get("batch_size") or 256)
    if cfg.get("train_images"):
        sets = _embed_folders(cfg, embedder, batch, workers, progress)
    elif demo is not None:
        sets = _embed_demo(cfg, demo, embedder, batch, progress)
    else:
        raise ValueError(
            "copy_detection.train_images is not set and there is no demo corpus: nothing to "
            "compare generations with"
        )
    if len(sets.train) == 0:
        raise ValueError("copy detection found no training images to embed")
    # 2. Each held-out image's nearest training image.
    sims, rows = (
        nearest_neighbours(sets.heldout, sets.train, embedder.device)
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


def _embed_folders(
    cfg: Mapping[str, Any],
    embedder: Embedder,
    batch: int,
    workers: int,
    progress: TextIO | None,
) -> _ImageSets:
    """Training and held-out sets from the configured image folders."""
    train_root = Path(cfg["train_images"])
    train_paths = list_images(
        train_root, "copy_detection.train_images", cfg.get("train_list"), cfg.get("train_limit")
    )
    train = embed_files(train_root, train_paths, embedder, batch, workers, progress)
    index = pd.DataFrame(
        {
            "train_id": train_paths,
            "image_index": np.full(len(train_paths), -1, dtype=np.int64),
            "path": [str(train_root / p) for p in train_paths],
            "image_indices": [np.zeros(0, dtype=np.int64)] * len(train_paths),
            "n_studies": np.ones(len(train_paths), dtype=np.int64),
        }
    )
    if cfg.get("heldout_images"):
        held_root = Path(cfg["heldout_images"])
        held_paths = list_images(
            held_root, "copy_detection.heldout_images", None, cfg.get("heldout_limit")
        )
        heldout = embed_files(held_root, held_paths, embedder, batch, workers, progress)
        heldout_ids = held_paths
    else:  # the threshold must then be fixed (checked where it is computed)
        heldout, heldout_ids = np.zeros((0, train.shape[1]), dtype=np.float32), []
    source = {"train_images": str(train_root), "heldout_images": cfg.get("heldout_images")}
    return _ImageSets(train, index, heldout, heldout_ids, source)


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
