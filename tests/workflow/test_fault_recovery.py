"""Fault recovery: a run killed with SIGKILL while a scoring chunk runs resumes where it stopped.

A copy of the finished quick demo loses its last two scoring chunks and the gathered scores;
snakemake re-scores them one chunk at a time (``--cores 1``) and is killed (SIGKILL, the whole
process group, as an out-of-memory killer or a pre-empted node would) while the second chunk
runs. After ``--unlock`` (the step a user takes after a crash), the re-run must redo only the
unfinished chunk, leave the finished ones (and those never lost) untouched, and gather exactly
the scores of the uninterrupted run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import BIN, QUICK, REPO, QuickRun, snakemake

pytestmark = pytest.mark.slow
SCORES = "results/scoring/scores.parquet"


def _chunk_files(run: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted((run / "results/scoring/chunks").glob("*-of-*.parquet"))}


def test_killed_scoring_resumes_with_only_unfinished_chunks(quick_run: QuickRun, tmp_path: Path):
    run = tmp_path / "run"
    shutil.copytree(quick_run.workdir, run, symlinks=True)
    reference = pd.read_parquet(run / SCORES)
    chunk_names = sorted(_chunk_files(run))
    assert len(chunk_names) >= 3, chunk_names
    # The last two chunks and the gathered scores are lost (two suffice: one finishes, the
    # other is killed); the chunks before them must stay untouched by the resumed run.
    lost = chunk_names[-2:]
    for name in lost:
        for suffix in (".parquet", ".json"):
            (run / "results/scoring/chunks" / f"{name}{suffix}").unlink()
    (run / SCORES).unlink()
    shutil.rmtree(run / "logs/score_chunk", ignore_errors=True)
    kept = {name: (p.stat().st_mtime_ns, p.read_bytes()) for name, p in _chunk_files(run).items()}

    cmd = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(run),
        "--configfile",
        str(REPO / "config.yaml"),
        str(QUICK),
        "--cores",
        "1",
        SCORES,
    ]
    proc = subprocess.Popen(
        cmd,
        cwd=run,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            done = {name: p for name, p in _chunk_files(run).items() if name in lost}
            logs = list((run / "logs/score_chunk").glob("*.log"))
            if len(done) >= 1 and len(logs) > len(done):
                break  # one chunk finished and the next one has started
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.2)
        else:
            pytest.fail("no chunk finished within 15 minutes")
        time.sleep(1.0)  # let the running chunk get some way into its prompts
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)

    finished = {name: p for name, p in _chunk_files(run).items() if name in lost}
    assert len(finished) == 1, sorted(finished)
    stamps = {name: (p.stat().st_mtime_ns, p.read_bytes()) for name, p in finished.items()}
    stamps.update(kept)
    # nothing half-written that a re-run could trust
    for path in finished.values():
        pd.read_parquet(path)

    snakemake("--unlock", workdir=run, overlays=(QUICK,))
    again = snakemake("--cores", "2", SCORES, workdir=run, overlays=(QUICK,))
    redone = set(re.findall(r"scatteritem=(\d+-of-\d+)", again.stdout + again.stderr))
    assert redone == set(lost) - set(finished), (sorted(redone), sorted(finished))
    for name, (mtime, content) in stamps.items():
        path = _chunk_files(run)[name]
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content, name

    resumed = pd.read_parquet(run / SCORES)
    assert list(resumed["prompt_id"]) == list(reference["prompt_id"])
    np.testing.assert_allclose(resumed["d_mem"], reference["d_mem"], rtol=1e-5)
    for column in [c for c in reference.columns if c.startswith("score")]:
        np.testing.assert_allclose(
            resumed[column], reference[column], rtol=1e-5, atol=1e-6, err_msg=column
        )
    np.testing.assert_allclose(
        np.stack(resumed["norms"]), np.stack(reference["norms"]), rtol=1e-5, atol=1e-7
    )
