"""Attribution settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from memaudit.config import schema_defaults, spec_from_dict
from memaudit.scoring.spec import ScoringSpec

WORD_SCORES = ("sum", "max")
# Every attribution method, in the order of the tables (see :mod:`.methods`).
METHODS = (
    "gradient",
    "grad_x_input",
    "integrated_gradients",
    "occlusion_delete",
    "occlusion_replace",
)
METHOD_LABELS = {
    "gradient": "gradient w.r.t. encoder output (Wen et al.)",
    "grad_x_input": "gradient × input embedding",
    "integrated_gradients": "integrated gradients (input embedding)",
    "occlusion_delete": "occlusion by deletion",
    "occlusion_replace": "occlusion by neutral token",
}
_DEFAULTS = schema_defaults("attribution")
_KEY_CHECK_DEFAULTS = schema_defaults("key_check")


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
    ENGINE_KEYS: ClassVar[tuple[str, ...]] = (
        "window",
        "batch_size",
        "methods",
        "ig_steps",
        "neutral_token",
    )
    # Keys of the config ``scoring`` block that attribution replaces with its own.
    REPLACED_SCORING_KEYS: ClassVar[frozenset[str]] = frozenset({"window"})

    window: tuple[int, int | None] = _DEFAULTS["window"]
    batch_size: int = _DEFAULTS["batch_size"]
    word_score: str = _DEFAULTS["word_score"]
    include_planted: bool = _DEFAULTS["include_planted"]
    bootstrap: int = _DEFAULTS["bootstrap"]
    min_prompts: int = _DEFAULTS["min_prompts"]
    seed: int = _DEFAULTS["seed"]
    methods: tuple[str, ...] = tuple(_DEFAULTS["methods"])
    primary: str = _DEFAULTS["primary"]
    ig_steps: int = _DEFAULTS["ig_steps"]
    neutral_token: str | None = _DEFAULTS["neutral_token"]

    def __post_init__(self) -> None:
        self._check_methods()
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

    def _check_methods(self) -> None:
        methods = self.methods
        if isinstance(methods, str) or not isinstance(methods, (list, tuple)) or not methods:
            raise ValueError(
                f"attribution.methods must be a non-empty list of {', '.join(METHODS)}, "
                f"got {methods!r}"
            )
        unknown = [m for m in methods if m not in METHODS]
        if unknown:
            raise ValueError(
                f"attribution.methods: unknown method(s) {unknown}; choose from "
                f"{', '.join(METHODS)}"
            )
        if "gradient" not in methods:
            raise ValueError(
                "attribution.methods must include gradient (Wen et al.'s method is always "
                "reported, whatever it scores)"
            )
        if len(set(methods)) != len(methods):
            raise ValueError(f"attribution.methods lists a method twice: {list(methods)}")
        object.__setattr__(self, "methods", tuple(methods))
        if self.primary != "auto" and self.primary not in methods:
            raise ValueError(
                f"attribution.primary must be auto or one of attribution.methods "
                f"({', '.join(methods)}), got {self.primary!r}"
            )
        if not _is_int(self.ig_steps) or self.ig_steps < 1:
            raise ValueError(
                f"attribution.ig_steps must be a positive integer, got {self.ig_steps!r}"
            )
        if self.neutral_token is not None and (
            not isinstance(self.neutral_token, str) or not self.neutral_token
        ):
            raise ValueError(
                f"attribution.neutral_token must be a token string or null (the pad token), "
                f"got {self.neutral_token!r}"
            )

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


@dataclass(frozen=True)
class KeyCheckSpec:
    """Generation settings of the key check (config block ``key_check``); d_mem uses the
    scoring settings."""

    generations: int = _KEY_CHECK_DEFAULTS["generations"]
    steps: int = _KEY_CHECK_DEFAULTS["steps"]
    guidance: float = _KEY_CHECK_DEFAULTS["guidance"]

    def __post_init__(self) -> None:
        for name in ("generations", "steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"key_check.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.guidance, (int, float)) or not np.isfinite(self.guidance):
            raise ValueError(f"key_check.guidance must be a finite number, got {self.guidance!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> KeyCheckSpec:
        """Build from the config ``key_check`` block; unknown keys are an error naming them."""
        return spec_from_dict(cls, values, "key_check")
