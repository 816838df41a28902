"""Diffusion primitives every stage shares: the x_T convention, the scheduler, the UNet call and
the one guided DDIM sampler (:func:`guided_ddim`) that scoring, mitigation and the demo model's
memorization check all run.
"""

from __future__ import annotations

import copy
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from memaudit.model.loading import AuditModel
from memaudit.seeds import TORCH_SEED_MASK, hashed_seed


def noise_seed(seed: int, generation: int) -> int:
    """Seed of the torch generator that draws x_T for generation ``generation``."""
    return hashed_seed("memaudit-noise", seed, generation) & TORCH_SEED_MASK


def initial_noise(
    latent_shape: Sequence[int],
    generations: int | Sequence[int],
    seed: int,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """x_T of generations 0..generations-1 (or of the listed generation indices),
    [n, C, h, w] float32, drawn on CPU then moved.

    Row j depends only on (seed, j), so it is the same on every machine, for every prompt and
    in every chunk that draws it.
    """
    indices = range(generations) if isinstance(generations, int) else generations
    rows = []
    for j in indices:
        generator = torch.Generator(device="cpu").manual_seed(noise_seed(seed, int(j)))
        rows.append(torch.randn(tuple(latent_shape), generator=generator, dtype=torch.float32))
    if not rows:
        return torch.zeros((0, *latent_shape), dtype=torch.float32, device=device)
    return torch.stack(rows).to(device)


def unet_eps(
    model: AuditModel, sample: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor
) -> torch.Tensor:
    """One UNet call in the model dtype; the prediction comes back as float32.

    A gradient-free float32 call on the CPU, on a UNet without hooks, runs a frozen TorchScript
    trace of the UNet (:func:`frozen_unet`): the same kernels on the same inputs, so the same
    numbers bit for bit, without the Python and dispatcher work between the many small layers
    of a small UNet (the demo model on 2 cores: 1.04x in the scoring engine's 256-row calls,
    more on smaller calls; README, Benchmarks).
    """
    sample = sample.to(model.dtype)
    frozen = frozen_unet(model.unet, sample, timestep, embeddings)
    if frozen is not None:
        return frozen(sample, timestep, embeddings).float()
    out = model.unet(sample, timestep, encoder_hidden_states=embeddings, return_dict=False)[0]
    return out.float()


class _Forward(torch.nn.Module):
    """The UNet's noise prediction as a plain function of three tensors (what a trace takes)."""

    def __init__(self, unet: torch.nn.Module) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor):
        return self.unet(sample, timestep, encoder_hidden_states=context, return_dict=False)[0]


# Per UNet (weakly held: a dropped model takes its traces with it): the parameters' versions
# the traces were made at, and the traces keyed by what a trace bakes in (the shapes past the
# batch and the timestep's rank); an in-place weight update makes new traces, never a stale
# result.
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Off: every call runs the eager module (benchmarks compare the two; results are the same).
FREEZE = True


def _has_hooks(unet: torch.nn.Module) -> bool:
    """Whether any hook would see a forward call of ``unet`` (a trace would skip it)."""
    hooks = torch.nn.modules.module
    if hooks._global_forward_hooks or hooks._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in unet.modules())


def frozen_unet(
    unet: torch.nn.Module, sample: torch.Tensor, timestep: Any, context: torch.Tensor
) -> torch.jit.ScriptModule | None:
    """A frozen TorchScript trace of ``unet`` for calls like this one, or None where the eager
    module must run: gradients on (attribution), a device other than the CPU, weights or
    inputs other than float32, a non-tensor timestep, or hooks registered on the UNet
    (cross-attention capture). Traced once per process and input layout; the trace keeps
    only tensor operations, whose results do not depend on the batch size it was traced at.
    """
    if (
        not FREEZE
        or torch.is_grad_enabled()
        or sample.device.type != "cpu"
        or sample.dtype != torch.float32
        or context.dtype != torch.float32
        or not isinstance(timestep, torch.Tensor)
        or getattr(unet, "dtype", torch.float32) != torch.float32
        or unet.training
        or _has_hooks(unet)
    ):
        return None
    versions = tuple(p._version for p in unet.parameters())
    key = (tuple(sample.shape[1:]), tuple(context.shape[1:]), timestep.dim())
    known, traces = _FROZEN.get(unet, (None, {}))
    if known != versions:  # weights updated in place (or first call): retire every trace
        traces = {}
        _FROZEN[unet] = (versions, traces)
    if key not in traces:
        # The trace bakes in a few Python checks on shapes (diffusers makes a tensor
        # contiguous above some batch or size): they change memory layout, not values.
        # TorchScript is deprecated in favour of torch.compile, which costs about a minute of
        # compilation per process on the demo for a tenth of the gain: where a later torch
        # cannot trace or freeze, the eager module runs (None is kept, so that is tried once).
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                traced = torch.jit.trace(
                    _Forward(unet).eval(), (sample, timestep, context), check_trace=False
                )
                traces[key] = torch.jit.freeze(traced)
            except Exception:  # noqa: BLE001 - any failure to trace means: run eagerly
                traces[key] = None
    return traces[key]


def fresh_scheduler(model: AuditModel, steps: int, device: torch.device) -> Any:
    """A private copy of the model's scheduler with ``steps`` inference timesteps."""
    scheduler = copy.deepcopy(model.scheduler)
    scheduler.set_timesteps(steps, device=device)
    return scheduler


# Latents are decoded a few at a time: a VAE decoder needs far more memory per image than the
# UNet needs per latent, so a batch sized for the UNet could run out of memory at the very end.
_VAE_DECODE_BATCH = 8


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GuidedStep:
    """What one step of :func:`guided_ddim` computed, handed to ``on_step`` before the update.

    ``eps_cond`` and ``eps_uncond`` are the float32 noise predictions [B, C, h, w] of the
    batch's rows with their own and with the empty prompt; ``unet_rows`` is how many rows the
    step's one UNet call carried.
    """

    index: int
    timestep: torch.Tensor
    eps_cond: torch.Tensor
    eps_uncond: torch.Tensor
    unet_rows: int


@torch.no_grad()
def guided_ddim(
    model: AuditModel,
    cond: torch.Tensor,
    x_t: torch.Tensor,
    uncond: torch.Tensor,
    steps: int,
    guidance: float,
    stop: int | None = None,
    noise_period: int | None = None,
    on_step: Callable[[GuidedStep], None] | None = None,
) -> torch.Tensor:
    """Classifier-free guided DDIM (eta 0) of one batch; returns the latents, float32.

    Row i starts from ``x_t[i]`` (x_T, [B, C, h, w]) and is conditioned on ``cond[i]``
    ([B, L, D]); ``uncond`` is the empty prompt's embedding [1, L, D]. Each step is one UNet
    call on the conditional and unconditional rows together, then
    ``eps_uncond + guidance * (eps_cond - eps_uncond)`` drives the scheduler step. Latents stay
    float32 between steps (the UNet runs in the model dtype).

    ``stop`` ends the trajectory after that many of the ``steps`` scheduler steps (the
    latents returned are those after step ``stop``). ``noise_period`` = G says row i starts
    from the same x_T as row i mod G (checked): at the first step those rows then have the same
    input and the same empty prompt, so the unconditional branch is computed for G rows only.
    ``on_step`` sees every step's predictions (e.g. to take norms of their difference).
    """
    # 1. Check inputs
    stop = steps if stop is None else stop
    if not 1 <= stop <= steps:
        raise ValueError(f"stop must be in [1, steps={steps}], got {stop}")
    rows = int(x_t.shape[0])
    if int(cond.shape[0]) != rows:
        raise ValueError(f"{cond.shape[0]} conditioning rows but {rows} starting latents")
    if noise_period is not None and (
        noise_period < 1
        or rows % noise_period
        or not torch.equal(x_t, x_t[:noise_period].repeat(rows // noise_period, 1, 1, 1))
    ):
        raise ValueError(f"x_t does not repeat with period {noise_period}")
    # 2. Prepare latents and embeddings
    scheduler = fresh_scheduler(model, steps, model.device)
    latents = x_t.to(device=model.device, dtype=torch.float32) * scheduler.init_noise_sigma
    cond = cond.to(device=model.device, dtype=model.dtype)
    uncond = uncond.to(device=model.device, dtype=model.dtype)
    context = torch.cat([cond, uncond.expand(rows, -1, -1)])
    # 3. Denoise
    for k in range(stop):
        t = scheduler.timesteps[k]
        model_input = scheduler.scale_model_input(latents, t)
        if k == 0 and noise_period is not None:
            shared = torch.cat([cond, uncond.expand(noise_period, -1, -1)])
            sample = torch.cat([model_input, model_input[:noise_period]])
            eps = unet_eps(model, sample, t, shared)
            eps_cond = eps[:rows]
            eps_uncond = eps[rows:].repeat(rows // noise_period, 1, 1, 1)
        else:
            sample = torch.cat([model_input, model_input])
            eps = unet_eps(model, sample, t, context)
            eps_cond, eps_uncond = eps[:rows], eps[rows:]
        if on_step is not None:
            on_step(GuidedStep(k, t, eps_cond, eps_uncond, int(sample.shape[0])))
        guided = eps_uncond + guidance * (eps_cond - eps_uncond)
        latents = scheduler.step(guided, t, latents, eta=0.0, return_dict=False)[0]
    return latents


@torch.no_grad()
def sample_images(
    model: AuditModel,
    cond: torch.Tensor,
    x_t: torch.Tensor,
    uncond: torch.Tensor,
    steps: int,
    guidance: float,
) -> torch.Tensor:
    """Full guided DDIM sampling (:func:`guided_ddim`) of one batch, decoded.

    Returns grayscale float32 images [B, H, W] in [0, 1] at the model's output size.
    """
    latents = guided_ddim(model, cond, x_t, uncond, steps, guidance)
    step = _VAE_DECODE_BATCH if model.vae is not None else max(1, len(latents))
    images = [model.decode(latents[i : i + step]) for i in range(0, len(latents), step)]
    return torch.cat(images).float().cpu()


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [0, 1] as uint8 (rounded to the nearest level)."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
