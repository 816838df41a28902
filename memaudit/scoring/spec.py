"""Scoring settings (Wen et al.'s d_mem): steps, generations, guidance, window, dtype, batching."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from memaudit.config import schema_defaults, spec_from_dict

_DEFAULTS = schema_defaults("scoring")


@dataclass(frozen=True)
class ScoringSpec:
    """How d_mem is computed.

    ``window`` is a half-open range [start, stop) of sampling steps (0 = the first, noisiest
    step); ``stop=None`` means all ``steps``. ``batch_size`` counts prompts per UNet call
    (each prompt brings ``generations`` × 2 rows) or is ``"auto"``.
    """

    # Keys of the config ``scoring`` block that belong to the workflow, not to the scores: the
    # chunk count only splits the prompts (x_T depends on (seed, generation) alone).
    WORKFLOW_KEYS: ClassVar[frozenset[str]] = frozenset({"chunks"})
    # Keys that choose the detectors of the scoring stage; the stages that re-measure Wen's
    # d_mem (attribution, key check, mitigation) do not take them.
    DETECTOR_KEYS: ClassVar[frozenset[str]] = frozenset({"detectors", "primary"})

    steps: int = _DEFAULTS["steps"]
    guidance: float = _DEFAULTS["guidance"]
    generations: int = _DEFAULTS["generations"]
    window: tuple[int, int | None] = _DEFAULTS["window"]
    batch_size: int | str = _DEFAULTS["batch_size"]
    seed: int = _DEFAULTS["seed"]
    detectors: tuple[str, ...] = tuple(_DEFAULTS["detectors"])
    primary: str = _DEFAULTS["primary"]

    def __post_init__(self) -> None:
        from memaudit.scoring.catalog import check_detector_names

        if not isinstance(self.detectors, (list, tuple)):
            raise ValueError(f"scoring.detectors must be a list, got {self.detectors!r}")
        object.__setattr__(self, "detectors", check_detector_names(self.detectors, self.primary))
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"scoring.steps must be a positive integer, got {self.steps!r}")
        if not isinstance(self.generations, int) or self.generations < 1:
            raise ValueError(
                f"scoring.generations must be a positive integer, got {self.generations!r}"
            )
        if not isinstance(self.guidance, (int, float)) or not math.isfinite(self.guidance):
            raise ValueError(f"scoring.guidance must be a finite number, got {self.guidance!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"scoring.seed must be an integer, got {self.seed!r}")
        batch = self.batch_size
        if batch != "auto" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise ValueError(
                f"scoring.batch_size must be 'auto' or a positive integer, got {batch!r}"
            )
        if not isinstance(self.window, (list, tuple)) or len(self.window) != 2:
            raise ValueError(f"scoring.window must be [start, stop], got {self.window!r}")
        object.__setattr__(self, "window", tuple(self.window))
        start, stop = self.window_bounds()
        if not 0 <= start < stop <= self.steps:
            raise ValueError(
                f"scoring.window {list(self.window)} must satisfy 0 <= start < stop <= "
                f"scoring.steps ({self.steps})"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> ScoringSpec:
        """Build from a config ``scoring`` block; unknown keys are an error naming them.

        The workflow-level keys (:attr:`WORKFLOW_KEYS`) are accepted and ignored.
        """
        return spec_from_dict(cls, values, "scoring", ignored=cls.WORKFLOW_KEYS)

    def window_bounds(self) -> tuple[int, int]:
        """The window as concrete (start, stop) step indices."""
        start, stop = self.window
        if not isinstance(start, int) or (stop is not None and not isinstance(stop, int)):
            raise ValueError(f"scoring.window bounds must be integers, got {self.window!r}")
        return start, self.steps if stop is None else stop

    @property
    def computed_steps(self) -> int:
        """How many sampling steps Wen's d_mem needs: up to the end of the window."""
        return self.window_bounds()[1]
