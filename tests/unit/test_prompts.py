"""Unit tests of the prompts stage: section splitting (default rules), MIMIC folders and zips,
skips, the metadata filter, and the prompts table with its markers."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from memaudit.prompts.extract import NoUsableReports, extract_prompts
from memaudit.prompts.markers import count_prompt_markers
from memaudit.prompts.sections import (
    DEFAULT_SECTION_ORDER,
    canonical_section_name,
    choose_section,
    split_sections,
)
from memaudit.prompts.tables import load_metadata_filter
from memaudit.text import prompt_id
from tests.unit.prompt_reports import (
    ADDENDUM_TITLE_AFTER_IMPRESSION,
    ADDENDUM_WITH_IMPRESSION,
    NO_FINDINGS_SECTION,
    NO_HEADERS_ONE_PARAGRAPH,
    NO_HEADERS_TWO_PARAGRAPHS,
    NO_IMPRESSION,
    NO_USABLE,
    STANDARD,
    assert_accounted,
    extract,
    mixed_corpus,
    report_path,
    write_tree,
    write_zip,
)

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


def test_extract_prompts_dedup_counts_and_columns(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    prompts, report_map, summary = extract(root)
    assert_accounted(summary)
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
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    prompts, _, summary = extract(root)
    by_text = prompts.set_index("text")
    addendum_text = "Right internal jugular line ends in the right atrium; withdraw by 2 cm."
    assert by_text.loc[addendum_text, "marker_count"] == 0
    # Only the addendum's own impression counts, not "Dr. ___ on ___" in the addendum section.
    assert not by_text.loc[addendum_text, "has_marker"]
    text = STANDARD.replace("No acute cardiopulmonary process.", "Called to Dr. ___ on ___.")
    root2 = write_tree(tmp_path / "mimic2", {report_path(50000009): text})
    prompts2, _, summary2 = extract(root2)
    assert prompts2["marker_count"].tolist() == [2]
    assert prompts2["has_marker"].tolist() == [True]
    assert summary2["prompts_with_marker"] == 1
    assert summary2["reports_with_marker"] == 1
    assert summary["prompts_with_marker"] == 0
    assert summary2["marker_patterns"] == ["___"]


def test_custom_order_impression_only_skips_others(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    prompts, report_map, summary = extract(root, sections=["impression"])
    assert_accounted(summary)
    assert summary["reports_used"] == 3
    assert summary["skipped"] == {"no_usable_section": 3}
    assert set(report_map["section"]) == {"impression"}
    assert set(report_map["report_id"]) == {"s50000001", "s50000002", "s50000004"}


def test_folder_files_folder_and_zip_give_identical_outputs(tmp_path: Path) -> None:
    corpus = mixed_corpus()
    root = write_tree(tmp_path / "mimic", corpus)
    # The parent of files/ may hold other things: only files/ is walked.
    (root / "studies.parquet").write_bytes(b"PAR1 not a report")
    zip_plain = write_zip(tmp_path / "plain.zip", corpus)
    zip_prefixed = write_zip(tmp_path / "mimic-cxr-reports.zip", corpus, prefix="mimic-cxr/")
    results = [
        extract(root),
        extract(root / "files"),
        extract(zip_plain),
        extract(zip_prefixed),
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
    corpus = mixed_corpus()
    root = write_tree(tmp_path / "mimic", corpus)
    plain = extract(root)
    (root / "files" / ".snakemake_timestamp").write_text("")
    (root / "files" / "p10" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "files" / ".cache").mkdir()
    (root / "files" / ".cache" / "s1.txt").write_text("not a study")
    prompts, report_map, summary = extract(root)
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
        archive.writestr("mimic-cxr-reports/" + report_path(50414267), STANDARD)
    prompts, report_map, summary = extract(path)
    assert_accounted(summary)
    assert summary["reports_read"] == 5
    assert summary["skipped"] == {"not_a_report": 4}
    assert report_map["report_id"].tolist() == ["s50414267"]
    assert report_map["study_id"].tolist() == [50414267]


# ------------------------------------------------------------------ bad inputs


def _bad_corpus() -> dict[str, str | bytes]:
    return {
        report_path(50000001): STANDARD,
        report_path(50000002): b"",
        report_path(50000003): b"\xff\xfe IMPRESSION: \xe9t\xe9\n",
        report_path(50000004): b"FINAL REPORT\x00\x00\x01 binary",
        report_path(50000005): NO_USABLE,
        report_path(50000006): STANDARD + " " * (5 * 1024 * 1024),
    }


@pytest.mark.parametrize("as_zip", [False, True])
def test_bad_reports_are_counted_skips(tmp_path: Path, as_zip: bool) -> None:
    corpus = _bad_corpus()
    if as_zip:
        source = write_zip(tmp_path / "bad.zip", corpus)
    else:
        source = write_tree(tmp_path / "bad", corpus)
    prompts, report_map, summary = extract(source)
    assert_accounted(summary)
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
    _, _, summary_big = extract(source, max_report_bytes=10_000_000)
    assert "too_large" not in summary_big["skipped"]
    assert summary_big["reports_used"] == 2


def test_duplicate_report_ids_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "dup.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("a/" + report_path(50000001), STANDARD)
        archive.writestr("b/" + report_path(50000001), STANDARD)
    prompts, _, summary = extract(path)
    assert_accounted(summary)
    assert summary["skipped"] == {"duplicate_report": 1}
    assert prompts["n_reports"].tolist() == [1]


def test_missing_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "mimic-cxr-reports.zip"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        extract(missing)


def test_corrupt_zip_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.zip"
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    with pytest.raises(ValueError, match="broken.zip"):
        extract(path)


def test_unknown_source_kind_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "reports.json"
    path.write_text("{}")
    with pytest.raises(ValueError, match="reports.json"):
        extract(path)
    with pytest.raises(ValueError, match="kind"):
        extract(path, kind="xml")


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
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    meta = _split_csv(tmp_path / "mimic-cxr-2.0.0-metadata.csv")
    where = {"split": ["train"], "ViewPosition": ["PA", "AP"]}
    assert load_metadata_filter(meta, where=where) == {50000001, 50000004, 50000005}
    _, report_map, summary = extract(root, metadata={"path": meta, "where": where})
    assert_accounted(summary)
    assert report_map["report_id"].tolist() == ["s50000001", "s50000004", "s50000005"]
    # 50000002 (lateral), 50000003 (test) and 50000006 (not in the table) are filtered out.
    assert summary["skipped"] == {"filtered_out": 3}
    assert summary["metadata"]["studies_kept"] == 3


def test_metadata_filter_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    meta = _split_csv(tmp_path / "split.csv")
    with pytest.raises(ValueError) as info:
        extract(root, metadata={"path": meta, "where": {"view": ["PA"]}})
    assert "split.csv" in str(info.value)
    assert "view" in str(info.value)
    with pytest.raises(ValueError, match="metadata"):
        extract(root, metadata={"file": meta})


def test_default_order_is_the_papers() -> None:
    assert DEFAULT_SECTION_ORDER == ("impression", "findings", "last_paragraph", "comparison")


def test_summary_and_reading_counts_are_json(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    texts, report_map, reading = extract_prompts(root)
    assert json.loads(json.dumps(reading)) == reading
    assert list(texts.columns) == ["prompt_id", "text", "n_reports"]
    assert str(texts["n_reports"].dtype) == "int64"
    assert reading["section_rules"] == "memaudit"
    assert reading["encoding"] == "utf-8"
    _, _, summary = extract(root)
    assert json.loads(json.dumps(summary)) == summary
    assert list(summary) == [
        "source",
        "kind",
        "format",
        "reports_read",
        "reports_used",
        "skipped",
        "skipped_examples",
        "unique_prompts",
        "prompts_with_marker",
        "reports_with_marker",
        "marker_patterns",
        "section_order",
        "section_rules",
        "section_counts",
        "max_report_bytes",
        "encoding",
        "metadata",
        "most_repeated",
    ]


def test_a_source_without_usable_reports_stops_the_stage(tmp_path: Path) -> None:
    (tmp_path / "empty" / "files").mkdir(parents=True)
    with pytest.raises(NoUsableReports, match="empty.*0 read"):
        extract_prompts(tmp_path / "empty")
    root = write_tree(
        tmp_path / "unusable",
        {
            report_path(50000001): NO_USABLE,
            report_path(50000002): b"",
            "files/README.txt": "not a report",
        },
    )
    with pytest.raises(NoUsableReports) as info:
        extract_prompts(root)
    message = str(info.value)
    assert str(root) in message
    assert "3 read" in message
    for count in ("'empty': 1", "'no_usable_section': 1", "'not_a_report': 1"):
        assert count in message


def test_a_report_lost_between_listing_and_reading_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from memaudit.prompts import extract as extract_module
    from memaudit.prompts.sources import ReportStream, iter_mimic_folder

    def lossy(folder, **kwargs):
        stream = iter_mimic_folder(folder, **kwargs)
        return ReportStream(stream.n_seen, iter(list(stream)[1:]))

    root = write_tree(tmp_path / "mimic", mixed_corpus())
    monkeypatch.setattr(extract_module, "iter_mimic_folder", lossy)
    with pytest.raises(RuntimeError, match="6 files seen, but 4 used"):
        extract_prompts(root)


def test_marker_settings_change_no_text(tmp_path: Path) -> None:
    """The texts that scoring reads come from extract_prompts alone; markers and top_n only
    change the prompts table's flags and the summary."""
    root = write_tree(tmp_path / "mimic", mixed_corpus())
    texts, _, reading = extract_prompts(root)
    plain, plain_summary = count_prompt_markers(texts, reading)
    marked, marked_summary = count_prompt_markers(
        texts, reading, markers=["___", r"\bcm\b"], top_n=1
    )
    pd.testing.assert_frame_equal(plain[["prompt_id", "text", "n_reports"]], texts)
    pd.testing.assert_frame_equal(marked[["prompt_id", "text", "n_reports"]], texts)
    assert marked["marker_count"].sum() == plain["marker_count"].sum() + 1
    assert len(marked_summary["most_repeated"]) == 1
    assert len(plain_summary["most_repeated"]) == len(texts)
    with pytest.raises(ValueError, match="top_n"):
        count_prompt_markers(texts, reading, top_n=-1)
    with pytest.raises(ValueError, match="does not compile"):
        count_prompt_markers(texts, reading, markers=["("])
