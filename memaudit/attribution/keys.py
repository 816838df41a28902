"""The counterfactual key check: does a planted key alone make its prompt memorized?

The demo's truth table names a key for every keyed planted caption (a rare name, or a
de-identification-marker phrase) and a *candidate* key for every composed caption that carries
a trigger name (see :mod:`memaudit.corpus.planted`). That a key drives its prompt's
memorization is a claim about the trained model, so it is checked on the model, counterfactually:

1. the key is deleted from the prompt (:func:`text_without_key`, with
   :func:`memaudit.attribution.words.delete_span`);
2. both texts are scored with d_mem by the scoring engine and the scoring settings (so the
   prompt with its key gets the number the scores table holds; both are recorded);
3. the threshold is the 90th percentile of d_mem over the *ordinary* prompts of the scores
   table (every prompt that is not a planted caption);
4. ``memorized_with_key`` says the prompt's d_mem is above it, and the key is **causal** when
   the prompt is memorized with its key and falls below the threshold without it;
5. both texts are also generated (seeds 0..N-1), and each generation's nearest training image
   (pixel correlation; identical planted copies count as one image, as in
   :func:`memaudit.model.check.check_memorization`) is compared with the caption's own planted
   image: ``own_image_rate_with_key`` / ``_without_key``.

Attribution methods are scored against the causal keys only. :func:`verify_planted_keys` is
snakemake-free; the model is passed in.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
import pandas as pd
from tqdm import tqdm

from memaudit.attribution.spec import KeyCheckSpec
from memaudit.attribution.words import delete_span, key_span
from memaudit.frames import require_columns, typed_frame
from memaudit.model.check import (
    distinct_image_ids,
    first_rows,
    generate_images,
    nearest_training_images,
)
from memaudit.model.loading import AuditModel
from memaudit.scoring.engine import score_prompts
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id

#: The ordinary prompts' percentile of d_mem below which a prompt without its key must fall.
ORDINARY_PERCENTILE = 90.0
#: Groups counted in ``keys.json``: the two keyed families, both together, and the composed
#: captions' candidate keys (their trigger names).
GROUPS = ("keyed_name", "keyed_marker", "keyed", "composed_trigger")
#: Prompts generated per call (times the generations per prompt).
_PROMPTS_PER_BATCH = 8

KEY_COLUMNS = {
    "planted_id": "int64",
    "prompt_id": object,
    "kind": object,
    "key_text": object,
    "text": object,
    "text_without_key": object,
    "d_mem_with_key": "float64",
    "d_mem_scores": "float64",
    "d_mem_without_key": "float64",
    "ordinary_p90": "float64",
    "memorized_with_key": bool,
    "causal": bool,
    "own_image_rate_with_key": "float64",
    "own_image_rate_without_key": "float64",
}


def text_without_key(text: str, key_text: str, prompt: str) -> str:
    """The prompt with its key deleted (:func:`delete_span`); when the key opened the prompt,
    the new first letter is capitalised ("Compared to ___, no acute ..." -> "No acute ...").
    """
    start, end = key_span(text, key_text, prompt)
    rest = delete_span(text, start, end)
    if not rest:
        raise ValueError(f"truth row of prompt_id {prompt!r}: the key is the whole text")
    return rest[0].upper() + rest[1:] if start == 0 else rest


def ordinary_threshold(scores: pd.DataFrame, truth: pd.DataFrame) -> tuple[float | None, int]:
    """(90th percentile of d_mem over the non-planted prompts of ``scores``, their number);
    None when the scores table has no ordinary prompt."""
    planted = set(truth["prompt_id"].astype(str))
    ordinary = scores.loc[~scores["prompt_id"].astype(str).isin(planted), "d_mem"]
    ordinary = ordinary.to_numpy(dtype=np.float64)
    if not len(ordinary):
        return None, 0
    return float(np.percentile(ordinary, ORDINARY_PERCENTILE)), len(ordinary)


def verify_planted_keys(
    model: AuditModel,
    truth: pd.DataFrame,
    scores: pd.DataFrame,
    scoring: ScoringSpec,
    captions: Sequence[str],
    images: np.ndarray,
    spec: KeyCheckSpec,
    progress: TextIO | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Check every truth row with a ``key_text`` counterfactually (see the module docstring).

    ``scores`` is the scores table (``prompt_id``, ``d_mem``; planted and ordinary prompts),
    ``captions`` / ``images`` the training pairs
    (:func:`memaudit.model.training.demo_training_pairs`). Returns (one row per checked key,
    :data:`KEY_COLUMNS`; the ``keys.json`` summary). A truth without keys gives an empty table
    and zero counts. ``progress`` is a stream for tqdm bars (scoring, then generation).
    """
    start_time = time.perf_counter()
    # 1. Check inputs; the keys, their texts without the key, and the threshold
    require_columns(truth, ("planted_id", "prompt_id", "text", "kind", "key_text"), "truth table")
    require_columns(scores, ("prompt_id", "d_mem"), "scores table")
    images = np.asarray(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} training captions but {len(images)} images")
    keyed = truth[truth["key_text"].notna()].sort_values("planted_id")
    rows = _key_rows(keyed, scores)
    threshold, n_ordinary = ordinary_threshold(scores, truth)
    if rows and threshold is None:
        raise ValueError("the scores table has no ordinary (non-planted) prompt: no threshold")
    # 2. d_mem with and without each key (each distinct text scored once)
    texts = list(dict.fromkeys([r["text"] for r in rows] + [r["text_without_key"] for r in rows]))
    d_mem, unet_rows = _score(model, texts, scoring, progress)
    # 3. Generations with and without each key; how often they land on the planted image
    own = _own_images(rows, captions, images)
    nearest = _nearest_images(model, texts, images, spec, progress)
    # 4. The table and the summary
    for r in rows:
        r["d_mem_with_key"] = d_mem[r["text"]]
        r["d_mem_without_key"] = d_mem[r["text_without_key"]]
        r["ordinary_p90"] = threshold
        r["memorized_with_key"] = bool(r["d_mem_with_key"] > threshold)
        r["causal"] = r["memorized_with_key"] and bool(r["d_mem_without_key"] < threshold)
        r["own_image_rate_with_key"] = float(np.mean(nearest[r["text"]] == own[r["prompt_id"]]))
        r["own_image_rate_without_key"] = float(
            np.mean(nearest[r["text_without_key"]] == own[r["prompt_id"]])
        )
    table = typed_frame(rows, KEY_COLUMNS)
    summary = _summary(table, threshold, n_ordinary, scoring, spec, unet_rows)
    summary["seconds"] = time.perf_counter() - start_time
    return table, summary


def _key_rows(keyed: pd.DataFrame, scores: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per key: ids, texts with and without the key, and the scores table's d_mem."""
    table_d_mem = dict(zip(scores["prompt_id"].astype(str), scores["d_mem"], strict=True))
    rows = []
    for r in keyed.itertuples(index=False):
        pid, text, key = str(r.prompt_id), str(r.text), str(r.key_text)
        without = text_without_key(text, key, pid)
        if pid not in table_d_mem:
            raise ValueError(
                f"planted prompt_id {pid!r} ({text[:60]!r}) is not in the scores table"
            )
        rows.append(
            {
                "planted_id": int(r.planted_id),
                "prompt_id": pid,
                "kind": str(r.kind),
                "key_text": key,
                "text": text,
                "text_without_key": without,
                "d_mem_scores": float(table_d_mem[pid]),
            }
        )
    return rows


def _score(
    model: AuditModel, texts: list[str], scoring: ScoringSpec, progress: TextIO | None
) -> tuple[dict[str, float], int]:
    """(d_mem by text, UNet rows spent) by the scoring engine."""
    if not texts:
        return {}, 0
    table, stats = score_prompts(model, [prompt_id(t) for t in texts], texts, scoring, progress)
    return dict(zip(texts, table["d_mem"].astype(float), strict=True)), int(stats["unet_rows"])


def _own_images(
    rows: list[dict[str, Any]], captions: Sequence[str], images: np.ndarray
) -> dict[str, int]:
    """Distinct-image id of each key's planted image (its caption's first training row)."""
    present = set(captions)
    missing = [r["prompt_id"] for r in rows if r["text"] not in present]
    if missing:
        raise ValueError(
            f"{len(missing)} planted prompt(s) are no training caption, e.g. prompt_id "
            f"{missing[0]!r}: their planted image is unknown"
        )
    if not rows:
        return {}
    row_image = distinct_image_ids(images)
    first = first_rows(list(captions), [r["text"] for r in rows])
    return {r["prompt_id"]: int(row_image[i]) for r, i in zip(rows, first, strict=True)}


def _nearest_images(
    model: AuditModel,
    texts: list[str],
    images: np.ndarray,
    spec: KeyCheckSpec,
    progress: TextIO | None,
) -> dict[str, np.ndarray]:
    """Distinct-image id of the nearest training image of each generation [seeds], by text."""
    if not texts:
        return {}
    if model.image_size != images.shape[-1]:
        raise ValueError(
            f"the model generates {model.image_size}-pixel images but the training images are "
            f"{images.shape[-1]} pixels wide: the key check compares generations with the demo "
            "corpus images and needs the demo model"
        )
    seeds = list(range(spec.generations))
    bar = tqdm(
        total=len(texts),
        unit="prompt",
        desc="generations",
        file=progress,
        disable=progress is None,
    )
    generated = []
    for lo in range(0, len(texts), _PROMPTS_PER_BATCH):
        chunk = texts[lo : lo + _PROMPTS_PER_BATCH]
        generated.append(
            generate_images(model, chunk, seeds, steps=spec.steps, guidance=spec.guidance)
        )
        bar.update(len(chunk))
    bar.close()
    _, nearest, _ = nearest_training_images(np.concatenate(generated), images)
    nearest = nearest.reshape(len(texts), len(seeds))
    return {t: nearest[i] for i, t in enumerate(texts)}


def _group(table: pd.DataFrame, name: str) -> pd.DataFrame:
    if name == "keyed":
        return table[table["kind"].isin(["keyed_name", "keyed_marker"])]
    if name == "composed_trigger":
        return table[table["kind"] == "composed"]
    return table[table["kind"] == name]


def _summary(
    table: pd.DataFrame,
    threshold: float | None,
    n_ordinary: int,
    scoring: ScoringSpec,
    spec: KeyCheckSpec,
    unet_rows: int,
) -> dict[str, Any]:
    """The ``keys.json`` document (without ``seconds``)."""
    counts = {}
    for name in GROUPS:
        part = _group(table, name)
        n, causal = len(part), int(part["causal"].sum())
        counts[name] = {
            "checked": n,
            "memorized_with_key": int(part["memorized_with_key"].sum()),
            "causal": causal,
            "causal_fraction": causal / n if n else None,
            "own_image_rate_with_key": float(part["own_image_rate_with_key"].mean()) if n else None,
            "own_image_rate_without_key": (
                float(part["own_image_rate_without_key"].mean()) if n else None
            ),
        }
    difference = (table["d_mem_with_key"] - table["d_mem_scores"]).abs()
    return {
        "threshold": {
            "ordinary_percentile": ORDINARY_PERCENTILE,
            "ordinary_p90": threshold,
            "n_ordinary_prompts": n_ordinary,
        },
        "counts": counts,
        "causal_prompt_ids": table.loc[table["causal"], "prompt_id"].tolist(),
        "d_mem_scores_max_abs_difference": float(difference.max()) if len(table) else None,
        "settings": {
            "scoring": dataclasses.asdict(scoring),
            "key_check": dataclasses.asdict(spec),
        },
        "unet_rows_scoring": unet_rows,
    }
