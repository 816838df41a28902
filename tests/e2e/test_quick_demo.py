"""End-to-end: the quick demo (config/quick.yaml), run once per session from an empty folder.

The run is the session fixture ``quick_run`` (tests/conftest.py): through the SLURM profile on a
throw-away cluster where one can be started (CI), else locally with ``--cores 2``. The demo
knows its ground truth, so the checks below are scientific, not cosmetic.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import QUICK, QuickRun, snakemake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(quick_run: QuickRun) -> Path:
    return quick_run.workdir


def test_prompts_cover_every_report_and_every_planted_caption(run: Path):
    prompts = pd.read_parquet(run / "results/prompts/prompts.parquet")
    report_map = pd.read_parquet(run / "results/prompts/report_map.parquet")
    summary = json.loads((run / "results/prompts/summary.json").read_text())
    truth = pd.read_parquet(run / "results/demo/corpus/truth.parquet")
    studies = pd.read_parquet(run / "results/demo/corpus/studies.parquet")

    assert summary["reports_read"] == len(studies)
    assert summary["reports_used"] + sum(summary["skipped"].values()) == len(studies)
    assert summary["reports_used"] == len(report_map)
    assert prompts["prompt_id"].is_unique
    assert int(prompts["n_reports"].sum()) == len(report_map)
    # every planted caption is one prompt used by exactly its copies
    counts = prompts.set_index("prompt_id")["n_reports"]
    for row in truth.itertuples():
        assert counts.get(row.prompt_id) == row.n_copies, row.text
    # markers are flagged where the text has them
    assert (prompts["has_marker"] == prompts["text"].str.contains("___", regex=False)).all()
    # heavy head: a normal impression repeats far more than any planted caption
    assert prompts["n_reports"].max() > truth["n_copies"].max()


def test_prompt_figure_written(run: Path):
    for suffix in (".png", ".pdf"):
        path = run / f"results/prompts/prompt_frequency{suffix}"
        assert path.stat().st_size > 1000


def test_rerun_is_a_no_op(run: Path):
    proc = snakemake("-n", "--cores", "2", workdir=run, overlays=(QUICK,))
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_corpus_images_match_studies(run: Path):
    images = np.load(run / "results/demo/corpus/images.npy")
    studies = pd.read_parquet(run / "results/demo/corpus/studies.parquet")
    assert images.shape[0] == len(studies) and images.dtype == np.uint8
