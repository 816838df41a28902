"""The learned copy detector: a small contrastive image encoder trained on the training images.

As Dar et al. detect copies of patient images, the encoder is trained self-supervised on the
very images a copy could come from: two augmented views of each image of a batch must be each
other's nearest neighbours among all 2B views (the InfoNCE / NT-Xent loss of SimCLR, Chen et
al. 2020). It learns what identifies one image - the fine detail that no other image shares -
and to ignore the changes a copy may show (:mod:`memaudit.copy_detection.augment`). Embeddings
are the L2-normalised outputs of the encoder; the projection head only serves the loss, as in
SimCLR.

Weights are saved as safetensors with the architecture in the file's metadata, so the file
alone rebuilds the encoder (:func:`load_encoder`); :func:`train_encoder` returns the history
that goes into the model card.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from memaudit.atomic import atomic_write
from memaudit.copy_detection.augment import augment
from memaudit.copy_detection.spec import DetectorSpec
from memaudit.seeds import TORCH_SEED_MASK, hashed_seed

_GROUPS = 8
_HEAD_HIDDEN = 256
_WARMUP_SHARE = 0.05


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(_GROUPS, channels), channels)


class CopyEncoder(nn.Module):
    """Images [B, 1, S, S] in [0, 1] -> features [B, dimension] (not yet normalised).

    A stem 3x3 convolution to ``channels[0]``, then per entry of ``channels`` a stride-2 3x3
    convolution and a 3x3 convolution, each with group norm and SiLU; the final
    [channels[-1], S / 2^n, S / 2^n] map is flattened (layout is part of an image's identity,
    so it is not pooled away) and projected linearly to ``dimension``.
    """

    def __init__(self, input_size: int, channels: tuple[int, ...], dimension: int) -> None:
        super().__init__()
        self.input_size = int(input_size)
        layers: list[nn.Module] = [nn.Conv2d(1, channels[0], 3, padding=1), _norm(channels[0])]
        layers.append(nn.SiLU())
        previous = channels[0]
        for width in channels:
            layers += [nn.Conv2d(previous, width, 3, stride=2, padding=1), _norm(width), nn.SiLU()]
            layers += [nn.Conv2d(width, width, 3, padding=1), _norm(width), nn.SiLU()]
            previous = width
        self.features = nn.Sequential(*layers)
        side = self.input_size // 2 ** len(channels)
        self.project = nn.Linear(previous * side * side, dimension)
        self.head = nn.Sequential(
            nn.Linear(dimension, _HEAD_HIDDEN), nn.SiLU(), nn.Linear(_HEAD_HIDDEN, dimension)
        )

    @classmethod
    def from_spec(cls, spec: DetectorSpec) -> CopyEncoder:
        return cls(spec.input_size, spec.channels, spec.dimension)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            raise ValueError(
                f"the copy detector takes {self.input_size}x{self.input_size} images, got "
                f"{tuple(images.shape[-2:])}"
            )
        return self.project(self.features(images * 2.0 - 1.0).flatten(1))

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-length embeddings [B, dimension] of images [B, 1, S, S] in [0, 1]."""
        return F.normalize(self(images).float(), dim=1)


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent loss of paired views: row i of ``a`` and of ``b`` are views of one image.

    Every one of the 2B normalised views is classified among the other 2B - 1 by cosine
    similarity / temperature, its pair being the right class; the loss is the mean cross
    entropy. Its minimum, approached when pairs coincide and all else is far, is 0.
    """
    if a.shape != b.shape or a.ndim != 2 or len(a) < 2:
        raise ValueError(f"expected two [B >= 2, d] view batches, got {a.shape} and {b.shape}")
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(-math.inf)
    n = len(a)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def pair_accuracy(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of the 2B views whose nearest other view is their own pair."""
    z = F.normalize(torch.cat([a, b]).float(), dim=1)
    sims = z @ z.T
    sims.fill_diagonal_(-math.inf)
    n = len(a)
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return float((sims.argmax(dim=1) == targets).float().mean())


def _learning_rate(step: int, spec: DetectorSpec) -> float:
    """Linear warm-up over the first 5 % of steps, then cosine decay to zero."""
    warmup = max(1, int(_WARMUP_SHARE * spec.steps))
    if step < warmup:
        return spec.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, spec.steps - warmup)
    return spec.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


def _batches(n: int, spec: DetectorSpec) -> np.ndarray:
    """Image indices of every step [steps, min(batch, n)]: a fresh permutation per epoch,
    seeded by (seed, epoch), so a batch never holds one image twice."""
    size = min(spec.batch_size, n)
    per_epoch = n // size
    rows = []
    for epoch in range(math.ceil(spec.steps / per_epoch)):
        rng = np.random.default_rng(hashed_seed("memaudit-copy-detector-batches", spec.seed, epoch))
        order = rng.permutation(n)
        rows.extend(order[i * size : (i + 1) * size] for i in range(per_epoch))
    return np.stack(rows[: spec.steps])


def train_encoder(
    images: np.ndarray,
    spec: DetectorSpec,
    device: str | torch.device = "cpu",
    progress: TextIO | None = None,
) -> tuple[CopyEncoder, dict[str, Any]]:
    """Train the encoder on ``images`` [N, S, S] (uint8, or float in [0, 1], S = input_size).

    Deterministic for a given spec, image stack and device: initial weights, batches and
    augmentations all come from generators seeded by ``spec.seed``. Returns the encoder (in
    eval mode, on the CPU) and its history: loss and pair accuracy every step, seconds.
    """
    stack = np.asarray(images)
    if stack.ndim != 3 or stack.shape[1:] != (spec.input_size, spec.input_size):
        raise ValueError(
            f"training images must be [N, {spec.input_size}, {spec.input_size}] "
            f"(copy_detection.learned.input_size), got {stack.shape}"
        )
    if len(stack) < 2:
        raise ValueError(f"the copy detector needs at least 2 training images, got {len(stack)}")
    scale = 255.0 if stack.dtype == np.uint8 else 1.0
    pixels = torch.from_numpy(stack.astype(np.float32) / scale)[:, None]
    device = torch.device(device)
    torch.manual_seed(hashed_seed("memaudit-copy-detector-init", spec.seed) & TORCH_SEED_MASK)
    encoder = CopyEncoder.from_spec(spec).to(device)
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=spec.learning_rate, weight_decay=1e-4)
    views = torch.Generator().manual_seed(
        hashed_seed("memaudit-copy-detector-views", spec.seed) & TORCH_SEED_MASK
    )
    losses, accuracies = [], []
    start = time.perf_counter()
    bar = tqdm(
        total=spec.steps,
        unit="step",
        desc="train copy detector",
        file=progress,
        disable=progress is None,
    )
    encoder.train()
    for step, rows in enumerate(_batches(len(pixels), spec)):
        batch = pixels[torch.from_numpy(rows)]
        first = augment(batch, spec, views).to(device)
        second = augment(batch, spec, views).to(device)
        a, b = encoder.head(encoder(first)), encoder.head(encoder(second))
        loss = info_nce(a, b, spec.temperature)
        for group in optimiser.param_groups:
            group["lr"] = _learning_rate(step, spec)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        accuracies.append(pair_accuracy(a.detach(), b.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.3f}", pairs=f"{accuracies[-1]:.2f}")
        bar.update(1)
    bar.close()
    history = {
        "loss": losses,
        "pair_accuracy": accuracies,
        "seconds": time.perf_counter() - start,
        "n_images": len(pixels),
    }
    return encoder.eval().cpu(), history


def save_encoder(encoder: CopyEncoder, path: str | Path, spec: DetectorSpec) -> None:
    """Weights as safetensors (written atomically), the architecture in the file's metadata."""
    from safetensors.torch import save  # noqa: PLC0415

    state = {name: t.detach().cpu().contiguous() for name, t in encoder.state_dict().items()}
    metadata = {"memaudit": "copy-detector", "architecture": json.dumps(spec.architecture())}
    payload = save(state, metadata=metadata)
    atomic_write(path, lambda handle: handle.write(payload))


def load_encoder(path: str | Path, device: str | torch.device = "cpu") -> CopyEncoder:
    """The encoder saved by :func:`save_encoder` (safetensors only; never unpickled)."""
    from safetensors import safe_open  # noqa: PLC0415
    from safetensors.torch import load_file  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"copy detector weights {str(path)!r} do not exist; the train_copy_detector rule "
            "writes them (copy_detection.embedding: learned)"
        )
    if path.suffix != ".safetensors":
        raise ValueError(f"copy detector weights {str(path)!r} are not a .safetensors file")
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("memaudit") != "copy-detector" or "architecture" not in metadata:
        raise ValueError(
            f"{str(path)!r} is not a memaudit copy detector (no architecture in its metadata)"
        )
    arch = json.loads(metadata["architecture"])
    encoder = CopyEncoder(int(arch["input_size"]), tuple(arch["channels"]), int(arch["dimension"]))
    try:
        encoder.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as err:
        raise ValueError(f"copy detector weights {str(path)!r} do not fit: {err}") from err
    return encoder.eval().to(device)
