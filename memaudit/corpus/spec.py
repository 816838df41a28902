"""Demo corpus settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class CorpusSpec:
    """Parameters of the synthetic corpus (all of them end up in ``corpus.json``).

    ``planted_copies`` is the inclusive (min, max) range from which each planted caption's
    number of copies is drawn; planted studies count within ``n_studies``. With
    ``write_images=False`` no image is rendered or written (text-only benchmarks); the
    ``image_index`` columns still say which row each study *would* have.
    """

    n_studies: int = 2000
    image_size: int = 32
    n_planted: int = 20
    planted_copies: tuple[int, int] = (30, 50)
    planted_marker_fraction: float = 0.5
    trigger_fraction: float = 0.5
    addendum_fraction: float = 0.03
    n_heldout: int = 200
    seed: int = 0
    write_images: bool = True

    def __post_init__(self) -> None:
        copies = tuple(int(c) for c in self.planted_copies)
        if len(copies) != 2 or copies[0] < 1 or copies[1] < copies[0]:
            raise ValueError(
                f"corpus spec planted_copies must be (min, max) with 1 <= min <= max, "
                f"got {self.planted_copies!r}"
            )
        object.__setattr__(self, "planted_copies", copies)
        if self.n_studies < 1:
            raise ValueError(f"corpus spec n_studies must be >= 1, got {self.n_studies}")
        if self.image_size < 8:
            raise ValueError(f"corpus spec image_size must be >= 8, got {self.image_size}")
        if self.n_planted < 0 or self.n_heldout < 0:
            raise ValueError("corpus spec n_planted and n_heldout must be >= 0")
        if self.n_planted * copies[1] > self.n_studies:
            raise ValueError(
                f"corpus spec: n_planted * max planted_copies = {self.n_planted * copies[1]} "
                f"exceeds n_studies = {self.n_studies}; planted studies count within n_studies"
            )
        for name in ("planted_marker_fraction", "trigger_fraction", "addendum_fraction"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"corpus spec {name} must be within [0, 1], got {value}")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorpusSpec:
        """Build a spec from a plain mapping (e.g. the ``corpus`` block of the config).

        Unknown keys raise a ValueError naming them, so a typo never passes silently.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(
                f"unknown corpus spec key(s) {unknown}; known keys are {sorted(known)}"
            )
        kwargs = dict(d)
        if "planted_copies" in kwargs:
            kwargs["planted_copies"] = tuple(kwargs["planted_copies"])
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready mapping of every parameter."""
        d = asdict(self)
        d["planted_copies"] = list(self.planted_copies)
        return d
