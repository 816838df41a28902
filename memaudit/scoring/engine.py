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
- the trajectory is the shared sampler :func:`memaudit.diffusion.guided_ddim` (the one that
  mitigation and the demo model's check generate with); it stops as soon as the last step of
  the window is scored (a first-step score costs one UNet call per batch); images are never
  decoded;
- the per-step norms (generations × computed steps) are kept, so other windows need no re-run
  (:func:`d_mem_from_norms`).
"""

from __future__ import annotations

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
from memaudit.batching import auto_batch_size, run_halving_batches
from memaudit.diffusion import GuidedStep, guided_ddim, initial_noise
from memaudit.model.loading import AuditModel
from memaudit.scoring.attention import cross_attention_layers
from memaudit.scoring.detectors.base import Cost, PromptBatch, clock, run_trajectory
from memaudit.scoring.detectors.registry import DETECTORS
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
    n_prompts, n_gen = cond.shape[0], spec.generations
    rows = n_prompts * n_gen
    norms = torch.empty(rows, spec.computed_steps, dtype=torch.float32, device=model.device)

    def record(step: GuidedStep) -> None:
        counters["unet_calls"] += 1
        counters["unet_rows"] += step.unet_rows
        norms[:, step.index] = (step.eps_cond - step.eps_uncond).flatten(1).norm(dim=1)

    guided_ddim(
        model,
        cond.repeat_interleave(n_gen, dim=0),  # row i*n_gen + j = prompt i, generation j
        noise.repeat(n_prompts, 1, 1, 1),
        uncond,
        spec.steps,
        spec.guidance,
        stop=spec.computed_steps,
        noise_period=n_gen,  # all prompts share x_T^j: one unconditional row per generation
        on_step=record,
    )
    return norms.reshape(n_prompts, n_gen, spec.computed_steps).cpu().numpy()


def _peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports ru_maxrss in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024 if sys.platform != "darwin" else peak / 2**20


def _check_prompts(prompt_ids: list[str], texts: list[str]) -> None:
    if len(prompt_ids) != len(texts):
        raise ValueError(f"{len(prompt_ids)} prompt ids but {len(texts)} texts")
    seen: set[str] = set()
    duplicates = sorted({p for p in prompt_ids if p in seen or seen.add(p)})
    if duplicates:
        raise ValueError(f"{len(duplicates)} duplicate prompt_id(s), e.g. {duplicates[0]!r}")


def _initial_batch(
    model: AuditModel, spec: ScoringSpec, n_prompts: int, rows_per_generation: int = 2
) -> int:
    """Prompts per batch: the configured number, or sized by :func:`auto_batch_size` (a prompt
    brings generations x ``rows_per_generation`` UNet rows per call), never more than there are
    prompts."""
    if spec.batch_size == "auto":
        rows = rows_per_generation * spec.generations
        batch = auto_batch_size(model, rows, _MAX_AUTO_PROMPTS, _GPU_MEMORY_SHARE)
    else:
        batch = int(spec.batch_size)
    return max(1, min(batch, n_prompts)) if n_prompts else batch


def _start_run(model: AuditModel, spec: ScoringSpec) -> tuple[torch.device, torch.Tensor, float]:
    """(device, x_T of the generations, start time) of a scoring run; GPU peak memory is reset
    so that the run's statistics report its own peak."""
    device = model.device if isinstance(model.device, torch.device) else torch.device(model.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start_time = time.perf_counter()
    return (
        device,
        initial_noise(model.latent_shape, spec.generations, spec.seed, device),
        start_time,
    )


def _run_statistics(
    model: AuditModel,
    device: torch.device,
    spec: ScoringSpec,
    n_prompts: int,
    n_steps: int,
    batch_sizes: tuple[int, int],
    halvings: int,
    seconds: float,
    counts: dict[str, Any],
) -> dict[str, Any]:
    """The statistics every scoring run reports: settings, device, batch sizes (initial,
    final) and out-of-memory halvings, ``counts`` (what the run counted), time and peak
    memory (CPU RSS, GPU max allocated)."""
    return {
        "n_prompts": n_prompts,
        "n_generations": spec.generations,
        "n_steps": n_steps,
        "scheduler_steps": spec.steps,
        "window": list(spec.window_bounds()),
        "guidance": float(spec.guidance),
        "seed": spec.seed,
        "device": str(device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "batch_size_initial": batch_sizes[0],
        "batch_size_final": batch_sizes[1],
        "oom_halvings": halvings,
        **counts,
        "seconds": seconds,
        "prompts_per_s": n_prompts / seconds if seconds > 0 else float("nan"),
        "peak_cpu_rss_mb": _peak_rss_mb(),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else None,
    }


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
    # 1. Check inputs, prepare x_T, e_∅ and the batch size
    prompt_ids, texts = list(prompt_ids), list(texts)
    _check_prompts(prompt_ids, texts)
    device, noise, start_time = _start_run(model, spec)
    with torch.no_grad():
        uncond = model.encode([""])
        initial_batch = _initial_batch(model, spec, len(texts))
    # 2. Score the prompts batch by batch
    counters = {"unet_calls": 0, "unet_rows": 0}
    all_norms, batch, halvings = _score_batches(
        model, texts, spec, noise, uncond, initial_batch, counters, progress
    )
    seconds = time.perf_counter() - start_time
    # 3. Assemble the table and the statistics
    table = _scores_table(prompt_ids, all_norms, spec)
    stats = _run_statistics(
        model,
        device,
        spec,
        len(texts),
        spec.computed_steps,
        (initial_batch, batch),
        halvings,
        seconds,
        {"unet_calls": counters["unet_calls"], "unet_rows": counters["unet_rows"]},
    )
    return table, stats


def _score_batches(
    model: AuditModel,
    texts: list[str],
    spec: ScoringSpec,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    batch: int,
    counters: dict[str, int],
    progress: TextIO | None,
) -> tuple[np.ndarray, int, int]:
    """Norms [prompts, gens, steps] of every text, ``batch`` prompts per batch, halved on
    out-of-memory errors; returns (norms, final batch size, halvings)."""
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
    if not results:
        return (
            np.zeros((0, spec.generations, spec.computed_steps), dtype=np.float32),
            batch,
            halvings,
        )
    return np.concatenate(results), batch, halvings


def _scores_table(prompt_ids: list[str], all_norms: np.ndarray, spec: ScoringSpec) -> pd.DataFrame:
    """The scores table of :func:`score_prompts` from the norms [prompts, gens, steps]."""
    start, stop = spec.window_bounds()
    n_steps = int(all_norms.shape[-1])
    d_mem = all_norms[..., start:stop].astype(np.float64).mean(axis=(-2, -1))
    n = len(prompt_ids)
    table = pd.DataFrame(
        {
            "prompt_id": pd.Series(prompt_ids, dtype=object),
            "d_mem": d_mem.astype(np.float64),
            "norms": [row.reshape(-1).astype(np.float32) for row in all_norms],
            "n_generations": np.full(n, spec.generations, dtype=np.int64),
            "n_steps": np.full(n, n_steps, dtype=np.int64),
        }
    )
    table.attrs.update(
        {
            "n_generations": spec.generations,
            "n_steps": n_steps,
            "window": [start, stop],
            "guidance": float(spec.guidance),
            "seed": spec.seed,
            "scheduler_steps": spec.steps,
        }
    )
    return table


def detect_prompts(
    model: AuditModel,
    prompt_ids: Sequence[str],
    texts: Sequence[str],
    spec: ScoringSpec,
    progress: TextIO | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run every detector of ``spec.detectors`` on the prompts; returns (table, statistics).

    The table is :func:`score_prompts`' (``d_mem`` is Wen's, with its per-step ``norms``; the
    trajectory runs as far as the furthest-reaching detector needs) plus one float64 column
    ``score_<detector>`` per detector and ``score``, the primary detector's. Every detector sees
    the same batches and the same x_T^j (a function of (seed, j) alone), and the trajectory
    detectors share one guided pass per batch, so no score depends on chunking or batch size.
    The statistics add, per detector, its UNet forward rows, derivative rows and seconds (a
    trajectory detector is charged the steps it reads, as if it ran alone).
    """

    prompt_ids, texts = list(prompt_ids), list(texts)
    _check_prompts(prompt_ids, texts)
    modules = [DETECTORS[name] for name in spec.detectors]
    if any(m.NEEDS.cross_attention for m in modules):
        cross_attention_layers(model.unet)  # fail now, naming the reason, not mid-chunk
    steps = max(m.NEEDS.trajectory_steps(spec) for m in modules if m.NEEDS.trajectory_steps)
    device, noise, start_time = _start_run(model, spec)
    with torch.no_grad():
        uncond = model.encode([""])
        # a JVP carries tangents beside the rows: budget twice the memory per row
        per_generation = 4 if any(m.NEEDS.gradients for m in modules) else 2
        initial_batch = _initial_batch(model, spec, len(texts), per_generation)
    costs = {m.NAME: Cost() for m in modules}
    bar = tqdm(
        total=len(texts),
        unit="prompt",
        desc="detectors",
        file=progress,
        disable=progress is None,
    )

    def step(position: int, size: int) -> tuple[np.ndarray, dict[str, np.ndarray], dict]:
        began = clock(device)
        with torch.no_grad():
            ids = model.tokenize(texts[position : position + size])["input_ids"]
            cond = model.encode_ids(ids)
        batch = PromptBatch(model, ids, cond, noise, uncond, spec, clock(device) - began)
        attention = {m.NAME: m.NEEDS.attention(batch) for m in modules if m.NEEDS.attention}
        squares = any(m.NEEDS.squared_differences for m in modules)
        batch.trajectory = run_trajectory(batch, steps, attention, squares)
        outputs = {m.NAME: m.score(batch) for m in modules}
        return (
            batch.trajectory.norms.cpu().numpy(),
            {name: out.scores for name, out in outputs.items()},
            {name: out.cost for name, out in outputs.items()},
        )

    results, batch_size, halvings = run_halving_batches(
        len(texts),
        initial_batch,
        step,
        "prompts per batch",
        "out of GPU memory scoring a single prompt; use a smaller model dtype, fewer "
        "generations or fewer detectors",
        progress,
        bar,
    )
    bar.close()
    for _, _, batch_costs in results:
        for name, cost in batch_costs.items():
            costs[name].add(cost)
    seconds = time.perf_counter() - start_time
    norms = (
        np.concatenate([r[0] for r in results])
        if results
        else np.zeros((0, spec.generations, steps), dtype=np.float32)
    )
    table = _scores_table(prompt_ids, norms, spec)
    for m in modules:
        column = np.concatenate([r[1][m.NAME] for r in results]) if results else np.zeros(0)
        table[f"score_{m.NAME}"] = column.astype(np.float64)
    table["score"] = table[f"score_{spec.primary}"].to_numpy(dtype=np.float64)
    table.attrs.update({"detectors": list(spec.detectors), "primary": spec.primary})
    stats = _run_statistics(
        model,
        device,
        spec,
        len(texts),
        steps,
        (initial_batch, batch_size),
        halvings,
        seconds,
        {
            "detectors": {name: cost.as_dict() for name, cost in costs.items()},
            "primary": spec.primary,
        },
    )
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

    Every detector of ``spec.detectors`` runs (:func:`detect_prompts`). Returns the run
    statistics plus the chunk position.
    """
    for column in ("prompt_id", "text"):
        if column not in prompts.columns:
            raise ValueError(f"prompts table has no {column!r} column")
    chunk = select_chunk(prompts, index, total)
    scores, stats = detect_prompts(
        model, chunk["prompt_id"].tolist(), chunk["text"].tolist(), spec, progress
    )
    atomic_parquet(scores, path)
    stats.update({"chunk_index": index, "chunk_total": total})
    return stats
