"""Files the demo-model rules write for the plot rules: training losses and generations.

numpy/pandas only (no torch, no model stack), so the plot rules that read them run in the light
``envs/core.yaml`` and a figure edit re-runs no training and no generation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from memaudit.atomic import atomic_parquet, atomic_write

LOSSES_FILE = "losses.tsv"  # beside the demo model's weights


def write_losses(model_dir: str | Path, losses: list[float] | np.ndarray) -> Path:
    """The per-step training losses as ``<model_dir>/losses.tsv`` (one column, ``loss``)."""
    path = Path(model_dir) / LOSSES_FILE
    values = np.asarray(losses, dtype=np.float64)
    atomic_write(
        path, lambda handle: np.savetxt(handle, values, fmt="%.6f", header="loss", comments="")
    )
    return path


def load_losses(model_dir: str | Path) -> np.ndarray:
    """The per-step training losses that :func:`write_losses` saved beside the model."""
    path = Path(model_dir) / LOSSES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: is {model_dir} a trained demo model?")
    return np.loadtxt(path, skiprows=1, ndmin=1)


@dataclass
class Generations:
    """Generations of some prompts with some seeds, beside each prompt's training image.

    ``images`` is uint8 [prompts, seeds, H, W]; ``training`` the (first) training image of
    each prompt [prompts, H, W]; ``texts`` and ``kinds`` (``planted`` / ``ordinary``) name the
    rows; ``seeds``, ``steps`` and ``guidance`` say how the images were sampled.
    """

    texts: list[str]
    kinds: list[str]
    images: np.ndarray
    training: np.ndarray
    seeds: tuple[int, ...]
    steps: int
    guidance: float

    def __post_init__(self) -> None:
        n = len(self.texts)
        if len(self.kinds) != n or len(self.images) != n or len(self.training) != n:
            raise ValueError(
                f"generations disagree on the number of prompts: {n} texts, {len(self.kinds)} "
                f"kinds, {len(self.images)} image rows, {len(self.training)} training images"
            )
        if self.images.ndim != 4 or self.images.shape[1] != len(self.seeds):
            raise ValueError(
                f"images must be [prompts, {len(self.seeds)} seeds, H, W], got {self.images.shape}"
            )


def write_generations(generations: Generations, npz: str | Path, index: str | Path) -> None:
    """The images as ``.npz`` (``images``, ``training``, ``seeds``, ``steps``, ``guidance``)
    and one index row per prompt (``row``, ``kind``, ``text``) as parquet, both atomically."""
    g = generations
    arrays = {
        "images": np.asarray(g.images, dtype=np.uint8),
        "training": np.asarray(g.training),
        "seeds": np.asarray(g.seeds, dtype=np.int64),
        "steps": np.asarray(g.steps, dtype=np.int64),
        "guidance": np.asarray(g.guidance, dtype=np.float64),
    }
    atomic_write(npz, lambda handle: np.savez_compressed(handle, **arrays))
    table = pd.DataFrame(
        {
            "row": np.arange(len(g.texts), dtype=np.int64),
            "kind": pd.Series(g.kinds, dtype=object),
            "text": pd.Series(g.texts, dtype=object),
        }
    )
    atomic_parquet(table, index)


def read_generations(npz: str | Path, index: str | Path) -> Generations:
    """What :func:`write_generations` wrote."""
    table = pd.read_parquet(index)
    if list(table["row"]) != list(range(len(table))):
        raise ValueError(f"{index}: rows are not 0..{len(table) - 1} in order")
    with np.load(npz, allow_pickle=False) as archive:
        return Generations(
            texts=table["text"].tolist(),
            kinds=table["kind"].tolist(),
            images=archive["images"],
            training=archive["training"],
            seeds=tuple(int(s) for s in archive["seeds"]),
            steps=int(archive["steps"]),
            guidance=float(archive["guidance"]),
        )
