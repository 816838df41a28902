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

import copy
import dataclasses
import hashlib
import math
import resource
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memaudit.atomic import atomic_parquet
from memaudit.models import AuditModel
from memaudit.scores import select_chunk

# Keys of the config ``scoring`` block that belong to the workflow, not to the score itself.
WORKFLOW_KEYS = frozenset({"chunks"})
# CPU "auto" batch: aim for this many latent elements per UNet call (rows × C × h × w).
_CPU_AUTO_ELEMENTS = 2**18
# GPU "auto" batch: share of the free memory the batch may use (the rest is headroom).
_GPU_MEMORY_SHARE = 0.8
_MAX_AUTO_PROMPTS = 4096


@dataclass(frozen=True)
class ScoringSpec:
    """How d_mem is computed.

    ``window`` is a half-open range [start, stop) of sampling steps (0 = the first, noisiest
    step); ``stop=None`` means all ``steps``. ``batch_size`` counts prompts per UNet call
    (each prompt brings ``generations`` × 2 rows) or is ``"auto"``.
    """

    steps: int = 50
    guidance: float = 7.5
    generations: int = 4
    window: tuple[int, int | None] = (0, None)
    batch_size: int | str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"scoring.steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.generations, int) or self.generations < 1:
            raise ValueError(
                f"scoring.generations must be a positive integer, got {self.generations!r}"
            )
        if not isinstance(self.guidance, (int, float)) or not math.isfinite(self.guidance):
            raise ValueError(f"scoring.guidance must be a finite number, got {self.guidance!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"scoring.seed must be an integer, got {self.seed!r}")
        batch = self.batch_size
        if batch != "auto" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise ValueError(
                f"scoring.batch_size must be 'auto' or a positive integer, got {batch!r}"
            )
        window = tuple(self.window)
        if len(window) != 2:
            raise ValueError(f"scoring.window must be [start, stop], got {self.window!r}")
        object.__setattr__(self, "window", window)
        start, stop = self.window_bounds()
        if not 0 <= start < stop <= self.steps:
            raise ValueError(
                f"scoring.window {list(self.window)} must satisfy 0 <= start < stop <= steps "
                f"({self.steps})"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ScoringSpec:
        """Build from a config ``scoring`` block; unknown keys are an error naming them.

        The workflow-level key ``chunks`` is accepted and ignored.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - WORKFLOW_KEYS)
        if unknown:
            raise ValueError(f"unknown scoring key(s) {unknown}; expected some of {sorted(known)}")
        kwargs = {k: v for k, v in values.items() if k in known}
        if "window" in kwargs:
            window = kwargs["window"]
            if not isinstance(window, (list, tuple)):
                raise ValueError(f"scoring.window must be [start, stop], got {window!r}")
            kwargs["window"] = tuple(window)
        return cls(**kwargs)

    def window_bounds(self) -> tuple[int, int]:
        """The window as concrete (start, stop) step indices."""
        start, stop = self.window
        if not isinstance(start, int) or (stop is not None and not isinstance(stop, int)):
            raise ValueError(f"scoring.window bounds must be integers, got {self.window!r}")
        return start, self.steps if stop is None else stop

    @property
    def computed_steps(self) -> int:
        """How many sampling steps are run: up to the end of the window, never further."""
        return self.window_bounds()[1]


def noise_seed(seed: int, generation: int) -> int:
    """Seed of the torch generator that draws x_T for generation ``generation``."""
    digest = hashlib.sha256(f"memaudit-noise:{seed}:{generation}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def initial_noise(
    latent_shape: Sequence[int], generations: int, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """x_T for every generation, [generations, C, h, w] float32, drawn on CPU then moved.

    Row j depends only on (seed, j), so it is the same on every machine and for every prompt.
    """
    rows = []
    for j in range(generations):
        generator = torch.Generator(device="cpu").manual_seed(noise_seed(seed, j))
        rows.append(torch.randn(tuple(latent_shape), generator=generator, dtype=torch.float32))
    return torch.stack(rows).to(device)


def unet_eps(
    model: AuditModel, sample: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor
) -> torch.Tensor:
    """One UNet call in the model dtype; the prediction comes back as float32."""
    out = model.unet(
        sample.to(model.dtype), timestep, encoder_hidden_states=embeddings, return_dict=False
    )[0]
    return out.float()


def fresh_scheduler(model: AuditModel, steps: int, device: torch.device) -> Any:
    """A private copy of the model's scheduler with ``steps`` inference timesteps."""
    scheduler = copy.deepcopy(model.scheduler)
    scheduler.set_timesteps(steps, device=device)
    return scheduler


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


def auto_batch(
    model: AuditModel, unit_elements: int, cap: int, probe: Callable[[], Any], share: float
) -> int:
    """How many work units (a prompt's rows, an image) one batch may hold.

    On CPU: a fixed budget of latent elements per UNet call (``unit_elements`` per unit). On a
    GPU: ``probe()`` runs one unit; the peak memory it takes above what was allocated before
    sets how many units fit in ``share`` of the free memory. Over-estimates are caught later by
    halving on out-of-memory errors.
    """
    device = torch.device(model.device)
    if device.type != "cuda":
        return max(1, min(cap, _CPU_AUTO_ELEMENTS // unit_elements))
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        probe()
    torch.cuda.synchronize(device)
    per_unit = max(1, torch.cuda.max_memory_allocated(device) - base)
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(share * free // per_unit)))


def _auto_prompt_batch(model: AuditModel, spec: ScoringSpec, noise: torch.Tensor) -> int:
    """Prompts per scoring batch; the GPU probe is one later-step call for one prompt."""

    def probe() -> None:
        sample = torch.cat([noise, noise])
        embeddings = model.encode([""]).expand(sample.shape[0], -1, -1)
        unet_eps(model, sample, torch.tensor(999, device=model.device), embeddings)

    elements = 2 * spec.generations * math.prod(model.latent_shape)
    return auto_batch(model, elements, _MAX_AUTO_PROMPTS, probe, _GPU_MEMORY_SHARE)


def run_halving_batches(
    total: int,
    batch: int,
    step: Callable[[int, int], Any],
    unit: str,
    single_error: str,
    progress: TextIO | None = None,
    bar: tqdm | None = None,
) -> tuple[list[Any], int, int]:
    """Run ``step(position, size)`` over items [0, total) in batches of at most ``batch``.

    A batch that raises a CUDA out-of-memory error is re-run with half as many items, and the
    halved size is kept for the rest of the pass; a single item that does not fit raises
    RuntimeError(``single_error``). ``unit`` names the batch in the log line (e.g. "prompts per
    batch"). Returns (the step results in order, the final batch size, the number of halvings).
    """
    parts: list[Any] = []
    halvings, position = 0, 0
    while position < total:
        size = min(batch, total - position)
        failed = False
        try:
            part = step(position, size)
        except torch.cuda.OutOfMemoryError as err:
            if size == 1:
                raise RuntimeError(single_error) from err
            failed = True
        if failed:
            # Outside the except clause, so the failed batch's tensors are released.
            batch, halvings = max(1, size // 2), halvings + 1
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
            tqdm.write(
                f"out of memory with {size} {unit}; retrying with {batch}",
                file=progress or sys.stderr,
            )
            continue
        parts.append(part)
        position += size
        if bar is not None:
            bar.update(size)
    return parts, batch, halvings


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
