"""Training the learned copy detector on the training images, and its model card.

:func:`detector_images` gathers what the ``train_copy_detector`` rule trains on - the same
training images copy detection compares generations with (each distinct demo image once, or
the configured folder's images), resampled to the encoder's input size - and
:func:`train_detector` trains the encoder (:mod:`memaudit.copy_detection.encoder`), saves the
safetensors weights and returns the model card: every training setting, the data, the loss
and pair-accuracy curve, the time taken.
"""

from __future__ import annotations

import dataclasses
import hashlib
import platform
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
from tqdm import tqdm

from memaudit.copy_detection.embedding import square_resample
from memaudit.copy_detection.encoder import save_encoder, train_encoder
from memaudit.copy_detection.images import (
    UNREADABLE_KEY,
    check_policy,
    demo_training_images,
    find_images,
    read_image,
)
from memaudit.copy_detection.spec import DetectorSpec

TRAIN_KEY = "copy_detection.train_images"
# Points of the loss curve kept in the model card (the full curve is every step).
_CARD_CURVE_POINTS = 50


def resampled_stack(images: list[np.ndarray] | np.ndarray, side: int) -> np.ndarray:
    """Grayscale images of any size -> uint8 [N, side, side] (centre crop, area resampling)."""
    out = np.zeros((len(images), side, side), dtype=np.uint8)
    for i, image in enumerate(images):
        out[i] = np.clip(np.rint(square_resample(image, side) * 255.0), 0, 255).astype(np.uint8)
    return out


def detector_images(
    cfg: Mapping[str, Any],
    demo: Mapping[str, Any] | None,
    side: int,
    workers: int = 2,
    progress: TextIO | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(uint8 [N, side, side] training images, where they came from) for the detector.

    ``cfg`` is the config ``copy_detection`` block; with ``train_images`` unset, ``demo``
    gives the demo corpus arrays (``studies``, ``report_map``, ``images``). Held-out images
    are never trained on: they calibrate the threshold.
    """
    if cfg.get("train_images"):
        return read_training_folder(cfg, side, workers, progress)
    if demo is None:
        raise ValueError(
            "copy_detection.train_images is not set and there is no demo corpus: nothing to "
            "train the copy detector on"
        )
    images, index = demo_training_images(demo["studies"], demo["report_map"], demo["images"])
    source = {"train_images": "demo corpus images.npy", "n_train": len(index)}
    return resampled_stack(list(images), side), source


def read_training_folder(
    cfg: Mapping[str, Any], side: int, workers: int = 2, progress: TextIO | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """The configured training folder's images (list, limit and ``unreadable`` policy as
    copy detection applies them), decoded by ``workers`` threads and resampled to ``side``."""
    policy = check_policy(cfg.get("unreadable"))
    root = Path(cfg["train_images"])
    found = find_images(
        root, TRAIN_KEY, cfg.get("train_list"), cfg.get("train_limit"), unreadable=policy
    )

    def read(rel: str) -> np.ndarray | str:
        try:
            image = read_image(root / rel, side_hint=side)
        except ValueError as err:
            if policy == "error":
                raise ValueError(
                    f"{TRAIN_KEY}: {err} (set {UNREADABLE_KEY}: skip to leave it out)"
                ) from None
            return str(err)
        return resampled_stack([image], side)[0]

    bar = tqdm(total=len(found.paths), unit="img", desc="read", file=progress, disable=not progress)
    kept, unreadable = [], []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for rel, result in zip(found.paths, pool.map(read, found.paths), strict=True):
            if isinstance(result, str):
                unreadable.append(rel)
            else:
                kept.append(result)
            bar.update(1)
    bar.close()
    if len(kept) < 2:
        raise ValueError(
            f"{TRAIN_KEY}: {len(kept)} readable training image(s) under {str(root)!r} "
            f"({len(found.missing)} missing, {len(unreadable)} unreadable): the copy detector "
            "needs at least 2"
        )
    source = {
        "train_images": str(root),
        "n_train": len(kept),
        "skipped": {
            "missing": len(found.missing),
            "unreadable": len(unreadable),
            "examples": (found.missing + unreadable)[:5],
        },
    }
    return np.stack(kept), source


def train_detector(
    images: np.ndarray,
    spec: DetectorSpec,
    weights: str | Path,
    source: Mapping[str, Any],
    device: str | torch.device = "cpu",
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Train on ``images``, save the weights to ``weights``; returns the model card."""
    encoder, history = train_encoder(images, spec, device=device, progress=progress)
    save_encoder(encoder, weights, spec)
    digest = hashlib.sha256(Path(weights).read_bytes()).hexdigest()
    losses = np.asarray(history["loss"])
    accuracy = np.asarray(history["pair_accuracy"])
    tail = max(1, len(losses) // 10)
    every = max(1, len(losses) // _CARD_CURVE_POINTS)
    return {
        "model": "memaudit copy detector: contrastive (InfoNCE / SimCLR) image encoder",
        "purpose": (
            "embeds images so that a copy of a training image, even shifted, rotated, "
            "re-contrasted or noisy, is nearer to it than other images are (Dar et al.)"
        ),
        "weights": {"file": Path(weights).name, "format": "safetensors", "sha256": digest},
        "settings": dataclasses.asdict(spec),
        "parameters": int(sum(p.numel() for p in encoder.parameters())),
        "data": {**source, "n_images": int(len(images)), "input_size": spec.input_size},
        "training": {
            "steps": spec.steps,
            "seconds": round(float(history["seconds"]), 2),
            "device": str(device),
            "threads": torch.get_num_threads(),
            "final_loss": float(losses[-tail:].mean()),
            "final_pair_accuracy": float(accuracy[-tail:].mean()),
            "chance_pair_accuracy": 1.0 / (2 * min(spec.batch_size, len(images)) - 1),
            "curve": {
                "step": list(range(0, len(losses), every)),
                "loss": [round(float(v), 5) for v in losses[::every]],
                "pair_accuracy": [round(float(v), 4) for v in accuracy[::every]],
            },
        },
        "software": {"torch": torch.__version__, "python": platform.python_version()},
        "limits": (
            "trained only on this audit's training images; it tells copies of them from "
            "other images and is not a general image embedding"
        ),
    }
