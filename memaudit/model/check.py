"""The demo model's memorization check: do planted captions reproduce their image?"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

from memaudit.diffusion import sample_images, to_uint8
from memaudit.model.artifacts import Generations
from memaudit.model.loading import AuditModel


def checked_prompts(
    truth: pd.DataFrame, captions: list[str], n_ordinary: int
) -> tuple[list[str], list[str]]:
    """(planted, ordinary) captions to generate.

    Planted captions that occur among the training ``captions``, in ``planted_id`` order; the
    ``n_ordinary`` most frequent non-planted training captions (ties by text).
    """
    present = set(captions)
    planted = [t for t in truth.sort_values("planted_id")["text"] if t in present]
    counts = pd.Series(captions).value_counts()
    truth_texts = set(truth["text"])
    ordinary = sorted(
        (c for c in counts.index if c not in truth_texts), key=lambda c: (-int(counts[c]), c)
    )
    return planted, ordinary[:n_ordinary]


def first_rows(captions: list[str], texts: list[str]) -> np.ndarray:
    """For each text, the index of its first occurrence among the training ``captions``."""
    first = {c: i for i, c in reversed(list(enumerate(captions)))}
    return np.array([first[t] for t in texts], dtype=np.int64)


@torch.no_grad()
def generate_images(
    model: AuditModel,
    prompts: list[str],
    seeds: list[int],
    steps: int = 50,
    guidance: float = 7.5,
    batch_size: int = 32,
) -> np.ndarray:
    """Every prompt with every seed, by the shared guided DDIM sampler (eta 0).

    Returns float32 [len(prompts) * len(seeds), H, W] in [0, 1], prompt-major (all seeds of
    the first prompt first). The starting noise of seed s is ``torch.randn`` from a generator
    seeded with s itself (not :func:`memaudit.diffusion.initial_noise`), as the check has
    always drawn it, so its published numbers stay reproducible.
    """
    jobs = [(p, s) for p in prompts for s in seeds]
    uncond = model.encode([""])
    out = []
    for lo in range(0, len(jobs), batch_size):
        chunk = jobs[lo : lo + batch_size]
        cond = model.encode([p for p, _ in chunk])
        noise = torch.stack(
            [
                torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(int(s)))
                for _, s in chunk
            ]
        )
        out.append(sample_images(model, cond, noise, uncond, steps, guidance).numpy())
    return np.concatenate(out).astype(np.float32)


def distinct_image_ids(images: np.ndarray) -> np.ndarray:
    """Id of every image row; identical images (a planted caption's copies) share one, and
    ids number the distinct images in order of first appearance."""
    image_ids: dict[bytes, int] = {}
    return np.array(
        [image_ids.setdefault(im.tobytes(), len(image_ids)) for im in images], dtype=np.int64
    )


def nearest_training_images(
    generated: np.ndarray, images: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each generation's nearest training image by pixel correlation (cosine similarity of
    the mean-removed pixels); identical training images (a planted caption's copies) are one.

    ``generated`` [G, H, W] in [0, 1]; ``images`` [N, H, W] (uint8 or in [0, 1]). Returns
    (similarity [G], id of the nearest distinct image [G], distinct-image id of every
    training row [N]; ids number the distinct images in order of first appearance).
    """
    from memaudit.copy_detection.embedding import pixel_embedding
    from memaudit.copy_detection.search import nearest_neighbours

    images = np.asarray(images)
    row_image = distinct_image_ids(images)
    pixels = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    similarity, nearest_row = nearest_neighbours(
        pixel_embedding(generated), pixel_embedding(pixels)
    )
    return similarity, row_image[nearest_row], row_image


def _seed_agreement(hits: np.ndarray) -> float:
    """Share of seed pairs whose generations have the same nearest training image."""
    n = len(hits)
    pairs = n * (n - 1) / 2
    if not pairs:
        return float("nan")
    return sum(int(hits[a] == hits[b]) for a in range(n) for b in range(a + 1, n)) / pairs


def _prompt_table(
    prompts: list[str],
    n_planted: int,
    nearest_image: np.ndarray,
    similarity: np.ndarray,
    own_image: np.ndarray,
) -> pd.DataFrame:
    """One row per prompt: kind, own-image rate (planted only), seed agreement, similarity."""
    rows = []
    for i, prompt in enumerate(prompts):
        planted = i < n_planted
        hits = nearest_image[i]
        rows.append(
            {
                "kind": "planted" if planted else "ordinary",
                "text": prompt,
                "own_nearest_rate": float(np.mean(hits == own_image[i]))
                if planted
                else float("nan"),
                "seed_agreement": _seed_agreement(hits),
                "mean_similarity": float(similarity[i].mean()),
            }
        )
    return pd.DataFrame(rows)


def _summary(
    table: pd.DataFrame, seeds: tuple[int, ...], steps: int, guidance: float, n_images: int
) -> dict[str, Any]:
    plant = table[table["kind"] == "planted"]
    ordin = table[table["kind"] == "ordinary"]

    def mean(frame: pd.DataFrame, column: str) -> float | None:
        return float(frame[column].mean()) if len(frame) else None

    return {
        "seeds": list(seeds),
        "steps": steps,
        "guidance": guidance,
        "n_planted": len(plant),
        "n_ordinary": len(ordin),
        "n_training_images": n_images,
        "planted_own_nearest_rate": mean(plant, "own_nearest_rate"),
        "planted_reproduced_fraction": float((plant["own_nearest_rate"] >= 0.5).mean())
        if len(plant)
        else None,
        "planted_seed_agreement": mean(plant, "seed_agreement"),
        "ordinary_seed_agreement": mean(ordin, "seed_agreement"),
        "planted_mean_similarity": mean(plant, "mean_similarity"),
        "ordinary_mean_similarity": mean(ordin, "mean_similarity"),
    }


def check_memorization(
    model: AuditModel,
    truth: pd.DataFrame,
    captions: list[str],
    images: np.ndarray,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    n_ordinary: int = 20,
    steps: int = 50,
    guidance: float = 7.5,
) -> tuple[dict[str, Any], pd.DataFrame, Generations]:
    """Does the demo model reproduce its planted images, and only those?

    Generates every planted caption and the ``n_ordinary`` most frequent ordinary captions with
    every seed and finds each generation's nearest training image (cosine similarity of the
    mean-removed pixels, i.e. correlation). Identical training images (the copies of a planted
    caption) count as one image. Per generation it records whether the nearest image is the
    prompt's own planted image; per prompt, how often two seeds land on the same training image
    (``seed_agreement``): a memorized caption sends every seed to its one image, an ordinary
    caption spreads over many. Returns (summary, per-prompt table, the generations as uint8
    beside each prompt's first training image, rows in the table's order).
    """
    # 1. Check inputs and choose the prompts
    images = np.asarray(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions but {len(images)} images")
    planted, ordinary = checked_prompts(truth, captions, n_ordinary)
    prompts = planted + ordinary
    if not prompts:
        raise ValueError("no planted or ordinary caption to check")
    # 2. Generate and find each generation's nearest distinct training image (planted
    #    copies share theirs)
    generated = generate_images(model, prompts, list(seeds), steps=steps, guidance=guidance)
    similarity, nearest_image, row_image = nearest_training_images(generated, images)
    nearest_image = nearest_image.reshape(len(prompts), len(seeds))
    similarity = similarity.reshape(len(prompts), len(seeds))
    # 3. Per-prompt table and summary
    first = first_rows(captions, prompts)
    table = _prompt_table(prompts, len(planted), nearest_image, similarity, row_image[first])
    n_images = int(row_image.max()) + 1 if len(row_image) else 0
    summary = _summary(table, tuple(seeds), steps, guidance, n_images)
    side = generated.shape[-2:]
    generations = Generations(
        texts=prompts,
        kinds=table["kind"].tolist(),
        images=to_uint8(generated).reshape(len(prompts), len(seeds), *side),
        training=images[first],
        seeds=tuple(int(s) for s in seeds),
        steps=steps,
        guidance=guidance,
    )
    return summary, table, generations
