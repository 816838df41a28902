"""Synthetic-set settings (the config ``synthetic`` block), defaults from the schema."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from memaudit.config import schema_defaults, spec_from_dict

_DEFAULTS = schema_defaults("synthetic")


@dataclass(frozen=True)
class SyntheticSpec:
    """How the synthetic set is drawn, generated and summarised.

    ``n_images`` prompts are drawn with replacement, each text with probability proportional
    to its ``n_reports``; image j is guided DDIM (``steps``, ``guidance``) from x_T of
    (``seed``, j). ``batch_size`` counts images per UNet call, or is ``"auto"``;
    ``bootstrap`` is the number of resamples (over images) of the copy-fraction interval.
    """

    # Keys of the config ``synthetic`` block that belong to the workflow: the switch and the
    # chunk count (image j depends on (seed, j) alone, never on its chunk).
    WORKFLOW_KEYS: ClassVar[frozenset[str]] = frozenset({"enabled", "chunks"})
    # Keys that change no image: the bootstrap only summarises the copy flags.
    NON_GENERATION_KEYS: ClassVar[frozenset[str]] = frozenset({*WORKFLOW_KEYS, "bootstrap"})

    n_images: int = _DEFAULTS["n_images"]
    steps: int = _DEFAULTS["steps"]
    guidance: float = _DEFAULTS["guidance"]
    seed: int = _DEFAULTS["seed"]
    batch_size: int | str = _DEFAULTS["batch_size"]
    bootstrap: int = _DEFAULTS["bootstrap"]

    def __post_init__(self) -> None:
        for name in ("n_images", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"synthetic.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ValueError(f"synthetic.seed must be an integer, got {self.seed!r}")
        boot = self.bootstrap
        if not isinstance(boot, int) or isinstance(boot, bool) or boot < 0:
            raise ValueError(f"synthetic.bootstrap must be an integer >= 0, got {boot!r}")
        guidance = self.guidance
        if (
            not isinstance(guidance, (int, float))
            or isinstance(guidance, bool)
            or not math.isfinite(guidance)
            or guidance < 0
        ):
            raise ValueError(f"synthetic.guidance must be a finite number >= 0, got {guidance!r}")
        batch = self.batch_size
        if batch != "auto" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise ValueError(
                f"synthetic.batch_size must be 'auto' or a positive integer, got {batch!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> SyntheticSpec:
        """From a config ``synthetic`` block; :attr:`WORKFLOW_KEYS` are accepted and ignored."""
        return spec_from_dict(cls, values, "synthetic", ignored=cls.WORKFLOW_KEYS)
