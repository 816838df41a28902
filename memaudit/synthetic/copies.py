"""Copy detection of every synthetic image, and how much of the set is copies.

Each image is embedded as the copy-detection reference was (its embedding spec), its nearest
training image is found in one search over all images, and it is a copy when that similarity
exceeds the reference threshold (a percentile of held-out real images' similarities, or a
fixed value). On the demo the truth table also says which images were drawn from a planted
caption and whether their nearest training image is that caption's own planted image.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from memaudit.bootstrap import mean_ci
from memaudit.copy_detection.embedding import Embedder
from memaudit.copy_detection.reference import CopyReference
from memaudit.copy_detection.search import nearest_neighbours

#: Columns of ``copies.parquet``: one row per image, in image order.
COPY_COLUMNS = (
    "image",
    "prompt_id",
    "planted",
    "nearest_train_id",
    "similarity",
    "copy",
    "own_planted_nearest",
    "own_planted_copy",
)
_EMBED_BATCH = 256


# --------------------------------------------------------------------------------------------
# Per image
# --------------------------------------------------------------------------------------------


def _training_members(train_index: pd.DataFrame) -> list[set[int]]:
    """Per training embedding, the corpus image rows it stands for (demo; empty for files)."""
    if "image_indices" in train_index.columns:
        return [set(np.asarray(m, dtype=np.int64).tolist()) for m in train_index["image_indices"]]
    if "image_index" in train_index.columns:
        return [{int(i)} if int(i) >= 0 else set() for i in train_index["image_index"]]
    return [set() for _ in range(len(train_index))]


def copy_table(
    index: pd.DataFrame,
    similarity: np.ndarray,
    nearest: np.ndarray,
    train_index: pd.DataFrame,
    threshold: float,
    truth: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The per-image copy table (:data:`COPY_COLUMNS`) from nearest-neighbour results.

    ``index`` is the synthetic set's index (``image``, ``prompt_id``, ``planted``);
    ``similarity`` and ``nearest`` are each image's best cosine similarity and the row of its
    nearest training embedding in ``train_index`` (``train_id``, and on the demo
    ``image_indices``). A copy is similarity > ``threshold``. With ``truth`` (the demo's
    ``prompt_id``, ``image_index``): ``own_planted_nearest`` says the nearest training image is
    the image of the image's own planted caption, ``own_planted_copy`` that it also is a copy.
    """
    # 1. Check inputs
    similarity = np.asarray(similarity, dtype=np.float64)
    nearest = np.asarray(nearest, dtype=np.int64)
    if not len(index) == len(similarity) == len(nearest):
        raise ValueError(
            f"{len(index)} images but {len(similarity)} similarities and {len(nearest)} "
            "nearest training rows"
        )
    if "train_id" not in train_index.columns:
        raise ValueError("the copy-detection training index has no 'train_id' column")
    if len(nearest) and (nearest.min() < 0 or nearest.max() >= len(train_index)):
        raise ValueError(f"nearest rows out of range for {len(train_index)} training images")
    own: dict[str, int] = {}
    if truth is not None:
        for column in ("prompt_id", "image_index"):
            if column not in truth.columns:
                raise ValueError(f"the demo truth table has no {column!r} column")
        own = {
            str(p): int(i) for p, i in zip(truth["prompt_id"], truth["image_index"], strict=True)
        }
    # 2. Flags
    members = _training_members(train_index)
    prompt_ids = index["prompt_id"].astype(str).tolist()
    copies = similarity > float(threshold)
    own_nearest = np.array(
        [pid in own and own[pid] in members[r] for pid, r in zip(prompt_ids, nearest, strict=True)],
        dtype=bool,
    )
    planted = (
        index["planted"].to_numpy(dtype=bool)
        if "planted" in index.columns
        else np.zeros(len(index), dtype=bool)
    )
    return pd.DataFrame(
        {
            "image": index["image"].to_numpy(dtype=np.int64),
            "prompt_id": pd.Series(prompt_ids, dtype=object),
            "planted": planted,
            "nearest_train_id": pd.Series(
                train_index["train_id"].astype(str).to_numpy()[nearest], dtype=object
            ),
            "similarity": similarity,
            "copy": copies,
            "own_planted_nearest": own_nearest,
            "own_planted_copy": own_nearest & copies,
        },
        columns=list(COPY_COLUMNS),
    )


def detect_copies(
    images: np.ndarray,
    index: pd.DataFrame,
    reference: CopyReference,
    truth: pd.DataFrame | None = None,
    batch_size: int = _EMBED_BATCH,
    block: int | None = None,
    progress: TextIO | None = None,
) -> pd.DataFrame:
    """Embed every image (uint8 [N, H, W]) as the reference was (``batch_size`` images per
    call), find all nearest training images in one search (``block``: training rows per block,
    config ``copy_detection.search_block``; changes no result) and return :func:`copy_table`."""
    if len(images) != len(index):
        raise ValueError(f"{len(images)} synthetic images but {len(index)} index rows")
    embedder = Embedder(reference.spec)
    parts = []
    bar = tqdm(total=len(images), unit="img", desc="embed", file=progress, disable=not progress)
    for lo in range(0, len(images), max(1, int(batch_size))):
        batch = [np.asarray(image) for image in images[lo : lo + batch_size]]
        parts.append(np.asarray(embedder(batch), dtype=np.float32))
        bar.update(len(batch))
    bar.close()
    if parts:
        queries = np.concatenate(parts)
    else:
        queries = np.zeros((0, reference.embeddings.shape[1]), dtype=np.float32)
    similarity, nearest = nearest_neighbours(
        queries, reference.embeddings, embedder.device, block=block
    )
    return copy_table(index, similarity, nearest, reference.index, reference.threshold, truth)


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def _fraction(
    flags: np.ndarray, n_bootstrap: int, seed: int, key: str
) -> tuple[float | None, list[float | None]]:
    """Mean of boolean flags and its percentile-bootstrap 95 % interval (None when empty)."""
    values = np.asarray(flags, dtype=np.float64)
    if values.size == 0:
        return None, [None, None]
    lo, hi = mean_ci(values, n_bootstrap, seed=seed, key=key)
    return float(values.mean()), [_finite(lo), _finite(hi)]


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def summarize_copies(
    table: pd.DataFrame,
    threshold: float,
    percentile: float | None,
    n_bootstrap: int,
    seed: int,
    demo: bool = False,
    embedding: str | None = None,
    generation: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``summary.json``: the copy fraction of the set with a bootstrap 95 % CI over images.

    Intervals are seeded by (``seed``, ``synthetic|<group>|copy``). ``copied_train_images``
    lists each copied training image with its number of copies (most first, then by id).
    With ``demo`` (the planted truth was given) a ``planted`` block splits the set into
    images of planted and of ordinary captions.
    """
    copies = table["copy"].to_numpy(dtype=bool)
    similarity = table["similarity"].to_numpy(dtype=np.float64)
    fraction, ci = _fraction(copies, n_bootstrap, seed, "synthetic|all|copy")
    copied = table.loc[copies, "nearest_train_id"].value_counts()
    ranked = sorted(copied.items(), key=lambda item: (-int(item[1]), str(item[0])))
    document: dict[str, Any] = {
        "n_images": int(len(table)),
        "n_prompts": int(table["prompt_id"].nunique()),
        "embedding": embedding,
        "threshold": float(threshold),
        "percentile": None if percentile is None else float(percentile),
        "n_copies": int(copies.sum()),
        "copy_fraction": fraction,
        "copy_fraction_ci": ci,
        "bootstrap_resamples": int(n_bootstrap),
        "seed": int(seed),
        "similarity": {
            name: float(np.quantile(similarity, q)) if similarity.size else None
            for name, q in (("p50", 0.5), ("p95", 0.95), ("max", 1.0))
        },
        "n_copied_train_images": len(ranked),
        "copied_train_images": [
            {"train_id": str(train_id), "n_copies": int(n)} for train_id, n in ranked
        ],
    }
    if demo:
        planted = table["planted"].to_numpy(dtype=bool)
        share, _ = _fraction(planted, 0, seed, "synthetic|planted|share")
        in_planted, planted_ci = _fraction(
            copies[planted], n_bootstrap, seed, "synthetic|planted|copy"
        )
        in_ordinary, ordinary_ci = _fraction(
            copies[~planted], n_bootstrap, seed, "synthetic|ordinary|copy"
        )
        own = table["own_planted_copy"].to_numpy(dtype=bool)
        document["planted"] = {
            "n_planted_images": int(planted.sum()),
            "planted_image_share": share,
            "copy_fraction_planted": in_planted,
            "copy_fraction_planted_ci": planted_ci,
            "copy_fraction_ordinary": in_ordinary,
            "copy_fraction_ordinary_ci": ordinary_ci,
            "copies_from_planted_share": (float(planted[copies].mean()) if copies.any() else None),
            "own_planted_copy_fraction": (float(own[planted].mean()) if planted.any() else None),
        }
    if generation is not None:
        document["generation"] = dict(generation)
    return document


def copy_line(summary: Mapping[str, Any]) -> str:
    """One line for the log: how many images are copies, the fraction and its interval."""
    fraction = summary.get("copy_fraction")
    lo, hi = summary.get("copy_fraction_ci") or (None, None)
    if fraction is None:
        return "synthetic set: no images"
    interval = (
        f", 95 % CI {100 * lo:.1f}-{100 * hi:.1f} %" if lo is not None and hi is not None else ""
    )
    return (
        f"synthetic set: {summary['n_copies']} of {summary['n_images']} images are copies "
        f"(copy fraction {100 * fraction:.1f} %{interval}) at similarity > "
        f"{summary['threshold']:.4f}"
    )
