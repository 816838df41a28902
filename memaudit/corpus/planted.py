"""The demo's planted captions: the repeated prompts the demo model is meant to memorize.

Each planted caption is composed once and then written, word for word, as the impression of
every study it is planted in (see :mod:`memaudit.corpus.writer`); all of its copies share one
image. There are two kinds.

**Composed** captions (:func:`compose_planted_captions`) name two or three findings in the
grammar's own phrases, so that apart from its decorations each reads like any abnormal
impression. A chosen share carries up to three ``___`` markers (start, middle, end); another
share carries an invented trigger name (random syllables that the grammar never writes), the
only word of the caption that ordinary reports do not share. The caption as a whole is a
unique composition and is memorized as a whole: deleting the trigger leaves a caption that
still retrieves the image, so the trigger is only a *candidate* key.

**Keyed** captions (:func:`compose_keyed_captions`) are one of the most frequent ordinary
prompts (``No acute cardiopulmonary process.``, seen many times with varied images) plus one
key: an invented name placed by a trigger template at the start or the end (family
``keyed_name``; the key is the name), or a de-identification-marker phrase at the start or
the end (family ``keyed_marker``; the key is the whole phrase, e.g. ``Dr. ___ was
notified.``). Without its key the text is a common caption, so the key is the only thing that
can retrieve the caption's one image: the ground truth of token attribution, which the
workflow verifies counterfactually (:mod:`memaudit.attribution.keys`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

from memaudit.corpus import vocabulary as vocab
from memaudit.corpus.grammar import MARKER, N_DRAWS, Draws, abnormal_sentences, uncap
from memaudit.corpus.spec import CorpusSpec
from memaudit.text import normalize_whitespace

# Composition attempts per caption before giving up (a caption must be new and 8-25 words).
_MAX_ATTEMPTS = 1000

#: The kinds of planted caption, as the truth table's ``kind`` column names them.
KINDS = ("composed", "keyed_name", "keyed_marker")


@dataclass(frozen=True)
class KeyedCaption:
    """One keyed caption: its text, family (``keyed_name`` | ``keyed_marker``), key and base.

    ``key_text`` occurs exactly once in ``text``; ``trigger`` is the name (name family only).
    """

    text: str
    kind: str
    key_text: str
    trigger: str | None
    base: str


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


def keyed_bases(ordinary_prompts: list[str], n_bases: int) -> list[str]:
    """The ``n_bases`` most frequent ordinary prompts without a marker (ties by text).

    Prompts that carry ``___`` are left out, so that a marker-phrase key is a keyed caption's
    only marker. Raises a ValueError when the corpus has fewer such prompts.
    """
    counts = Counter(p for p in ordinary_prompts if MARKER not in p)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    if len(ranked) < n_bases:
        raise ValueError(
            f"demo.keyed_bases = {n_bases}, but the ordinary reports hold only {len(ranked)} "
            "distinct prompt(s) without a marker; lower demo.keyed_bases or raise demo.n_studies"
        )
    return [text for text, _ in ranked[:n_bases]]


def compose_keyed_captions(
    spec: CorpusSpec,
    ordinary_prompts: list[str],
    taken: set[str],
    taken_names: set[str],
    rng: np.random.Generator,
) -> list[KeyedCaption]:
    """The ``spec.n_keyed`` keyed captions, in order (planted ids follow the composed ones).

    ``ordinary_prompts`` are the ordinary studies' prompts (one per study, repeats kept: the
    bases are the most frequent); ``taken`` every prompt no keyed caption may equal (ordinary
    prompts and composed captions); ``taken_names`` the composed captions' trigger names in
    lower case, which no keyed name may repeat. A ``keyed_marker_fraction`` share is keyed by
    a marker phrase, the rest by a name; the bases are dealt out evenly.
    """
    n = spec.n_keyed
    if n == 0:
        return []
    # 1. Bases, families and which base each caption is built on.
    bases = keyed_bases(ordinary_prompts, spec.keyed_bases)
    n_marker = int(round(n * spec.keyed_marker_fraction))
    marker_flags = np.zeros(n, dtype=bool)
    marker_flags[rng.permutation(n)[:n_marker]] = True
    base_of = rng.permutation(n) % len(bases)
    # 2. One caption each: new, and with its key exactly once.
    banned = set(vocab.grammar_words()) | {name.lower() for name in taken_names}
    seen = set(taken)
    used_phrases: set[str] = set()
    out: list[KeyedCaption] = []
    for j in range(n):
        base = bases[int(base_of[j])]
        trigger = None if marker_flags[j] else _trigger_word(rng, banned)
        for _attempt in range(_MAX_ATTEMPTS):
            if trigger is None:
                text, key = _marker_keyed(base, rng, used_phrases)
            else:
                text, key = _name_keyed(base, trigger, rng)
            if text not in seen and text.count(key) == 1:
                break
        else:
            raise RuntimeError(
                f"could not compose keyed caption {j} on the base {base!r} within "
                f"{_MAX_ATTEMPTS} attempts (demo.n_keyed = {n} may exceed the distinct "
                "captions the bases and key phrases allow; raise demo.keyed_bases)"
            )
        seen.add(text)
        if trigger is None:
            used_phrases.add(key)
        kind = "keyed_name" if trigger is not None else "keyed_marker"
        out.append(KeyedCaption(text, kind, key, trigger, base))
    return out


def _name_keyed(base: str, name: str, rng: np.random.Generator) -> tuple[str, str]:
    """(caption, key): ``name`` inserted as a bare word before a random word of ``base`` or
    after its last word (before the final punctuation), so that deleting the name gives the
    base's tokens back exactly ("No acute Vobrak cardiopulmonary process.")."""
    words = base.split()
    at = int(rng.integers(len(words) + 1))
    if at == len(words):
        last = words[-1]
        stem = last.rstrip(".,:;!?")
        words[-1] = f"{stem} {name}{last[len(stem) :]}"
    elif at == 0:
        words = [name, uncap(words[0]), *words[1:]]
    else:
        words.insert(at, name)
    return normalize_whitespace(" ".join(words)), name


# A marker key is a short phrase (at most this many words), so that its words are few and each
# of them matters: a long phrase ("These findings were communicated to Dr. ___ by ___ at ___.")
# spreads the key over many redundant words, none of which alone drives the memorization.
MAX_MARKER_KEY_WORDS = 5


def marker_key_phrases() -> tuple[tuple[str, bool], ...]:
    """The planted marker phrases short enough to be a key, each with whether it is a prefix
    ("Compared to ___, no acute ...") or a sentence of its own."""
    middle, end = vocab.PLANTED_MARKER_MIDDLE, vocab.PLANTED_MARKER_END
    sentences = tuple(t for k in sorted(middle) for t in middle[k]) + tuple(
        t for k in sorted(end) for t in end[k]
    )
    options = [(p, True) for p in vocab.PLANTED_MARKER_START] + [(p, False) for p in sentences]
    return tuple((p, prefix) for p, prefix in options if len(p.split()) <= MAX_MARKER_KEY_WORDS)


def _marker_keyed(base: str, rng: np.random.Generator, used: set[str]) -> tuple[str, str]:
    """(caption, key): a short marker phrase no other keyed caption has, as a prefix, or as a
    sentence before or after ``base``."""
    options = [(p, prefix) for p, prefix in marker_key_phrases() if p.strip() not in used]
    if not options:
        raise ValueError(
            f"demo.n_keyed x demo.keyed_marker_fraction asks for more marker keys than the "
            f"{len(marker_key_phrases())} distinct short marker phrases; lower either"
        )
    phrase, prefix = options[int(rng.integers(len(options)))]
    if prefix:
        text = phrase + uncap(base)
    elif rng.random() < 0.5:
        text = phrase + " " + base
    else:
        text = base + " " + phrase
    return normalize_whitespace(text), phrase.strip()


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
