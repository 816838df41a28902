"""Unit tests for memaudit.reports: section splitting, readers, skips and the prompts table."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from memaudit.prompts.extract import SKIP_REASONS, extract_prompts
from memaudit.prompts.sections import (
    DEFAULT_SECTION_ORDER,
    canonical_section_name,
    choose_section,
    split_sections,
)
from memaudit.prompts.sources import load_metadata_filter
from memaudit.text import prompt_id


def _mimic(text: str) -> str:
    """Report text as MIMIC-CXR writes it: blank lines hold one space, and a header alone on
    its line is followed by two spaces (kept out of the source to avoid trailing whitespace)."""
    lines = text.split("\n")
    return (
        "\n".join(
            " " if not line else line + "  " if line.endswith(":") else line for line in lines[:-1]
        )
        + "\n"
    )


# A report in MIMIC-CXR style: centred title, headers indented one space, "\n \n" blank lines.
STANDARD = _mimic("""                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ year old woman with cough  // eval for pneumonia

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  ___

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
""")

# The same impression with different line breaks and spacing: the same prompt once normalised.
STANDARD_REWRAPPED = _mimic("""                                 FINAL REPORT
 EXAMINATION:  CHEST (PORTABLE AP)

 INDICATION:  ___ with fever

 COMPARISON:  None.

 IMPRESSION:

 No acute
 cardiopulmonary   process.
""")

NO_IMPRESSION = _mimic("""                                 FINAL REPORT
 INDICATION:  ___ year old man with dyspnea

 COMPARISON:  Chest radiograph from ___.

 FINDINGS:

 Mild pulmonary vascular congestion.  No pneumothorax.
""")

ADDENDUM_WITH_IMPRESSION = _mimic("""                                 FINAL REPORT
 INDICATION:  Line placement.

 FINDINGS:

 Right internal jugular line ends in the upper SVC.

 IMPRESSION:

 Line in the SVC.

 ADDENDUM:  Reviewed with Dr. ___ on ___.

 IMPRESSION:

 Right internal jugular line ends in the right atrium; withdraw by 2 cm.
""")

ADDENDUM_TITLE_AFTER_IMPRESSION = _mimic("""                                 FINAL REPORT
 INDICATION:  Fever.

 IMPRESSION:

 Left basilar opacity may reflect pneumonia.

                                 ADDENDUM
 Findings were telephoned to Dr. ___ at 10:15 on ___.
""")

NO_HEADERS_TWO_PARAGRAPHS = _mimic("""                                 FINAL REPORT

 Portable chest radiograph.  Lungs are clear.  No pneumothorax.
""")

NO_HEADERS_ONE_PARAGRAPH = "  Lungs are clear.  No pneumothorax.\n"

# Only comparison and indication: the last paragraph of the last section is the prompt.
NO_FINDINGS_SECTION = _mimic("""                                 FINAL REPORT
 INDICATION:  ___ year old with chest pain.

 COMPARISON:  ___

 Stable appearance of the chest with no acute process.
""")

# Nothing usable: one header, no impression/findings, no blank line in the last section.
NO_USABLE = """                                 FINAL REPORT
 INDICATION:  Cough."""


def _assert_accounted(summary: dict) -> None:
    """Every report read is used or a counted skip with a known reason."""
    assert summary["reports_read"] == summary["reports_used"] + sum(summary["skipped"].values())
    assert set(summary["skipped"]) <= set(SKIP_REASONS)


def _report_path(study: int, subject: int = 10000032) -> str:
    return f"files/p{str(subject)[:2]}/p{subject}/s{study}.txt"


def _write_tree(root: Path, reports: dict[str, str | bytes]) -> Path:
    for rel, content in reports.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def _write_zip(path: Path, reports: dict[str, str | bytes], prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel, content in reports.items():
            archive.writestr(prefix + rel, content)
    return path


# ------------------------------------------------------------------ section splitting


def test_fixtures_are_in_mimic_layout() -> None:
    assert "\n \n INDICATION:  ___" in STANDARD
    assert "\n FINDINGS:  \n \n There is" in STANDARD
    assert STANDARD.endswith("process.\n")


def test_split_standard_report_in_order() -> None:
    sections = split_sections(STANDARD)
    assert [name for name, _ in sections] == [
        "preamble",
        "examination",
        "indication",
        "technique",
        "comparison",
        "findings",
        "impression",
    ]
    assert "FINAL REPORT" in sections[0][1]
    assert choose_section(sections) == ("impression", "No acute cardiopulmonary process.")


@pytest.mark.parametrize(
    ("header", "canonical"),
    [
        ("CONCLUSION", "impression"),
        ("FINDINGS AND IMPRESSION", "impression"),
        ("FINDINGS/IMPRESSION", "impression"),
        ("IMPRESSON", "impression"),
        ("WET READ IMPRESSION", "impression"),
        ("COMPARISONS", "comparison"),
        ("COMPARISON EXAM", "comparison"),
        ("REASON FOR EXAMINATION", "indication"),
        ("CLINICAL HISTORY", "history"),
        ("TYPE OF EXAMINATION", "examination"),
        ("RECOMMENDATION(S)", "recommendations"),
        ("CHEST, PA AND LATERAL", "findings"),
        ("PORTABLE AP VIEW", "findings"),
        ("PROCEDURE", "procedure"),
    ],
)
def test_variant_headers_are_mapped(header: str, canonical: str) -> None:
    assert canonical_section_name(f" {header}") == canonical
    text = f"                                 FINAL REPORT\n {header}:  Some text here.\n"
    assert [name for name, _ in split_sections(text)] == ["preamble", canonical]


def test_conclusion_header_gives_the_prompt() -> None:
    text = STANDARD.replace(" IMPRESSION:", " CONCLUSION:")
    assert choose_section(split_sections(text)) == (
        "impression",
        "No acute cardiopulmonary process.",
    )


def test_addendum_impression_wins() -> None:
    sections = split_sections(ADDENDUM_WITH_IMPRESSION)
    assert [name for name, _ in sections].count("impression") == 2
    assert "addendum" in [name for name, _ in sections]
    name, text = choose_section(sections)
    assert name == "impression"
    assert text.startswith("Right internal jugular line ends in the right atrium")


def test_addendum_title_does_not_leak_into_impression() -> None:
    sections = split_sections(ADDENDUM_TITLE_AFTER_IMPRESSION)
    assert [name for name, _ in sections] == ["preamble", "indication", "impression", "addendum"]
    assert choose_section(sections) == (
        "impression",
        "Left basilar opacity may reflect pneumonia.",
    )


def test_missing_impression_falls_back_to_findings() -> None:
    name, text = choose_section(split_sections(NO_IMPRESSION))
    assert name == "findings"
    assert text == "Mild pulmonary vascular congestion.  No pneumothorax."


def test_empty_impression_is_dropped() -> None:
    text = NO_IMPRESSION + " \n IMPRESSION:  \n \n"
    names = [name for name, _ in split_sections(text)]
    assert "impression" not in names
    assert choose_section(split_sections(text))[0] == "findings"


def test_no_headers_uses_last_paragraph() -> None:
    sections = split_sections(NO_HEADERS_TWO_PARAGRAPHS)
    assert [name for name, _ in sections] == ["full report", "last_paragraph"]
    assert choose_section(sections) == (
        "last_paragraph",
        "Portable chest radiograph.  Lungs are clear.  No pneumothorax.",
    )


def test_no_headers_single_paragraph_needs_full_report_in_order() -> None:
    sections = split_sections(NO_HEADERS_ONE_PARAGRAPH)
    assert sections == [("full report", NO_HEADERS_ONE_PARAGRAPH)]
    assert choose_section(sections) is None
    assert choose_section(sections, ("impression", "full report")) == (
        "full report",
        "Lungs are clear.  No pneumothorax.",
    )


def test_plain_blank_line_also_splits_last_paragraph() -> None:
    sections = split_sections("Portable chest.\n\nLungs are clear.")
    assert choose_section(sections) == ("last_paragraph", "Lungs are clear.")


def test_last_paragraph_beats_comparison() -> None:
    sections = split_sections(NO_FINDINGS_SECTION)
    assert sections[-1][0] == "last_paragraph"
    assert choose_section(sections) == (
        "last_paragraph",
        "Stable appearance of the chest with no acute process.",
    )
    # The comparison section runs to the end (the paragraph is part of it, as officially).
    name, text = choose_section(sections, ("comparison",))
    assert name == "comparison"
    assert text.startswith("___\n")
    assert text.endswith("no acute process.")


def test_header_like_text_inside_a_sentence_does_not_split() -> None:
    text = (
        "                                 FINAL REPORT\n"
        " FINDINGS:  Compared with the prior study, IMPRESSION: unchanged and\n"
        "stable.  NOTE: the line\n"
        "IMPRESSION: is not indented.\n"
    )
    sections = split_sections(text)
    assert [name for name, _ in sections] == ["preamble", "findings"]
    assert "IMPRESSION: is not indented." in sections[1][1]


def test_choose_section_custom_order_and_missing() -> None:
    sections = split_sections(NO_IMPRESSION)
    assert choose_section(sections, ("impression",)) is None
    assert choose_section(sections, ("comparison", "findings")) == (
        "comparison",
        "Chest radiograph from ___.",
    )


# ------------------------------------------------------------------ extract_prompts on MIMIC


def _corpus() -> dict[str, str]:
    return {
        _report_path(50000001, 10000001): STANDARD,
        _report_path(50000002, 10000001): STANDARD_REWRAPPED,
        _report_path(50000003, 11000002): NO_IMPRESSION,
        _report_path(50000004, 11000002): ADDENDUM_WITH_IMPRESSION,
        _report_path(50000005, 12000003): NO_HEADERS_TWO_PARAGRAPHS,
        _report_path(50000006, 12000003): NO_USABLE,
    }


def test_extract_prompts_dedup_counts_and_columns(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "mimic", _corpus())
    prompts, report_map, summary = extract_prompts(root)
    _assert_accounted(summary)
    assert list(prompts.columns) == [
        "prompt_id",
        "text",
        "n_reports",
        "marker_count",
        "has_marker",
        "n_words",
    ]
    assert str(prompts["n_reports"].dtype) == "int64"
    assert str(prompts["has_marker"].dtype) == "bool"
    assert list(report_map.columns) == [
        "report_id",
        "subject_id",
        "study_id",
        "section",
        "prompt_id",
    ]
    # STANDARD and STANDARD_REWRAPPED share one prompt after whitespace normalisation.
    top = prompts.iloc[0]
    assert top["text"] == "No acute cardiopulmonary process."
    assert top["n_reports"] == 2
    assert top["prompt_id"] == prompt_id("No acute cardiopulmonary process.")
    assert top["n_words"] == 4
    assert len(prompts) == 4
    assert summary["unique_prompts"] == 4
    # The rest have one report each and are ordered by prompt_id.
    assert list(prompts["prompt_id"].iloc[1:]) == sorted(prompts["prompt_id"].iloc[1:])
    assert summary["reports_read"] == 6
    assert summary["reports_used"] == 5
    assert summary["skipped"] == {"no_usable_section": 1}
    assert summary["section_counts"] == {"impression": 3, "findings": 1, "last_paragraph": 1}
    assert summary["most_repeated"][0] == {
        "prompt_id": top["prompt_id"],
        "text": "No acute cardiopulmonary process.",
        "n_reports": 2,
    }
    first = report_map.iloc[0]
    assert first["report_id"] == "s50000001"
    assert first["subject_id"] == "10000001"
    assert first["study_id"] == 50000001
    assert first["section"] == "impression"
    assert report_map["prompt_id"].isin(prompts["prompt_id"]).all()


def test_markers_counted_per_prompt(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "mimic", _corpus())
    prompts, _, summary = extract_prompts(root)
    by_text = prompts.set_index("text")
    addendum_text = "Right internal jugular line ends in the right atrium; withdraw by 2 cm."
    assert by_text.loc[addendum_text, "marker_count"] == 0
    # Only the addendum's own impression counts, not "Dr. ___ on ___" in the addendum section.
    assert not by_text.loc[addendum_text, "has_marker"]
    text = STANDARD.replace("No acute cardiopulmonary process.", "Called to Dr. ___ on ___.")
    root2 = _write_tree(tmp_path / "mimic2", {_report_path(50000009): text})
    prompts2, _, summary2 = extract_prompts(root2)
    assert prompts2["marker_count"].tolist() == [2]
    assert prompts2["has_marker"].tolist() == [True]
    assert summary2["prompts_with_marker"] == 1
    assert summary2["reports_with_marker"] == 1
    assert summary["prompts_with_marker"] == 0
    assert summary2["marker_patterns"] == ["___"]


def test_custom_order_impression_only_skips_others(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "mimic", _corpus())
    prompts, report_map, summary = extract_prompts(root, sections=["impression"])
    _assert_accounted(summary)
    assert summary["reports_used"] == 3
    assert summary["skipped"] == {"no_usable_section": 3}
    assert set(report_map["section"]) == {"impression"}
    assert set(report_map["report_id"]) == {"s50000001", "s50000002", "s50000004"}


def test_folder_files_folder_and_zip_give_identical_outputs(tmp_path: Path) -> None:
    corpus = _corpus()
    root = _write_tree(tmp_path / "mimic", corpus)
    # The parent of files/ may hold other things: only files/ is walked.
    (root / "studies.parquet").write_bytes(b"PAR1 not a report")
    zip_plain = _write_zip(tmp_path / "plain.zip", corpus)
    zip_prefixed = _write_zip(tmp_path / "mimic-cxr-reports.zip", corpus, prefix="mimic-cxr/")
    results = [
        extract_prompts(root),
        extract_prompts(root / "files"),
        extract_prompts(zip_plain),
        extract_prompts(zip_prefixed),
    ]
    base_prompts, base_map, base_summary = results[0]
    for prompts, report_map, summary in results[1:]:
        pd.testing.assert_frame_equal(prompts, base_prompts)
        pd.testing.assert_frame_equal(report_map, base_map)
        for key in ("reports_read", "reports_used", "skipped", "section_counts", "most_repeated"):
            assert summary[key] == base_summary[key]
    assert [r[2]["format"] for r in results] == ["folder", "folder", "zip", "zip"]
    assert {r[2]["kind"] for r in results} == {"mimic"}


def test_hidden_files_in_a_folder_are_not_reports(tmp_path: Path) -> None:
    corpus = _corpus()
    root = _write_tree(tmp_path / "mimic", corpus)
    plain = extract_prompts(root)
    (root / "files" / ".snakemake_timestamp").write_text("")
    (root / "files" / "p10" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "files" / ".cache").mkdir()
    (root / "files" / ".cache" / "s1.txt").write_text("not a study")
    prompts, report_map, summary = extract_prompts(root)
    pd.testing.assert_frame_equal(prompts, plain[0])
    pd.testing.assert_frame_equal(report_map, plain[1])
    assert summary["reports_read"] == plain[2]["reports_read"] == len(corpus)


def test_zip_non_report_members_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "reports.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mimic-cxr-reports/", "")  # directory entry: not an item
        archive.writestr("mimic-cxr-reports/files/p10/", "")
        archive.writestr("mimic-cxr-reports/README", "read me")
        archive.writestr("mimic-cxr-reports/LICENSE.txt", "license")
        archive.writestr("mimic-cxr-reports/cxr-record-list.csv", "a,b\n1,2\n")
        archive.writestr("mimic-cxr-reports/files/p10/p10000032/notes.txt", STANDARD)
        archive.writestr("mimic-cxr-reports/" + _report_path(50414267), STANDARD)
    prompts, report_map, summary = extract_prompts(path)
    _assert_accounted(summary)
    assert summary["reports_read"] == 5
    assert summary["skipped"] == {"not_a_report": 4}
    assert report_map["report_id"].tolist() == ["s50414267"]
    assert report_map["study_id"].tolist() == [50414267]


# ------------------------------------------------------------------ bad inputs


def _bad_corpus() -> dict[str, str | bytes]:
    return {
        _report_path(50000001): STANDARD,
        _report_path(50000002): b"",
        _report_path(50000003): b"\xff\xfe IMPRESSION: \xe9t\xe9\n",
        _report_path(50000004): b"FINAL REPORT\x00\x00\x01 binary",
        _report_path(50000005): NO_USABLE,
        _report_path(50000006): STANDARD + " " * (5 * 1024 * 1024),
    }


@pytest.mark.parametrize("as_zip", [False, True])
def test_bad_reports_are_counted_skips(tmp_path: Path, as_zip: bool) -> None:
    corpus = _bad_corpus()
    if as_zip:
        source = _write_zip(tmp_path / "bad.zip", corpus)
    else:
        source = _write_tree(tmp_path / "bad", corpus)
    prompts, report_map, summary = extract_prompts(source)
    _assert_accounted(summary)
    assert summary["reports_read"] == 6
    assert summary["reports_used"] == 1
    assert summary["skipped"] == {
        "empty": 1,
        "not_utf8": 2,
        "no_usable_section": 1,
        "too_large": 1,
    }
    assert report_map["report_id"].tolist() == ["s50000001"]
    assert summary["skipped_examples"]["too_large"][0].endswith("s50000006.txt")
    assert summary["skipped_examples"]["no_usable_section"] == ["s50000005"]
    # The size limit is configurable: a larger limit lets the 5 MB report through.
    _, _, summary_big = extract_prompts(source, max_report_bytes=10_000_000)
    assert "too_large" not in summary_big["skipped"]
    assert summary_big["reports_used"] == 2


def test_duplicate_report_ids_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/" + _report_path(50000001), STANDARD)
        archive.writestr("b/" + _report_path(50000001), STANDARD)
    prompts, _, summary = extract_prompts(path)
    _assert_accounted(summary)
    assert summary["skipped"] == {"duplicate_report": 1}
    assert prompts["n_reports"].tolist() == [1]


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mimic-cxr-reports.zip"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        extract_prompts(missing)


def test_corrupt_zip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(ValueError, match="broken.zip"):
        extract_prompts(path)


def test_unknown_source_kind_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "reports.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="reports.json"):
        extract_prompts(path)
    with pytest.raises(ValueError, match="kind"):
        extract_prompts(path, kind="xml")


# ------------------------------------------------------------------ tables


def _iu_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": ["1", "2", "3", "4", "5"],
            "findings": [
                "The heart is normal in size.",
                "XXXX sternotomy wires.",
                "",
                "Clear lungs.",
                "",
            ],
            "impression": [
                "Normal chest x-XXXX.",
                "",
                "No active disease.",
                "No  active\ndisease.",
                "",
            ],
        }
    )


def _write_table(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if path.suffix == ".tsv" else ",", index=False)
    return path


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_with_fallback_columns(tmp_path: Path, suffix: str) -> None:
    path = _write_table(_iu_frame(), tmp_path / f"indiana_reports{suffix}")
    prompts, report_map, summary = extract_prompts(
        path, text_column=["impression", "findings"], id_column="uid", markers=["XXXX"]
    )
    _assert_accounted(summary)
    assert summary["kind"] == "table"
    assert summary["reports_read"] == 5
    assert summary["skipped"] == {"empty": 1}
    assert report_map["report_id"].tolist() == ["1", "2", "3", "4"]
    assert report_map["section"].tolist() == ["impression", "findings", "impression", "impression"]
    assert report_map["study_id"].tolist() == [1, 2, 3, 4]
    assert report_map["subject_id"].isna().all()
    by_text = prompts.set_index("text")
    assert by_text.loc["No active disease.", "n_reports"] == 2
    assert by_text.loc["XXXX sternotomy wires.", "marker_count"] == 1
    assert by_text.loc["Normal chest x-XXXX.", "has_marker"]
    assert summary["prompts_with_marker"] == 2
    assert summary["reports_with_marker"] == 2
    assert summary["section_counts"] == {"impression": 3, "findings": 1}


def test_table_without_id_column_uses_row_numbers(tmp_path: Path) -> None:
    path = _write_table(_iu_frame(), tmp_path / "iu.csv")
    _, report_map, summary = extract_prompts(path, text_column="findings")
    _assert_accounted(summary)
    assert report_map["report_id"].tolist() == ["row0", "row1", "row3"]
    assert report_map["study_id"].isna().all()
    assert summary["skipped"] == {"empty": 2}


def test_table_section_parsing_is_optional(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["s50000001", "s50000002"], "report": [STANDARD, NO_USABLE]})
    path = _write_table(frame, tmp_path / "reports.parquet")
    prompts, report_map, summary = extract_prompts(path, text_column="report", id_column="id")
    assert summary["reports_used"] == 2
    assert report_map["section"].tolist() == ["report", "report"]
    assert prompts["n_words"].max() > 40  # the whole report, used as it is
    prompts, report_map, summary = extract_prompts(
        path, text_column="report", id_column="id", parse_sections_in_table=True
    )
    _assert_accounted(summary)
    assert prompts["text"].tolist() == ["No acute cardiopulmonary process."]
    assert report_map["study_id"].tolist() == [50000001]
    assert summary["skipped"] == {"no_usable_section": 1}


def test_table_missing_text_column_is_a_clear_error(tmp_path: Path) -> None:
    path = _write_table(_iu_frame(), tmp_path / "indiana_reports.csv")
    with pytest.raises(ValueError) as info:
        extract_prompts(path, text_column=["impresion", "findings"])
    message = str(info.value)
    assert "indiana_reports.csv" in message
    assert "impresion" in message
    assert "uid" in message  # the columns present are listed
    with pytest.raises(ValueError, match="text_column"):
        extract_prompts(path)


def test_table_not_utf8_and_empty_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("uid,impression\n1,r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.csv"):
        extract_prompts(bad, text_column="impression")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.csv"):
        extract_prompts(empty, text_column="impression")


# ------------------------------------------------------------------ metadata filter


def _split_csv(path: Path) -> Path:
    pd.DataFrame(
        {
            "dicom_id": ["d1", "d2", "d3", "d4", "d5"],
            "subject_id": ["10000001", "10000001", "11000002", "11000002", "12000003"],
            "study_id": ["50000001", "50000002", "50000003", "50000004", "50000005"],
            "split": ["train", "train", "test", "train", "train"],
            "ViewPosition": ["PA", "LATERAL", "AP", "AP", "PA"],
        }
    ).to_csv(path, index=False)
    return path


def test_metadata_filter(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "mimic", _corpus())
    meta = _split_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv")
    where = {"split": ["train"], "ViewPosition": ["PA", "AP"]}
    assert load_metadata_filter(meta, where=where) == {50000001, 50000004, 50000005}
    _, report_map, summary = extract_prompts(root, metadata={"path": meta, "where": where})
    _assert_accounted(summary)
    assert report_map["report_id"].tolist() == ["s50000001", "s50000004", "s50000005"]
    # 50000002 (lateral), 50000003 (test) and 50000006 (not in the table) are filtered out.
    assert summary["skipped"] == {"filtered_out": 3}
    assert summary["metadata"]["studies_kept"] == 3


def test_metadata_filter_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    root = _write_tree(tmp_path / "mimic", _corpus())
    meta = _split_csv(tmp_path / "split.csv")
    with pytest.raises(ValueError) as info:
        extract_prompts(root, metadata={"path": meta, "where": {"view": ["PA"]}})
    assert "split.csv" in str(info.value)
    assert "view" in str(info.value)
    with pytest.raises(ValueError, match="metadata"):
        extract_prompts(root, metadata={"file": meta})


def test_default_order_is_the_papers() -> None:
    assert DEFAULT_SECTION_ORDER == ("impression", "findings", "last_paragraph", "comparison")


def test_summary_is_json_and_empty_source_gives_empty_tables(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    prompts, report_map, summary = extract_prompts(tmp_path)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["reports_read"] == 0
    assert prompts.empty and report_map.empty
    assert str(prompts["n_reports"].dtype) == "int64"
    assert list(report_map.columns) == [
        "report_id",
        "subject_id",
        "study_id",
        "section",
        "prompt_id",
    ]


def test_parquet_missing_cells_and_corrupt_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"impression": [None, "Clear."], "findings": ["Normal heart.", None]})
    path = _write_table(frame, tmp_path / "cells.parquet")
    prompts, report_map, summary = extract_prompts(path, text_column=["impression", "findings"])
    assert sorted(prompts["text"]) == ["Clear.", "Normal heart."]
    assert report_map["section"].tolist() == ["findings", "impression"]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="bad.parquet"):
        extract_prompts(bad, text_column="impression")
