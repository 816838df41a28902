"""The demo report grammar: one MIMIC-CXR-style report from a row of findings.

:func:`compose_report` turns a study's severity row (see :mod:`memaudit.corpus.findings`) and a
row of uniform draws into the report text, the prompt a MIMIC section parser extracts from it
and the layout kind. Impressions name each finding with phrases from
:mod:`memaudit.corpus.vocabulary`; normal impressions repeat heavily, abnormal ones form a long
tail, and some carry the planted captions' decorations with ``___`` for the name. The layout
follows MIMIC-CXR's typography: a ``FINAL REPORT`` title line, section headers indented one
space and followed by a colon, blank lines holding one space, text wrapped below 79 characters
with every line indented one space. A planted caption is always the last impression, so the
parser's prompt is exactly the caption.
"""

from __future__ import annotations

import bisect
import re

from memaudit.corpus import vocabulary as vocab
from memaudit.corpus.findings import FINDING_COLUMN
from memaudit.text import normalize_whitespace

MARKER = "___"
TITLE_LINE = " " * 33 + "FINAL REPORT"
WRAP_WIDTH = 78
#: Uniforms per report; the grammar uses far fewer (the cursor wraps if not).
N_DRAWS = 96


# ---------------------------------------------------------------------------------------------
# Random draws for the text grammar


class Draws:
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


def uncap(s: str) -> str:
    """Lower-case the first letter unless the first word is an abbreviation (``NG tube``)."""
    if len(s) > 1 and s[0].isupper() and not s[1].isupper():
        return s[0].lower() + s[1:]
    return s


# ---------------------------------------------------------------------------------------------
# Text generation


def _side_phrase(left: int, right: int, d: Draws, sizes: dict, noun: str, plural: str) -> str:
    if left and right:
        if left == right or d.chance(0.5):
            return f"{d.pick(sizes[max(left, right)])} bilateral {plural}"
        return f"{d.pick(sizes[right])} right and {d.pick(sizes[left])} left {plural}"
    side = "left" if left else "right"
    return f"{d.pick(sizes[left or right])} {side} {noun}"


def _finding_phrases(row: list[int], d: Draws) -> list[tuple[str, str]]:
    """(noun phrase, suffix) per finding present in the severity row, in grammar order."""
    out: list[tuple[str, str]] = []
    c = FINDING_COLUMN
    if row[c["et_tube"]]:
        dist = 2.0 + 0.5 * int(d.uniform() * 10)
        if d.chance(0.2):
            out.append((f"{d.pick(vocab.ET_NAME)} in standard position", ""))
        else:
            verb = d.pick(vocab.ET_VERB)
            out.append((f"{d.pick(vocab.ET_NAME)} {verb} {dist:.1f} cm above the carina", ""))
    if row[c["ng_tube"]]:
        out.append((d.pick(vocab.NG_NAME) + d.pick(vocab.NG_TAIL), ""))
    if row[c["central_line"]]:
        out.append((d.pick(vocab.LINE_NAME) + d.pick(vocab.LINE_TAIL), ""))
    if row[c["pacemaker"]]:
        out.append((d.pick(vocab.PACER_NAME) + d.pick(vocab.PACER_TAIL), ""))
    if row[c["cardiomegaly"]]:
        out.append((d.pick(vocab.CARDIO[row[c["cardiomegaly"]]]), d.pick(vocab.CARDIO_SUFFIX)))
    if row[c["effusion_left"]] or row[c["effusion_right"]]:
        np_ = _side_phrase(
            row[c["effusion_left"]],
            row[c["effusion_right"]],
            d,
            vocab.EFF_SIZE,
            "pleural effusion",
            d.pick(("pleural effusions", "effusions")),
        )
        out.append((np_, d.pick(vocab.EFF_SUFFIX)))
    if row[c["pneumothorax_left"]] or row[c["pneumothorax_right"]]:
        np_ = _side_phrase(
            row[c["pneumothorax_left"]],
            row[c["pneumothorax_right"]],
            d,
            vocab.PTX_SIZE,
            d.pick(("pneumothorax", "apical pneumothorax")),
            "pneumothoraces",
        )
        out.append((np_, d.pick(vocab.PTX_SUFFIX)))
    for side in ("left", "right"):
        s = row[c[f"consolidation_{side}"]]
        if s:
            lobe = d.pick(vocab.CONS_LOBE[side])
            np_ = f"{d.pick(vocab.CONS_SEV[s])}{side} {lobe} {d.pick(vocab.CONS_NOUN)}"
            out.append((np_, d.pick(vocab.CONS_SUFFIX)))
    if row[c["atelectasis"]]:
        out.append((d.pick(vocab.ATEL[row[c["atelectasis"]]]), ""))
    if row[c["edema"]]:
        out.append((d.pick(vocab.EDEMA[row[c["edema"]]]), d.pick(vocab.EDEMA_SUFFIX)))
    return out


def abnormal_sentences(row: list[int], d: Draws) -> list[str]:
    """One impression sentence per finding, tubes first or shuffled."""
    phrases = _finding_phrases(row, d)
    sentences = [_cap(np_ + suffix) + "." for np_, suffix in phrases]
    if len(sentences) > 1 and d.chance(0.4):
        keys = [d.uniform() for _ in sentences]
        sentences = [s for _, s in sorted(zip(keys, sentences, strict=True))]
    return sentences


def _ordinary_impression(row: list[int], d: Draws) -> tuple[str, bool]:
    """(impression text with single spaces, numbered) for an ordinary study."""
    if not any(row):
        if d.chance(0.85):
            return d.weighted(vocab.NORMAL_HEAD, vocab.NORMAL_HEAD_CUM), False
        first = d.pick(vocab.NORMAL_TAIL_FIRST)
        extra = d.pick(vocab.NORMAL_TAIL_EXTRA)
        if extra.split()[0] == first.split()[0]:
            return first, False
        return f"{first} {extra}", False
    sentences = abnormal_sentences(row, d)
    if len(sentences) <= 2 and d.chance(0.25):
        sentences.append(d.pick(vocab.OTHERWISE))
    u = d.uniform()
    if u < 0.14:
        sentences[0] = d.pick(vocab.IMPRESSION_PREFIX_MARKER) + uncap(sentences[0])
    elif u < 0.22:
        sentences[0] = d.pick(vocab.IMPRESSION_PREFIX_PLAIN) + uncap(sentences[0])
    if d.chance(0.06):
        sentences.append(d.pick(vocab.IMPRESSION_END_MARKER))
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


def _decorate(sentences: list[str], d: Draws, start_free: bool) -> list[str]:
    """Add one planted-caption decoration (start, middle or end) with ``___`` for the name."""
    where = d.pick(("start", "middle", "end") if start_free else ("middle", "end"))
    if where == "start":
        template = d.pick(vocab.PLANTED_MARKER_START + vocab.TRIGGER_START)
        sentences[0] = template.format(T=MARKER) + uncap(sentences[0])
    elif where == "middle":
        middle = (
            vocab.PLANTED_MARKER_MIDDLE[1] + vocab.PLANTED_MARKER_MIDDLE[2] + vocab.TRIGGER_MIDDLE
        )
        position = 1 + int(d.uniform() * len(sentences))
        sentences.insert(min(position, len(sentences)), d.pick(middle).format(T=MARKER))
    else:
        end = (
            tuple(t for group in vocab.PLANTED_MARKER_END.values() for t in group)
            + vocab.TRIGGER_END
        )
        sentences.append(d.pick(end).format(T=MARKER))
    return sentences


def _findings_text(row: list[int], d: Draws) -> str:
    """Findings-section paragraph: the abnormal findings plus normal statements for the rest."""
    c = FINDING_COLUMN
    parts: list[str] = []
    if d.chance(0.3):
        parts.append(d.pick(vocab.F_INTRO))
    for np_, suffix in _finding_phrases(row, d):
        device = any(w in np_ for w in vocab.DEVICE_WORDS)
        template = d.pick(vocab.F_TEMPLATES[1:] if device else vocab.F_TEMPLATES)
        if template.startswith("There is"):
            parts.append(template.format(np=uncap(np_) + suffix))
        else:
            parts.append(template.format(NP=_cap(np_)).rstrip(".") + suffix + ".")
    if not row[c["cardiomegaly"]]:
        parts.append(d.pick(vocab.F_HEART))
    lung_abnormal = any(
        row[c[k]] for k in ("consolidation_left", "consolidation_right", "edema", "atelectasis")
    )
    if not lung_abnormal:
        parts.append(d.pick(vocab.F_LUNGS))
    if not any(
        row[c[k]]
        for k in ("effusion_left", "effusion_right", "pneumothorax_left", "pneumothorax_right")
    ):
        parts.append(d.pick(vocab.F_PLEURA))
    if d.chance(0.5):
        parts.append(d.pick(vocab.F_EXTRA))
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


def _indication(d: Draws) -> tuple[str, str]:
    noun, adj, letter = vocab.SEX[int(d.uniform() * 2)]
    complaint = d.pick(vocab.COMPLAINT)
    u = d.uniform()
    if u < 0.6:
        return "INDICATION", f"___ year old {noun} with {complaint}  // {d.pick(vocab.QUESTION)}"
    if u < 0.8:
        return "HISTORY", f"___-year-old {adj} with {complaint}."
    return "HISTORY", f"___{letter} with {complaint}, {d.pick(vocab.QUESTION)}."


# ---------------------------------------------------------------------------------------------
# The report


def compose_report(
    row: list[int],
    d: Draws,
    planted_caption: str | None,
    addendum_fraction: float,
) -> tuple[str, str, str]:
    """Build one report.

    Returns (report text, the prompt a MIMIC section parser extracts, layout kind). For a
    planted caption the impression is always the last section (no addendum, no notification),
    so the parser's "last impression" is exactly the caption.
    """
    planted = planted_caption is not None
    # 1. Layout, then the impression and findings texts. Every draw is taken in this order
    #    whatever the layout turns out to be, so one report's choices never shift another's.
    kind = _layout_kind(d.uniform(), planted)
    style = d.uniform()
    block = style < 0.6  # modern MIMIC layout: header line, blank line, text block
    numbered = False
    if planted:
        impression = planted_caption
    else:
        impression, numbered = _ordinary_impression(row, d)
    findings = _findings_text(row, d)
    if kind == "headerless":
        return _headerless_report(findings, impression)

    # 2. Header sections, 3. the findings / impression body, 4. an addendum or notification.
    portable = style >= 0.9 and not planted
    lines = [TITLE_LINE, *_header_lines(d, portable, block)]
    body, prompt = _body_lines(kind, findings, impression, portable, numbered, block)
    lines += body
    if not planted and kind != "findings_only":
        addendum, revised = _addendum_lines(d, addendum_fraction)
        lines += addendum
        if revised is not None:
            prompt = revised
    return "\n".join(lines) + "\n", normalize_whitespace(prompt), kind


def _layout_kind(u: float, planted: bool) -> str:
    """headerless (rare), findings_only, findings_and_impression or impression (most)."""
    if planted:
        return "impression"
    if u < 0.01:
        return "headerless"
    if u < 0.06:
        return "findings_only"
    if u < 0.09:
        return "findings_and_impression"
    return "impression"


def _headerless_report(findings: str, impression: str) -> tuple[str, str, str]:
    """One paragraph under an unlabelled title: every parser's "last paragraph" is all of it."""
    paragraph = f"{vocab.HEADERLESS_COMPARISON} ___. {findings} {impression}"
    lines = [
        TITLE_LINE,
        f" {vocab.HEADERLESS_TITLE} {MARKER}",
        " ",
        *_wrap(_sentence_text(paragraph)),
    ]
    return "\n".join(lines) + "\n", normalize_whitespace(paragraph), "headerless"


def _header_lines(d: Draws, portable: bool, block: bool) -> list[str]:
    """Examination (or the portable header), indication, technique and comparison."""
    lines: list[str] = []
    if portable:
        lines += [
            f" AP CHEST, {1 + int(d.uniform() * 12)}:{10 + int(d.uniform() * 50)} "
            f"{d.pick(('A.M.', 'P.M.'))} ON ___",
            " ",
        ]
    elif block:
        lines += [f" EXAMINATION:  {d.pick(vocab.EXAMINATION)}", " "]
    header, text = _indication(d)
    lines += _wrap(text, first_prefix=f" {header}:  ") + [" "]
    if block:
        lines += [f" TECHNIQUE:  {d.pick(vocab.TECHNIQUE)}", " "]
    lines += [f" COMPARISON:  {d.pick(vocab.COMPARISON)}", " "]
    return lines


def _body_lines(
    kind: str, findings: str, impression: str, portable: bool, numbered: bool, block: bool
) -> tuple[list[str], str]:
    """(findings / impression sections, the prompt they give) for a report with headers."""
    if portable and kind == "impression":
        impression = (
            f"AP chest compared to ___: {uncap(impression)}" if not numbered else impression
        )
        return _section("IMPRESSION", impression, block=False), impression
    if kind == "findings_only":
        return _section("FINDINGS", findings, block), findings
    if kind == "findings_and_impression":
        text = f"{findings} {impression}"
        return _section("FINDINGS AND IMPRESSION", text, block), text
    lines = _section("FINDINGS", findings, block) + [" "]
    if numbered:
        lines += _numbered_section("IMPRESSION", impression)
    else:
        lines += _section("IMPRESSION", impression, block)
    return lines, impression


def _addendum_lines(d: Draws, addendum_fraction: float) -> tuple[list[str], str | None]:
    """(closing lines, the addendum's revised impression or None) of an ordinary report.

    An addendum with its own impression section changes the report's prompt: the parser takes
    the *last* impression. A notification has no impression and leaves the prompt alone.
    """
    if d.uniform() < addendum_fraction:
        revised = d.pick(vocab.ADDENDUM_IMPRESSION)
        lines = [" ", *_wrap(d.pick(vocab.ADDENDUM), first_prefix=" ADDENDUM:  "), " "]
        return lines + _section("IMPRESSION", revised, block=False), revised
    if d.chance(0.04):
        return [" ", *_wrap(d.pick(vocab.NOTIFICATION), first_prefix=" NOTIFICATION:  ")], None
    return [], None
