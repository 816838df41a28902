"""Augmentations for training the copy detector: what a copy may differ by, for radiographs.

Two views of one training image must embed close together; the encoder learns which changes
do not make a different image. The changes are those a generated copy shows and a radiograph
tolerates: a small shift, rotation and zoom (random crop resized back), blur (a generated copy
loses fine detail), contrast, brightness and gamma changes, and Gaussian pixel noise. No
horizontal flip by default: a flipped chest radiograph puts the heart on the wrong side, a
different image (``hflip`` turns it on).

:func:`augment` draws every random number from the generator it is given, on the CPU, in a
fixed order, so the same generator state gives the same views on every device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from memaudit.copy_detection.spec import DetectorSpec


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float32)


def affine_grids(n: int, size: int, spec: DetectorSpec, generator: torch.Generator) -> torch.Tensor:
    """Sampling grids [n, size, size, 2] of random shift, rotation, crop zoom (and flip).

    An output pixel at normalised position p reads the input at ``R(θ) · (z p) + t``: ``z``
    is the side share of the crop (its area share drawn from [crop_scale, 1]), ``t`` the
    shift (at most ``shift`` of the side, plus the room the crop leaves), ``θ`` at most
    ``rotation`` degrees either way; a flip negates the x coordinate.
    """
    angle = torch.deg2rad(_uniform(n, -spec.rotation, spec.rotation, generator))
    zoom = torch.sqrt(_uniform(n, spec.crop_scale, 1.0, generator))
    room = 1.0 - zoom  # the crop's centre may move this far (normalised units) and stay inside
    shift = torch.stack(
        [
            _uniform(n, -1.0, 1.0, generator) * (2 * spec.shift + room),
            _uniform(n, -1.0, 1.0, generator) * (2 * spec.shift + room),
        ],
        dim=1,
    )
    flip = torch.ones(n)
    if spec.hflip:
        flip = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 0, 2] = cos * flip, -sin, shift[:, 0]
    theta[:, 1, 0], theta[:, 1, 1], theta[:, 1, 2] = sin * flip, cos, shift[:, 1]
    return F.affine_grid(theta, [n, 1, size, size], align_corners=False)


def blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image [B, 1, S, S] blurred by a Gaussian of its own ``sigma`` [B] (pixels; 0 keeps
    it), with a 2⌈2σ_max⌉ + 1 kernel and edges extended."""
    radius = int(math.ceil(2.0 * float(sigma.max()))) if len(sigma) else 0
    if radius == 0:
        return images
    n = images.shape[0]
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    safe = sigma.clamp(min=1e-6).to(images.dtype)[:, None]
    kernel = torch.exp(-0.5 * (offsets[None, :] / safe) ** 2)
    kernel = torch.where(sigma[:, None] > 0, kernel, (offsets[None, :] == 0).to(images.dtype))
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # [B, k], separable
    x = F.pad(images.transpose(0, 1), (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(x, kernel[:, None, None, :], groups=n)  # along rows
    x = F.conv2d(x, kernel[:, None, :, None], groups=n)  # along columns
    return x.transpose(0, 1)


def augment(images: torch.Tensor, spec: DetectorSpec, generator: torch.Generator) -> torch.Tensor:
    """One random view of every image: [B, 1, S, S] float in [0, 1] -> same shape, dtype, range.

    Geometry (bilinear resampling, edges extended), a Gaussian blur with σ drawn from
    [0, blur] pixels (generated copies are smoother than their originals), then per image a
    gamma in
    exp(±contrast), a contrast factor in 1 ± contrast about the image mean, a brightness offset
    in ±contrast/2, and Gaussian noise with a standard deviation drawn from [0, noise]; the
    result is clipped to [0, 1].
    """
    if images.ndim != 4 or images.shape[1] != 1 or images.shape[2] != images.shape[3]:
        raise ValueError(f"expected images [B, 1, S, S], got {tuple(images.shape)}")
    n, size = int(images.shape[0]), int(images.shape[-1])
    grids = affine_grids(n, size, spec, generator).to(images.device, images.dtype)
    x = F.grid_sample(images, grids, mode="bilinear", padding_mode="border", align_corners=False)
    k = spec.contrast
    gamma = torch.exp(_uniform(n, -k, k, generator)).view(n, 1, 1, 1)
    factor = _uniform(n, 1.0 - k, 1.0 + k, generator).view(n, 1, 1, 1)
    offset = _uniform(n, -k / 2, k / 2, generator).view(n, 1, 1, 1)
    sigma = _uniform(n, 0.0, spec.noise, generator).view(n, 1, 1, 1)
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    gamma, factor, offset, sigma, noise = (
        t.to(images.device, images.dtype) for t in (gamma, factor, offset, sigma, noise)
    )
    x = blur(x.clamp(0.0, 1.0), _uniform(n, 0.0, spec.blur, generator).to(images.device))
    x = x ** gamma.clamp(min=1e-3)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor + mean + offset + sigma * noise
    return x.clamp(0.0, 1.0)
