"""The demo model's memorization check: do planted captions reproduce their image?"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pandas as pd
import torch

from memaudit.model.loading import AuditModel


def grid_examples(
    truth: pd.DataFrame,
    captions: list[str],
    images: np.ndarray,
    n_planted: int = 4,
    n_ordinary: int = 3,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Captions for the generation grid: the first planted captions and frequent ordinary ones.

    Planted captions come in ``planted_id`` order; ordinary captions are the most frequent
    non-planted training captions (ties by text). Each comes with its (first) training image
    and a label ``planted`` / ``ordinary``.
    """
    planted = [t for t in truth.sort_values("planted_id")["text"] if t in set(captions)]
    planted = planted[:n_planted]
    counts = pd.Series(captions).value_counts()
    ordinary_pool = sorted(
        (c for c in counts.index if c not in set(truth["text"])),
        key=lambda c: (-int(counts[c]), c),
    )
    ordinary = ordinary_pool[:n_ordinary]
    texts = planted + ordinary
    first = {c: i for i, c in reversed(list(enumerate(captions)))}
    chosen = np.stack([np.asarray(images)[first[t]] for t in texts]) if texts else images[:0]
    return texts, chosen, ["planted"] * len(planted) + ["ordinary"] * len(ordinary)


def check_memorization(
    model: AuditModel,
    truth: pd.DataFrame,
    captions: list[str],
    images: np.ndarray,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    n_ordinary: int = 20,
    steps: int = 50,
    guidance: float = 7.5,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Does the demo model reproduce its planted images, and only those?

    Generates every planted caption and the ``n_ordinary`` most frequent ordinary captions with
    every seed and finds each generation's nearest training image (cosine similarity of the
    mean-removed pixels, i.e. correlation). Identical training images (the copies of a planted
    caption) count as one image. Per generation it records whether the nearest image is the
    prompt's own planted image; per prompt, how often two seeds land on the same training image
    (``seed_agreement``): a memorized caption sends every seed to its one image, an ordinary
    caption spreads over many. Returns (summary, per-prompt table).
    """
    from memaudit.copy_detection.embedding import pixel_embedding
    from memaudit.copy_detection.search import nearest_neighbours

    images = np.asarray(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions but {len(images)} images")
    caption_set = set(captions)
    planted = [t for t in truth.sort_values("planted_id")["text"] if t in caption_set]
    counts = pd.Series(captions).value_counts()
    truth_texts = set(truth["text"])
    ordinary = sorted(
        (c for c in counts.index if c not in truth_texts), key=lambda c: (-int(counts[c]), c)
    )[:n_ordinary]
    prompts = planted + ordinary
    if not prompts:
        raise ValueError("no planted or ordinary caption to check")
    # one id per distinct training image (planted copies share theirs)
    image_ids: dict[bytes, int] = {}
    row_image = np.array([image_ids.setdefault(im.tobytes(), len(image_ids)) for im in images])
    pixels = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    reference = pixel_embedding(pixels)
    generated = generate_images(model, prompts, list(seeds), steps=steps, guidance=guidance)
    similarity, nearest_row = nearest_neighbours(pixel_embedding(generated), reference)
    nearest_image = row_image[nearest_row].reshape(len(prompts), len(seeds))
    similarity = similarity.reshape(len(prompts), len(seeds))
    own_image = {c: row_image[i] for i, c in reversed(list(enumerate(captions)))}
    rows = []
    n_seeds = len(seeds)
    pairs = n_seeds * (n_seeds - 1) / 2
    for i, prompt in enumerate(prompts):
        kind = "planted" if i < len(planted) else "ordinary"
        hits = nearest_image[i]
        agreement = (
            sum(int(hits[a] == hits[b]) for a in range(n_seeds) for b in range(a + 1, n_seeds))
            / pairs
            if pairs
            else float("nan")
        )
        rows.append(
            {
                "kind": kind,
                "text": prompt,
                "own_nearest_rate": float(np.mean(hits == own_image[prompt]))
                if kind == "planted"
                else float("nan"),
                "seed_agreement": agreement,
                "mean_similarity": float(similarity[i].mean()),
            }
        )
    table = pd.DataFrame(rows)
    plant = table[table["kind"] == "planted"]
    ordin = table[table["kind"] == "ordinary"]
    summary = {
        "seeds": list(seeds),
        "steps": steps,
        "guidance": guidance,
        "n_planted": len(plant),
        "n_ordinary": len(ordin),
        "n_training_images": len(image_ids),
        "planted_own_nearest_rate": float(plant["own_nearest_rate"].mean()) if len(plant) else None,
        "planted_reproduced_fraction": float((plant["own_nearest_rate"] >= 0.5).mean())
        if len(plant)
        else None,
        "planted_seed_agreement": float(plant["seed_agreement"].mean()) if len(plant) else None,
        "ordinary_seed_agreement": float(ordin["seed_agreement"].mean()) if len(ordin) else None,
        "planted_mean_similarity": float(plant["mean_similarity"].mean()) if len(plant) else None,
        "ordinary_mean_similarity": float(ordin["mean_similarity"].mean()) if len(ordin) else None,
    }
    return summary, table


def _count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


@torch.no_grad()
def generate_images(
    model: AuditModel,
    prompts: list[str],
    seeds: list[int],
    steps: int = 50,
    guidance: float = 7.5,
    batch_size: int = 32,
) -> np.ndarray:
    """Full classifier-free guided DDIM sampling (eta 0) of every prompt with every seed.

    Returns float32 [len(prompts) * len(seeds), H, W] in [0, 1], prompt-major (all seeds of
    the first prompt first). The starting noise depends only on the seed.
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
        scheduler = copy.deepcopy(model.scheduler)
        scheduler.set_timesteps(steps)
        x = (noise * scheduler.init_noise_sigma).to(device=model.device, dtype=model.dtype)
        context = torch.cat([cond, uncond.expand(len(chunk), -1, -1)])
        for t in scheduler.timesteps:
            eps = model.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample
            eps_cond, eps_uncond = eps.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
            x = scheduler.step(eps, t, x).prev_sample
        out.append(model.decode(x).cpu().numpy())
    return np.concatenate(out).astype(np.float32)
