"""What every detector sees and returns: one batch of prompts, the shared guided trajectory,
and the cost of a score.

A detector is one module of this package with the same four names: ``NAME``, ``LABEL``,
``NEEDS`` (a :class:`Needs`) and ``score(batch) -> DetectorOutput``. Detectors that read the
guided DDIM trajectory (Wen et al., Bright Ending, attention entropy) share one pass per batch:
the engine runs :func:`run_trajectory` once with the union of their needs, and charges each of
them the UNet rows and seconds of the steps it needs (as if it had run alone, up to its last
step). Detectors that probe x_T directly (sharpness, anisotropy) make their own UNet calls and
count them in :class:`Cost`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from memaudit.diffusion import GuidedStep, guided_ddim
from memaudit.model.loading import AuditModel
from memaudit.scoring.attention import AttentionCapture, Reducer, clock
from memaudit.scoring.spec import ScoringSpec


@dataclass(frozen=True)
class Needs:
    """What a detector needs from the model and from the shared trajectory.

    - ``trajectory_steps(spec)``: how many guided steps it reads (None: no trajectory);
    - ``attention(batch)``: (the steps whose cross-attention it reads, a reducer of one layer's
      probabilities) for this batch (None: no attention maps);
    - ``squared_differences``: it reads Σ_channels (ε_c − ε_u)² per latent position and step;
    - ``gradients``: it differentiates the UNet (refused in float16).
    """

    trajectory_steps: Callable[[ScoringSpec], int] | None = None
    attention: Callable[[PromptBatch], tuple[frozenset[int], Reducer]] | None = None
    squared_differences: bool = False
    gradients: bool = False

    @property
    def cross_attention(self) -> bool:
        return self.attention is not None


@dataclass
class Cost:
    """What one detector's scores cost: UNet forward rows, rows pushed back through the UNet
    (each backward or forward-mode derivative pass, counted per row) and wall seconds."""

    unet_rows: int = 0
    backward_rows: int = 0
    seconds: float = 0.0

    def add(self, other: Cost) -> None:
        self.unet_rows += other.unet_rows
        self.backward_rows += other.backward_rows
        self.seconds += other.seconds

    def as_dict(self) -> dict[str, float]:
        return {
            "unet_rows": int(self.unet_rows),
            "backward_rows": int(self.backward_rows),
            "seconds": float(self.seconds),
        }


@dataclass
class DetectorOutput:
    """Per-prompt scores [P] (float64, higher = more likely memorized) and their cost."""

    scores: np.ndarray
    cost: Cost


@dataclass
class Trajectory:
    """The shared guided DDIM pass of one batch.

    ``norms`` is ‖ε(x_t, e_p) − ε(x_t, e_∅)‖₂ per [prompt, generation, step]; ``squares``
    (when asked for) is Σ_channels (ε_c − ε_u)² per [prompt × generation, step, h, w], on the
    CPU; ``attention`` holds, per detector name and step, (layer name, reducer output) of every
    cross-attention layer (rows = prompt × generation, prompt-major); ``step_rows`` /
    ``step_seconds`` are the UNet rows and seconds of each step, ``attention_seconds`` the
    time spent reading maps.
    """

    norms: torch.Tensor
    squares: torch.Tensor | None
    attention: dict[str, dict[int, list[tuple[str, torch.Tensor]]]]
    step_rows: list[int]
    step_seconds: list[float]
    attention_seconds: dict[str, float]

    def cost(self, steps: int, name: str | None = None) -> Cost:
        """The rows and seconds of the first ``steps`` steps (plus ``name``'s map reading)."""
        if steps > len(self.step_rows):
            raise ValueError(f"{steps} steps asked of a trajectory of {len(self.step_rows)}")
        seconds = float(sum(self.step_seconds[:steps]))
        if name is not None:
            seconds += self.attention_seconds.get(name, 0.0)
        return Cost(unet_rows=int(sum(self.step_rows[:steps])), seconds=seconds)


@dataclass
class PromptBatch:
    """One batch of prompts as every detector sees it.

    ``input_ids`` [P, L] and ``cond`` [P, L, D] are the tokenized prompts and their embeddings;
    ``noise`` is x_T [G, C, h, w] of generations 0..G-1 (the same for every prompt: a prompt's
    score never depends on its batch); ``uncond`` is the empty prompt's embedding [1, L, D].
    ``encode_seconds`` is the text encoder's time, charged to every detector.
    """

    model: AuditModel
    input_ids: torch.Tensor
    cond: torch.Tensor
    noise: torch.Tensor
    uncond: torch.Tensor
    spec: ScoringSpec
    encode_seconds: float = 0.0
    trajectory: Trajectory | None = None

    @property
    def n_prompts(self) -> int:
        return int(self.cond.shape[0])

    @property
    def n_generations(self) -> int:
        return int(self.noise.shape[0])

    def start_cost(self) -> Cost:
        return Cost(seconds=self.encode_seconds)

    def rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditioning, x_T) with one row per prompt × generation, prompt-major."""
        gens = self.n_generations
        return self.cond.repeat_interleave(gens, dim=0), self.noise.repeat(self.n_prompts, 1, 1, 1)


@torch.no_grad()
def run_trajectory(
    batch: PromptBatch,
    steps: int,
    attention: dict[str, tuple[frozenset[int], Reducer]],
    squared_differences: bool = False,
) -> Trajectory:
    """Run the guided DDIM pass of ``batch`` for ``steps`` steps, keeping every step's norm,
    optionally the per-position squared differences, and at the requested steps the reduced
    cross-attention maps of the conditional rows.

    All prompts share x_T^j, so the first step's unconditional branch is computed once per
    generation (``noise_period``), exactly as :func:`memaudit.scoring.engine.score_embeddings`
    does: the norms are the same numbers.
    """
    model, spec = batch.model, batch.spec
    device = model.device if isinstance(model.device, torch.device) else torch.device(model.device)
    n_rows = batch.n_prompts * batch.n_generations
    norms = torch.empty(n_rows, steps, dtype=torch.float32, device=device)
    side = batch.noise.shape[-2:]
    squares = (
        torch.empty(n_rows, steps, *side, dtype=torch.float32) if squared_differences else None
    )
    rows: list[int] = []
    seconds: list[float] = []
    last = [clock(device)]

    def record(step: GuidedStep) -> None:
        difference = step.eps_cond - step.eps_uncond
        norms[:, step.index] = difference.flatten(1).norm(dim=1)
        if squares is not None:
            squares[:, step.index] = difference.square().sum(dim=1).cpu()
        now = clock(device)
        rows.append(step.unet_rows)
        seconds.append(now - last[0])
        last[0] = now

    cond, x_t = batch.rows()
    capture = AttentionCapture(model.unet, attention, rows=n_rows) if attention else None
    with capture if capture is not None else contextlib.nullcontext():
        guided_ddim(
            model,
            cond,
            x_t,
            batch.uncond,
            spec.steps,
            spec.guidance,
            stop=steps,
            noise_period=batch.n_generations,
            on_step=record,
        )
    maps = capture.results if capture is not None else {}
    map_seconds = dict(capture.seconds) if capture is not None else {}
    # The maps were read inside the steps' UNet calls: take that time out of the steps.
    for name, spent in map_seconds.items():
        read = sorted(s for s in attention[name][0] if s < len(seconds))
        for step in read:
            seconds[step] = max(0.0, seconds[step] - spent / len(read))
    shaped = norms.reshape(batch.n_prompts, batch.n_generations, steps)
    return Trajectory(shaped, squares, maps, rows, seconds, map_seconds)
