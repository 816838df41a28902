"""Shared test helpers: run the workflow in a scratch folder with the repo's Snakefile."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread_per_worker() -> Iterator[None]:
    """In-process computations run on one thread: two pytest workers share two cores with the
    quick demo's jobs, and more threads would only oversubscribe them (the workflow's own jobs
    set their threads from the rule)."""
    import torch  # noqa: PLC0415

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def snakemake(
    *args: str,
    workdir: Path,
    overlays: tuple[str | Path, ...] = (),
    check: bool = True,
    timeout: float = 1800,
) -> subprocess.CompletedProcess:
    """Run snakemake on the repo's Snakefile inside ``workdir``; return the finished process.

    ``overlays`` are config files laid over the repo's ``config.yaml`` (later ones win).
    """
    cmd = [
        str(BIN / "snakemake"),
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(REPO / "config.yaml"),
        *map(str, overlays),
        *args,
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "run"
    path.mkdir()
    return path


QUICK = REPO / "config" / "quick.yaml"
# Hard limit for the quick demo through SLURM; `timeout -k 30` also kills a run that ignores
# SIGTERM (the plugin can wait forever on a job status it never gets).
SLURM_RUN_LIMIT_S = 1800


@dataclass
class QuickRun:
    """The quick demo (config/quick.yaml), run once per test session from an empty folder.

    ``executor`` is ``"slurm"`` when it went through ``--profile profiles/slurm`` on the test
    cluster (``jobs`` then holds SLURM's record of every job), else ``"local"``.
    """

    workdir: Path
    executor: str
    seconds: float
    proc: subprocess.CompletedProcess
    jobs: list[dict[str, str]] = field(default_factory=list)
    controller_log: str = ""

    def to_json(self) -> dict:
        """The run as JSON (for the other xdist workers)."""
        return {
            "workdir": str(self.workdir),
            "executor": self.executor,
            "seconds": self.seconds,
            "proc": [self.proc.args, self.proc.returncode, self.proc.stdout, self.proc.stderr],
            "jobs": self.jobs,
            "controller_log": self.controller_log,
        }

    @classmethod
    def from_json(cls, document: dict) -> QuickRun:
        args, code, out, err = document["proc"]
        proc = subprocess.CompletedProcess(args, code, out, err)
        return cls(
            Path(document["workdir"]),
            document["executor"],
            float(document["seconds"]),
            proc,
            document["jobs"],
            document["controller_log"],
        )


def _quick_executor() -> tuple[str, str | None]:
    """Which executor runs the quick demo: MEMAUDIT_QUICK_EXECUTOR (slurm | local | auto)."""
    from tests import slurm

    wanted = os.environ.get("MEMAUDIT_QUICK_EXECUTOR", "auto")
    if wanted not in ("auto", "slurm", "local"):
        raise ValueError(f"MEMAUDIT_QUICK_EXECUTOR must be auto, slurm or local, not {wanted!r}")
    reason = slurm.why_not_runnable()
    if wanted == "local":
        return "local", "MEMAUDIT_QUICK_EXECUTOR=local"
    if reason is not None:
        if wanted == "slurm" or os.environ.get("CI"):
            raise _QuickRunFailed(f"the quick demo must run through SLURM here, but {reason}")
        return "local", reason
    return "slurm", None


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuickRun]:
    """Run the quick demo once: through SLURM when a test cluster can be started, else locally.

    Every end-to-end, re-run, fault and report test reads (or copies) this one run, so the
    suite trains the demo model once. Under pytest-xdist the first worker that needs it runs it
    (holding a lock in the session's shared temporary folder) and the others read its record.
    MEMAUDIT_QUICK_RUN_DIR=<folder of a finished quick run> reuses that run instead (for
    development; the SLURM tests then skip).
    """
    reuse = os.environ.get("MEMAUDIT_QUICK_RUN_DIR")
    if reuse:  # development only: the finished quick demo in that folder, run locally
        proc = subprocess.CompletedProcess(["reused"], 0, "", "")
        yield QuickRun(Path(reuse).resolve(), "local", 0.0, proc)
        return
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    record = shared / "quick_run.json"
    with open(shared / "quick_run.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the run is recorded
        if not record.exists():
            workdir = (shared / "quick_demo").resolve()
            workdir.mkdir()
            try:
                run = _run_quick_demo(workdir)
                document = {"run": run.to_json()}
            except _QuickRunFailed as failure:
                document = {"error": str(failure)}
            record.write_text(json.dumps(document))
    document = json.loads(record.read_text())
    if "error" in document:
        pytest.fail(document["error"])
    yield QuickRun.from_json(document["run"])


class _QuickRunFailed(Exception):
    """The quick demo could not be run; the message says why (every test that needs it fails)."""


def _run_quick_demo(workdir: Path) -> QuickRun:
    """The quick demo in ``workdir``: through SLURM on a throw-away cluster, else locally."""
    from tests import slurm

    executor, reason = _quick_executor()
    if executor == "local":
        message = f"SLURM PROFILE NOT TESTED: {reason}; the quick demo runs locally"
        warnings.warn(message, pytest.PytestWarning, stacklevel=1)
        start = time.monotonic()
        proc = snakemake("--cores", "2", workdir=workdir, overlays=(QUICK,))
        return QuickRun(workdir, "local", time.monotonic() - start, proc)

    was_up = slurm.cluster("status").returncode == 0
    try:
        up = slurm.cluster("up", timeout=900)  # first use installs SLURM with apt-get
        if up.returncode != 0:
            raise _QuickRunFailed(f"slurm_cluster.sh up failed:\n{up.stdout}\n{up.stderr}")
        env = slurm.cluster_env(BIN)
        cmd = [
            "timeout",
            "-k",
            "30",
            str(SLURM_RUN_LIMIT_S),
            str(BIN / "snakemake"),
            "--profile",
            str(slurm.PROFILE),
            "--snakefile",
            str(REPO / "Snakefile"),
            "--directory",
            str(workdir),
            # Snakemake lays the workflow profile profiles/default/ over --profile when run from
            # the repo root, as users do; pass it explicitly since the run starts elsewhere.
            "--workflow-profile",
            str(REPO / "profiles" / "default"),
            "--configfile",
            str(REPO / "config.yaml"),
            str(QUICK),
            *slurm.FAST_STATUS,
        ]
        start = time.monotonic()
        proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
        seconds = time.monotonic() - start
        jobs = slurm.slurm_jobs(env, workdir)
        # A run killed by the timeout leaves its jobs behind: cancel them first.
        leftover = [j["JobId"] for j in jobs if j.get("JobState") in {"PENDING", "RUNNING"}]
        if leftover:
            subprocess.run(["scancel", *leftover], env=env, timeout=60, check=False)
        run = QuickRun(workdir, "slurm", seconds, proc, jobs, slurm.controller_log_tail(env))
        print(
            f"\nquick demo through profiles/slurm: {seconds:.0f} s, {len(jobs)} SLURM jobs",
            file=sys.__stderr__,
        )
        if proc.returncode != 0:
            raise _QuickRunFailed(
                f"the quick demo failed through SLURM ({proc.returncode}):\n"
                f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}\n--- slurmctld ---\n"
                f"{run.controller_log}"
            )
        return run
    finally:  # no test needs the live cluster: SLURM's record of the jobs is kept in the run
        if not was_up:
            slurm.cluster("down")


def planned(proc: subprocess.CompletedProcess) -> dict[str, list[str]]:
    """Rule -> reasons of every job a dry run (``snakemake -n``) would execute."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in proc.stdout.splitlines():
        match = re.match(r"^(?:local)?rule (\w+):$", line.strip())
        if match:
            rule = match.group(1)
            jobs.setdefault(rule, [])
        elif rule and line.strip().startswith("reason:"):
            jobs[rule].append(line.strip().removeprefix("reason:").strip())
    jobs.pop("all", None)
    return jobs
