"""Chen et al. (ICLR 2025), "Bright Ending": the end token's cross-attention at the last step
as a mask on Wen et al.'s noise difference.

At the last sampling step the end token's attention map of a memorized prompt is bright where
the memorized image is. With m^j the end token's attention probability at the last step, per
latent position (mean over heads and over the highest-resolution cross-attention layers of the
down path, raw probabilities, no renormalisation; nearest-neighbour upsampled to the latent),

    M_t^j = ‖(ε_c(x_t^j) − ε_u(x_t^j)) ⊙ m^j‖₂ / mean(m^j),
    BE(p) = 1/(n·T) Σ_j Σ_t M_t^j          (every step of the guided trajectory)

as in the authors' code (github.com/chenchen-usyd/BE-PRSS: mask from the last of 50 steps,
the 64×64 down-block layers of Stable Diffusion; the masked metric on the same x_T). One
trajectory gives both the mask and the differences, so it shares the scoring pass.
"""

from __future__ import annotations

import numpy as np
import torch

from memaudit.scoring.attention import end_token_positions
from memaudit.scoring.catalog import CATALOG
from memaudit.scoring.detectors.base import DetectorOutput, Needs, PromptBatch
from memaudit.scoring.spec import ScoringSpec

NAME = "bright_ending"
LABEL = CATALOG[NAME].label


def _steps(spec: ScoringSpec) -> int:
    return spec.steps


def _attention(batch: PromptBatch):
    ends = end_token_positions(batch.model.tokenizer, batch.input_ids)
    ends = ends.repeat_interleave(batch.n_generations).to(batch.model.device)

    def reduce(layer: str, probs: torch.Tensor) -> torch.Tensor:
        # [rows, heads, pixels, tokens] -> the end token's map [rows, pixels], mean over heads
        index = ends.view(-1, 1, 1, 1).expand(-1, probs.shape[1], probs.shape[2], 1)
        return probs.gather(3, index).squeeze(3).mean(dim=1).cpu()

    return frozenset({batch.spec.steps - 1}), reduce


NEEDS = Needs(trajectory_steps=_steps, attention=_attention, squared_differences=True)


def end_token_mask(batch: PromptBatch) -> torch.Tensor:
    """m: [prompt × generation rows, h, w] float64 at the latent resolution."""
    maps = batch.trajectory.attention[NAME][batch.spec.steps - 1]
    down = [(name, m) for name, m in maps if name.startswith("down_blocks")] or maps
    finest = max(m.shape[1] for _, m in down)
    chosen = torch.stack([m for _, m in down if m.shape[1] == finest]).mean(dim=0).double()
    h, w = batch.noise.shape[-2:]
    scale = (finest / (h * w)) ** 0.5
    side = (max(1, round(h * scale)), max(1, round(w * scale)))
    if side[0] * side[1] != finest:
        raise ValueError(f"cannot lay {finest} attention positions on a {h}x{w} latent")
    grid = chosen.reshape(-1, 1, *side)
    return torch.nn.functional.interpolate(grid, size=(h, w), mode="nearest")[:, 0]


def score(batch: PromptBatch) -> DetectorOutput:
    """Mean over generations and steps of the end-token-masked noise-difference norm."""
    mask = end_token_mask(batch)  # [R, h, w]
    squares = batch.trajectory.squares.double()  # [R, steps, h, w]
    masked = (squares * mask.square()[:, None]).sum(dim=(-2, -1)).sqrt()  # [R, steps]
    values = masked / mask.mean(dim=(-2, -1))[:, None]
    per_prompt = values.reshape(batch.n_prompts, batch.n_generations, -1).mean(dim=(1, 2))
    cost = batch.start_cost()
    cost.add(batch.trajectory.cost(batch.spec.steps, NAME))
    return DetectorOutput(per_prompt.numpy().astype(np.float64), cost)
