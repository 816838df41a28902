"""The detectors by name (config ``scoring.detectors``).

Each detector is one module with ``NAME``, ``LABEL``, ``NEEDS`` and ``score(batch)``; the
engine (:func:`memaudit.scoring.engine.detect_prompts`) runs every configured one on the same
batches, the same x_T and one shared guided trajectory. What a detector needs from the model is
also stated in :mod:`memaudit.scoring.catalog` (light: the workflow checks the config with it
at parse time without importing torch); a unit test keeps the two in agreement. Formulas and
settings: ``docs/method.md``.
"""

from __future__ import annotations

from types import ModuleType

from memaudit.scoring.detectors import (
    anisotropy,
    attention_entropy,
    bright_ending,
    sharpness,
    wen,
)

DETECTORS: dict[str, ModuleType] = {
    module.NAME: module for module in (wen, sharpness, anisotropy, bright_ending, attention_entropy)
}
