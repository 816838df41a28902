"""Memorization score d_mem (Wen et al.) for many prompts, batched on one denoiser.

For prompt p, generation j and sampling step t of the classifier-free guided DDIM trajectory
x_t^j (guidance g) started from noise x_T^j::

    d_mem(p) = 1/(n·|S|) · Σ_j Σ_{t∈S} ‖ε(x_t^j, e_p) − ε(x_t^j, e_∅)‖₂

The norm is taken over the whole latent of one image and is *not* multiplied by g; e_∅ is the
embedding of the empty string and S a window [start, stop) of sampling steps.

Engine choices:

- x_T^j depends only on (seed, j) and is the same for every prompt (common random numbers), so
  a prompt's score does not depend on chunking, batch size or row order;
- every UNet call carries prompts × generations × {conditional, unconditional} rows; at the
  first step all prompts of a batch share x_T^j and e_∅, so the unconditional prediction is
  computed once per generation instead of once per prompt;
- the trajectory stops as soon as the last step of the window is scored (a first-step score
  costs one UNet call per batch); images are never decoded;
- the per-step norms (generations × computed steps) are kept, so other windows need no re-run
  (:func:`d_mem_from_norms`).
"""

from __future__ import annotations

import math
import resource
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memaudit.atomic import atomic_parquet
from memaudit.batching import auto_batch, run_halving_batches
from memaudit.diffusion import fresh_scheduler, initial_noise, unet_eps
from memaudit.model.loading import AuditModel
from memaudit.scoring.gather import select_chunk
from memaudit.scoring.spec import ScoringSpec

# GPU "auto" batch: share of the free memory the batch may use (the rest is headroom).
_GPU_MEMORY_SHARE = 0.8
_MAX_AUTO_PROMPTS = 4096


@torch.no_grad()
def score_embeddings(
    model: AuditModel,
    cond: torch.Tensor,
    spec: ScoringSpec,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    counters: dict[str, int] | None = None,
) -> np.ndarray:
    """Per-step norms [prompts, generations, computed_steps] of conditioning embeddings.

    ``cond`` is [P, L, D] (one row per prompt, e.g. a text encoder output, perturbed or
    optimised), ``noise`` is x_T [generations, C, h, w] from :func:`initial_noise` and
    ``uncond`` the empty prompt's embedding [1, L, D]. This is the engine behind
    :func:`score_prompts`, for callers that change the embedding rather than the text.
    """
    counters = counters if counters is not None else {"unet_calls": 0, "unet_rows": 0}
    cond = cond.to(device=model.device, dtype=model.dtype)
    n_prompts, n_gen = cond.shape[0], spec.generations
    rows = n_prompts * n_gen
    cond_rows = cond.repeat_interleave(n_gen, dim=0)  # row i*n_gen + j = prompt i, gen j
    scheduler = fresh_scheduler(model, spec.steps, model.device)
    latents = noise.repeat(n_prompts, 1, 1, 1) * scheduler.init_noise_sigma
    norms = torch.empty(rows, spec.computed_steps, dtype=torch.float32, device=latents.device)
    for k in range(spec.computed_steps):
        t = scheduler.timesteps[k]
        model_input = scheduler.scale_model_input(latents, t)
        if k == 0:
            # All prompts share x_T^j and e_∅: one unconditional row per generation.
            shared = model_input[:n_gen]
            sample = torch.cat([model_input, shared])
            embeddings = torch.cat([cond_rows, uncond.expand(n_gen, -1, -1)])
            eps = unet_eps(model, sample, t, embeddings)
            eps_cond = eps[:rows]
            eps_uncond = eps[rows:].repeat(n_prompts, 1, 1, 1)
        else:
            sample = torch.cat([model_input, model_input])
            embeddings = torch.cat([cond_rows, uncond.expand(rows, -1, -1)])
            eps = unet_eps(model, sample, t, embeddings)
            eps_cond, eps_uncond = eps[:rows], eps[rows:]
        counters["unet_calls"] += 1
        counters["unet_rows"] += sample.shape[0]
        diff = eps_cond - eps_uncond
        norms[:, k] = diff.flatten(1).norm(dim=1)
        if k + 1 < spec.computed_steps:
            guided = eps_uncond + spec.guidance * diff
            latents = scheduler.step(guided, t, latents, eta=0.0, return_dict=False)[0]
    return norms.reshape(n_prompts, n_gen, spec.computed_steps).cpu().numpy()


def _auto_prompt_batch(model: AuditModel, spec: ScoringSpec, noise: torch.Tensor) -> int:
    """Prompts per scoring batch; the GPU probe is one later-step call for one prompt."""

    def probe() -> None:
        sample = torch.cat([noise, noise])
        embeddings = model.encode([""]).expand(sample.shape[0], -1, -1)
        unet_eps(model, sample, torch.tensor(999, device=model.device), embeddings)

    elements = 2 * spec.generations * math.prod(model.latent_shape)
    return auto_batch(model, elements, _MAX_AUTO_PROMPTS, probe, _GPU_MEMORY_SHARE)


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def score_prompts(
    model: AuditModel,
    prompt_ids: Sequence[str],
    texts: Sequence[str],
    spec: ScoringSpec,
    progress: TextIO | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Score prompts with d_mem; returns (scores table, run statistics).

    The table has one row per prompt, in input order: ``prompt_id``, ``d_mem`` (float64, over
    ``spec.window``), ``norms`` (float32 list, generations × computed steps, row-major),
    ``n_generations`` and ``n_steps`` (int64; also in ``df.attrs``). ``progress`` is a stream
    for a tqdm bar (prompts/s), or None for no bar.

    On a GPU a batch that raises an out-of-memory error is re-run with half as many prompts
    (and the halved size is kept); the statistics say how often that happened, the final
    batch size and the peak memory (CPU RSS, GPU max allocated).
    """
    prompt_ids, texts = list(prompt_ids), list(texts)
    if len(prompt_ids) != len(texts):
        raise ValueError(f"{len(prompt_ids)} prompt ids but {len(texts)} texts")
    seen: set[str] = set()
    duplicates = sorted({p for p in prompt_ids if p in seen or seen.add(p)})
    if duplicates:
        raise ValueError(f"{len(duplicates)} duplicate prompt_id(s), e.g. {duplicates[0]!r}")
    device = model.device if isinstance(model.device, torch.device) else torch.device(model.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    start_time = time.perf_counter()
    noise = initial_noise(model.latent_shape, spec.generations, spec.seed, device)
    with torch.no_grad():
        uncond = model.encode([""])
        if spec.batch_size != "auto":
            batch = int(spec.batch_size)
        else:
            batch = _auto_prompt_batch(model, spec, noise)
    batch = max(1, min(batch, len(texts))) if texts else batch
    initial_batch = batch
    counters = {"unet_calls": 0, "unet_rows": 0}
    bar = tqdm(
        total=len(texts), unit="prompt", desc="d_mem", file=progress, disable=progress is None
    )

    def step(position: int, size: int) -> np.ndarray:
        cond = model.encode(texts[position : position + size])
        return score_embeddings(model, cond, spec, noise, uncond, counters)

    with torch.no_grad():
        results, batch, halvings = run_halving_batches(
            len(texts),
            batch,
            step,
            "prompts per batch",
            "out of GPU memory scoring a single prompt; use a smaller model dtype or fewer "
            "generations",
            progress,
            bar,
        )
    bar.close()
    seconds = time.perf_counter() - start_time
    start, stop = spec.window_bounds()
    all_norms = (
        np.concatenate(results)
        if results
        else np.zeros((0, spec.generations, spec.computed_steps), dtype=np.float32)
    )
    d_mem = all_norms[..., start:stop].astype(np.float64).mean(axis=(-2, -1))
    table = pd.DataFrame(
        {
            "prompt_id": pd.Series(prompt_ids, dtype=object),
            "d_mem": d_mem.astype(np.float64),
            "norms": [row.reshape(-1).astype(np.float32) for row in all_norms],
            "n_generations": np.full(len(texts), spec.generations, dtype=np.int64),
            "n_steps": np.full(len(texts), spec.computed_steps, dtype=np.int64),
        }
    )
    table.attrs.update(
        {
            "n_generations": spec.generations,
            "n_steps": spec.computed_steps,
            "window": [start, stop],
            "guidance": float(spec.guidance),
            "seed": spec.seed,
            "scheduler_steps": spec.steps,
        }
    )
    stats: dict[str, Any] = {
        "n_prompts": len(texts),
        "n_generations": spec.generations,
        "n_steps": spec.computed_steps,
        "scheduler_steps": spec.steps,
        "window": [start, stop],
        "guidance": float(spec.guidance),
        "seed": spec.seed,
        "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "batch_size_initial": initial_batch,
        "batch_size_final": batch,
        "oom_halvings": halvings,
        "unet_calls": counters["unet_calls"],
        "unet_rows": counters["unet_rows"],
        "seconds": seconds,
        "prompts_per_s": len(texts) / seconds if seconds > 0 else float("nan"),
        "peak_cpu_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None,
    }
    return table, stats


def score_chunk(
    model: AuditModel,
    prompts: pd.DataFrame,
    index: int,
    total: int,
    spec: ScoringSpec,
    path: str | Path,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Score chunk ``index`` of ``total`` of a prompts table and write it atomically to ``path``.

    Returns the run statistics of :func:`score_prompts` plus the chunk position.
    """
    for column in ("prompt_id", "text"):
        if column not in prompts.columns:
            raise ValueError(f"prompts table has no {column!r} column")
    chunk = select_chunk(prompts, index, total)
    scores, stats = score_prompts(
        model, chunk["prompt_id"].tolist(), chunk["text"].tolist(), spec, progress
    )
    atomic_parquet(scores, path)
    stats.update({"chunk_index": index, "chunk_total": total})
    return stats
