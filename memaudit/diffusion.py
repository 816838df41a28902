"""Diffusion primitives every stage shares: the x_T convention, the scheduler, the UNet call and
the one guided DDIM sampler.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from memaudit.model.loading import AuditModel


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


_VAE_DECODE_BATCH = 8


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_images(
    model: AuditModel,
    cond: torch.Tensor,
    x_t: torch.Tensor,
    uncond: torch.Tensor,
    steps: int,
    guidance: float,
) -> torch.Tensor:
    """Full classifier-free guided DDIM sampling (eta 0) of one batch, decoded.

    Row i starts from ``x_t[i]`` (x_T, [B, C, h, w]) and is conditioned on ``cond[i]``
    ([B, L, D]); ``uncond`` is the empty prompt's embedding [1, L, D]. Returns grayscale
    float32 images [B, H, W] in [0, 1] at the model's output size. Latents stay float32
    between steps (the UNet runs in the model dtype), as in the scoring engine.
    """
    scheduler = fresh_scheduler(model, steps, model.device)
    latents = x_t.to(device=model.device, dtype=torch.float32) * scheduler.init_noise_sigma
    cond = cond.to(device=model.device, dtype=model.dtype)
    context = torch.cat([cond, uncond.to(model.device, model.dtype).expand(len(cond), -1, -1)])
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = unet_eps(model, torch.cat([model_input, model_input]), t, context)
        eps_cond, eps_uncond = eps.chunk(2)
        guided = eps_uncond + guidance * (eps_cond - eps_uncond)
        latents = scheduler.step(guided, t, latents, eta=0.0, return_dict=False)[0]
    step = _VAE_DECODE_BATCH if model.vae is not None else max(1, len(latents))
    images = [model.decode(latents[i : i + step]) for i in range(0, len(latents), step)]
    return torch.cat(images).float().cpu()


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [0, 1] as uint8 (rounded to the nearest level)."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
