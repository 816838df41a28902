"""Unit tests of report folders: symbolic links (followed, with a loop guard) and the folder
fingerprint that makes an incremental run notice a report added or edited deep inside."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd

from memaudit.prompts.sources import folder_fingerprint, list_report_folder
from tests.unit.prompt_reports import (
    NO_IMPRESSION,
    STANDARD,
    STANDARD_REWRAPPED,
    assert_accounted,
    extract,
    report_path,
    write_tree,
    write_zip,
)


def _linked_tree(tmp_path: Path) -> Path:
    """files/ with a linked study folder, a linked pNN folder and a linked report file."""
    root = write_tree(tmp_path / "mimic", {report_path(50000001, 10000001): STANDARD})
    elsewhere = write_tree(
        tmp_path / "elsewhere",
        {
            "p11000002/s50000002.txt": NO_IMPRESSION,
            "p12/p12000003/s50000003.txt": STANDARD_REWRAPPED,
            "loose.txt": STANDARD,
        },
    )
    files = root / "files"
    (files / "p11").mkdir()
    (files / "p11" / "p11000002").symlink_to(elsewhere / "p11000002")
    (files / "p12").symlink_to(elsewhere / "p12", target_is_directory=True)
    (files / "p10" / "p10000001" / "s50000004.txt").symlink_to(elsewhere / "loose.txt")
    return root


def _plain_copy(tmp_path: Path) -> Path:
    """The same reports as :func:`_linked_tree`, without links."""
    return write_tree(
        tmp_path / "plain",
        {
            report_path(50000001, 10000001): STANDARD,
            report_path(50000002, 11000002): NO_IMPRESSION,
            report_path(50000003, 12000003): STANDARD_REWRAPPED,
            report_path(50000004, 10000001): STANDARD,
        },
    )


def test_linked_study_and_group_folders_are_read(tmp_path: Path) -> None:
    linked = _linked_tree(tmp_path)
    prompts, report_map, summary = extract(linked)
    assert_accounted(summary)
    assert summary["reports_read"] == 4
    assert summary["reports_used"] == 4
    assert summary["skipped"] == {}
    assert report_map["report_id"].tolist() == [
        "s50000001",
        "s50000004",
        "s50000002",
        "s50000003",
    ]
    plain_prompts, plain_map, plain_summary = extract(_plain_copy(tmp_path))
    pd.testing.assert_frame_equal(prompts, plain_prompts)
    pd.testing.assert_frame_equal(report_map, plain_map)
    assert summary["section_counts"] == plain_summary["section_counts"]


def test_dangling_and_looping_links_are_counted_skips(tmp_path: Path) -> None:
    root = write_tree(tmp_path / "mimic", {report_path(50000001, 10000001): STANDARD})
    files = root / "files"
    study = files / "p10" / "p10000001"
    (study / "s50000002.txt").symlink_to(tmp_path / "deleted.txt")  # dangling file link
    (files / "p13").symlink_to(tmp_path / "unmounted", target_is_directory=True)  # dangling
    (study / "again").symlink_to(files / "p10", target_is_directory=True)  # back up the path
    (files / "p14").symlink_to(files / "p14")  # a link to itself: the OS reports a loop
    prompts, report_map, summary = extract(root)
    assert_accounted(summary)
    assert summary["reports_read"] == 5
    assert summary["reports_used"] == 1
    assert summary["skipped"] == {"dangling_link": 2, "link_loop": 2}
    assert sorted(summary["skipped_examples"]["link_loop"]) == ["p10/p10000001/again", "p14"]
    assert sorted(summary["skipped_examples"]["dangling_link"]) == [
        "p10/p10000001/s50000002.txt",
        "p13",
    ]
    assert report_map["report_id"].tolist() == ["s50000001"]


def test_a_folder_linked_twice_is_read_twice_as_duplicates(tmp_path: Path) -> None:
    """Not a loop (the link does not lead back up its own path): its reports are seen again
    under a second name and counted as duplicates, never silently dropped."""
    root = write_tree(tmp_path / "mimic", {report_path(50000001, 10000001): STANDARD})
    (root / "files" / "p11").symlink_to(root / "files" / "p10", target_is_directory=True)
    _, _, summary = extract(root)
    assert_accounted(summary)
    assert summary["reports_read"] == 2
    assert summary["skipped"] == {"duplicate_report": 1}


def test_listing_is_sorted_and_skips_hidden_names(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path,
        {"b/z.txt": "1", "a/y.txt": "2", "a/.hidden": "3", ".cache/x.txt": "4", "a.txt": "5"},
    )
    assert list_report_folder(root) == [("a.txt", None), ("a/y.txt", None), ("b/z.txt", None)]


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_notices_reports_added_or_edited_deep_inside(tmp_path: Path) -> None:
    root = write_tree(
        tmp_path / "mimic",
        {report_path(50000001, 10000001): STANDARD, report_path(50000002): NO_IMPRESSION},
    )
    study = root / "files" / "p10" / "p10000001"
    top_mtime = os.stat(root / "files").st_mtime_ns
    base = folder_fingerprint(root)
    assert base.startswith("2 files ")
    assert folder_fingerprint(root / "files") == base
    # the same tree copied elsewhere (names relative, times kept) has the same fingerprint
    copy = tmp_path / "copy"
    shutil.copytree(root, copy, copy_function=shutil.copy2)
    assert folder_fingerprint(copy) == base

    (study / "s50000003.txt").write_text(STANDARD_REWRAPPED)
    assert os.stat(root / "files").st_mtime_ns == top_mtime  # snakemake would see nothing
    added = folder_fingerprint(root)
    assert added != base and added.startswith("3 files ")

    report = study / "s50000001.txt"
    report.write_text(STANDARD.replace("No acute", "No new"))
    edited = folder_fingerprint(root)
    assert edited != added

    info = os.stat(report)
    os.utime(report, ns=(info.st_atime_ns, info.st_mtime_ns + 1_000_000_000))
    assert folder_fingerprint(root) != edited  # same size, new modification time


def test_fingerprint_ignores_hidden_files_and_follows_links(tmp_path: Path) -> None:
    root = _linked_tree(tmp_path)
    base = folder_fingerprint(root)
    (root / "files" / ".snakemake_timestamp").write_text("")
    (root / "files" / "p10" / ".DS_Store").write_bytes(b"\x00")
    assert folder_fingerprint(root) == base
    (tmp_path / "elsewhere" / "p11000002" / "s50000002.txt").write_text(STANDARD)
    assert folder_fingerprint(root) != base  # a report edited behind a link


def test_fingerprint_is_empty_for_files(tmp_path: Path) -> None:
    zipped = write_zip(tmp_path / "reports.zip", {report_path(50000001): STANDARD})
    assert folder_fingerprint(zipped) == ""
    assert folder_fingerprint(tmp_path / "missing") == ""
