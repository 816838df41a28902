"""Mitigation settings and seeds derived from (seed, prompt, strategy)."""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

STRATEGIES = ("original", "rwa", "rna", "remove", "gni", "cwr", "rt", "embopt")
MARKER_STRATEGIES = frozenset({"rwa", "rna", "remove"})
SELECTION_MODES = ("marker_memorized", "memorized")
# Keys of the config ``mitigation`` block that change no image: which prompts are generated is
# decided by the selection rule (its output is an input of generation), the chunk count and
# the bootstrap only split work or summarise it.
SELECTION_KEYS = frozenset({"prompts", "sample_size", "include_planted"})
NON_GENERATION_KEYS = SELECTION_KEYS | frozenset({"chunks", "bootstrap"})


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MitigationSpec:
    """What changes the generated images (the config ``mitigation`` block without selection,
    chunk and evaluation keys).

    ``batch_size`` counts images (one prompt-strategy row × one seed) per UNet call, or is
    ``"auto"``; ``embopt_generations`` is how many of the first seeds' x_T the embedding
    optimisation minimises L on (None: all ``n_seeds``).
    """

    strategies: tuple[str, ...] = STRATEGIES
    n_seeds: int = 50
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    batch_size: int | str = "auto"
    rna_range: tuple[int, int] = (1, 100)
    gni_scale: float = 0.1
    cwr_repeats: int = 1
    rt_tokens: int = 4
    embopt_lr: float = 0.05
    embopt_iterations: int = 10
    embopt_target_loss: float | None = None
    embopt_generations: int | None = 4

    def __post_init__(self) -> None:
        strategies = tuple(self.strategies)
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown or not strategies or len(set(strategies)) != len(strategies):
            raise ValueError(
                f"mitigation.strategies must be distinct names from {list(STRATEGIES)}, "
                f"got {list(self.strategies)}"
            )
        object.__setattr__(self, "strategies", strategies)
        for name in ("n_seeds", "steps", "embopt_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"mitigation.{name} must be a positive integer, got {value!r}")
        for name in ("cwr_repeats", "rt_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"mitigation.{name} must be a positive integer, got {value!r}")
        low, high = (int(v) for v in self.rna_range)
        if low > high:
            raise ValueError(f"mitigation.rna_range must be [low, high], got {self.rna_range!r}")
        object.__setattr__(self, "rna_range", (low, high))
        if not math.isfinite(self.guidance):
            raise ValueError(f"mitigation.guidance must be finite, got {self.guidance!r}")
        if not self.gni_scale >= 0 or not math.isfinite(self.gni_scale):
            raise ValueError(f"mitigation.gni_scale must be >= 0, got {self.gni_scale!r}")
        if not self.embopt_lr > 0:
            raise ValueError(f"mitigation.embopt_lr must be > 0, got {self.embopt_lr!r}")
        gens = self.embopt_generations
        if gens is not None and (not isinstance(gens, int) or gens < 1):
            raise ValueError(f"mitigation.embopt_generations must be >= 1 or null, got {gens!r}")
        batch = self.batch_size
        if batch != "auto" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise ValueError(
                f"mitigation.batch_size must be 'auto' or a positive integer, got {batch!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MitigationSpec:
        """From a config ``mitigation`` block; selection/chunk/evaluation keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - NON_GENERATION_KEYS)
        if unknown:
            raise ValueError(
                f"unknown mitigation key(s) {unknown}; expected some of {sorted(known)}"
            )
        kwargs = {k: v for k, v in values.items() if k in known}
        for key in ("strategies", "rna_range"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @property
    def embopt_seeds(self) -> int:
        return min(self.n_seeds, self.embopt_generations or self.n_seeds)


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from a hash of ``parts`` (e.g. seed, prompt id, strategy)."""
    text = ":".join(str(p) for p in ("memaudit-mitigation", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def strategy_rng(seed: int, prompt_id: str, strategy: str) -> np.random.Generator:
    """The random generator of one (prompt, strategy): independent of every row position."""
    return np.random.default_rng(derived_seed(seed, prompt_id, strategy))
