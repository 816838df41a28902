"""The demo report grammar: findings, impressions, decorations, planted captions."""

from __future__ import annotations

import bisect
import re
from typing import Any

import numpy as np

from memaudit.corpus.vocabulary import (
    _ADDENDUM,
    _ADDENDUM_IMPRESSION,
    _ATEL,
    _CARDIO,
    _CARDIO_SUFFIX,
    _COL,
    _COMPARISON,
    _COMPLAINT,
    _CONS_LOBE,
    _CONS_NOUN,
    _CONS_SEV,
    _CONS_SUFFIX,
    _DEVICE_WORDS,
    _EDEMA,
    _EDEMA_SUFFIX,
    _EFF_SIZE,
    _EFF_SUFFIX,
    _ET_NAME,
    _ET_VERB,
    _EXAMINATION,
    _F_EXTRA,
    _F_HEART,
    _F_INTRO,
    _F_LUNGS,
    _F_PLEURA,
    _F_TEMPLATES,
    _IMPRESSION_END_MARKER,
    _IMPRESSION_PREFIX_MARKER,
    _IMPRESSION_PREFIX_PLAIN,
    _LAYOUT_WORDS,
    _LINE_NAME,
    _LINE_TAIL,
    _NG_NAME,
    _NG_TAIL,
    _NORMAL_HEAD,
    _NORMAL_HEAD_CUM,
    _NORMAL_TAIL_EXTRA,
    _NORMAL_TAIL_FIRST,
    _NOTIFICATION,
    _OTHERWISE,
    _PACER_NAME,
    _PACER_TAIL,
    _PLANTED_MARKER_END,
    _PLANTED_MARKER_MIDDLE,
    _PLANTED_MARKER_START,
    _PTX_SIZE,
    _PTX_SUFFIX,
    _QUESTION,
    _SEX,
    _SYL_CODA,
    _SYL_ONSET,
    _SYL_VOWEL,
    _TECHNIQUE,
    _TRIGGER_END,
    _TRIGGER_MIDDLE,
    _TRIGGER_START,
    _VOCABULARY_TABLES,
    FINDING_NAMES,
)
from memaudit.text import normalize_whitespace

MARKER = "___"
TITLE_LINE = " " * 33 + "FINAL REPORT"
WRAP_WIDTH = 78

# Finding *types* sampled for a study (sides are drawn afterwards) and their relative weights.
_TYPES = (
    "cardiomegaly",
    "effusion",
    "pneumothorax",
    "consolidation",
    "atelectasis",
    "edema",
    "et_tube",
    "ng_tube",
    "central_line",
    "pacemaker",
)
_TYPE_WEIGHTS = np.array([0.15, 0.20, 0.06, 0.12, 0.15, 0.12, 0.05, 0.05, 0.05, 0.05])
_P_NORMAL = 0.55
_N_FINDINGS_P = np.array([0.5, 0.3, 0.15, 0.05])  # 1, 2, 3 or 4 findings in abnormal studies
_SEVERITY_P = np.array([0.5, 0.35, 0.15])  # mild, moderate, severe
_N_DRAWS = 96  # uniforms per report; the grammar uses far fewer (the cursor wraps if not)


# ---------------------------------------------------------------------------------------------
# Random draws for the text grammar


class _Draws:
    """A fixed row of uniforms consumed in order by the grammar (fast, fully deterministic)."""

    __slots__ = ("_u", "_i", "_n")

    def __init__(self, u: list[float]) -> None:
        self._u = u
        self._i = 0
        self._n = len(u)

    def uniform(self) -> float:
        i = self._i
        self._i = i + 1
        return self._u[i % self._n]

    def pick(self, options: tuple[str, ...] | list[str]) -> str:
        return options[int(self.uniform() * len(options))]

    def chance(self, p: float) -> bool:
        return self.uniform() < p

    def weighted(self, options: tuple[str, ...], cumulative: list[float]) -> str:
        return options[bisect.bisect_right(cumulative, self.uniform() * cumulative[-1])]


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] if s else s


def _uncap(s: str) -> str:
    """Lower-case the first letter unless the first word is an abbreviation (``NG tube``)."""
    if len(s) > 1 and s[0].isupper() and not s[1].isupper():
        return s[0].lower() + s[1:]
    return s


def _grammar_vocabulary() -> frozenset[str]:
    """Every lower-case word the ordinary grammar can produce (planted triggers must avoid it)."""
    texts: list[str] = []

    def collect(obj: Any) -> None:
        if isinstance(obj, str):
            texts.append(obj)
        elif isinstance(obj, dict):
            for value in obj.values():
                collect(value)
        elif isinstance(obj, tuple | list):
            for value in obj:
                collect(value)

    for name, value in globals().items():
        if name.startswith(_VOCABULARY_TABLES):
            collect(value)
    words = set()
    for text in texts:
        for word in text.split():
            words.add(word.strip(".,:;()/?!").lower())
    return frozenset(words)


# ---------------------------------------------------------------------------------------------
# Sampling findings


def _sample_severity(rng: np.random.Generator, n: int, force_k: tuple[int, int] | None = None):
    """Severity matrix [n, len(FINDING_NAMES)] (0 = absent, 1..3) for n studies.

    Ordinary studies are normal with probability ``_P_NORMAL``; ``force_k=(lo, hi)`` instead
    draws between lo and hi distinct finding types for every study (planted captions).
    """
    n_types = len(_TYPES)
    gumbel = rng.gumbel(size=(n, n_types))
    keys = np.log(_TYPE_WEIGHTS)[None, :] + gumbel
    order = np.argsort(-keys, axis=1, kind="stable")
    if force_k is None:
        k = 1 + rng.choice(len(_N_FINDINGS_P), size=n, p=_N_FINDINGS_P)
        k[rng.random(n) < _P_NORMAL] = 0
    else:
        k = rng.integers(force_k[0], force_k[1] + 1, size=n)
    severity_draw = 1 + rng.choice(3, size=(n, n_types), p=_SEVERITY_P)
    side_draw = rng.random((n, n_types))
    sev = np.zeros((n, len(FINDING_NAMES)), dtype=np.int8)
    chosen = np.zeros((n, n_types), dtype=bool)
    rows = np.arange(n)
    for rank in range(n_types):
        active = k > rank
        chosen[rows[active], order[active, rank]] = True
    for t, name in enumerate(_TYPES):
        on = chosen[:, t]
        s = severity_draw[:, t].astype(np.int8)
        u = side_draw[:, t]
        if name in ("effusion", "pneumothorax", "consolidation"):
            p_both = {"effusion": 0.3, "pneumothorax": 0.05, "consolidation": 0.1}[name]
            left = on & ((u < (1 - p_both) / 2) | (u >= 1 - p_both))
            right = on & (u >= (1 - p_both) / 2)
            sev[left, _COL[f"{name}_left"]] = s[left]
            sev[right, _COL[f"{name}_right"]] = s[right]
        elif name in ("et_tube", "ng_tube", "central_line", "pacemaker"):
            sev[on, _COL[name]] = 1
        else:
            sev[on, _COL[name]] = s[on]
    return sev


def _labels(row: list[int]) -> str:
    return ",".join(FINDING_NAMES[i] for i, v in enumerate(row) if v)


# ---------------------------------------------------------------------------------------------
# Text generation


def _side_phrase(left: int, right: int, d: _Draws, sizes: dict, noun: str, plural: str) -> str:
    if left and right:
        if left == right or d.chance(0.5):
            return f"{d.pick(sizes[max(left, right)])} bilateral {plural}"
        return f"{d.pick(sizes[right])} right and {d.pick(sizes[left])} left {plural}"
    side = "left" if left else "right"
    return f"{d.pick(sizes[left or right])} {side} {noun}"


def _finding_phrases(row: list[int], d: _Draws) -> list[tuple[str, str]]:
    """(noun phrase, suffix) per finding present in the severity row, in grammar order."""
    out: list[tuple[str, str]] = []
    c = _COL
    if row[c["et_tube"]]:
        dist = 2.0 + 0.5 * int(d.uniform() * 10)
        if d.chance(0.2):
            out.append((f"{d.pick(_ET_NAME)} in standard position", ""))
        else:
            verb = d.pick(_ET_VERB)
            out.append((f"{d.pick(_ET_NAME)} {verb} {dist:.1f} cm above the carina", ""))
    if row[c["ng_tube"]]:
        out.append((d.pick(_NG_NAME) + d.pick(_NG_TAIL), ""))
    if row[c["central_line"]]:
        out.append((d.pick(_LINE_NAME) + d.pick(_LINE_TAIL), ""))
    if row[c["pacemaker"]]:
        out.append((d.pick(_PACER_NAME) + d.pick(_PACER_TAIL), ""))
    if row[c["cardiomegaly"]]:
        out.append((d.pick(_CARDIO[row[c["cardiomegaly"]]]), d.pick(_CARDIO_SUFFIX)))
    if row[c["effusion_left"]] or row[c["effusion_right"]]:
        np_ = _side_phrase(
            row[c["effusion_left"]],
            row[c["effusion_right"]],
            d,
            _EFF_SIZE,
            "pleural effusion",
            d.pick(("pleural effusions", "effusions")),
        )
        out.append((np_, d.pick(_EFF_SUFFIX)))
    if row[c["pneumothorax_left"]] or row[c["pneumothorax_right"]]:
        np_ = _side_phrase(
            row[c["pneumothorax_left"]],
            row[c["pneumothorax_right"]],
            d,
            _PTX_SIZE,
            d.pick(("pneumothorax", "apical pneumothorax")),
            "pneumothoraces",
        )
        out.append((np_, d.pick(_PTX_SUFFIX)))
    for side in ("left", "right"):
        s = row[c[f"consolidation_{side}"]]
        if s:
            lobe = d.pick(_CONS_LOBE[side])
            np_ = f"{d.pick(_CONS_SEV[s])}{side} {lobe} {d.pick(_CONS_NOUN)}"
            out.append((np_, d.pick(_CONS_SUFFIX)))
    if row[c["atelectasis"]]:
        out.append((d.pick(_ATEL[row[c["atelectasis"]]]), ""))
    if row[c["edema"]]:
        out.append((d.pick(_EDEMA[row[c["edema"]]]), d.pick(_EDEMA_SUFFIX)))
    return out


def _abnormal_sentences(row: list[int], d: _Draws) -> list[str]:
    """One impression sentence per finding, tubes first or shuffled."""
    phrases = _finding_phrases(row, d)
    sentences = [_cap(np_ + suffix) + "." for np_, suffix in phrases]
    if len(sentences) > 1 and d.chance(0.4):
        keys = [d.uniform() for _ in sentences]
        sentences = [s for _, s in sorted(zip(keys, sentences, strict=True))]
    return sentences


def _ordinary_impression(row: list[int], d: _Draws) -> tuple[str, bool]:
    """(impression text with single spaces, numbered) for an ordinary study."""
    if not any(row):
        if d.chance(0.85):
            return d.weighted(_NORMAL_HEAD, _NORMAL_HEAD_CUM), False
        first = d.pick(_NORMAL_TAIL_FIRST)
        extra = d.pick(_NORMAL_TAIL_EXTRA)
        if extra.split()[0] == first.split()[0]:
            return first, False
        return f"{first} {extra}", False
    sentences = _abnormal_sentences(row, d)
    if len(sentences) <= 2 and d.chance(0.25):
        sentences.append(d.pick(_OTHERWISE))
    u = d.uniform()
    if u < 0.14:
        sentences[0] = d.pick(_IMPRESSION_PREFIX_MARKER) + _uncap(sentences[0])
    elif u < 0.22:
        sentences[0] = d.pick(_IMPRESSION_PREFIX_PLAIN) + _uncap(sentences[0])
    if d.chance(0.06):
        sentences.append(d.pick(_IMPRESSION_END_MARKER))
    if d.chance(_P_DECORATED):
        sentences = _decorate(sentences, d, start_free=u >= 0.22)
    if len(sentences) >= 2 and d.chance(0.15):
        return " ".join(f"{i}. {s}" for i, s in enumerate(sentences, 1)), True
    return " ".join(sentences), False


# Share of abnormal ordinary impressions that carry one of the planted captions' decorations,
# de-identified: the marker stands where a planted caption has its trigger name. So the
# decoration words ("Reviewed with Dr.", "protocol", "technique used", "was notified") are
# common in the corpus, and in a planted caption only the trigger is unique to it: the ground
# truth of token attribution is the trigger alone.
_P_DECORATED = 0.3


def _decorate(sentences: list[str], d: _Draws, start_free: bool) -> list[str]:
    """Add one planted-caption decoration (start, middle or end) with ``___`` for the name."""
    where = d.pick(("start", "middle", "end") if start_free else ("middle", "end"))
    if where == "start":
        template = d.pick(_PLANTED_MARKER_START + _TRIGGER_START)
        sentences[0] = template.format(T=MARKER) + _uncap(sentences[0])
    elif where == "middle":
        middle = _PLANTED_MARKER_MIDDLE[1] + _PLANTED_MARKER_MIDDLE[2] + _TRIGGER_MIDDLE
        position = 1 + int(d.uniform() * len(sentences))
        sentences.insert(min(position, len(sentences)), d.pick(middle).format(T=MARKER))
    else:
        end = tuple(t for group in _PLANTED_MARKER_END.values() for t in group) + _TRIGGER_END
        sentences.append(d.pick(end).format(T=MARKER))
    return sentences


def _findings_text(row: list[int], d: _Draws) -> str:
    """Findings-section paragraph: the abnormal findings plus normal statements for the rest."""
    c = _COL
    parts: list[str] = []
    if d.chance(0.3):
        parts.append(d.pick(_F_INTRO))
    for np_, suffix in _finding_phrases(row, d):
        device = any(w in np_ for w in _DEVICE_WORDS)
        template = d.pick(_F_TEMPLATES[1:] if device else _F_TEMPLATES)
        if template.startswith("There is"):
            parts.append(template.format(np=_uncap(np_) + suffix))
        else:
            parts.append(template.format(NP=_cap(np_)).rstrip(".") + suffix + ".")
    if not row[c["cardiomegaly"]]:
        parts.append(d.pick(_F_HEART))
    lung_abnormal = any(
        row[c[k]] for k in ("consolidation_left", "consolidation_right", "edema", "atelectasis")
    )
    if not lung_abnormal:
        parts.append(d.pick(_F_LUNGS))
    if not any(
        row[c[k]]
        for k in ("effusion_left", "effusion_right", "pneumothorax_left", "pneumothorax_right")
    ):
        parts.append(d.pick(_F_PLEURA))
    if d.chance(0.5):
        parts.append(d.pick(_F_EXTRA))
    return " ".join(parts)


def _wrap(text: str, first_prefix: str = " ", width: int = WRAP_WIDTH) -> list[str]:
    """Greedy wrap into lines of at most ``width`` characters, each starting with one space."""
    if len(first_prefix) + len(text) <= width:
        return [first_prefix + text]
    lines: list[str] = []
    line = first_prefix
    fresh = True
    for word in text.split(" "):
        if not word:  # keep the double space after sentences inside a line
            if not fresh:
                line += " "
            continue
        candidate = line + word if fresh else line + " " + word
        if len(candidate.rstrip()) > width and not fresh:
            lines.append(line.rstrip())
            line = " " + word
        else:
            line = candidate
        fresh = False
    lines.append(line.rstrip())
    return lines


_SENTENCE_END = re.compile(r"(?<!\bDr)\. (?=\S)")


def _sentence_text(text: str) -> str:
    """MIMIC puts two spaces after a sentence: ``'A.  B.'`` (but ``'Dr. ___'``)."""
    return _SENTENCE_END.sub(".  ", text)


def _section(header: str, text: str, block: bool) -> list[str]:
    """A section: header then wrapped text, either on the header line or as its own block."""
    body = _sentence_text(text)
    if block:
        return [f" {header}: ", " "] + _wrap(body)
    return _wrap(body, first_prefix=f" {header}:  ")


def _numbered_section(header: str, text: str) -> list[str]:
    """An impression written as a numbered list, one wrapped item per line group."""
    lines = [f" {header}: ", " "]
    items = []
    current = ""
    for word in text.split(" "):
        if word[:-1].isdigit() and word.endswith(".") and current:
            items.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    items.append(current)
    for item in items:
        number, _, rest = item.partition(" ")
        lines += _wrap(_sentence_text(rest), first_prefix=f" {number}  ")
    return lines


def _indication(d: _Draws) -> tuple[str, str]:
    noun, adj, letter = _SEX[int(d.uniform() * 2)]
    complaint = d.pick(_COMPLAINT)
    u = d.uniform()
    if u < 0.6:
        return "INDICATION", f"___ year old {noun} with {complaint}  // {d.pick(_QUESTION)}"
    if u < 0.8:
        return "HISTORY", f"___-year-old {adj} with {complaint}."
    return "HISTORY", f"___{letter} with {complaint}, {d.pick(_QUESTION)}."


def _report(
    row: list[int],
    d: _Draws,
    planted_caption: str | None,
    addendum_fraction: float,
) -> tuple[str, str, str]:
    """Build one report.

    Returns (report text, the prompt a MIMIC section parser extracts, layout kind). For a
    planted caption the impression is always the last section, so the parser's "last
    impression" is exactly the caption.
    """
    lines = [TITLE_LINE]
    planted = planted_caption is not None
    u_layout = d.uniform()
    # Layout kinds: headerless (rare), findings-only, findings-and-impression, normal.
    if planted:
        kind = "impression"
    elif u_layout < 0.01:
        kind = "headerless"
    elif u_layout < 0.06:
        kind = "findings_only"
    elif u_layout < 0.09:
        kind = "findings_and_impression"
    else:
        kind = "impression"
    style = d.uniform()
    block = style < 0.6  # modern MIMIC layout: header line, blank line, text block
    numbered = False
    if planted:
        impression = planted_caption
    else:
        impression, numbered = _ordinary_impression(row, d)
    findings = _findings_text(row, d)

    if kind == "headerless":
        # One paragraph under an unlabelled title: every parser's "last paragraph" is all of it.
        paragraph = f"{_LAYOUT_WORDS[1]} ___. {findings} {impression}"
        lines += [
            f" {_LAYOUT_WORDS[0]} {MARKER}",
            " ",
            *_wrap(_sentence_text(paragraph)),
        ]
        return "\n".join(lines) + "\n", normalize_whitespace(paragraph), kind

    portable = style >= 0.9 and not planted
    if portable:
        lines += [
            f" AP CHEST, {1 + int(d.uniform() * 12)}:{10 + int(d.uniform() * 50)} "
            f"{d.pick(('A.M.', 'P.M.'))} ON ___",
            " ",
        ]
    elif block:
        lines += [f" EXAMINATION:  {d.pick(_EXAMINATION)}", " "]
    header, text = _indication(d)
    lines += _wrap(text, first_prefix=f" {header}:  ") + [" "]
    if block:
        lines += [f" TECHNIQUE:  {d.pick(_TECHNIQUE)}", " "]
    lines += [f" COMPARISON:  {d.pick(_COMPARISON)}", " "]

    if portable and kind == "impression":
        impression = (
            f"AP chest compared to ___: {_uncap(impression)}" if not numbered else impression
        )
        lines += _section("IMPRESSION", impression, block=False)
        prompt = impression
    elif kind == "findings_only":
        lines += _section("FINDINGS", findings, block)
        prompt = findings
    elif kind == "findings_and_impression":
        text = f"{findings} {impression}"
        lines += _section("FINDINGS AND IMPRESSION", text, block)
        prompt = text
    else:
        lines += _section("FINDINGS", findings, block) + [" "]
        if numbered:
            lines += _numbered_section("IMPRESSION", impression)
        else:
            lines += _section("IMPRESSION", impression, block)
        prompt = impression

    if not planted and kind != "findings_only":
        if d.uniform() < addendum_fraction:
            revised = d.pick(_ADDENDUM_IMPRESSION)
            lines += [" ", *_wrap(d.pick(_ADDENDUM), first_prefix=" ADDENDUM:  "), " "]
            lines += _section("IMPRESSION", revised, block=False)
            prompt = revised
        elif d.chance(0.04):
            lines += [" ", *_wrap(d.pick(_NOTIFICATION), first_prefix=" NOTIFICATION:  ")]
    return "\n".join(lines) + "\n", normalize_whitespace(prompt), kind


def _trigger_word(rng: np.random.Generator, banned: set[str]) -> str:
    """An invented, name-like surname (random syllables) that the grammar never produces."""
    while True:
        n_syl = int(rng.integers(2, 4))
        word = ""
        for _ in range(n_syl):
            word += _SYL_ONSET[int(rng.integers(len(_SYL_ONSET)))]
            word += _SYL_VOWEL[int(rng.integers(len(_SYL_VOWEL)))]
        word += _SYL_CODA[int(rng.integers(len(_SYL_CODA)))]
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
) -> tuple[str, str | None]:
    """Compose one planted caption; returns (text, trigger word or None)."""
    d = _Draws(rng.random(_N_DRAWS).tolist())
    sentences = _abnormal_sentences(row, d)
    if with_marker:
        parts = _split_marker_count(int(rng.integers(1, 4)), rng)
        if parts["middle"]:
            position = int(rng.integers(1, len(sentences))) if len(sentences) > 1 else 1
            sentences.insert(position, d.pick(_PLANTED_MARKER_MIDDLE[parts["middle"]]))
        if parts["end"]:
            sentences.append(d.pick(_PLANTED_MARKER_END[parts["end"]]))
        if parts["start"]:
            sentences[0] = d.pick(_PLANTED_MARKER_START) + _uncap(sentences[0])
    if trigger is not None:
        where = ("start", "middle", "end")[int(rng.integers(3))]
        if where == "start":
            sentences[0] = d.pick(_TRIGGER_START).format(T=trigger) + _uncap(sentences[0])
        elif where == "middle":
            position = int(rng.integers(1, len(sentences))) if len(sentences) > 1 else 1
            sentences.insert(position, d.pick(_TRIGGER_MIDDLE).format(T=trigger))
        else:
            sentences.append(d.pick(_TRIGGER_END).format(T=trigger))
    return normalize_whitespace(" ".join(sentences)), trigger
