"""The detectors' catalogue: names, labels and what each needs from the model.

Light on purpose (no torch): the workflow validates ``scoring.detectors`` at parse time with
:func:`check_detector_names` and :func:`check_model_support`, before any job starts. The
implementations live in :mod:`memaudit.scoring.detectors`; a unit test checks that their
``NEEDS`` agree with this table.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DetectorInfo:
    label: str
    gradients: bool = False  # differentiates the UNet
    cross_attention: bool = False  # reads cross-attention maps


CATALOG: dict[str, DetectorInfo] = {
    "wen": DetectorInfo("Wen et al. (d_mem)"),
    "sharpness": DetectorInfo("Jeon et al. (sharpness, HVP at x_T)", gradients=True),
    "anisotropy": DetectorInfo("Asthana & Belagiannis (anisotropy + norm)"),
    "bright_ending": DetectorInfo("Chen et al. (Bright Ending)", cross_attention=True),
    "attention_entropy": DetectorInfo("Ren et al. (attention entropy)", cross_attention=True),
}
REQUIRED = "wen"  # attribution, key verification and mitigation measure Wen's d_mem


class DetectorConfigError(ValueError):
    """A detector cannot run with this configuration; the message names it and why."""


def check_detector_names(names: Sequence[str], primary: str) -> tuple[str, ...]:
    """The configured detector list, checked: known names, no repeats, Wen's included, the
    primary among them. Returns the names as a tuple."""
    names = tuple(names)
    unknown = [n for n in names if n not in CATALOG]
    if unknown:
        raise DetectorConfigError(
            f"scoring.detectors: unknown detector(s) {unknown}; known: {sorted(CATALOG)}"
        )
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DetectorConfigError(f"scoring.detectors lists {repeated} more than once")
    if REQUIRED not in names:
        raise DetectorConfigError(
            f"scoring.detectors must include {REQUIRED!r}: attribution, the planted-key check "
            "and mitigation all measure its d_mem"
        )
    if primary not in names:
        raise DetectorConfigError(
            f"scoring.primary {primary!r} is not among scoring.detectors {list(names)}"
        )
    return names


def check_model_support(names: Sequence[str], model_cfg: Mapping[str, Any]) -> None:
    """Fail before any job when a detector needs what the configured model lacks.

    - a detector that differentiates the UNet (``NEEDS.gradients``) refuses float16: its
      Jacobian-vector products overflow float16's range on real models;
    - a detector that reads cross-attention maps refuses a UNet whose config (read from a
      local ``unet/config.json`` when there is one) has no cross-attention blocks.
    """
    dtype = str(model_cfg.get("dtype", "float32"))
    for name in names:
        if CATALOG[name].gradients and dtype == "float16":
            raise DetectorConfigError(
                f"scoring.detectors: {name!r} differentiates the UNet (a Jacobian-vector "
                "product), which overflows float16; set model.dtype to float32 or bfloat16, "
                f"or drop {name!r}"
            )
    attention = [n for n in names if CATALOG[n].cross_attention]
    if attention:
        reason = cross_attention_missing(model_cfg)
        if reason:
            raise DetectorConfigError(
                f"scoring.detectors: {attention} read cross-attention maps, but {reason}; "
                "drop them from scoring.detectors"
            )


def cross_attention_missing(model_cfg: Mapping[str, Any]) -> str | None:
    """Why the configured model has no cross-attention maps to read, or None when it has
    (or when its UNet config is not local: the check then happens when the model loads)."""
    if model_cfg.get("kind") == "demo":
        return None  # the demo UNet always has a cross-attention level (model/training.py)
    candidates = []
    for key in ("unet", "path"):
        value = model_cfg.get(key)
        if isinstance(value, str) and value:
            folder = Path(value)
            candidates += [folder / "unet" / "config.json", folder / "config.json"]
    for path in candidates:
        if path.is_file():
            try:
                unet = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            blocks = [*unet.get("down_block_types", []), *unet.get("up_block_types", [])]
            if blocks and not any("CrossAttn" in str(b) for b in blocks):
                return f"the UNet in {path} has no cross-attention blocks ({blocks})"
            return None
    return None
