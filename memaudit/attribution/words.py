"""Word units of a prompt: character spans, marker spans, tokens per word.

Sub-tokens are merged into word units with the tokenizer's offset mapping: a unit is a maximal
run of pieces whose character spans touch (BERT WordPiece splits ``___`` into three ``_``
pieces and words into ``##`` pieces), with two refinements: every match of a configured marker
regex is one unit of its own (also when split into pieces or glued to punctuation or a word),
and punctuation-only pieces at the start or end of a run are split off as punctuation units
(kept and flagged, not ranked), so ``Dr.`` is the word ``Dr`` plus ``.`` while ``10:30`` and
``x-ray`` stay one word. A word's score is the sum (or max) of its pieces
(``attribution.word_score``, applied when the chunks are gathered).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from memaudit.text import normalize_whitespace


def trigger_span(text: str, trigger: str, word_index: int) -> tuple[int, int]:
    """Character span of the trigger word in ``text``.

    ``word_index`` counts whitespace-separated words (as the demo truth table does); when it
    does not point at the trigger, the trigger's only whole-word occurrence is used. Raises a
    ValueError when the trigger cannot be located unambiguously.
    """
    words = list(re.finditer(r"\S+", text))
    if 0 <= word_index < len(words):
        match = words[word_index]
        offset = match.group().find(trigger)
        if offset >= 0:
            return match.start() + offset, match.start() + offset + len(trigger)
    hits = list(re.finditer(rf"(?<!\w){re.escape(trigger)}(?!\w)", text))
    if len(hits) != 1:
        raise ValueError(
            f"trigger word {trigger!r} (word index {word_index}) occurs {len(hits)} times in "
            f"the prompt {text[:80]!r}; cannot locate it"
        )
    return hits[0].start(), hits[0].end()


def key_span(text: str, key_text: str, prompt: str) -> tuple[int, int]:
    """Character span of ``key_text`` in ``text``; a ValueError naming the prompt_id unless
    the key occurs exactly once."""
    count = text.count(key_text) if key_text else 0
    if count != 1:
        raise ValueError(
            f"truth row of prompt_id {prompt!r}: key_text {key_text!r} occurs {count} times in "
            f"its text {text[:80]!r} (it must occur exactly once)"
        )
    start = text.index(key_text)
    return start, start + len(key_text)


# --------------------------------------------------------------------------------------------
# Word units from the tokenizer's offsets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordUnit:
    """One word of a prompt: character span [start, end) and the pieces (indices into the
    prompt's untruncated piece list) that make it up."""

    index: int
    start: int
    end: int
    text: str
    pieces: tuple[int, ...]
    is_marker: bool
    is_punct: bool


def marker_spans(text: str, markers: Sequence[re.Pattern[str]]) -> list[tuple[int, int]]:
    """Character spans of every marker match (all patterns), overlapping matches merged."""
    spans = sorted(
        (m.start(), m.end()) for p in markers for m in p.finditer(text) if m.end() > m.start()
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def word_units(
    text: str, offsets: Sequence[tuple[int, int]], markers: Sequence[re.Pattern[str]] = ()
) -> list[WordUnit]:
    """Merge a prompt's pieces (``offsets``: character span per piece, special tokens left
    out) into word units; see the module docstring for the rules.

    Pieces with an empty span belong to no unit.
    """
    spans = marker_spans(text, markers)

    def marker_of(start: int, end: int) -> int | None:
        for m, (m_start, m_end) in enumerate(spans):
            if start < m_end and m_start < end:
                return m
        return None

    # Runs: consecutive pieces that touch (or overlap) and belong to the same marker (or none).
    runs: list[tuple[int | None, list[int]]] = []
    run_end = -1
    for i, (start, end) in enumerate(offsets):
        start, end = int(start), int(end)
        if end <= start:
            continue
        marker = marker_of(start, end)
        if runs and start <= run_end and runs[-1][0] == marker:
            runs[-1][1].append(i)
            run_end = max(run_end, end)
        else:
            runs.append((marker, [i]))
            run_end = end

    units: list[WordUnit] = []

    def add(pieces: list[int], is_marker: bool) -> None:
        start = min(int(offsets[i][0]) for i in pieces)
        end = max(int(offsets[i][1]) for i in pieces)
        piece_text = text[start:end]
        is_punct = not is_marker and not any(ch.isalnum() for ch in piece_text)
        units.append(
            WordUnit(len(units), start, end, piece_text, tuple(pieces), is_marker, is_punct)
        )

    for marker, pieces in runs:
        if marker is not None:
            add(pieces, is_marker=True)
            continue
        wordy = [any(ch.isalnum() for ch in text[offsets[i][0] : offsets[i][1]]) for i in pieces]
        if not any(wordy):
            add(pieces, is_marker=False)
            continue
        first = wordy.index(True)
        last = len(wordy) - 1 - wordy[::-1].index(True)
        for part in (pieces[:first], pieces[first : last + 1], pieces[last + 1 :]):
            if part:
                add(part, is_marker=False)
    return units


def delete_span(text: str, start: int, end: int) -> str:
    """The prompt with the characters [start, end) (one word unit) deleted, whitespace tidied."""
    return normalize_whitespace(text[:start] + " " + text[end:])
