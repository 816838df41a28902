"""Attribution settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from memaudit.scoring.spec import ScoringSpec

WORD_SCORES = ("sum", "max")
# Keys of the config ``attribution`` block that belong to the workflow, not to the results.
WORKFLOW_KEYS = frozenset({"chunks"})


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionSpec:
    """How attribution is computed and summarised (the config ``attribution`` block).

    ``window`` is a half-open range [start, stop) of sampling steps whose gradients are
    averaged (``stop=None``: all scoring steps); ``batch_size`` counts prompts per backward
    pass; ``word_score`` merges piece scores into word scores; ``bootstrap`` resamples (0: no
    confidence intervals) and ``seed`` drive the confidence intervals; word types need
    ``min_prompts`` prompts to be listed.
    """

    window: tuple[int, int | None] = (0, 1)
    batch_size: int = 8
    word_score: str = "sum"
    include_planted: bool = True
    bootstrap: int = 1000
    min_prompts: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        window = self.window
        if not isinstance(window, (list, tuple)) or len(window) != 2:
            raise ValueError(f"attribution.window must be [start, stop], got {window!r}")
        window = tuple(window)
        object.__setattr__(self, "window", window)
        start, stop = window
        if not _is_int(start) or not (stop is None or _is_int(stop)):
            raise ValueError(f"attribution.window bounds must be integers, got {list(window)}")
        if start < 0 or (stop is not None and stop <= start):
            raise ValueError(f"attribution.window {list(window)} must satisfy 0 <= start < stop")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(
                f"attribution.batch_size must be a positive integer, got {self.batch_size!r}"
            )
        if self.word_score not in WORD_SCORES:
            raise ValueError(
                f"attribution.word_score must be one of {', '.join(WORD_SCORES)}, "
                f"got {self.word_score!r}"
            )
        if not isinstance(self.include_planted, bool):
            raise ValueError(
                f"attribution.include_planted must be true or false, got {self.include_planted!r}"
            )
        if not _is_int(self.bootstrap) or self.bootstrap < 0:
            raise ValueError(
                f"attribution.bootstrap must be a non-negative integer, got {self.bootstrap!r}"
            )
        if not _is_int(self.min_prompts) or self.min_prompts < 1:
            raise ValueError(
                f"attribution.min_prompts must be a positive integer, got {self.min_prompts!r}"
            )
        if not _is_int(self.seed):
            raise ValueError(f"attribution.seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AttributionSpec:
        """Build from a config ``attribution`` block; unknown keys are an error naming them.

        The workflow-level key ``chunks`` is accepted and ignored.
        """
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - WORKFLOW_KEYS)
        if unknown:
            raise ValueError(
                f"unknown attribution key(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**{k: v for k, v in values.items() if k in known})

    def scoring_spec(self, scoring: Mapping[str, Any]) -> ScoringSpec:
        """The scoring engine's settings (steps, guidance, generations, seed, batch size) with
        this attribution window instead of the scoring window."""
        from memaudit.scoring.spec import ScoringSpec

        start, stop = self.window
        steps = scoring.get("steps", ScoringSpec.steps)
        if _is_int(steps) and stop is not None and stop > steps:
            raise ValueError(
                f"attribution.window {list(self.window)} ends after the last sampling step "
                f"(scoring.steps is {steps})"
            )
        values = {k: v for k, v in scoring.items() if k != "window"}
        return ScoringSpec.from_dict({**values, "window": [start, stop]})


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
