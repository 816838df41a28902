"""The synthetic set: prompts drawn by report frequency, x_T of each image, generation.

Reproducibility choices:

- the draw depends only on (seed, the texts table's content): the table is sorted by
  ``prompt_id`` first, so its row order changes nothing, and draw j uses the j-th uniform of
  one generator seeded by ``hashed_seed("memaudit-synthetic", seed)``, so a larger
  ``n_images`` keeps the first images' prompts;
- x_T of image j is drawn alone from (seed, j) (:func:`image_noise`), so the chunk an image
  falls in, and the batch it is computed in, draw nothing differently (the images then agree
  to float rounding: kernels may round differently for another batch shape).
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

from memaudit.batching import run_halving_batches
from memaudit.diffusion import initial_noise, sample_images, to_uint8
from memaudit.mitigation.generation import auto_image_batch, encode_texts
from memaudit.model.loading import AuditModel
from memaudit.seeds import TORCH_SEED_MASK, hashed_seed
from memaudit.synthetic.chunks import DRAW_COLUMNS, write_chunk
from memaudit.synthetic.spec import SyntheticSpec

# --------------------------------------------------------------------------------------------
# The draw and the starting noise
# --------------------------------------------------------------------------------------------


def synthetic_seed(seed: int) -> int:
    """The 63-bit seed of the synthetic set: its prompt draw and (through it) every x_T."""
    return hashed_seed("memaudit-synthetic", seed) & TORCH_SEED_MASK


def draw_prompts(
    texts: pd.DataFrame, n_images: int, seed: int, source: str = "the texts table"
) -> pd.DataFrame:
    """``n_images`` prompts drawn with replacement, each with probability ∝ ``n_reports``.

    ``texts`` has ``prompt_id``, ``text`` and ``n_reports`` (how many reports carry the text);
    ``source`` names it in errors (e.g. its file). Returns one row per image: ``image``
    (0..n_images-1), ``prompt_id``, ``text``, ``n_reports``. Row order of ``texts`` changes
    nothing (it is sorted by prompt id); draw j depends on (seed, table, j) only.
    """
    # 1. Check the table
    missing = [c for c in ("prompt_id", "text", "n_reports") if c not in texts.columns]
    if missing:
        raise ValueError(f"{source} has no {', '.join(map(repr, missing))} column(s)")
    if len(texts) == 0:
        raise ValueError(f"{source} has no prompts: there is nothing to draw a synthetic set from")
    if not isinstance(n_images, int) or n_images < 1:
        raise ValueError(f"synthetic.n_images must be a positive integer, got {n_images!r}")
    duplicated = texts["prompt_id"].duplicated()
    if duplicated.any():
        first = texts.loc[duplicated, "prompt_id"].iloc[0]
        raise ValueError(f"{source} lists prompt_id {first!r} more than once")
    counts = pd.to_numeric(texts["n_reports"], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(counts) | (counts < 0) | (counts != np.round(counts))
    if bad.any():
        value = texts["n_reports"].to_numpy()[np.flatnonzero(bad)[0]]
        raise ValueError(
            f"{source}: n_reports must be whole numbers >= 0, found {value!r} "
            f"({int(bad.sum())} bad row(s))"
        )
    if counts.sum() <= 0:
        raise ValueError(f"{source}: every n_reports is 0, so no prompt can be drawn")
    # 2. Inverse-CDF draw over the texts sorted by id
    ordered = texts.sort_values("prompt_id", kind="mergesort").reset_index(drop=True)
    weights = pd.to_numeric(ordered["n_reports"]).to_numpy().astype(np.int64)
    cumulative = np.cumsum(weights)
    uniforms = np.random.default_rng(synthetic_seed(seed)).random(n_images)
    rows = np.searchsorted(cumulative, uniforms * cumulative[-1], side="right")
    rows = np.minimum(rows, int(np.flatnonzero(weights)[-1]))  # u * total rounded up to total
    drawn = ordered.iloc[rows].reset_index(drop=True)
    return pd.DataFrame(
        {
            "image": np.arange(n_images, dtype=np.int64),
            "prompt_id": drawn["prompt_id"].astype(str).to_numpy(dtype=object),
            "text": drawn["text"].astype(str).to_numpy(dtype=object),
            "n_reports": weights[rows],
        },
        columns=list(DRAW_COLUMNS),
    )


def image_noise(
    latent_shape: Sequence[int],
    images: Sequence[int],
    seed: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """x_T [len(images), C, h, w] float32 of the given image indices, each drawn alone.

    Row j is :func:`memaudit.diffusion.initial_noise`'s row j for the seed
    :func:`synthetic_seed` (seed): the same wherever image j is generated.
    """
    return initial_noise(latent_shape, list(images), synthetic_seed(seed), device)


def chunk_bounds(n_images: int, index: int, total: int) -> tuple[int, int]:
    """Images [lo, hi) of chunk ``index`` of ``total``: contiguous, balanced slices."""
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"chunk total must be a positive integer, got {total!r}")
    if not isinstance(index, int) or not 0 <= index < total:
        raise ValueError(f"chunk index must be in [0, {total}), got {index!r}")
    bounds = np.linspace(0, n_images, total + 1).round().astype(int)
    return int(bounds[index]), int(bounds[index + 1])


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def generate_images(
    model: AuditModel,
    draws: pd.DataFrame,
    spec: SyntheticSpec,
    progress: TextIO | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One image per row of ``draws`` (``image``, ``text``): uint8 [rows, H, W] and statistics.

    Each distinct text is encoded once; images are batched (``spec.batch_size`` per UNet call,
    or auto) and a batch that runs out of GPU memory is retried with half as many. Image j
    depends only on its text and x_T of (seed, j), never on the batch it was computed in.
    """
    # 1. Conditioning and starting noise
    n, side = len(draws), int(model.image_size)
    texts = sorted(set(draws["text"]))
    position = {text: i for i, text in enumerate(texts)}
    which = torch.tensor([position[t] for t in draws["text"]], dtype=torch.long)
    start = time.perf_counter()
    cond = encode_texts(model, texts)
    uncond = model.encode([""])
    noise = image_noise(model.latent_shape, draws["image"].tolist(), spec.seed, model.device)
    batch = auto_image_batch(model) if spec.batch_size == "auto" else int(spec.batch_size)
    # 2. Guided DDIM in batches, halved on out-of-memory
    out = np.zeros((n, side, side), dtype=np.uint8)
    bar = tqdm(total=n, unit="img", desc="synthesize", file=progress, disable=progress is None)
    t0 = time.perf_counter()

    def step(lo: int, size: int) -> None:
        rows = which[lo : lo + size].to(cond.device)
        images = sample_images(
            model, cond[rows], noise[lo : lo + size], uncond, spec.steps, spec.guidance
        )
        if images.shape[-2:] != (side, side):
            raise ValueError(
                f"decoded images are {tuple(images.shape[-2:])}, expected the model's "
                f"image_size {side}"
            )
        out[lo : lo + size] = to_uint8(images)

    _, batch_final, halvings = run_halving_batches(
        n,
        batch,
        step,
        "images per batch",
        "out of GPU memory generating a single image",
        progress,
        bar,
    )
    bar.close()
    seconds = time.perf_counter() - t0
    stats = {
        "images": n,
        "distinct_prompts": len(texts),
        "steps": spec.steps,
        "guidance": spec.guidance,
        "image_size": side,
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "batch_size": batch,
        "batch_size_final": batch_final,
        "oom_halvings": halvings,
        "generation_seconds": seconds,
        "images_per_s": n / seconds if seconds > 0 and n else None,
        "total_seconds": time.perf_counter() - start,
    }
    return out, stats


def generate_chunk(
    model: AuditModel,
    texts: pd.DataFrame,
    index: int,
    total: int,
    spec: SyntheticSpec,
    images_path: str | Path,
    index_path: str | Path,
    source: str = "the texts table",
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Draw the whole set, generate chunk ``index`` of ``total`` and write it atomically.

    Every chunk draws all ``spec.n_images`` prompts (cheap) and generates its slice of image
    indices (:func:`chunk_bounds`); a chunk may be empty when there are more chunks than
    images. Returns the generation statistics with the chunk's place.
    """
    draws = draw_prompts(texts, spec.n_images, spec.seed, source)
    lo, hi = chunk_bounds(spec.n_images, index, total)
    part = draws.iloc[lo:hi].reset_index(drop=True)
    images, stats = generate_images(model, part, spec, progress)
    write_chunk(part, images, images_path, index_path)
    stats.update({"chunk_index": index, "chunk_total": total, "first_image": lo, "end_image": hi})
    return stats
