"""Unit tests of report tables: fallback columns, row ids, numeric and non-UTF-8 columns."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tests.unit.prompt_reports import (
    NO_USABLE,
    STANDARD,
    assert_accounted,
    extract,
    iu_frame,
    write_table,
)

# ------------------------------------------------------------------ tables


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet"])
def test_table_with_fallback_columns(tmp_path: Path, suffix: str) -> None:
    path = write_table(iu_frame(), tmp_path / f"indiana_reports{suffix}")
    prompts, report_map, summary = extract(
        path, text_column=["impression", "findings"], id_column="uid", markers=["XXXX"]
    )
    assert_accounted(summary)
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
    path = write_table(iu_frame(), tmp_path / "iu.csv")
    _, report_map, summary = extract(path, text_column="findings")
    assert_accounted(summary)
    assert report_map["report_id"].tolist() == ["row0", "row1", "row3"]
    assert report_map["study_id"].isna().all()
    assert summary["skipped"] == {"empty": 2}


def test_table_section_parsing_is_optional(tmp_path: Path) -> None:
    frame = pd.DataFrame({"id": ["s50000001", "s50000002"], "report": [STANDARD, NO_USABLE]})
    path = write_table(frame, tmp_path / "reports.parquet")
    prompts, report_map, summary = extract(path, text_column="report", id_column="id")
    assert summary["reports_used"] == 2
    assert report_map["section"].tolist() == ["report", "report"]
    assert prompts["n_words"].max() > 40  # the whole report, used as it is
    prompts, report_map, summary = extract(
        path, text_column="report", id_column="id", parse_sections_in_table=True
    )
    assert_accounted(summary)
    assert prompts["text"].tolist() == ["No acute cardiopulmonary process."]
    assert report_map["study_id"].tolist() == [50000001]
    assert summary["skipped"] == {"no_usable_section": 1}


def test_table_missing_text_column_is_a_clear_error(tmp_path: Path) -> None:
    path = write_table(iu_frame(), tmp_path / "indiana_reports.csv")
    with pytest.raises(ValueError) as info:
        extract(path, text_column=["impresion", "findings"])
    message = str(info.value)
    assert "indiana_reports.csv" in message
    assert "impresion" in message
    assert "uid" in message  # the columns present are listed
    with pytest.raises(ValueError, match="text_column"):
        extract(path)


def test_table_not_utf8_and_empty_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("uid,impression\n1,r\xe9sum\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.csv"):
        extract(bad, text_column="impression")
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="empty.csv"):
        extract(empty, text_column="impression")


def test_parquet_missing_cells_and_corrupt_parquet(tmp_path: Path) -> None:
    frame = pd.DataFrame({"impression": [None, "Clear."], "findings": ["Normal heart.", None]})
    path = write_table(frame, tmp_path / "cells.parquet")
    prompts, report_map, summary = extract(path, text_column=["impression", "findings"])
    assert sorted(prompts["text"]) == ["Clear.", "Normal heart."]
    assert report_map["section"].tolist() == ["findings", "impression"]
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(ValueError, match="bad.parquet"):
        extract(bad, text_column="impression")


# ------------------------------------------------------------------ numbers and encodings


@pytest.mark.parametrize(
    ("values", "suffix", "dtype"),
    [
        (["12", "7", ""], ".csv", "int64"),
        (["1.5", "2", "3e2"], ".tsv", "float64"),
        ([12, 7, 3], ".parquet", "int64"),
        ([1.5, None, 2.0], ".parquet", "float64"),
        ([True, False, True], ".parquet", "bool"),
    ],
)
def test_numeric_text_column_is_refused(
    tmp_path: Path, values: list, suffix: str, dtype: str
) -> None:
    frame = pd.DataFrame({"uid": ["a", "b", "c"], "impression": values})
    path = write_table(frame, tmp_path / f"reports{suffix}")
    with pytest.raises(ValueError) as info:
        extract(path, text_column="impression", id_column="uid")
    message = str(info.value)
    assert f"reports{suffix}" in message
    assert "'impression'" in message
    assert f"dtype {dtype}" in message
    assert "reports.text_column" in message


def test_numeric_fallback_column_is_refused_but_numeric_ids_are_fine(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {"uid": [1, 2], "impression": ["Clear lungs.", ""], "findings": [3.0, 4.0]}
    )
    path = write_table(frame, tmp_path / "reports.parquet")
    with pytest.raises(ValueError, match="'findings' holds numbers"):
        extract(path, text_column=["impression", "findings"], id_column="uid")
    prompts, report_map, _ = extract(path, text_column="impression", id_column="uid")
    assert prompts["text"].tolist() == ["Clear lungs."]
    assert report_map["report_id"].tolist() == ["1"]
    # A column of missing values holds no numbers: its rows are counted as empty.
    frame["findings"] = [None, None]
    write_table(frame, path)
    _, _, summary = extract(path, text_column=["impression", "findings"], id_column="uid")
    assert summary["skipped"] == {"empty": 1}
    # Text that merely starts with a number is report text.
    frame = pd.DataFrame({"impression": ["2 views of the chest.", "12"]})
    path = write_table(frame, tmp_path / "text.csv")
    prompts, _, _ = extract(path, text_column="impression")
    assert sorted(prompts["text"]) == ["12", "2 views of the chest."]


def _latin1_table(path: Path) -> Path:
    path.write_bytes(
        b"uid,impression,comment\n"
        b"11,No acute disease.,ok\n"
        b'12,"Two\nlines, still fine.",ok\n'
        b'13,"Small effusion,\nr\xe9sum\xe9 unchanged.",ok\n'
    )
    return path


def test_non_utf8_table_names_the_row_and_report_id(tmp_path: Path) -> None:
    path = _latin1_table(tmp_path / "latin1.csv")
    with pytest.raises(ValueError) as info:
        extract(path, text_column="impression", id_column="uid")
    message = str(info.value)
    assert "latin1.csv" in message
    assert "row 2 (report id '13')" in message
    assert "column 'impression'" in message
    assert "0xe9" in message
    assert "reports.encoding" in message
    assert "position" not in message  # no byte offset into the file
    # Without an id column the id is the row's: row<N>.
    with pytest.raises(ValueError, match=r"row 2 \(report id 'row2'\)"):
        extract(path, text_column="impression")


def test_encoding_setting_decodes_the_table(tmp_path: Path) -> None:
    path = _latin1_table(tmp_path / "latin1.csv")
    prompts, report_map, summary = extract(
        path, text_column="impression", id_column="uid", encoding="latin-1"
    )
    assert "Small effusion, résumé unchanged." in prompts["text"].tolist()
    assert report_map["report_id"].tolist() == ["11", "12", "13"]
    assert summary["encoding"] == "latin-1"
    cp1252 = tmp_path / "cp1252.tsv"
    cp1252.write_bytes(b"impression\nPatient\x92s lungs are clear.\n")
    prompts, _, _ = extract(cp1252, text_column="impression", encoding="cp1252")
    assert prompts["text"].tolist() == ["Patient\u2019s lungs are clear."]
    with pytest.raises(ValueError, match="reports.encoding"):
        extract(path, text_column="impression", encoding="no-such-codec")


def test_only_the_columns_read_must_decode(tmp_path: Path) -> None:
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"uid,impression,comment\n1,Clear lungs.,caf\xe9\n")
    prompts, _, _ = extract(path, text_column="impression", id_column="uid")
    assert prompts["text"].tolist() == ["Clear lungs."]


def test_non_utf8_metadata_names_the_row(tmp_path: Path) -> None:
    from memaudit.prompts.tables import load_metadata_filter

    meta = tmp_path / "split.csv"
    meta.write_bytes(b"study_id,split\n50000001,train\n50000002,tr\xe4in\n")
    with pytest.raises(ValueError, match=r"split.csv.*row 1 \(report id '50000002'\)"):
        load_metadata_filter(meta, where={"split": ["train"]})
