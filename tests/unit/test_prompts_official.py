"""Unit tests of ``reports.rules: official``: each choice of MIT-LCP's create_section_files.py
that the default rules deliberately make differently, pinned on a small crafted report, with
the default's choice beside it."""

from __future__ import annotations

from pathlib import Path

import pytest

from memaudit.prompts.official import (
    OFFICIAL_RANGE_OVERRIDES,
    OFFICIAL_SECTION_OVERRIDES,
    RANGE_SECTION,
    official_prompt,
    official_section_name,
    official_sections,
)
from memaudit.prompts.sections import DEFAULT_SECTION_ORDER, choose_section, split_sections
from tests.unit.prompt_reports import (
    ADDENDUM_TITLE_AFTER_IMPRESSION,
    NO_FINDINGS_SECTION,
    STANDARD,
    assert_accounted,
    extract,
    mimic,
    mixed_corpus,
    report_path,
    write_tree,
)

ORDER = DEFAULT_SECTION_ORDER


def _both(text: str, report_id: str = "s1") -> tuple[tuple | None, tuple | None]:
    """(official choice, default choice) of one report."""
    return official_prompt(text, report_id, ORDER), choose_section(split_sections(text), ORDER)


def test_ordinary_reports_give_the_same_prompt_under_both_rules(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    default = extract(root)
    official = extract(root, rules="official")
    assert_accounted(official[2])
    assert official[0]["text"].tolist() == default[0]["text"].tolist()
    assert official[2]["section_rules"] == "official"
    assert official_prompt(STANDARD, "s1", ORDER) == (
        "impression",
        "No acute cardiopulmonary process.",
    )


def test_ndication_header_is_an_impression() -> None:
    text = mimic("""                                 FINAL REPORT
 NDICATION:  Cough and fever.

 FINDINGS:

 Lungs are clear.
""")
    official, default = _both(text)
    assert official == ("impression", "Cough and fever.")
    assert default == ("findings", "Lungs are clear.")
    assert official_section_name("NDICATION") == "impression"


def test_addendum_title_line_stays_in_the_section_above() -> None:
    official, default = _both(ADDENDUM_TITLE_AFTER_IMPRESSION)
    assert default == ("impression", "Left basilar opacity may reflect pneumonia.")
    name, text = official
    assert name == "impression"
    assert text.startswith("Left basilar opacity may reflect pneumonia.")
    assert "ADDENDUM\n Findings were telephoned to Dr. ___" in text
    assert [n for n, _ in official_sections(ADDENDUM_TITLE_AFTER_IMPRESSION)] == [
        "preamble",
        "indication",
        "impression",
    ]


def test_empty_last_section_is_chosen_and_gives_an_empty_prompt(tmp_path: Path) -> None:
    """The official script takes the first section name that is present, even when its text
    is empty; a blank line at the very end leaves an empty last paragraph."""
    text = mimic("""                                 FINAL REPORT
 INDICATION:  Chest pain.

 COMPARISON:  None.

""")
    assert text.endswith("None.\n \n")
    official, default = _both(text)
    assert official == ("last_paragraph", "")
    assert default == ("comparison", "None.")
    root = write_tree(
        tmp_path / "mimic", {report_path(50000001): text, report_path(50000002): STANDARD}
    )
    _, report_map, summary = extract(root, rules="official")
    assert summary["skipped"] == {"empty_prompt": 1}
    assert report_map["report_id"].tolist() == ["s50000002"]
    _, report_map, summary = extract(root)
    assert summary["skipped"] == {}
    assert report_map["section"].tolist() == ["comparison", "impression"]


def test_last_section_is_cut_at_its_first_blank_line() -> None:
    official = official_prompt(NO_FINDINGS_SECTION, "s1", ("comparison",))
    default = choose_section(split_sections(NO_FINDINGS_SECTION), ("comparison",))
    assert official == ("comparison", "___")
    assert default[1].startswith("___\n") and default[1].endswith("no acute process.")
    assert official_prompt(NO_FINDINGS_SECTION, "s1", ORDER) == (
        "last_paragraph",
        "Stable appearance of the chest with no acute process.",
    )


@pytest.mark.parametrize("blank", ["\n\n", "\n  \n", "\n\t\n"])
def test_only_newline_space_newline_is_a_blank_line(blank: str) -> None:
    text = f"Portable chest.{blank}Lungs are clear."
    official, default = _both(text)
    assert official is None  # one "full report" section, no last paragraph
    assert default == ("last_paragraph", "Lungs are clear.")
    assert official_prompt("Portable chest.\n \nLungs are clear.", "s1", ORDER) == (
        "last_paragraph",
        "Lungs are clear.",
    )


def test_header_names_keep_inner_spaces() -> None:
    text = "                                 FINAL REPORT\n REFERENCE  EXAM:  Stable chest.\n"
    official, default = _both(text)
    assert official is None  # "reference  exam" is not in the table
    assert default == ("comparison", "Stable chest.")
    assert official_section_name(" REFERENCE EXAM") == "comparison"


def test_line_endings_are_read_as_python_text_mode_does() -> None:
    text = "FINAL REPORT\r INDICATION:  Cough.\r \r IMPRESSION:  Clear lungs.\r"
    official, default = _both(text)
    assert official == ("impression", "Clear lungs.")
    assert default is None


def test_preamble_runs_up_to_the_header_name() -> None:
    sections = official_sections("FINAL REPORT\n IMPRESSION:  Clear.\n")
    assert sections[0] == ("preamble", "FINAL REPORT\n ")
    assert split_sections("FINAL REPORT\n IMPRESSION:  Clear.\n")[0] == (
        "preamble",
        "FINAL REPORT",
    )


def test_per_study_section_override() -> None:
    study = "s50913680"
    assert OFFICIAL_SECTION_OVERRIDES[study] == "recommendations"
    text = mimic("""                                 FINAL REPORT
 IMPRESSION:  See below.

 RECOMMENDATION(S):  Follow-up chest CT in 3 months.
""")
    official, default = _both(text, study)
    assert official == ("recommendations", "Follow-up chest CT in 3 months.")
    assert default == ("impression", "See below.")
    assert official_prompt(text, "s50000001", ORDER) == ("impression", "See below.")
    # the overridden section is missing: nothing to choose (the official script would fail)
    assert official_prompt(STANDARD, study, ORDER) is None


def test_per_study_character_range_override(tmp_path: Path) -> None:
    study = "s50525523"
    start, stop = OFFICIAL_RANGE_OVERRIDES[study]
    assert (start, stop) == (201, 349)
    text = "x" * start + " The real impression,\n cut by hand. " + "y" * 400
    name, prompt = official_prompt(text, study, ORDER)
    assert name == RANGE_SECTION
    assert prompt == text[start:stop].strip()
    assert prompt.startswith("The real impression,\n cut by hand. yyy")
    # (0, 0): a report without findings, an empty prompt
    assert OFFICIAL_RANGE_OVERRIDES["s58235663"] == (0, 0)
    assert official_prompt(STANDARD, "s58235663", ORDER) == (RANGE_SECTION, "")
    root = write_tree(
        tmp_path / "mimic",
        {report_path(50525523): text, report_path(58235663): STANDARD},
    )
    prompts, report_map, summary = extract(root, rules="official")
    assert summary["skipped"] == {"empty_prompt": 1}
    assert report_map["section"].tolist() == [RANGE_SECTION]
    assert prompts["text"].tolist() == [" ".join(text[start:stop].split())]
    # the default rules apply no override
    _, report_map, summary = extract(root)
    assert report_map["report_id"].tolist() == ["s58235663"]
    assert report_map["section"].tolist() == ["impression"]
    assert summary["skipped"] == {"no_usable_section": 1}


def test_unknown_rules_are_an_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    with pytest.raises(ValueError, match="section rules"):
        extract(root, rules="mit-lcp")
