r"""``reports.rules: official``: the section choice of MIT-LCP's ``create_section_files.py``
(mimic-code, ``mimic-iv-cxr/txt``, with its ``section_parser.py``), re-implemented here, so that
prompts are the sections most published MIMIC-CXR text-to-image models were trained on.

What it does, and where the default (``memaudit``) rules of :mod:`memaudit.prompts.sections`
deliberately differ (docs/method.md lists the same):

- the text is read with universal newlines (``\r\n`` and ``\r`` become ``\n``), as Python's
  text mode does;
- headers are ``\n ([A-Z ()/,-]+):\s`` only; a centred ``ADDENDUM`` title line is not a header,
  so the addendum stays inside the section above it;
- header names are lower-cased and stripped, inner spaces kept, then looked up with the same
  table, except that the typo ``ndication`` means *impression*;
- a blank line is exactly ``"\n \n"``; when neither impression nor findings has text, the last
  section is cut at its first blank line and the rest becomes ``last_paragraph``;
- the prompt is the LAST section of the first name in the order that is present at all, even
  when its text is empty (an empty prompt, which the stage counts as ``empty_prompt``);
- per-study manual overrides: a character range of the report, or a named section.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from memaudit.prompts.sections import (
    SECTION_NAME_MAP,
    canonical_name,
)

#: The official header table: the default one, with the typo "ndication" read as impression.
OFFICIAL_NAME_MAP: dict[str, str] = {**SECTION_NAME_MAP, "ndication": "impression"}

#: Studies whose prompt the official script takes from a named section (the last of that
#: name), because their sections are mis-named. Data of MIT-LCP mimic-code (MIT licence).
OFFICIAL_SECTION_OVERRIDES: dict[str, str] = {
    study: name
    for name, studies in {
        "recommendations": "50913680 59768032 59067458 59087630 58157373 56482935 58375018",
        "examination": "59363654 53356173 50743547 59215320 55157853",
        "technique": "59279892 53202765 50808053",
        "indication": "57936451 50058765 51966317 55124749 54365831 54654948",
        "note": "56451190",
        "history": "51491012",
    }.items()
    for study in (f"s{s}" for s in studies.split())
}

#: Studies whose prompt the official script cuts from the report text by character range
#: ``[start, stop)``; ``(0, 0)``: a report without any findings. Data of MIT-LCP mimic-code.
OFFICIAL_RANGE_OVERRIDES: dict[str, tuple[int, int]] = {
    f"s{study}": (start, stop)
    for study, start, stop in (
        (50525523, 201, 349),
        (57564132, 233, 554),
        (59982525, 313, 717),
        (53488209, 149, 475),
        (54875119, 234, 988),
        (50196495, 59, 399),
        (56579911, 59, 218),
        (52648681, 292, 631),
        (59889364, 172, 453),
        (53514462, 73, 377),
        (59505494, 59, 450),
        (53182247, 59, 412),
        (51410602, 47, 320),
        (56412866, 522, 822),
        (54986978, 59, 306),
        (59003148, 262, 505),
        (57150433, 61, 394),
        (56760320, 219, 457),
        (59562049, 158, 348),
        (52674888, 145, 296),
        (55258338, 192, 568),
        (59330497, 140, 655),
        (52119491, 179, 454),
        (58235663, 0, 0),
        (50798377, 0, 0),
        (54168089, 0, 0),
        (53071062, 0, 0),
        (56724958, 0, 0),
        (54231141, 0, 0),
        (53607029, 0, 0),
        (52035334, 0, 0),
    )
}

#: Section name given to a prompt cut by :data:`OFFICIAL_RANGE_OVERRIDES`.
RANGE_SECTION = "manual_range"

_HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
_BLANK_LINE = "\n \n"


def official_section_name(header: str) -> str:
    """Canonical name of a header under the official rules: lower case, stripped (inner
    spaces kept), then the table, the main keywords and the findings words."""
    return canonical_name(header.lower().strip(), OFFICIAL_NAME_MAP)


def official_sections(text: str) -> list[tuple[str, str]]:
    """``(name, text)`` sections of one report under the official rules, in report order.

    ``text`` is taken as given (apply universal newlines first, as :func:`official_prompt`
    does). The preamble runs up to the header name, so it ends with the ``"\n "`` before it.
    """
    matches = list(_HEADER.finditer(text))
    if not matches:
        sections = [("full report", text)]
    else:
        sections = [("preamble", text[: matches[0].start(1)])]
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            sections.append((official_section_name(match.group(1)), text[match.end() : end]))
    sections = [
        (name, body)
        for name, body in sections
        if not (name in ("impression", "findings") and not body.strip())
    ]
    if not any(name in ("impression", "findings") for name, _ in sections):
        name, body = sections[-1]
        head, blank, tail = body.partition(_BLANK_LINE)
        if blank:
            sections[-1] = (name, head)
            sections.append(("last_paragraph", tail))
    return sections


def official_prompt(text: str, report_id: str, order: Sequence[str]) -> tuple[str, str] | None:
    """The prompt section of one report under the official rules: ``(name, stripped text)``,
    or None when no section of ``order`` (nor an override's section) is present.

    ``report_id`` (``s<study>``) selects the per-study overrides.
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if report_id in OFFICIAL_RANGE_OVERRIDES:
        start, stop = OFFICIAL_RANGE_OVERRIDES[report_id]
        return RANGE_SECTION, text[start:stop].strip()
    sections = official_sections(text)
    wanted = (
        (OFFICIAL_SECTION_OVERRIDES[report_id],)
        if report_id in OFFICIAL_SECTION_OVERRIDES
        else tuple(order)
    )
    for name in wanted:
        for section, body in reversed(sections):
            if section == name:
                return section, body.strip()
    return None
