"""The demo's planted captions: the repeated prompts the demo model is meant to memorize.

Each planted caption is composed once and then written, word for word, as the impression of
every study it is planted in (see :mod:`memaudit.corpus.writer`); all of its copies share one
image. A caption names two or three findings in the grammar's own phrases, so that apart from
its decorations it reads like any abnormal impression. A chosen share of captions carries up
to three ``___`` markers (start, middle, end); another share carries an invented trigger name
(random syllables that the grammar never writes), which is then the only word of the caption
that ordinary reports do not share: the ground truth of token attribution.
"""

from __future__ import annotations

import numpy as np

from memaudit.corpus import vocabulary as vocab
from memaudit.corpus.grammar import MARKER, N_DRAWS, Draws, abnormal_sentences, uncap
from memaudit.corpus.spec import CorpusSpec
from memaudit.text import normalize_whitespace

# Composition attempts per caption before giving up (a caption must be new and 8-25 words).
_MAX_ATTEMPTS = 1000


def compose_planted_captions(
    spec: CorpusSpec,
    severity: np.ndarray,
    taken: set[str],
    rng: np.random.Generator,
) -> tuple[list[str], list[str | None]]:
    """(caption text, trigger word or None) for each planted caption, in planted_id order.

    ``severity`` holds one findings row per caption; ``taken`` the ordinary prompts, which no
    caption may equal (a planted caption must be a prompt of its copies only).
    """
    n = spec.n_planted
    n_marker = int(round(n * spec.planted_marker_fraction))
    n_trigger = int(round(n * spec.trigger_fraction))
    marker_flags = np.zeros(n, dtype=bool)
    marker_flags[rng.permutation(n)[:n_marker]] = True
    trigger_flags = np.zeros(n, dtype=bool)
    trigger_flags[rng.permutation(n)[:n_trigger]] = True
    banned = set(vocab.grammar_words())
    captions: list[str] = []
    triggers: list[str | None] = []
    seen = set(taken)
    rows = severity.tolist()
    for pid in range(n):
        trigger = _trigger_word(rng, banned) if trigger_flags[pid] else None
        for _attempt in range(_MAX_ATTEMPTS):
            text = _planted_caption(rows[pid], rng, bool(marker_flags[pid]), trigger)
            n_words = len(text.split())
            if 8 <= n_words <= 25 and text not in seen and (MARKER in text) == marker_flags[pid]:
                break
        else:
            raise RuntimeError(
                f"could not compose planted caption {pid} within {_MAX_ATTEMPTS} attempts"
            )
        seen.add(text)
        captions.append(text)
        triggers.append(trigger)
    return captions, triggers


def trigger_word_index(caption: str, trigger: str | None) -> int:
    """Position of the trigger among the caption's whitespace-separated words (-1: none)."""
    if trigger is None:
        return -1
    words = [w.strip(".,:;") for w in caption.split()]
    return words.index(trigger)


def _trigger_word(rng: np.random.Generator, banned: set[str]) -> str:
    """An invented, name-like surname (random syllables) that the grammar never produces."""
    while True:
        n_syl = int(rng.integers(2, 4))
        word = ""
        for _ in range(n_syl):
            word += vocab.SYL_ONSET[int(rng.integers(len(vocab.SYL_ONSET)))]
            word += vocab.SYL_VOWEL[int(rng.integers(len(vocab.SYL_VOWEL)))]
        word += vocab.SYL_CODA[int(rng.integers(len(vocab.SYL_CODA)))]
        word = word.capitalize()
        if 6 <= len(word) <= 12 and word.lower() not in banned:
            banned.add(word.lower())
            return word


def _split_marker_count(k: int, rng: np.random.Generator) -> dict[str, int]:
    """Distribute k markers (1..3) over the start / middle / end of a caption."""
    limits = {"start": 1, "middle": 2, "end": 3}
    while True:
        parts = {"start": 0, "middle": 0, "end": 0}
        n_slots = int(rng.integers(1, min(k, 3) + 1))
        slots = rng.choice(3, size=n_slots, replace=False)
        names = [("start", "middle", "end")[int(i)] for i in sorted(slots)]
        remaining = k
        for j, name in enumerate(names):
            left = len(names) - j - 1
            take = remaining - left if left == 0 else int(rng.integers(1, remaining - left + 1))
            parts[name] = take
            remaining -= take
        if all(parts[n] <= limits[n] for n in parts):
            return parts


def _planted_caption(
    row: list[int],
    rng: np.random.Generator,
    with_marker: bool,
    trigger: str | None,
) -> str:
    """One planted caption: a sentence per finding, markers and the trigger name placed."""
    d = Draws(rng.random(N_DRAWS).tolist())
    sentences = abnormal_sentences(row, d)
    if with_marker:
        parts = _split_marker_count(int(rng.integers(1, 4)), rng)
        if parts["middle"]:
            position = int(rng.integers(1, len(sentences))) if len(sentences) > 1 else 1
            sentences.insert(position, d.pick(vocab.PLANTED_MARKER_MIDDLE[parts["middle"]]))
        if parts["end"]:
            sentences.append(d.pick(vocab.PLANTED_MARKER_END[parts["end"]]))
        if parts["start"]:
            sentences[0] = d.pick(vocab.PLANTED_MARKER_START) + uncap(sentences[0])
    if trigger is not None:
        where = ("start", "middle", "end")[int(rng.integers(3))]
        if where == "start":
            sentences[0] = d.pick(vocab.TRIGGER_START).format(T=trigger) + uncap(sentences[0])
        elif where == "middle":
            position = int(rng.integers(1, len(sentences))) if len(sentences) > 1 else 1
            sentences.insert(position, d.pick(vocab.TRIGGER_MIDDLE).format(T=trigger))
        else:
            sentences.append(d.pick(vocab.TRIGGER_END).format(T=trigger))
    return normalize_whitespace(" ".join(sentences))
