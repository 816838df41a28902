"""Jeon et al. (ICML 2025): sharpness of the log-density at x_T, a Hessian-vector product.

With σ_t = √(1 − ᾱ_t), the score s(x) = −ε(x)/σ_t and the Hessian of log p, H = ∇ₓs = −J_ε/σ_t,
the detector at the first sampling step t = T (no denoising) is, per generation j,

    sharpness_j(p) = ‖(H_c − H_u) Δs‖₂ = ‖(J_εc − J_εu)(ε_c − ε_u)‖₂ / σ_T²,
    Δs = s_c − s_u = −(ε_c − ε_u)/σ_T,

all at x_T^j, c = the prompt, u = the empty prompt; the score is the mean over generations (the
authors' code, github.com/Dongjae0324/sharpness_memorization_diffusion, takes the plain L2 norm,
not its square). The product is exact: one forward-mode Jacobian-vector product
(``torch.func.jvp``) of the difference ε_c − ε_u with the tangent ε_c − ε_u, on the
conditional and unconditional rows together; no finite differences, no backward pass.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from memaudit.diffusion import fresh_scheduler
from memaudit.scoring.catalog import CATALOG
from memaudit.scoring.detectors.base import Cost, DetectorOutput, Needs, PromptBatch, clock

NAME = "sharpness"
LABEL = CATALOG[NAME].label
NEEDS = Needs(gradients=True)


def score_difference(batch: PromptBatch):
    """(f, x, t, σ_T): f(x) = ε(x, e_p) − ε(x, e_∅) at the first sampling step for every
    prompt × generation row, the scaled model input x of x_T and the step's σ_T."""
    model = batch.model
    scheduler = fresh_scheduler(model, batch.spec.steps, model.device)
    t = scheduler.timesteps[0]
    cond, x_t = batch.rows()
    # float32 at least (float64 for a float64 model, as in the finite-difference test)
    work = torch.promote_types(model.dtype, torch.float32)
    x = scheduler.scale_model_input(
        x_t.to(device=model.device, dtype=work) * scheduler.init_noise_sigma, t
    )
    alpha_bar = scheduler.alphas_cumprod[int(t)].to(torch.float64)
    sigma = float(torch.sqrt(1.0 - alpha_bar))
    rows = int(x.shape[0])
    context = torch.cat([cond, batch.uncond.expand(rows, -1, -1)]).to(model.dtype)

    def f(sample: torch.Tensor) -> torch.Tensor:
        eps = model.unet(
            torch.cat([sample, sample]).to(model.dtype),
            t,
            encoder_hidden_states=context,
            return_dict=False,
        )[0].to(work)
        return eps[:rows] - eps[rows:]

    return f, x, t, sigma


def score(batch: PromptBatch) -> DetectorOutput:
    """Mean over generations of ‖(J_εc − J_εu)(ε_c − ε_u)‖₂ / σ_T² at x_T."""
    device = batch.model.device
    start = clock(device)
    f, x, _, sigma = score_difference(batch)
    rows = int(x.shape[0])
    with torch.no_grad():
        difference = f(x)
    # Forward-mode derivatives need the plain ("math") attention kernel; no_grad keeps
    # autograd from recording a backward graph (forward mode does not need one).
    with sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        _, product = torch.func.jvp(f, (x,), (difference,))
    values = product.detach().flatten(1).double().norm(dim=1) / sigma**2
    per_prompt = values.reshape(batch.n_prompts, batch.n_generations).mean(dim=1)
    cost = batch.start_cost()
    cost.add(Cost(unet_rows=4 * rows, backward_rows=2 * rows, seconds=clock(device) - start))
    return DetectorOutput(per_prompt.cpu().numpy().astype(np.float64), cost)
