"""Copy-detection embedding settings (the config ``copy_detection`` block), apart from the
embedding code so that the workflow checks them when it parses the config without torch."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from memaudit.config import check_keys, schema_defaults, spec_from_dict

EMBEDDINGS = ("learned", "pixels", "torchvision", "timm")
_DEFAULTS = schema_defaults("copy_detection")
_NETWORK = schema_defaults("copy_detection.network")
_LEARNED = schema_defaults("copy_detection.learned")
# Where train_copy_detector writes the learned detector (the workflow's one location).
DETECTOR_WEIGHTS = "results/copy_detection/detector/model.safetensors"


@dataclass(frozen=True)
class DetectorSpec:
    """The learned copy detector's architecture and training (config ``copy_detection.learned``).

    Architecture: a stem convolution to ``channels[0]`` at full resolution, then one
    stride-2 stage per entry of ``channels`` (two 3x3 convolutions, group norm, SiLU), the
    final feature map flattened and projected to ``dimension`` (the embedding, L2-normalised);
    see :mod:`memaudit.copy_detection.encoder`. Training: InfoNCE between two augmented views
    (:mod:`memaudit.copy_detection.augment`) of each image of a batch.
    """

    # Keys that change the architecture (the rest change only the trained weights).
    ARCHITECTURE_KEYS: ClassVar[tuple[str, ...]] = ("input_size", "channels", "dimension")

    input_size: int = _LEARNED["input_size"]
    channels: tuple[int, ...] = _LEARNED["channels"]
    dimension: int = _LEARNED["dimension"]
    steps: int = _LEARNED["steps"]
    batch_size: int = _LEARNED["batch_size"]
    learning_rate: float = _LEARNED["learning_rate"]
    temperature: float = _LEARNED["temperature"]
    shift: float = _LEARNED["shift"]
    rotation: float = _LEARNED["rotation"]
    crop_scale: float = _LEARNED["crop_scale"]
    blur: float = _LEARNED["blur"]
    contrast: float = _LEARNED["contrast"]
    noise: float = _LEARNED["noise"]
    hflip: bool = _LEARNED["hflip"]
    seed: int = _LEARNED["seed"]

    def __post_init__(self) -> None:
        channels = tuple(int(c) for c in self.channels)
        object.__setattr__(self, "channels", channels)
        if not channels or min(channels) < 1:
            raise ValueError(
                f"copy_detection.learned.channels must be positive integers, got {list(channels)}"
            )
        for name in ("input_size", "dimension", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"copy_detection.learned.{name} must be a positive integer, got {value!r}"
                )
        if self.batch_size < 2:
            raise ValueError(
                "copy_detection.learned.batch_size must be at least 2 (the other images of a "
                f"batch are the negatives), got {self.batch_size}"
            )
        if self.input_size % 2 ** len(channels):
            raise ValueError(
                f"copy_detection.learned.input_size {self.input_size} must be divisible by "
                f"2^{len(channels)} (one halving per entry of copy_detection.learned.channels)"
            )
        if not 0.0 < self.crop_scale <= 1.0:
            raise ValueError(
                f"copy_detection.learned.crop_scale must be in (0, 1], got {self.crop_scale}"
            )
        for name in ("learning_rate", "temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(
                    f"copy_detection.learned.{name} must be positive, got {getattr(self, name)}"
                )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> DetectorSpec:
        """From the config ``copy_detection.learned`` block."""
        return spec_from_dict(cls, cfg, "copy_detection.learned")

    def architecture(self) -> dict[str, Any]:
        """The settings that fix the weights' shapes."""
        return {name: getattr(self, name) for name in self.ARCHITECTURE_KEYS}


@dataclass(frozen=True)
class EmbeddingSpec:
    """How images are embedded for copy detection (see :mod:`memaudit.copy_detection.embedding`).

    ``kind`` is the config key ``copy_detection.embedding``; ``arch``, ``weights`` and
    ``input_size`` are those of ``copy_detection.network``.
    """

    # Keys of the config ``copy_detection`` block that change no embedding: they choose the
    # copy threshold from the similarities (embed_training_images does not get them).
    THRESHOLD_KEYS: ClassVar[frozenset[str]] = frozenset({"percentile", "threshold"})
    # Keys that say which images are embedded, how they are searched and in what batches, not
    # how one is embedded (``learned`` reaches the spec through the detector's weights file).
    IMAGE_KEYS: ClassVar[frozenset[str]] = frozenset(
        {
            "train_images",
            "train_list",
            "train_limit",
            "heldout_images",
            "heldout_limit",
            "batch_size",
            "unreadable",
            "search_block",
            "controls",
            "baselines",
            "learned",
        }
    )

    kind: str = _DEFAULTS["embedding"]
    side: int = _DEFAULTS["side"]
    arch: str | None = _NETWORK["arch"]
    weights: str | None = _NETWORK["weights"]
    input_size: int = _NETWORK["input_size"]
    # The learned kind: the detector's weights file and input side.
    detector: str = DETECTOR_WEIGHTS
    learned_size: int = _LEARNED["input_size"]

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
    def from_config(
        cls,
        cfg: Mapping[str, Any] | None,
        kind: str | None = None,
        detector: str = DETECTOR_WEIGHTS,
    ) -> EmbeddingSpec:
        """From a config ``copy_detection`` block; unknown keys are an error naming them, the
        block's other keys (images, batching, threshold) are accepted and ignored.

        ``kind`` overrides ``copy_detection.embedding`` (a baseline's spec). The ``learned``
        kind reads the detector weights at ``detector`` (where train_copy_detector writes
        them) and resamples images to ``copy_detection.learned.input_size``.
        """
        block = dict(cfg or {})
        network = check_keys(block.pop("network", None) or {}, "copy_detection.network", _NETWORK)
        learned = DetectorSpec.from_config(block.get("learned"))
        ignored = cls.THRESHOLD_KEYS | cls.IMAGE_KEYS
        top = check_keys(block, "copy_detection", ("embedding", "side"), ignored=ignored)
        if "embedding" in top:
            network["kind"] = top["embedding"]
        if kind is not None:
            network["kind"] = kind
        if "side" in top:
            network["side"] = top["side"]
        network.update(detector=detector, learned_size=learned.input_size)
        return spec_from_dict(cls, network, "copy_detection")

    @property
    def prepared_side(self) -> int:
        """Side of the square each image is resampled to before embedding."""
        if self.kind == "pixels":
            return self.side
        return self.learned_size if self.kind == "learned" else self.input_size
