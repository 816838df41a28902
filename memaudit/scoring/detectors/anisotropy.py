"""Asthana & Belagiannis (ICLR 2026): anisotropy of the guidance direction near t = 0 on pure
noise, plus the noise-difference norm at t = T; no denoising.

On x_T^j itself (never denoised), with c the prompt and u the empty prompt,

    N_j = ‖ε_c(x_T^j, t_hi) − ε_u(x_T^j, t_hi)‖₂                       (t_hi = first step's t)
    A_j = mean over latent positions of cos_channels(ε_u(x_T^j, t_lo), ε_c − ε_u at t_lo)
    score(p) = mean_j (γ₁·N_j + γ₂·A_j)

t_lo is the third-to-last sampling timestep (``timesteps[-3]``), γ₁ = 1 and γ₂ = 2 (the
authors' Stable Diffusion 1 setting; github.com/rohanasthana/memorization-anisotropy): a
weighted sum of the raw terms. The cosine is over the latent channels at each position, as in
their code; a one-channel model (the demo denoises pixels) would make that a sign, so there
the cosine is over the whole latent.
"""

from __future__ import annotations

import numpy as np
import torch

from memaudit.diffusion import fresh_scheduler, unet_eps
from memaudit.scoring.catalog import CATALOG
from memaudit.scoring.detectors.base import Cost, DetectorOutput, Needs, PromptBatch, clock

NAME = "anisotropy"
LABEL = CATALOG[NAME].label
NEEDS = Needs()

GAMMA_NORM = 1.0
GAMMA_ANISOTROPY = 2.0
LOW_STEP = -3  # index into the sampling timesteps of t_lo


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row cosine of [R, C, h, w] tensors: over channels per position, averaged over the
    positions (C > 1), or over the whole latent (C = 1)."""
    if a.shape[1] == 1:
        return torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1)
    return torch.nn.functional.cosine_similarity(a, b, dim=1).flatten(1).mean(dim=1)


@torch.no_grad()
def components(batch: PromptBatch) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(N, A) per prompt × generation row (prompt-major, float64) and the UNet rows used."""
    model, spec = batch.model, batch.spec
    scheduler = fresh_scheduler(model, spec.steps, model.device)
    timesteps = scheduler.timesteps
    t_hi, t_lo = timesteps[0], timesteps[LOW_STEP if len(timesteps) >= 3 else -1]
    gens, prompts = batch.n_generations, batch.n_prompts
    noise = batch.noise.to(device=model.device, dtype=torch.float32) * scheduler.init_noise_sigma
    context = torch.cat([batch.cond, batch.uncond]).to(model.dtype)  # P prompts + the empty one
    out = []
    for t in (t_hi, t_lo):
        sample = scheduler.scale_model_input(noise, t)
        # Every prompt and the empty prompt on the same G noises: (P + 1) x G rows.
        rows = torch.cat([sample] * (prompts + 1))
        eps = unet_eps(model, rows, t, context.repeat_interleave(gens, dim=0))
        eps_cond, eps_uncond = eps[: prompts * gens], eps[prompts * gens :]
        out.append((eps_cond, eps_uncond.repeat(prompts, 1, 1, 1)))
    (c_hi, u_hi), (c_lo, u_lo) = out
    norm = (c_hi - u_hi).flatten(1).double().norm(dim=1)
    anisotropy = _cosine(u_lo.double(), (c_lo - u_lo).double())
    return norm, anisotropy, 2 * (prompts + 1) * gens


def score(batch: PromptBatch) -> DetectorOutput:
    """mean_j (γ₁·N_j + γ₂·A_j) per prompt."""
    start = clock(batch.model.device)
    norm, anisotropy, rows = components(batch)
    combined = GAMMA_NORM * norm + GAMMA_ANISOTROPY * anisotropy
    per_prompt = combined.reshape(batch.n_prompts, batch.n_generations).mean(dim=1)
    cost = batch.start_cost()
    cost.add(Cost(unet_rows=rows, seconds=clock(batch.model.device) - start))
    return DetectorOutput(per_prompt.cpu().numpy().astype(np.float64), cost)
