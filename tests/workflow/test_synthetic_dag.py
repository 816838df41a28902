"""Dry runs: the synthetic-set stage joins the demo DAG, scattered as configured."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import planned, snakemake

SYNTHETIC_RULES = {
    "generate_synthetic_set",
    "gather_synthetic_set",
    "detect_synthetic_copies",
    "plot_synthetic_copies",
}


def test_demo_dag_makes_and_judges_the_synthetic_set_in_chunks(workdir: Path) -> None:
    proc = snakemake("-n", "--set-scatter", "synthesize=3", workdir=workdir)
    jobs = planned(proc)
    assert set(jobs) >= SYNTHETIC_RULES
    assert len(jobs["generate_synthetic_set"]) == 3
    assert len(jobs["gather_synthetic_set"]) == 1


def test_switching_the_synthetic_set_off_removes_its_rules(workdir: Path) -> None:
    proc = snakemake("-n", "--config", "synthetic={enabled: false}", workdir=workdir)
    jobs = planned(proc)
    assert "make_demo_corpus" in jobs and not SYNTHETIC_RULES & set(jobs)
