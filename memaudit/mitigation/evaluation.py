"""Evaluation of mitigations: diversity, d_mem, copies, bootstrap intervals.

Diversity of one prompt's generations is the mean over all pairs of the RMS distance
‖a − b‖₂ / √(pixels) of grayscale images in [0, 1] at the model's output size
(``docs/method.md``; computed from the stored uint8 images, whose rounding adds at most
~0.001).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from memaudit.atomic import json_safe
from memaudit.bootstrap import mean_ci
from memaudit.copy_detection.embedding import Embedder, embed_arrays
from memaudit.copy_detection.reference import CopyReference
from memaudit.copy_detection.search import nearest_neighbours

# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def mean_pairwise_rms(images: np.ndarray) -> float:
    """Mean over all pairs i < j of ‖a_i − a_j‖₂ / √(pixels); uint8 images are /255 first.

    Computed from the Gram matrix in float64 (squared distances clipped at 0). NaN for fewer
    than two images.
    """
    array = np.asarray(images)
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    flat = array.reshape(len(array), -1).astype(np.float64) / scale
    n, pixels = flat.shape
    if n < 2:
        return math.nan
    gram = flat @ flat.T
    sq = np.diag(gram)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0, None)
    upper = np.triu_indices(n, k=1)
    return float(np.sqrt(d2[upper] / pixels).mean())


def evaluate_generations(
    generations: pd.DataFrame,
    reference: CopyReference | None = None,
    truth: pd.DataFrame | None = None,
    progress: TextIO | None = None,
    block: int | None = None,
) -> pd.DataFrame:
    """Per (prompt, strategy): diversity and, with ``reference``, copy detection.

    ``generations`` is the gathered index (``chunk`` names each row's ``.npz``). Copy
    columns: per seed the nearest training image id and similarity, the share of seeds above
    the threshold (``copy_rate``), the most frequent nearest image, and on the demo
    (``truth``) the share of seeds that copy the prompt's own planted image
    (``planted_copy_rate``) and whose nearest training image is that planted image whatever
    the similarity (``planted_nearest_rate``); both NaN for prompts that are not planted.
    Skipped rows keep NaNs. All generations are embedded, then searched in one pass over the
    training embeddings (``block`` rows at a time, :func:`nearest_neighbours`).
    """
    table = generations.copy()
    n = len(table)
    table["diversity"] = np.full(n, np.nan)
    for column in ("copy_rate", "max_similarity", "mean_similarity", "top_train_share"):
        table[column] = np.full(n, np.nan)
    table["planted_copy_rate"] = np.full(n, np.nan)
    table["planted_nearest_rate"] = np.full(n, np.nan)
    table["n_copies"] = np.zeros(n, dtype=np.int64)
    table["top_train_id"] = pd.Series([None] * n, dtype=object)
    table["nearest_train_ids"] = pd.Series([None] * n, dtype=object)
    table["nearest_similarities"] = pd.Series([None] * n, dtype=object)
    if n == 0:
        return table
    planted_rows: dict[str, set[int]] = {}
    if truth is not None and reference is not None and "image_index" in truth.columns:
        planted_rows = {
            pid: {int(i)} for pid, i in zip(truth["prompt_id"], truth["image_index"], strict=True)
        }
    embedder = Embedder(reference.spec) if reference is not None else None
    train_ids = reference.index["train_id"].to_numpy() if reference is not None else None
    members = (
        [set(np.asarray(m).tolist()) for m in reference.index["image_indices"]]
        if reference is not None
        else None
    )
    generated = table.index[table["status"] == "generated"]
    bar = tqdm(
        total=len(generated), unit="row", desc="evaluate", file=progress, disable=not progress
    )
    # Diversity per row, and every generation embedded chunk by chunk (images are large,
    # embeddings small); then one pass over the training embeddings for all of them.
    embedded: dict[int, np.ndarray] = {}
    for chunk, rows in table.loc[generated].groupby("chunk", sort=True):
        with np.load(chunk, allow_pickle=False) as archive:
            images = archive["images"]
        for i in rows.index:
            table.at[i, "diversity"] = mean_pairwise_rms(images[int(table.at[i, "row"])])
            bar.update(1)
        if reference is not None:
            picked = images[rows["row"].to_numpy(dtype=np.int64)]  # [rows, seeds, H, W]
            flat = embed_arrays(picked.reshape(-1, *picked.shape[2:]), embedder)
            for i, part in zip(rows.index, np.split(flat, len(rows)), strict=True):
                embedded[i] = part
    bar.close()
    if reference is None or not embedded:
        return table
    order = sorted(embedded)
    counts = [len(embedded[i]) for i in order]
    all_sims, all_nearest = nearest_neighbours(
        np.concatenate([embedded[i] for i in order]), reference.embeddings, embedder.device, block
    )
    bounds = np.concatenate([[0], np.cumsum(counts)])
    for i, lo, hi in zip(order, bounds[:-1], bounds[1:], strict=True):
        sims, nearest = all_sims[lo:hi], all_nearest[lo:hi]
        copies = sims > reference.threshold
        ids = train_ids[nearest]
        values, counts_of = np.unique(ids, return_counts=True)
        top = int(np.argmax(counts_of))
        table.at[i, "copy_rate"] = float(copies.mean())
        table.at[i, "n_copies"] = int(copies.sum())
        table.at[i, "max_similarity"] = float(sims.max())
        table.at[i, "mean_similarity"] = float(sims.mean())
        table.at[i, "top_train_id"] = str(values[top])
        table.at[i, "top_train_share"] = float(counts_of[top] / len(ids))
        table.at[i, "nearest_train_ids"] = [str(x) for x in ids]
        table.at[i, "nearest_similarities"] = sims.astype(np.float64).tolist()
        own = planted_rows.get(table.at[i, "prompt_id"])
        if own is not None:
            hits = [bool(own & members[r]) for r in nearest]
            table.at[i, "planted_copy_rate"] = float(np.mean(np.asarray(hits) & copies))
            table.at[i, "planted_nearest_rate"] = float(np.mean(hits))
    return table


def summarize_strategies(
    evaluation: pd.DataFrame,
    strategies: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    memorization_threshold: float | None = None,
) -> pd.DataFrame:
    """Strategy × group table: mean diversity with a bootstrap 95 % CI, paired change vs
    ``original``, mean d_mem, share still above the memorization threshold, copy rate.

    Groups: ``all`` and, when some but not all prompts are planted (the demo), ``planted``
    and ``other``.
    Bootstraps resample prompts, seeded by (seed, strategy, group, quantity).
    """
    groups = {"all": evaluation}
    if len(evaluation) and evaluation["planted"].any() and not evaluation["planted"].all():
        groups["planted"] = evaluation[evaluation["planted"]]
        groups["other"] = evaluation[~evaluation["planted"]]
    records = []
    for group, frame in groups.items():
        base = frame[(frame["strategy"] == "original") & (frame["status"] == "generated")]
        base_div = dict(zip(base["prompt_id"], base["diversity"], strict=True))
        for strategy in strategies:
            rows = frame[frame["strategy"] == strategy]
            done = rows[rows["status"] == "generated"]
            div = done["diversity"].to_numpy(dtype=np.float64)
            delta = np.array(
                [
                    d - base_div[p]
                    for p, d in zip(done["prompt_id"], div, strict=True)
                    if p in base_div
                ]
            )
            lo, hi = mean_ci(div, n_bootstrap, seed=seed, key=f"{strategy}|{group}|diversity")
            dlo, dhi = mean_ci(delta, n_bootstrap, seed=seed, key=f"{strategy}|{group}|delta")
            copy = done["copy_rate"].to_numpy(dtype=np.float64)
            clo, chi = mean_ci(copy, n_bootstrap, seed=seed, key=f"{strategy}|{group}|copy_rate")
            d_mem = done["d_mem"].to_numpy(dtype=np.float64)
            still = (
                float(np.mean(d_mem > memorization_threshold))
                if memorization_threshold is not None and d_mem.size
                else math.nan
            )
            records.append(
                {
                    "strategy": strategy,
                    "group": group,
                    "n_prompts": int(len(done)),
                    "n_skipped": int(len(rows) - len(done)),
                    "diversity_mean": _mean(div),
                    "diversity_ci_low": lo,
                    "diversity_ci_high": hi,
                    "diversity_change_mean": _mean(delta),
                    "diversity_change_ci_low": dlo,
                    "diversity_change_ci_high": dhi,
                    "d_mem_mean": _mean(d_mem),
                    "still_memorized_rate": still,
                    "copy_rate": _mean(copy),
                    "copy_rate_ci_low": clo,
                    "copy_rate_ci_high": chi,
                    "planted_copy_rate": _mean(done["planted_copy_rate"].to_numpy(np.float64)),
                    "planted_nearest_rate": _mean(
                        done["planted_nearest_rate"].to_numpy(np.float64)
                    ),
                    "max_similarity_mean": _mean(done["max_similarity"].to_numpy(np.float64)),
                }
            )
    return pd.DataFrame(records)


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def summary_document(
    summary: pd.DataFrame,
    evaluation: pd.DataFrame,
    selection: pd.DataFrame,
    generation_stats: Sequence[Mapping[str, Any]],
    reference: CopyReference | None,
    copy_skip_reason: str | None,
    memorization_threshold: float | None,
    n_bootstrap: int,
) -> dict[str, Any]:
    """``summary.json``: the table in nested form plus counts, skips, copy and speed facts."""
    skipped = evaluation[evaluation["status"] == "skipped"] if len(evaluation) else evaluation
    skips: dict[str, dict[str, int]] = {}
    for (strategy, reason), n in (
        skipped.groupby(["strategy", "reason"]).size().items() if len(skipped) else []
    ):
        skips.setdefault(strategy, {})[reason] = int(n)
    images = sum(int(s.get("generation_images") or 0) for s in generation_stats)
    seconds = sum(float(s.get("generation_seconds") or 0.0) for s in generation_stats)
    table = {
        group: {
            row["strategy"]: {
                k: json_safe(v) for k, v in row.items() if k not in ("strategy", "group")
            }
            for row in frame.to_dict("records")
        }
        for group, frame in summary.groupby("group", sort=False)
    }
    doc: dict[str, Any] = {
        "n_prompts": int(len(selection)),
        "selection": {k: int(v) for k, v in selection["reason"].value_counts().items()}
        if len(selection)
        else {},
        "n_rows": int(len(evaluation)),
        "n_generated_rows": int((evaluation["status"] == "generated").sum())
        if len(evaluation)
        else 0,
        "skipped": skips,
        "diversity": "mean over pairs of ||a - b||_2 / sqrt(pixels), grayscale in [0, 1]",
        "bootstrap_resamples": n_bootstrap,
        "memorization_threshold": memorization_threshold,
        "strategies": table,
        "generation": {
            "images": images,
            "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else None,
            "devices": sorted({str(s.get("device")) for s in generation_stats}),
            "chunks": len(generation_stats),
        },
    }
    if not len(selection):
        doc["note"] = (
            "no prompt was selected for mitigation (no memorized prompt passed the filter)"
        )
    if reference is not None:
        doc["copy_detection"] = {
            "embedding": dataclasses.asdict(reference.spec),
            "n_train": int(len(reference.embeddings)),
            "n_heldout": int(len(reference.heldout_similarity)),
            "percentile": reference.percentile,
            "threshold": reference.threshold,
        }
    else:
        doc["copy_detection"] = {"skipped": copy_skip_reason or "no training images configured"}
    return doc
