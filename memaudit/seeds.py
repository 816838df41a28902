"""Seeds derived from names, never from row positions: one hash for every seed the workflow
draws (x_T of a generation, a strategy's random choices, a sample, a bootstrap)."""

from __future__ import annotations

import hashlib

TORCH_SEED_MASK = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit seed


def hashed_seed(*parts: object) -> int:
    """A 64-bit integer from SHA-256 of ``parts`` joined by ":" (first part: a namespace such
    as ``"memaudit-noise"``, so that seeds of different uses never coincide)."""
    text = ":".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
