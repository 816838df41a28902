"""Dry runs: the DAG of the demo and of the presets, without running any job."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, snakemake


def planned_rules(stdout: str) -> set[str]:
    rules = set()
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("rule ") and line.endswith(":"):
            rules.add(line[5:-1])
    return rules


def test_demo_dag_has_every_stage(workdir: Path):
    proc = snakemake("-n", workdir=workdir)
    rules = planned_rules(proc.stdout)
    assert {"make_demo_corpus", "extract_prompts", "plot_prompt_frequency", "all"} <= rules


def test_real_preset_dag_skips_the_demo(workdir: Path, tmp_path: Path):
    reports = tmp_path / "reports.csv"
    reports.write_text("uid,impression\n1,No acute disease.\n")
    overlay = tmp_path / "real.yaml"
    overlay.write_text(
        (REPO / "config/iu_xray_csv.yaml")
        .read_text()
        .replace("/data/iu-xray/indiana_reports.csv", str(reports))
    )
    proc = snakemake("-n", "--until", "extract_prompts", workdir=workdir, overlays=(overlay,))
    rules = planned_rules(proc.stdout)
    assert "extract_prompts" in rules
    assert "make_demo_corpus" not in rules
