"""Does copy detection find the copies the demo knows? Recall, false copies and ROC per embedding.

On the demo every planted caption was trained with one fixed image, so its generations should
be copies *of that image*; ordinary captions were trained with many images each, so their
generations should be new images. Per embedding (the configured one and its baselines):

- **copy recall**: share of generations of planted captions flagged as a copy of their own
  planted image (similarity above the threshold *and* nearest training image = the planted one);
- **false-copy rate**: share of generations of ordinary captions flagged as a copy of anything;
- **ROC AUC** of the nearest-training similarity, planted against ordinary generations, which
  says how well the embedding separates them whatever the threshold.

Generations come from the ``original`` strategy (source ``mitigation``: ``n_seeds`` per
prompt; intervals resample prompts, as seeds of one prompt are not independent) - the
mitigation stage's memorized and planted prompts, which give the recall, and the ordinary
control prompts generated the same way (:mod:`memaudit.copy_detection.controls`), which give
the false-copy rate - and, when it ran, from the synthetic set (prompts drawn by report
frequency; intervals resample images).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from memaudit.bootstrap import mean_ci
from memaudit.copy_detection.embedding import Embedder, embed_arrays
from memaudit.copy_detection.reference import CopyReference
from memaudit.copy_detection.search import nearest_neighbours

# One row per (embedding, generation) or held-out image.
VALIDITY_COLUMNS = (
    "embedding",
    "source",
    "prompt_id",
    "planted",
    "generation",
    "similarity",
    "nearest_train_id",
    "own_nearest",
    "copy",
    "own_copy",
)


@dataclass(frozen=True)
class Generations:
    """Generated images to judge: uint8 [N, H, W] and one row each (source, prompt, planted,
    generation index within its source)."""

    images: np.ndarray
    rows: pd.DataFrame


def mitigation_originals(generations: pd.DataFrame) -> Generations:
    """Every seed of the ``original`` strategy's generated rows, read from their chunks."""
    rows = generations[
        (generations["strategy"] == "original") & (generations["status"] == "generated")
    ].sort_values("prompt_id", kind="mergesort")
    stacks, records = [], []
    for chunk, part in rows.groupby("chunk", sort=True):
        with np.load(chunk, allow_pickle=False) as archive:
            images = archive["images"]
        for row in part.itertuples(index=False):
            seeds = images[int(row.row)]
            stacks.append(seeds)
            records += [
                {"prompt_id": row.prompt_id, "planted": bool(row.planted), "generation": s}
                for s in range(len(seeds))
            ]
    table = pd.DataFrame(records, columns=["prompt_id", "planted", "generation"])
    table.insert(0, "source", "mitigation")
    images = np.concatenate(stacks) if stacks else np.zeros((0, 1, 1), np.uint8)
    return Generations(images, table)


def control_generations(images: np.ndarray, prompts: pd.DataFrame) -> Generations:
    """The control prompts' images [prompts, seeds, H, W] as ``mitigation`` rows (the
    ``original`` strategy's generations of ordinary prompts; never planted)."""
    images = np.asarray(images)
    if images.ndim != 4 or len(images) != len(prompts):
        raise ValueError(
            f"{len(prompts)} control prompts but control images of shape {images.shape} "
            "(expected [prompts, seeds, H, W])"
        )
    ordered = prompts.sort_values("row", kind="mergesort")
    n_seeds = int(images.shape[1])
    table = pd.DataFrame(
        {
            "source": "mitigation",
            "prompt_id": np.repeat(ordered["prompt_id"].astype(str).to_numpy(), n_seeds),
            "planted": False,
            "generation": np.tile(np.arange(n_seeds, dtype=np.int64), len(ordered)),
        }
    )
    flat = images[ordered["row"].to_numpy(dtype=np.int64)].reshape(-1, *images.shape[2:])
    return Generations(flat, table)


def synthetic_images(images: np.ndarray, index: pd.DataFrame) -> Generations:
    """The synthetic set's images with their index (``image``, ``prompt_id``, ``planted``)."""
    if len(images) != len(index):
        raise ValueError(f"{len(index)} synthetic index rows but {len(images)} images")
    planted = index["planted"] if "planted" in index.columns else False
    table = pd.DataFrame(
        {
            "source": "synthetic",
            "prompt_id": index["prompt_id"].astype(str).to_numpy(),
            "planted": np.asarray(planted, dtype=bool) & np.ones(len(index), dtype=bool),
            "generation": index["image"].to_numpy(dtype=np.int64),
        }
    )
    return Generations(np.asarray(images), table)


def judge(
    embedding: str,
    reference: CopyReference,
    generations: Sequence[Generations],
    truth: pd.DataFrame | None,
    block: int = 65536,
) -> pd.DataFrame:
    """Per generation: nearest training image, similarity, copy flag, own-image flags.

    All generations are embedded, then searched in one pass over the training embeddings.
    Held-out images are added as rows of source ``heldout`` (their similarities calibrated the
    threshold) so that one table holds every distribution the figure draws.
    """
    rows = pd.concat([g.rows for g in generations], ignore_index=True)
    images = [g.images for g in generations if len(g.images)]
    embedder = Embedder(reference.spec)
    queries = embed_arrays(np.concatenate(images), embedder) if images else None
    if len(rows):
        sims, nearest = nearest_neighbours(queries, reference.embeddings, embedder.device, block)
    else:
        sims, nearest = np.zeros(0, np.float32), np.zeros(0, np.int64)
    own = np.zeros(len(rows), dtype=bool)
    if truth is not None and len(rows):
        planted_image = dict(zip(truth["prompt_id"], truth["image_index"], strict=True))
        members = [set(np.asarray(m).tolist()) for m in reference.index["image_indices"]]
        own = np.array(
            [
                pid in planted_image and int(planted_image[pid]) in members[r]
                for pid, r in zip(rows["prompt_id"], nearest, strict=True)
            ],
            dtype=bool,
        )
    copy = sims > reference.threshold
    table = rows.assign(
        similarity=sims.astype(np.float64),
        nearest_train_id=reference.index["train_id"].to_numpy()[nearest].astype(object),
        own_nearest=own,
        copy=copy,
        own_copy=copy & own,
    )
    held = pd.DataFrame(
        {
            "source": "heldout",
            "prompt_id": None,
            "planted": False,
            "generation": np.arange(len(reference.heldout_similarity), dtype=np.int64),
            "similarity": reference.heldout_similarity.astype(np.float64),
            "nearest_train_id": None,
            "own_nearest": False,
            "copy": reference.heldout_similarity > reference.threshold,
            "own_copy": False,
        }
    )
    table = pd.concat([table, held], ignore_index=True)
    table.insert(0, "embedding", embedding)
    return table[list(VALIDITY_COLUMNS)]


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        return float("nan")
    ranks = pd.Series(np.concatenate([pos, neg])).rank(method="average").to_numpy()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def roc_curve(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(false-positive rate, true-positive rate) at every threshold, from (0, 0) to (1, 1)."""
    scores = np.concatenate([positive, negative])
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))])
    order = np.argsort(-scores, kind="mergesort")
    tp = np.concatenate([[0.0], np.cumsum(labels[order])])
    fp = np.concatenate([[0.0], np.cumsum(1.0 - labels[order])])
    return fp / max(1.0, fp[-1]), tp / max(1.0, tp[-1])


def _rate(
    frame: pd.DataFrame, column: str, by_prompt: bool, resamples: int, seed: int, key: str
) -> dict[str, Any]:
    """Share of rows with ``column`` true, with a bootstrap 95 % interval over prompts (when
    ``by_prompt``: the seeds of one prompt move together) or over rows."""
    if not len(frame):
        return {"rate": None, "ci": [None, None], "n": 0, "n_prompts": 0}
    values = frame[column].to_numpy(dtype=np.float64)
    units = frame.groupby("prompt_id")[column].mean().to_numpy(np.float64) if by_prompt else values
    lo, hi = mean_ci(units, resamples, seed=seed, key=key)
    rate = float(units.mean()) if by_prompt else float(values.mean())
    finite = [float(v) if np.isfinite(v) else None for v in (lo, hi)]
    return {
        "rate": rate,
        "ci": finite,
        "n": int(len(frame)),
        "n_prompts": int(frame.prompt_id.nunique()),
    }


def summarize_validity(
    table: pd.DataFrame,
    references: Mapping[str, CopyReference],
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """``summary.json``: per embedding and source, recall, false copies, AUC; the configured
    embedding's original-strategy numbers first, as the headline."""
    per_embedding = {}
    for embedding, reference in references.items():
        frame = table[table["embedding"] == embedding]
        block: dict[str, Any] = {
            "threshold": float(reference.threshold),
            "percentile": reference.percentile,
            "n_train": int(len(reference.embeddings)),
            "n_heldout": int(len(reference.heldout_similarity)),
        }
        for source in ("mitigation", "synthetic"):
            part = frame[frame["source"] == source]
            if not len(part):
                continue
            planted, ordinary = part[part["planted"]], part[~part["planted"]]
            by_prompt = source == "mitigation"
            key = f"{embedding}|{source}"
            block[source] = {
                "copy_recall": _rate(planted, "own_copy", by_prompt, resamples, seed, key + "|r"),
                "own_nearest_rate": _rate(
                    planted, "own_nearest", by_prompt, resamples, seed, key + "|n"
                ),
                "false_copy_rate": _rate(ordinary, "copy", by_prompt, resamples, seed, key + "|f"),
                "roc_auc": _finite(
                    roc_auc(planted["similarity"].to_numpy(), ordinary["similarity"].to_numpy())
                ),
            }
        generated = frame[frame["source"] != "heldout"]
        block["roc_auc"] = _finite(
            roc_auc(
                generated.loc[generated["planted"], "similarity"].to_numpy(),
                generated.loc[~generated["planted"], "similarity"].to_numpy(),
            )
        )
        per_embedding[embedding] = block
    primary = next(iter(references), None)
    headline = per_embedding.get(primary, {}).get("mitigation", {})
    return {
        "embedding": primary,
        "copy_recall": (headline.get("copy_recall") or {}).get("rate"),
        "false_copy_rate": (headline.get("false_copy_rate") or {}).get("rate"),
        "headline": "mitigation original strategy, configured embedding",
        "definitions": {
            "copy_recall": "generations of planted captions flagged as a copy of their own image",
            "false_copy_rate": "generations of ordinary captions flagged as a copy of anything",
            "roc_auc": "nearest-training similarity, planted vs ordinary generations",
        },
        "bootstrap_resamples": resamples,
        "embeddings": per_embedding,
    }


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
