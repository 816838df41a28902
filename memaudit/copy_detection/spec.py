"""Copy-detection embedding settings (the config ``copy_detection`` block), apart from the
embedding code so that the workflow checks them when it parses the config without torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from memaudit.config import check_keys, schema_defaults, spec_from_dict

EMBEDDINGS = ("pixels", "torchvision", "timm")
_DEFAULTS = schema_defaults("copy_detection")
_NETWORK = schema_defaults("copy_detection.network")


@dataclass(frozen=True)
class EmbeddingSpec:
    """How images are embedded for copy detection (see :mod:`memaudit.copy_detection.embedding`).

    ``kind`` is the config key ``copy_detection.embedding``; ``arch``, ``weights`` and
    ``input_size`` are those of ``copy_detection.network``.
    """

    # Keys of the config ``copy_detection`` block that change no embedding: they choose the
    # copy threshold from the similarities (embed_training_images does not get them).
    THRESHOLD_KEYS: ClassVar[frozenset[str]] = frozenset({"percentile", "threshold"})
    # Keys that say which images are embedded and in what batches, not how one is embedded.
    IMAGE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "train_images",
            "train_list",
            "train_limit",
            "heldout_images",
            "heldout_limit",
            "batch_size",
        }
    )

    kind: str = _DEFAULTS["embedding"]
    side: int = _DEFAULTS["side"]
    arch: str | None = _NETWORK["arch"]
    weights: str | None = _NETWORK["weights"]
    input_size: int = _NETWORK["input_size"]

    def __post_init__(self) -> None:
        if self.kind not in EMBEDDINGS:
            raise ValueError(
                f"copy_detection.embedding must be one of {list(EMBEDDINGS)}, got {self.kind!r}"
            )
        if not isinstance(self.side, int) or self.side < 2:
            raise ValueError(f"copy_detection.side must be an integer >= 2, got {self.side!r}")
        if not isinstance(self.input_size, int) or self.input_size < 8:
            raise ValueError(
                f"copy_detection.network.input_size must be an integer >= 8, "
                f"got {self.input_size!r}"
            )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> EmbeddingSpec:
        """From a config ``copy_detection`` block; unknown keys are an error naming them, the
        block's other keys (images, batching, threshold) are accepted and ignored."""
        block = dict(cfg or {})
        network = check_keys(block.pop("network", None) or {}, "copy_detection.network", _NETWORK)
        ignored = cls.THRESHOLD_KEYS | cls.IMAGE_KEYS
        top = check_keys(block, "copy_detection", ("embedding", "side"), ignored=ignored)
        if "embedding" in top:
            network["kind"] = top["embedding"]
        if "side" in top:
            network["side"] = top["side"]
        return spec_from_dict(cls, network, "copy_detection")

    @property
    def prepared_side(self) -> int:
        """Side of the square each image is resampled to before embedding."""
        return self.side if self.kind == "pixels" else self.input_size
