"""Prompt text normalisation and stable prompt identifiers, shared by every stage."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

_WHITESPACE = re.compile(r"\s+")


def normalize_whitespace(text: str) -> str:
    """Collapse every run of whitespace (line breaks included) into one space and strip."""
    return _WHITESPACE.sub(" ", text).strip()


def prompt_id(text: str) -> str:
    """Stable identifier of a prompt: the first 16 hex digits of SHA-1 of its normalised text.

    The same text gives the same id in every run, on every machine, whatever the row order.
    """
    normalized = normalize_whitespace(text)
    return hashlib.sha1(normalized.encode("utf-8")).hexdigest()[:16]


def count_markers(text: str, patterns: list[re.Pattern[str]]) -> int:
    """Number of non-overlapping de-identification marker matches over all patterns."""
    return sum(len(p.findall(text)) for p in patterns)


def compile_markers(patterns: list[str]) -> list[re.Pattern[str]]:
    """Compile marker regexes, naming the bad one when a pattern does not compile."""
    compiled = []
    for pattern in patterns:
        try:
            compiled.append(re.compile(pattern))
        except re.error as err:
            raise ValueError(f"marker regex {pattern!r} does not compile: {err}") from err
    return compiled


def marker_pattern(markers: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching any configured marker (left to right, one pass); None if none."""
    compiled = compile_markers(list(markers))
    if not compiled:
        return None
    return re.compile("|".join(f"(?:{p.pattern})" for p in compiled))
