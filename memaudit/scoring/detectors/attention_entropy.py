"""Ren et al. (ECCV 2024): entropy of the cross-attention over the prompt's tokens at the first
step, a cheap baseline.

With ā^j the attention probabilities at the first sampling step, averaged over latent
positions, heads and cross-attention layers (a distribution over all L token positions,
padding included), the score is the entropy

    E(p) = 1/n Σ_j −Σ_i ā_i^j log ā_i^j

(higher = attention spread over the prompt's tokens = more likely memorized, the direction of
the authors' code, github.com/renjie3/MemAttn, ``detect.py`` mode "E"). Their code reads one
Stable Diffusion layer (the fourth of 16); a layer index does not carry over between UNets, so
every cross-attention layer is averaged here.
"""

from __future__ import annotations

import numpy as np
import torch

from memaudit.scoring.catalog import CATALOG
from memaudit.scoring.detectors.base import DetectorOutput, Needs, PromptBatch

NAME = "attention_entropy"
LABEL = CATALOG[NAME].label


def _attention(batch: PromptBatch):
    def reduce(layer: str, probs: torch.Tensor) -> torch.Tensor:
        return probs.mean(dim=(1, 2)).cpu()  # [rows, tokens]: mean over heads and positions

    return frozenset({0}), reduce


NEEDS = Needs(trajectory_steps=lambda spec: 1, attention=_attention)


def score(batch: PromptBatch) -> DetectorOutput:
    """Entropy of the first step's layer-, head- and position-averaged attention."""
    maps = batch.trajectory.attention[NAME][0]
    mean = torch.stack([m for _, m in maps]).mean(dim=0).double()  # [rows, tokens]
    entropy = -(mean * torch.log(mean.clamp_min(1e-300))).sum(dim=1)
    per_prompt = entropy.reshape(batch.n_prompts, batch.n_generations).mean(dim=1)
    cost = batch.start_cost()
    cost.add(batch.trajectory.cost(1, NAME))
    return DetectorOutput(per_prompt.numpy().astype(np.float64), cost)
