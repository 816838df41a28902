"""Settings of the demo model organism (the config ``train`` block), apart from the training
code so that the workflow checks them when it parses the config without importing torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from memaudit.config import schema_defaults, spec_from_dict

_DEFAULTS = schema_defaults("train")


@dataclass
class TrainSpec:
    """Architecture and optimisation settings of the demo model (all plain values).

    The schema's defaults (32x32, three UNet levels) train in about 8 minutes on 2 CPU cores;
    the default demo (config.yaml: 16x16, two levels, 2,500 steps) in about 6. Both memorize
    captions planted 30-50 times among 2,000 pairs. Fields without a config key (weight decay,
    warm-up, clipping, heads and widths, UNet block layout) are fixed architecture choices of
    the demo; ``image_size`` is the demo corpus's (``demo.image_size``).
    """

    seed: int = _DEFAULTS["seed"]
    steps: int = _DEFAULTS["steps"]
    batch_size: int = _DEFAULTS["batch_size"]
    learning_rate: float = _DEFAULTS["learning_rate"]
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    uncond_probability: float = _DEFAULTS["uncond_probability"]
    max_length: int = _DEFAULTS["max_length"]
    text_hidden_size: int = _DEFAULTS["text_hidden_size"]
    text_layers: int = _DEFAULTS["text_layers"]
    text_heads: int = 4
    text_intermediate_size: int = 256
    unet_block_out_channels: tuple[int, ...] = _DEFAULTS["unet_block_out_channels"]
    unet_layers_per_block: int = 1
    unet_attention_head_dim: int = 8
    unet_norm_num_groups: int = 8
    image_size: int = schema_defaults("demo")["image_size"]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> TrainSpec:
        """Build from a config ``train`` block (plus ``image_size``) and :meth:`validate` it;
        unknown keys are an error that names them."""
        spec = spec_from_dict(cls, values, "train")
        spec.validate()
        return spec

    def validate(self) -> None:
        """Reject settings that cannot build or train a model, naming the setting."""
        for name, low in (("steps", 1), ("batch_size", 1), ("max_length", 3)):
            if getattr(self, name) < low:
                raise ValueError(f"train.{name} must be >= {low}, got {getattr(self, name)}")
        if self.text_hidden_size % self.text_heads:
            raise ValueError(
                f"train.text_hidden_size {self.text_hidden_size} is not divisible by "
                f"text_heads {self.text_heads}"
            )
        if any(c % self.unet_norm_num_groups for c in self.unet_block_out_channels):
            raise ValueError(
                f"every train.unet_block_out_channels {list(self.unet_block_out_channels)} must "
                f"be divisible by unet_norm_num_groups {self.unet_norm_num_groups}"
            )
        levels = len(self.unet_block_out_channels)
        if self.image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image_size {self.image_size} (demo.image_size) must be divisible by "
                f"2**{levels - 1}: train.unet_block_out_channels has {levels} levels, one "
                "halving per extra level"
            )
        if not 0.0 <= self.uncond_probability < 1.0:
            raise ValueError(
                f"train.uncond_probability must be in [0, 1), got {self.uncond_probability}"
            )
