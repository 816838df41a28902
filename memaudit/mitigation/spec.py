"""Mitigation settings and seeds derived from (seed, prompt, strategy)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from memaudit.config import schema_defaults, spec_from_dict
from memaudit.seeds import TORCH_SEED_MASK, hashed_seed

STRATEGIES = ("original", "rwa", "rna", "remove", "gni", "cwr", "rt", "embopt")
MARKER_STRATEGIES = frozenset({"rwa", "rna", "remove"})
SELECTION_MODES = ("marker_memorized", "memorized")
_DEFAULTS = schema_defaults("mitigation")


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

    # Keys of the config ``mitigation`` block that decide which prompts are mitigated (the
    # selection rule's output is an input of generation, so they change no image by themselves).
    SELECTION_KEYS: ClassVar[tuple[str, ...]] = ("prompts", "sample_size", "include_planted")
    # The selection rule's settings, in its params' order: the sample is drawn with ``seed``.
    SELECTION_PARAMS: ClassVar[tuple[str, ...]] = (*SELECTION_KEYS, "seed")
    # Keys that change no image: selection, and the chunk count and bootstrap, which only split
    # the work or summarise it.
    NON_GENERATION_KEYS: ClassVar[frozenset[str]] = frozenset(
        {*SELECTION_KEYS, "chunks", "bootstrap"}
    )

    # The keys the ``original`` strategy's images depend on (copy detection's control prompts
    # are generated with exactly these).
    ORIGINAL_KEYS: ClassVar[tuple[str, ...]] = (
        "n_seeds",
        "steps",
        "guidance",
        "seed",
        "batch_size",
    )

    strategies: tuple[str, ...] = _DEFAULTS["strategies"]
    n_seeds: int = _DEFAULTS["n_seeds"]
    steps: int = _DEFAULTS["steps"]
    guidance: float = _DEFAULTS["guidance"]
    seed: int = _DEFAULTS["seed"]
    batch_size: int | str = _DEFAULTS["batch_size"]
    rna_range: tuple[int, int] = _DEFAULTS["rna_range"]
    gni_scale: float = _DEFAULTS["gni_scale"]
    cwr_repeats: int = _DEFAULTS["cwr_repeats"]
    rt_tokens: int = _DEFAULTS["rt_tokens"]
    embopt_lr: float = _DEFAULTS["embopt_lr"]
    embopt_iterations: int = _DEFAULTS["embopt_iterations"]
    embopt_target_loss: float | None = _DEFAULTS["embopt_target_loss"]
    embopt_generations: int | None = _DEFAULTS["embopt_generations"]

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
    def from_dict(cls, values: Mapping[str, Any] | None) -> MitigationSpec:
        """From a config ``mitigation`` block; :attr:`NON_GENERATION_KEYS` are ignored."""
        return spec_from_dict(cls, values, "mitigation", ignored=cls.NON_GENERATION_KEYS)

    @property
    def embopt_seeds(self) -> int:
        return min(self.n_seeds, self.embopt_generations or self.n_seeds)


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from a hash of ``parts`` (e.g. seed, prompt id, strategy)."""
    return hashed_seed("memaudit-mitigation", *parts) & TORCH_SEED_MASK


def strategy_rng(seed: int, prompt_id: str, strategy: str) -> np.random.Generator:
    """The random generator of one (prompt, strategy): independent of every row position."""
    return np.random.default_rng(derived_seed(seed, prompt_id, strategy))
