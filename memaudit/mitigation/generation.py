"""Mitigated generations of one chunk of prompts: plan, embeddings, images, d_mem.

Every (prompt, strategy) row gets its mitigated text or skip reason
(:mod:`memaudit.mitigation.strategies`), a conditioning embedding, ``n_seeds`` guided DDIM
images and the d_mem of that embedding with the scoring settings.

Reproducibility choices:

- every strategy's randomness comes from a generator seeded by hashing (mitigation seed,
  prompt id, strategy), never from a row position, so chunking and batch size draw nothing
  differently (the images then agree to float rounding: kernels may round differently for
  another batch shape);
- x_T of seed index s depends only on (mitigation seed, s) (:func:`memaudit.diffusion.
  initial_noise`), the same for every prompt and strategy (common random numbers): differences
  between strategies come from the strategy alone;
- images are stored as uint8 [rows, seeds, H, W] per chunk with a parquet index
  (:mod:`memaudit.mitigation.chunks`), so a killed job leaves nothing a re-run would trust.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memaudit.batching import auto_batch_size, run_halving_batches
from memaudit.diffusion import initial_noise, sample_images, to_uint8
from memaudit.mitigation.chunks import INDEX_COLUMNS, write_chunk
from memaudit.mitigation.spec import MitigationSpec
from memaudit.mitigation.strategies import (
    gaussian_noise_embedding,
    mitigate_text,
    optimize_embeddings,
    token_vocabulary,
)
from memaudit.model.loading import AuditModel
from memaudit.scoring.engine import score_embeddings
from memaudit.scoring.gather import d_mem_from_norms, select_chunk
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import marker_pattern

# GPU "auto" batch: share of the free memory the images of a batch may use (decoding included).
_GPU_MEMORY_SHARE = 0.7
_MAX_AUTO_IMAGES = 1024
_ENCODE_BATCH = 64


def auto_image_batch(model: AuditModel) -> int:
    """Images per UNet call (:func:`~memaudit.batching.auto_batch_size`: 2 rows per image)."""
    return auto_batch_size(model, 2, _MAX_AUTO_IMAGES, _GPU_MEMORY_SHARE, decode=True)


def generate_grid(
    model: AuditModel,
    cond: torch.Tensor,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    steps: int,
    guidance: float,
    batch_size: int | str = "auto",
    progress: TextIO | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Every row of ``cond`` [R, L, D] with every x_T of ``noise`` [S, C, h, w]: uint8 [R, S, H, W].

    Images are batched across rows and seeds (``batch_size`` images per call, or ``auto``);
    on a GPU a batch that runs out of memory is retried with half as many images. Image
    (r, s) depends only on cond[r] and noise[s], never on the batch it was computed in.
    """
    n_rows, n_seeds = int(cond.shape[0]), int(noise.shape[0])
    side = int(model.image_size)
    out = np.zeros((n_rows, n_seeds, side, side), dtype=np.uint8)
    batch = auto_image_batch(model) if batch_size == "auto" else int(batch_size)
    total = n_rows * n_seeds
    bar = tqdm(total=total, unit="img", desc="generate", file=progress, disable=progress is None)
    start = time.perf_counter()

    def step(position: int, size: int) -> None:
        jobs = np.arange(position, position + size)
        rows, seeds = jobs // n_seeds, jobs % n_seeds
        images = sample_images(model, cond[rows], noise[seeds], uncond, steps, guidance)
        if images.shape[-2:] != (side, side):
            raise ValueError(
                f"decoded images are {tuple(images.shape[-2:])}, expected the model's "
                f"image_size {side}"
            )
        out[rows, seeds] = to_uint8(images)

    _, batch, halvings = run_halving_batches(
        total,
        batch,
        step,
        "images per batch",
        "out of GPU memory generating a single image",
        progress,
        bar,
    )
    bar.close()
    seconds = time.perf_counter() - start
    stats = {
        "images": total,
        "seconds": seconds,
        "images_per_s": total / seconds if seconds > 0 and total else None,
        "batch_size_final": batch,
        "oom_halvings": halvings,
    }
    return out, stats


def encode_texts(model: AuditModel, texts: Sequence[str]) -> torch.Tensor:
    """Conditional embeddings [N, L, D] of texts, encoded in batches."""
    if not texts:
        return torch.zeros((0, model.max_length, 1), dtype=model.dtype, device=model.device)
    parts = [
        model.encode(list(texts[i : i + _ENCODE_BATCH]))
        for i in range(0, len(texts), _ENCODE_BATCH)
    ]
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# One chunk: plan, embeddings, images, d_mem
# --------------------------------------------------------------------------------------------


def plan_rows(
    prompts: pd.DataFrame,
    spec: MitigationSpec,
    markers: Sequence[str],
    vocabulary: Sequence[str],
    tokens: Sequence[str],
) -> pd.DataFrame:
    """One row per (prompt, strategy), prompts by id then strategies in config order, with
    the mitigated text or the skip reason."""
    pattern = marker_pattern(markers)
    records = []
    ordered = prompts.sort_values("prompt_id", kind="mergesort")
    for prompt in ordered.itertuples(index=False):
        for strategy in spec.strategies:
            result = mitigate_text(
                prompt.text, prompt.prompt_id, strategy, spec, pattern, vocabulary, tokens
            )
            records.append(
                {
                    "prompt_id": prompt.prompt_id,
                    "strategy": strategy,
                    "selection_reason": getattr(prompt, "reason", ""),
                    "planted": bool(getattr(prompt, "planted", False)),
                    "text": prompt.text,
                    "mitigated_text": result.text,
                    "status": result.status,
                    "reason": result.reason,
                    "n_edits": result.n_edits,
                }
            )
    return pd.DataFrame(records, columns=list(INDEX_COLUMNS[:9]))


def mitigated_embeddings(
    model: AuditModel,
    plan: pd.DataFrame,
    spec: MitigationSpec,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    batch_images: int,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Conditioning embeddings of the generated rows of ``plan`` and per-row embedding facts.

    Text strategies encode their mitigated text; ``gni`` and ``embopt`` start from the
    prompt's own embedding. The facts are the RMS change from the prompt's embedding and, for
    ``embopt``, the initial/final first-step loss and the number of updates.
    """
    rows = plan[plan["status"] == "generated"].reset_index(drop=True)
    embeddings = encode_texts(model, rows["mitigated_text"].tolist())
    originals = encode_texts(model, rows["text"].tolist())
    facts = pd.DataFrame(
        {
            "embedding_rms_change": np.zeros(len(rows)),
            "embopt_initial_loss": np.full(len(rows), np.nan),
            "embopt_final_loss": np.full(len(rows), np.nan),
            "embopt_iterations": np.zeros(len(rows), dtype=np.int64),
        }
    )
    gni = np.flatnonzero(rows["strategy"].to_numpy() == "gni")
    for i in gni:
        embeddings[i] = gaussian_noise_embedding(
            originals[i], spec.gni_scale, spec.seed, rows.at[i, "prompt_id"]
        )
    opt = np.flatnonzero(rows["strategy"].to_numpy() == "embopt")
    if len(opt):
        k = spec.embopt_seeds
        per_call = max(1, batch_images // k)
        for lo in range(0, len(opt), per_call):
            idx = opt[lo : lo + per_call]
            optimised, info = optimize_embeddings(
                model,
                originals[idx],
                noise[:k],
                uncond,
                spec.steps,
                spec.embopt_lr,
                spec.embopt_iterations,
                spec.embopt_target_loss,
            )
            embeddings[idx] = optimised
            facts.loc[idx, "embopt_initial_loss"] = info["initial_loss"].to_numpy()
            facts.loc[idx, "embopt_final_loss"] = info["final_loss"].to_numpy()
            facts.loc[idx, "embopt_iterations"] = info["iterations"].to_numpy()
    if len(rows):
        change = (embeddings.float() - originals.float()).pow(2).flatten(1).mean(dim=1).sqrt()
        facts["embedding_rms_change"] = change.cpu().numpy().astype(np.float64)
    return embeddings, facts


def score_rows(
    model: AuditModel, embeddings: torch.Tensor, scoring: ScoringSpec, batch_images: int
) -> np.ndarray:
    """d_mem of each conditioning embedding with the scoring engine and scoring settings."""
    if len(embeddings) == 0:
        return np.zeros(0)
    noise = initial_noise(model.latent_shape, scoring.generations, scoring.seed, model.device)
    uncond = model.encode([""])
    per_call = max(1, batch_images // scoring.generations)
    values = []
    for lo in range(0, len(embeddings), per_call):
        norms = score_embeddings(model, embeddings[lo : lo + per_call], scoring, noise, uncond)
        values.append(np.atleast_1d(d_mem_from_norms(norms, scoring.window_bounds())))
    return np.concatenate(values).astype(np.float64)


def generate_mitigations(
    model: AuditModel,
    prompts: pd.DataFrame,
    spec: MitigationSpec,
    scoring: ScoringSpec,
    markers: Sequence[str],
    vocabulary: Sequence[str],
    progress: TextIO | None = None,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Mitigated generations of ``prompts``: (index table, uint8 images, run statistics).

    The index has one row per (prompt, strategy) (:data:`INDEX_COLUMNS`); ``row`` points into
    the images [generated rows, n_seeds, H, W] (-1 for skipped rows); ``d_mem`` is the
    mitigated prompt's (or embedding's) score with the scoring settings.
    """
    for column in ("prompt_id", "text"):
        if column not in prompts.columns:
            raise ValueError(f"the mitigation prompts table has no {column!r} column")
    start = time.perf_counter()
    tokens = token_vocabulary(model.tokenizer, markers) if "rt" in spec.strategies else []
    plan = plan_rows(prompts, spec, markers, vocabulary, tokens)
    noise = initial_noise(model.latent_shape, spec.n_seeds, spec.seed, model.device)
    with torch.no_grad():
        uncond = model.encode([""])
    batch = auto_image_batch(model) if spec.batch_size == "auto" else int(spec.batch_size)
    t0 = time.perf_counter()
    embeddings, facts = mitigated_embeddings(model, plan, spec, noise, uncond, batch)
    embed_seconds = time.perf_counter() - t0
    images, gen_stats = generate_grid(
        model, embeddings, noise, uncond, spec.steps, spec.guidance, batch, progress
    )
    t0 = time.perf_counter()
    d_mem = score_rows(model, embeddings, scoring, batch)
    score_seconds = time.perf_counter() - t0
    generated = (plan["status"] == "generated").to_numpy()
    index = plan.copy()
    index["row"] = -1
    index.loc[generated, "row"] = np.arange(int(generated.sum()))
    index["n_seeds"] = np.where(generated, spec.n_seeds, 0)
    index["d_mem"] = np.nan
    index.loc[generated, "d_mem"] = d_mem
    for column in facts.columns:
        index[column] = np.nan if column != "embopt_iterations" else 0
        index.loc[generated, column] = facts[column].to_numpy()
    index = index.astype({"row": "int64", "n_seeds": "int64", "embopt_iterations": "int64"})
    stats = {
        "n_prompts": int(prompts["prompt_id"].nunique()),
        "n_rows": len(index),
        "n_generated_rows": int(generated.sum()),
        "n_skipped_rows": int((~generated).sum()),
        "n_seeds": spec.n_seeds,
        "steps": spec.steps,
        "guidance": spec.guidance,
        "image_size": int(model.image_size),
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "batch_size": batch,
        "embedding_seconds": embed_seconds,
        "scoring_seconds": score_seconds,
        "total_seconds": time.perf_counter() - start,
        **{f"generation_{k}": v for k, v in gen_stats.items()},
    }
    return index, images, stats


def generate_chunk(
    model: AuditModel,
    prompts: pd.DataFrame,
    index: int,
    total: int,
    spec: MitigationSpec,
    scoring: ScoringSpec,
    markers: Sequence[str],
    vocabulary: Sequence[str],
    images_path: str | Path,
    index_path: str | Path,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Generate chunk ``index`` of ``total`` (prompts split by id) and write it atomically."""
    chunk = select_chunk(prompts, index, total)
    table, images, stats = generate_mitigations(
        model, chunk, spec, scoring, markers, vocabulary, progress
    )
    write_chunk(table, images, images_path, index_path)
    stats.update({"chunk_index": index, "chunk_total": total})
    return stats
