"""Ordinary control prompts for copy detection's false-copy rate on the ``original`` strategy.

The mitigation stage generates only memorized (and, on the demo, planted) prompts, so its
``original`` generations can measure copy *recall* but not how often the detector calls an
ordinary generation a copy. The controls are prompts the audit has no reason to suspect:
neither flagged memorized by the threshold stage nor planted by the demo. They are drawn by a
hash of (mitigation seed, prompt id) - never by row position - and generated exactly as the
mitigation's ``original`` strategy (the prompt's own text encoded, the same ``n_seeds`` x_T,
steps and guidance), so that recall and false-copy rate are two rates of one generator.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch

from memaudit.diffusion import initial_noise
from memaudit.frames import require_columns
from memaudit.mitigation.generation import auto_image_batch, encode_texts, generate_grid
from memaudit.mitigation.spec import MitigationSpec
from memaudit.model.loading import AuditModel
from memaudit.selection import sample_order

CONTROL_COLUMNS = ("prompt_id", "text", "d_mem", "rank", "row")


def select_controls(
    ranked: pd.DataFrame, truth: pd.DataFrame | None, n: int, seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Up to ``n`` ordinary prompts of ``ranked`` (not memorized, not in ``truth``), sorted by
    prompt id with ``row`` their index in the control images; and the counts of the draw."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"copy_detection.controls must be an integer >= 0, got {n!r}")
    require_columns(ranked, ("prompt_id", "text", "d_mem", "rank", "memorized"), "ranked prompts")
    planted = set() if truth is None else set(truth["prompt_id"].astype(str))
    ids = ranked["prompt_id"].astype(str)
    ordinary = ranked[~ranked["memorized"].astype(bool).to_numpy() & ~ids.isin(planted)]
    order = sorted(ordinary["prompt_id"].astype(str), key=lambda p: sample_order(seed, p))
    chosen = sorted(order[:n])
    table = (
        ordinary.assign(prompt_id=ordinary["prompt_id"].astype(str))
        .set_index("prompt_id")
        .loc[chosen, ["text", "d_mem", "rank"]]
        .reset_index()
    )
    table["row"] = np.arange(len(table), dtype=np.int64)
    counts = {
        "requested": n,
        "selected": len(table),
        "ordinary_available": len(ordinary),
        "excluded_memorized": int(ranked["memorized"].astype(bool).sum()),
        "excluded_planted": int(ids.isin(planted).sum()),
    }
    return table[list(CONTROL_COLUMNS)], counts


def generate_controls(
    model: AuditModel,
    controls: pd.DataFrame,
    spec: MitigationSpec,
    progress: TextIO | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """uint8 images [controls, n_seeds, H, W]: each control prompt as the ``original``
    strategy generates it (same encoding, x_T of seed s from (mitigation seed, s), steps and
    guidance), so image (r, s) is the one mitigation would make of that prompt and seed."""
    require_columns(controls, ("prompt_id", "text", "row"), "control prompts")
    start = time.perf_counter()
    noise = initial_noise(model.latent_shape, spec.n_seeds, spec.seed, model.device)
    batch = auto_image_batch(model) if spec.batch_size == "auto" else int(spec.batch_size)
    with torch.no_grad():
        uncond = model.encode([""])
        cond = encode_texts(model, controls.sort_values("row")["text"].tolist())
    images, stats = generate_grid(
        model, cond, noise, uncond, spec.steps, spec.guidance, batch, progress
    )
    stats.update(
        n_prompts=len(controls),
        n_seeds=spec.n_seeds,
        steps=spec.steps,
        guidance=spec.guidance,
        device=str(model.device),
        total_seconds=time.perf_counter() - start,
    )
    return images, stats


def control_spec(mitigation: Mapping[str, Any]) -> MitigationSpec:
    """The mitigation settings the ``original`` strategy's images depend on (strategies
    narrowed to ``original``: the controls are generated only that way)."""
    keys = MitigationSpec.ORIGINAL_KEYS
    return MitigationSpec.from_dict(
        {"strategies": ["original"], **{k: mitigation[k] for k in keys}}
    )
