"""Report sections under the default rules (``reports.rules: memaudit``): header names,
MIMIC-CXR's section splitting and the section chosen as the prompt.

They follow the official MIT-LCP section parser with a few deliberate changes, each noted where
it lives and all listed in docs/method.md; :mod:`memaudit.prompts.official` reproduces the
official choice exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

# --------------------------------------------------------------------------------------------
# Data: section names
# --------------------------------------------------------------------------------------------

#: Header names (lower case, inner whitespace collapsed) -> canonical section name. The variants
#: are those the official MIMIC-CXR section parser knows, misspellings included. One deliberate
#: change: the official table maps the typo "ndication" to "impression", which is read here as a
#: slip and mapped to "indication".
SECTION_NAME_MAP: dict[str, str] = {
    # the canonical names themselves
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "notification": "notification",
    "recommendations": "recommendations",
    "addendum": "addendum",
    "date": "date",
    "comment": "comment",
    "wet read": "wet read",
    # frequent variants
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "reference exam": "comparison",
    "clinical history": "history",
    "clinical information": "history",
    "patient history": "history",
    "pfi": "history",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "clinical indication": "indication",
    "exam": "examination",
    "type of examination": "examination",
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
    "chest, two views": "findings",
    "reference findings": "findings",
    "recommendation(s)": "recommendations",
    "recommendation": "recommendations",
    "wetread": "wet read",
    # misspellings seen in the reports
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "ndication": "indication",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}

#: Fallback for headers not in :data:`SECTION_NAME_MAP`: the first of these words contained in
#: the header name becomes its section name ("wet read impression" -> impression).
SECTION_KEYWORDS: tuple[str, ...] = ("impression", "findings", "history", "comparison", "addendum")

#: Last fallback: a header naming the views of the study ("CHEST, PA AND LATERAL:",
#: "PORTABLE AP VIEW:") describes the whole study and is read as findings.
FINDINGS_HEADER_WORDS: tuple[str, ...] = (
    "chest",
    "portable",
    "pa and lateral",
    "lateral and pa",
    "ap and lateral",
    "lateral and ap",
    "frontal and",
    "two views",
    "frontal view",
    "pa view",
    "ap view",
    "one view",
    "lateral view",
    "bone window",
    "frontal upright",
    "frontal semi-upright",
    "ribs",
    "pa and lat",
)

#: Default order in which sections are tried for the prompt (the last section of a name wins).
DEFAULT_SECTION_ORDER: tuple[str, ...] = ("impression", "findings", "last_paragraph", "comparison")

# Section header (official pattern) or a line holding only the word ADDENDUM (our addition).
_HEADER = re.compile(r"\n (?P<header>[A-Z ()/,-]+):\s|\n[ \t]*(?P<title>ADDENDUM)[ \t]*(?=\r?\n|$)")
# First blank line of a section (MIMIC writes "\n \n"; plain "\n\n" is accepted too).
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")
_FINDINGS_WORDS = re.compile("|".join(re.escape(w) for w in FINDINGS_HEADER_WORDS))


# --------------------------------------------------------------------------------------------
# Section splitting
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def canonical_section_name(header: str) -> str:
    """Canonical section name of a header as written in a report (``" FINDINGS"`` -> findings).

    Looks the lower-cased name up in :data:`SECTION_NAME_MAP`, then tries the words of
    :data:`SECTION_KEYWORDS` and :data:`FINDINGS_HEADER_WORDS`; an unknown header keeps its
    lower-cased name (e.g. "procedure").
    """
    return canonical_name(" ".join(header.lower().split()), SECTION_NAME_MAP)


def canonical_name(name: str, table: dict[str, str]) -> str:
    """A lower-cased header name through ``table``, then the section keywords, then the
    findings words; an unknown name is kept (both section rules share this order)."""
    if name in table:
        return table[name]
    for keyword in SECTION_KEYWORDS:
        if keyword in name:
            return keyword
    if _FINDINGS_WORDS.search(name):
        return "findings"
    return name


def split_sections(text: str) -> list[tuple[str, str]]:
    """Split one MIMIC-CXR report into ``(canonical name, text)`` sections, in report order.

    Section texts are returned as written (line breaks kept). Empty impression and findings
    sections are dropped; when no impression or findings is left and the last section has a
    blank line, the text after its first blank line is appended as ``last_paragraph``.
    """
    matches = list(_HEADER.finditer(text))
    if not matches:
        sections = [("full report", text)]
    else:
        sections = [("preamble", text[: matches[0].start()])]
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            header = match.group("header")
            name = canonical_section_name(header) if header is not None else "addendum"
            sections.append((name, text[match.end() : end]))
    sections = [
        (name, body)
        for name, body in sections
        if not (name in ("impression", "findings") and not body.strip())
    ]
    if not any(name in ("impression", "findings") for name, _ in sections) and sections:
        blank = _BLANK_LINE.search(sections[-1][1])
        if blank is not None:
            sections.append(("last_paragraph", sections[-1][1][blank.end() :]))
    return sections


def choose_section(
    sections: Sequence[tuple[str, str]], order: Sequence[str] = DEFAULT_SECTION_ORDER
) -> tuple[str, str] | None:
    """The prompt section: for the first name in ``order`` that has a section with text, the
    LAST such section (an addendum's impression beats the original one), stripped.

    Returns ``(name, text)``, or None when no section of the order has text.
    """
    for wanted in order:
        for name, body in reversed(sections):
            if name == wanted and body.strip():
                return name, body.strip()
    return None
