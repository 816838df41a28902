"""Demo corpus settings."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from memaudit.config import schema_defaults, spec_from_dict

_DEFAULTS = schema_defaults("demo")


@dataclass(frozen=True)
class CorpusSpec:
    """Parameters of the synthetic corpus (all of them end up in ``corpus.json``).

    Two kinds of planted caption: ``n_planted`` *composed* ones (a unique composition of
    finding sentences, memorized as a whole) and ``n_keyed`` *keyed* ones (one of the
    ``keyed_bases`` most frequent ordinary prompts plus one key: a de-identification-marker
    phrase for a ``keyed_marker_fraction`` share, else a rare name-like trigger word).
    ``planted_copies`` is the inclusive (min, max) range from which each planted caption's
    number of copies is drawn (both kinds); planted studies count within ``n_studies``. With
    ``write_images=False`` no image is rendered or written (text-only benchmarks); the
    ``image_index`` columns still say which row each study *would* have.
    """

    # Keys of the config ``demo`` block that are no corpus parameter: the on/off switch.
    WORKFLOW_KEYS: ClassVar[frozenset[str]] = frozenset({"enabled"})

    n_studies: int = _DEFAULTS["n_studies"]
    image_size: int = _DEFAULTS["image_size"]
    n_planted: int = _DEFAULTS["n_planted"]
    planted_copies: tuple[int, int] = _DEFAULTS["planted_copies"]
    planted_marker_fraction: float = _DEFAULTS["planted_marker_fraction"]
    trigger_fraction: float = _DEFAULTS["trigger_fraction"]
    n_keyed: int = _DEFAULTS["n_keyed"]
    keyed_marker_fraction: float = _DEFAULTS["keyed_marker_fraction"]
    keyed_bases: int = _DEFAULTS["keyed_bases"]
    addendum_fraction: float = _DEFAULTS["addendum_fraction"]
    n_heldout: int = _DEFAULTS["n_heldout"]
    seed: int = _DEFAULTS["seed"]
    # Not a config key: text-only benchmarks switch image rendering off.
    write_images: bool = True

    def __post_init__(self) -> None:
        copies = tuple(int(c) for c in self.planted_copies)
        if len(copies) != 2 or copies[0] < 1 or copies[1] < copies[0]:
            raise ValueError(
                f"demo.planted_copies must be [min, max] with 1 <= min <= max, "
                f"got {list(self.planted_copies)!r}"
            )
        object.__setattr__(self, "planted_copies", copies)
        if self.n_studies < 1:
            raise ValueError(f"demo.n_studies must be >= 1, got {self.n_studies}")
        if self.image_size < 8:
            raise ValueError(f"demo.image_size must be >= 8, got {self.image_size}")
        if self.n_planted < 0 or self.n_keyed < 0 or self.n_heldout < 0:
            raise ValueError("demo.n_planted, demo.n_keyed and demo.n_heldout must be >= 0")
        if self.keyed_bases < 1:
            raise ValueError(f"demo.keyed_bases must be >= 1, got {self.keyed_bases}")
        n_captions = self.n_planted + self.n_keyed
        if n_captions * copies[1] > self.n_studies:
            raise ValueError(
                f"(demo.n_planted + demo.n_keyed) * max demo.planted_copies = "
                f"{n_captions * copies[1]} exceeds n_studies = {self.n_studies} "
                "(demo.n_studies); planted studies (composed and keyed) count within n_studies"
            )
        for name in (
            "planted_marker_fraction",
            "trigger_fraction",
            "keyed_marker_fraction",
            "addendum_fraction",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"demo.{name} must be within [0, 1], got {value}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> CorpusSpec:
        """Build a spec from the config ``demo`` block (or any subset of it).

        Unknown keys raise a ValueError naming them, so a typo never passes silently; the
        switch ``enabled`` (:attr:`WORKFLOW_KEYS`) is accepted and ignored.
        """
        return spec_from_dict(cls, d, "demo", ignored=cls.WORKFLOW_KEYS)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping of every parameter."""
        d = asdict(self)
        d["planted_copies"] = list(self.planted_copies)
        return d
