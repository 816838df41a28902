"""Embeddings for copy detection: images of any size -> unit-length rows.

Kinds (config ``copy_detection.embedding``, see :class:`EmbeddingSpec`):

- ``learned`` (default, as Dar et al.): the contrastive encoder the ``train_copy_detector``
  rule trained on the training images (:mod:`memaudit.copy_detection.encoder`); the image is
  centre-cropped and area-resampled to ``copy_detection.learned.input_size``, encoded and
  L2-normalised.
- ``pixels`` (default, weight-free): the image is centre-cropped to a square, area-averaged
  down to ``side`` x ``side`` pixels, its mean is subtracted and it is L2-normalised, so the
  cosine similarity of two embeddings is the Pearson correlation of their downsampled pixels.
- ``torchvision`` / ``timm``: the penultimate (pooled) features of a torchvision or timm
  architecture (``copy_detection.network.arch``) with local safetensors weights
  (``copy_detection.network.weights``; never unpickled, never downloaded), L2-normalised. The
  grayscale image is repeated over three channels and normalised with ImageNet statistics (a
  timm model's own ``pretrained_cfg`` mean and std where it has them). Only available when the
  package is importable.

:func:`embed_arrays` embeds an image stack (the demo's ``images.npy`` rows, see
:func:`memaudit.copy_detection.images.demo_training_images`); :func:`embed_files` a folder's
PNG/JPG files (e.g. MIMIC-CXR-JPG), decoded by worker threads.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from tqdm import tqdm

from memaudit.copy_detection.encoder import load_encoder
from memaudit.copy_detection.images import as_float_image, read_image
from memaudit.copy_detection.spec import EmbeddingSpec

# ImageNet normalisation of torchvision's pretrained models (and timm's default).
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@lru_cache(maxsize=64)
def area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """[n_out, n_in] weights of area resampling: output cell i averages the input cells.

    Output cell i covers [i·n_in/n_out, (i+1)·n_in/n_out) in input coordinates; each input
    cell contributes the length of its overlap with that interval, rows sum to one. Works for
    down- and upsampling; ``A @ image @ A.T`` resamples a square image.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be positive, got {n_in} -> {n_out}")
    edges = np.arange(n_out + 1, dtype=np.float64) * n_in / n_out
    lo, hi = edges[:-1, None], edges[1:, None]
    cells = np.arange(n_in, dtype=np.float64)[None, :]
    overlap = np.clip(np.minimum(hi, cells + 1) - np.maximum(lo, cells), 0.0, None)
    weights = overlap / overlap.sum(axis=1, keepdims=True)
    weights.setflags(write=False)
    return weights


def square_resample(image: np.ndarray, side: int) -> np.ndarray:
    """Centre-crop a grayscale image to a square and area-resample it to ``side`` x ``side``."""
    pixels = as_float_image(image)
    h, w = pixels.shape
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = pixels[top : top + s, left : left + s]
    weights = area_matrix(s, side)
    return weights @ crop @ weights.T


def pixel_embedding(prepared: np.ndarray) -> np.ndarray:
    """[N, side, side] resampled images -> [N, side²] float32: mean removed, unit length.

    A constant image has no direction and gets the zero vector (similarity 0 to everything).
    """
    flat = np.asarray(prepared, dtype=np.float64).reshape(len(prepared), -1)
    centred = flat - flat.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    safe = np.where(norms > 1e-12, norms, 1.0)
    return np.where(norms > 1e-12, centred / safe, 0.0).astype(np.float32)


class Embedder:
    """Images (each any size, grayscale) -> unit-length embedding rows, per :class:`EmbeddingSpec`.

    ``prepare`` resamples one image to the embedding's square input; ``embed_prepared`` turns
    a stack of prepared images into embeddings; calling the object does both.
    """

    def __init__(self, spec: EmbeddingSpec, device: str | torch.device | None = None) -> None:
        self.spec = spec
        if device is None:  # a network on the GPU when there is one; pixels stay on the CPU
            device = "cuda" if torch.cuda.is_available() and spec.kind != "pixels" else "cpu"
        self.device = torch.device(device)
        self._network, self._mean, self._std = None, _IMAGENET_MEAN, _IMAGENET_STD
        self._encoder = None
        if spec.kind == "learned":
            self._encoder = load_encoder(spec.detector, self.device)
            if self._encoder.input_size != spec.learned_size:
                raise ValueError(
                    f"copy detector {spec.detector!r} takes {self._encoder.input_size}-pixel "
                    f"images but copy_detection.learned.input_size is {spec.learned_size}; "
                    "re-train it (train_copy_detector)"
                )
        elif spec.kind != "pixels":
            self._network, self._mean, self._std = _feature_network(spec, self.device)

    def prepare(self, image: np.ndarray) -> np.ndarray:
        return square_resample(image, self.spec.prepared_side).astype(np.float32)

    def embed_prepared(self, prepared: np.ndarray) -> np.ndarray:
        if self._encoder is not None:
            x = torch.from_numpy(np.asarray(prepared, dtype=np.float32))[:, None]
            return self._encoder.embed(x.to(self.device)).cpu().numpy().astype(np.float32)
        if self._network is None:
            return pixel_embedding(prepared)
        x = torch.from_numpy(np.asarray(prepared, dtype=np.float32))[:, None]
        x = x.expand(-1, 3, -1, -1)
        mean = torch.tensor(self._mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self._std, dtype=torch.float32).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.device)
        with torch.no_grad():
            features = self._network(x).flatten(1).float()
        features = torch.nn.functional.normalize(features, dim=1)
        return features.cpu().numpy().astype(np.float32)

    def __call__(self, images: Iterable[np.ndarray]) -> np.ndarray:
        prepared = [self.prepare(image) for image in images]
        if not prepared:
            return np.zeros((0, self.dimension), dtype=np.float32)
        return self.embed_prepared(np.stack(prepared))

    @cached_property
    def dimension(self) -> int:
        """Length of one embedding."""
        if self._encoder is not None:
            return int(self._encoder.project.out_features)
        if self._network is None:
            return self.spec.side**2
        side = self.spec.prepared_side
        probe = np.zeros((1, side, side), dtype=np.float32)
        probe[0, 0, 0] = 1.0
        return int(self.embed_prepared(probe).shape[1])


def _import_backend(kind: str) -> Any:
    """The torchvision or timm module, or a ValueError saying why it cannot be used."""
    try:
        return importlib.import_module(kind)
    except ImportError as err:
        raise ValueError(
            f"copy_detection.embedding is {kind!r} but {kind} is not installed in this "
            f"environment; install a {kind} build matching torch, or set "
            "copy_detection.embedding: pixels"
        ) from err
    except Exception as err:  # noqa: BLE001 - a build for another torch fails inside its import
        raise ValueError(
            f"copy_detection.embedding is {kind!r} but {kind} does not load with torch "
            f"{torch.__version__} ({type(err).__name__}: {err}); install the {kind} build made "
            "for this torch (same version pairing and CPU/CUDA variant), or set "
            "copy_detection.embedding: pixels"
        ) from err


def _feature_network(
    spec: EmbeddingSpec, device: torch.device
) -> tuple[torch.nn.Module, tuple[float, ...], tuple[float, ...]]:
    """(network without its classifier, input mean, input std) of a torchvision or timm
    architecture with local safetensors weights."""
    backend = _import_backend(spec.kind)
    if not spec.arch:
        raise ValueError(
            f"copy_detection.network.arch is required for the {spec.kind} embedding (e.g. resnet50)"
        )
    weights = Path(spec.weights or "")
    if not spec.weights or not weights.is_file():
        raise ValueError(
            f"copy_detection.network.weights {spec.weights!r} is not a file; point it at "
            "local safetensors weights of the architecture (nothing is downloaded)"
        )
    if weights.suffix != ".safetensors":
        raise ValueError(
            f"copy_detection.network.weights {str(weights)!r} is not a .safetensors file; "
            "pickled checkpoints are never loaded"
        )
    from safetensors.torch import load_file  # noqa: PLC0415

    try:
        if spec.kind == "timm":
            network = backend.create_model(spec.arch, pretrained=False)
        else:
            network = backend.models.get_model(spec.arch, weights=None)
    except (ValueError, RuntimeError, KeyError) as err:
        raise ValueError(
            f"copy_detection.network.arch {spec.arch!r} is not a {spec.kind} model: {err}"
        ) from err
    try:
        network.load_state_dict(load_file(str(weights)), strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"copy_detection.network.weights {str(weights)!r} do not fit {spec.arch}: {err}"
        ) from err
    mean, std = _IMAGENET_MEAN, _IMAGENET_STD
    if spec.kind == "timm":
        network.reset_classifier(0)  # pooled penultimate features
        cfg = getattr(network, "pretrained_cfg", None) or {}
        if len(cfg.get("mean") or ()) == 3 and len(cfg.get("std") or ()) == 3:
            mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    else:
        for head in ("fc", "classifier", "head", "heads"):
            if hasattr(network, head):
                setattr(network, head, torch.nn.Identity())
                break
    return network.eval().to(device), mean, std


def embed_arrays(
    images: np.ndarray, embedder: Embedder, batch_size: int = 512, progress: TextIO | None = None
) -> np.ndarray:
    """Embeddings [N, d] of an image stack [N, H, W] (uint8 or float in [0, 1])."""
    out = [np.zeros((0, embedder.dimension), dtype=np.float32)]
    bar = tqdm(total=len(images), unit="img", desc="embed", file=progress, disable=not progress)
    for lo in range(0, len(images), batch_size):
        batch = images[lo : lo + batch_size]
        out.append(embedder(list(batch)))
        bar.update(len(batch))
    bar.close()
    return np.concatenate(out)


def embed_files(
    root: str | Path,
    paths: Sequence[str],
    embedder: Embedder,
    batch_size: int = 256,
    workers: int = 2,
    progress: TextIO | None = None,
) -> np.ndarray:
    """Embeddings [N, d] of image files (relative ``paths`` under ``root``), in order.

    Files are decoded and resampled by ``workers`` threads (the decoders release the GIL).
    """
    root = Path(root)
    side = embedder.spec.prepared_side

    def prepare(rel: str) -> np.ndarray:
        return embedder.prepare(read_image(root / rel, side_hint=side))

    out = [np.zeros((0, embedder.dimension), dtype=np.float32)]
    bar = tqdm(total=len(paths), unit="img", desc="embed", file=progress, disable=not progress)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for lo in range(0, len(paths), batch_size):
            batch = list(pool.map(prepare, paths[lo : lo + batch_size]))
            out.append(embedder.embed_prepared(np.stack(batch)))
            bar.update(len(batch))
    bar.close()
    return np.concatenate(out)
