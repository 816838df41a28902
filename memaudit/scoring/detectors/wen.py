"""Wen et al. (ICLR 2024): the text-conditional noise norm d_mem over a window of steps.

    d_mem(p) = 1/(n·|S|) · Σ_j Σ_{t∈S} ‖ε(x_t^j, e_p) − ε(x_t^j, e_∅)‖₂

on the classifier-free guided DDIM trajectory from x_T^j, S = ``scoring.window`` (the whole
trajectory by default; [0, 1] is their first-step detector). The per-step norms are the
trajectory's and are stored with the scores, so other windows need no re-run.
"""

from __future__ import annotations

import numpy as np

from memaudit.scoring.catalog import CATALOG
from memaudit.scoring.detectors.base import DetectorOutput, Needs, PromptBatch
from memaudit.scoring.spec import ScoringSpec

NAME = "wen"
LABEL = CATALOG[NAME].label


def _steps(spec: ScoringSpec) -> int:
    return spec.window_bounds()[1]


NEEDS = Needs(trajectory_steps=_steps)


def score(batch: PromptBatch) -> DetectorOutput:
    """d_mem over ``scoring.window`` from the shared trajectory's norms."""
    start, stop = batch.spec.window_bounds()
    norms = batch.trajectory.norms.cpu().numpy()[..., start:stop].astype(np.float64)
    cost = batch.start_cost()
    cost.add(batch.trajectory.cost(stop))
    return DetectorOutput(norms.mean(axis=(-2, -1)), cost)
