"""Incremental re-runs of the prompts stage, on a tiny report folder of the test's own.

- A report added or edited deep inside a MIMIC folder re-runs extract_prompts (snakemake sees
  only the top folder's mtime; the folder fingerprint parameter sees the rest).
- Marker settings change no prompt text: on a finished run, changing ``reports.markers`` or
  ``reports.top_n`` re-runs count_markers only, never a scoring chunk or the demo model.

The prompts rules run for real; the jobs from the demo corpus to the gathered scores are
recorded as done with ``snakemake --touch`` over placeholder files, which gives snakemake the
same state (files, times, recorded parameters) as a finished run without training or scoring.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from tests.conftest import planned, snakemake
from tests.unit.prompt_reports import NO_IMPRESSION, STANDARD, report_path, write_tree

TEXTS = "results/prompts/texts.parquet"
SUMMARY = "results/prompts/summary.json"
SCORES = "results/scoring/scores.parquet"


def _overlay(path: Path, reports: dict) -> Path:
    path.write_text(yaml.safe_dump({"reports": reports}))
    return path


def _tiny_reports(root: Path) -> Path:
    return write_tree(
        root,
        {
            report_path(50000001, 10000001): STANDARD,
            report_path(50000002, 10000001): STANDARD.replace("No acute", "Dr. ___ paged. No"),
            report_path(50000003, 11000002): NO_IMPRESSION,
        },
    )


def _dry(workdir: Path, overlay: Path, *targets: str) -> dict[str, list[str]]:
    return planned(snakemake("-n", "--cores", "1", *targets, workdir=workdir, overlays=(overlay,)))


def test_a_report_added_or_edited_deep_inside_reruns_extract_prompts(workdir: Path, tmp_path: Path):
    reports = _tiny_reports(tmp_path / "mimic")
    overlay = _overlay(tmp_path / "tiny.yaml", {"path": str(reports)})
    snakemake("--cores", "1", TEXTS, workdir=workdir, overlays=(overlay,))
    assert _dry(workdir, overlay, TEXTS) == {}

    study = reports / "files" / "p10" / "p10000001"
    top = reports / "files"
    top_mtime = os.stat(top).st_mtime_ns
    (study / "s50000001.txt").write_text(STANDARD.replace("No acute", "No new"))
    jobs = _dry(workdir, overlay, TEXTS)
    assert set(jobs) == {"extract_prompts"}, jobs
    assert any("Params have changed" in r for r in jobs["extract_prompts"]), jobs

    snakemake("--cores", "1", TEXTS, workdir=workdir, overlays=(overlay,))
    (study / "s50000004.txt").write_text(NO_IMPRESSION)
    assert os.stat(top).st_mtime_ns == top_mtime  # the top folder itself did not change
    jobs = _dry(workdir, overlay, TEXTS)
    assert set(jobs) == {"extract_prompts"}, jobs
    assert any("Params have changed" in r for r in jobs["extract_prompts"]), jobs


def _touch_done(workdir: Path, overlay: Path, *targets: str) -> None:
    """Record every job up to ``targets`` as done: placeholders for missing outputs (a
    folder where the path has no suffix: the corpus files and the demo model), then
    ``--touch``, twice, so that the times follow the DAG."""
    proc = snakemake("--touch", "--cores", "1", *targets, workdir=workdir, overlays=(overlay,))
    missing = re.findall(r"Output files not touched because they don't exist: (.*)", proc.stderr)
    for path in (p.strip() for line in missing for p in line.split(",")):
        target = workdir / path
        if target.suffix:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(b"")
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / "placeholder").write_bytes(b"")
    assert missing, proc.stderr[-2000:]
    snakemake("--touch", "--cores", "1", *targets, workdir=workdir, overlays=(overlay,))


def test_marker_settings_rerun_no_scoring_and_no_training(workdir: Path, tmp_path: Path):
    reports = _tiny_reports(tmp_path / "mimic")
    overlay = _overlay(tmp_path / "tiny.yaml", {"path": str(reports)})
    snakemake("--cores", "1", SUMMARY, workdir=workdir, overlays=(overlay,))
    _touch_done(workdir, overlay, SCORES, SUMMARY)
    jobs = _dry(workdir, overlay, SCORES, SUMMARY)
    assert jobs == {}, jobs  # a finished run

    for change in ({"markers": ["___", r"Dr\."]}, {"top_n": 3}):
        changed = _overlay(tmp_path / "changed.yaml", {"path": str(reports), **change})
        jobs = _dry(workdir, changed, SCORES, SUMMARY)
        assert set(jobs) == {"count_markers"}, (change, jobs)
        assert any("Params have changed" in r for r in jobs["count_markers"]), jobs

    # the control: a setting that can change the texts re-runs the scoring chunks
    changed = _overlay(tmp_path / "changed.yaml", {"path": str(reports), "sections": ["findings"]})
    jobs = _dry(workdir, changed, SCORES, SUMMARY)
    assert {"extract_prompts", "count_markers", "score_chunk", "gather_scores"} <= set(jobs)
    assert "train_demo_model" in jobs  # its captions are the texts
