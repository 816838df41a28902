"""Attribution settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from memaudit.config import schema_defaults, spec_from_dict
from memaudit.scoring.spec import ScoringSpec

WORD_SCORES = ("sum", "max")
_DEFAULTS = schema_defaults("attribution")


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

    # Keys of the config ``attribution`` block that belong to the workflow, not to the results.
    WORKFLOW_KEYS: ClassVar[frozenset[str]] = frozenset({"chunks"})
    # The only keys that change an attribute_tokens chunk (in this order, as its params): the
    # rest summarise the chunks (word_score, bootstrap, min_prompts, seed) or select prompts.
    ENGINE_KEYS: ClassVar[tuple[str, ...]] = ("window", "batch_size")
    # Keys of the config ``scoring`` block that attribution replaces with its own.
    REPLACED_SCORING_KEYS: ClassVar[frozenset[str]] = frozenset({"window"})

    window: tuple[int, int | None] = _DEFAULTS["window"]
    batch_size: int = _DEFAULTS["batch_size"]
    word_score: str = _DEFAULTS["word_score"]
    include_planted: bool = _DEFAULTS["include_planted"]
    bootstrap: int = _DEFAULTS["bootstrap"]
    min_prompts: int = _DEFAULTS["min_prompts"]
    seed: int = _DEFAULTS["seed"]

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
            raise ValueError(
                f"attribution.window {list(window)} must satisfy 0 <= start < stop "
                "(stop null: all scoring steps)"
            )
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

        The workflow-level keys (:attr:`WORKFLOW_KEYS`) are accepted and ignored.
        """
        return spec_from_dict(cls, values, "attribution", ignored=cls.WORKFLOW_KEYS)

    def scoring_spec(self, scoring: Mapping[str, Any]) -> ScoringSpec:
        """The scoring engine's settings (steps, guidance, generations, seed, batch size) with
        this attribution window instead of the scoring window."""
        start, stop = self.window
        steps = scoring.get("steps", ScoringSpec.steps)
        if _is_int(steps) and (start >= steps if stop is None else stop > steps):
            raise ValueError(
                f"attribution.window {list(self.window)} reaches beyond the sampling steps "
                f"(scoring.steps is {steps})"
            )
        values = {k: v for k, v in scoring.items() if k not in self.REPLACED_SCORING_KEYS}
        return ScoringSpec.from_dict({**values, "window": [start, stop]})


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)
