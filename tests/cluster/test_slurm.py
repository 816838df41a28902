"""profiles/slurm/ on a real single-node SLURM cluster (tests/cluster/slurm_cluster.sh).

The module brings the cluster up (apt-get installs SLURM on first use), runs a workflow through
``--profile profiles/slurm`` and then asks SLURM itself (``scontrol show job``, which lists
finished jobs for the cluster's MinJobAge of an hour) what each job requested: the GPU rules a
GPU, the CPU rules none. The daemons are stopped at the end unless they were already running.

``TARGET`` picks the workflow: ``"scratch"``, a five-job stand-in written below that uses the
real GPU rule names (about a minute), or ``"repo"``, the repo's Snakefile with config/quick.yaml.
The environment variable MEMAUDIT_SLURM_TARGET overrides it for one run.

Needs root on Linux with apt-get (the cluster's daemons run as root); elsewhere the module is
skipped with a warning, and under CI (CI set in the environment) it fails instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import BIN, REPO

# One cluster per machine: under pytest-xdist keep these tests on one worker (--dist loadgroup).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm_cluster")]

CLUSTER_SCRIPT = REPO / "tests" / "cluster" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
TARGET = os.environ.get("MEMAUDIT_SLURM_TARGET", "scratch")
# Rules that declare `resources: gpu=1` (the same names in the stand-in and the real workflow).
GPU_RULES = {"train_demo_model", "score_chunk"}
# Hard limit for the whole snakemake run; `timeout -k 30` also kills a run that ignores SIGTERM.
RUN_LIMIT_S = {"scratch": 300, "repo": 2400}
# Snakemake always lays the workflow profile profiles/default/ over `--profile` (per key) when
# run from the repo root, as users do; pass it explicitly since the run starts in a scratch folder.
# If SLURM users are told to run with `--workflow-profile none`, put that here instead.
WORKFLOW_PROFILE_ARGS = ("--workflow-profile", str(REPO / "profiles" / "default"))
# Test-only speed-up: after a job ends the plugin waits 40 s before its next status query (then
# 10 s more each time no job ended). Starting from 2 s, a stand-in job (~8 s from sbatch to its
# end: two snakemake start-ups) is seen ended at the second query, 12 s after submission. The
# cluster's MinJobAge (an hour) is far above the 3 x 2 s that the squeue status command needs.
FAST_STATUS = (
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
)


# A stand-in with the real workflow's shape: CPU job -> GPU job -> two GPU jobs -> CPU job.
# Every job writes CUDA_VISIBLE_DEVICES, which SLURM sets only where it allocated a GPU.
RECORD_GPU = (
    "python -c \"import os, sys; open(sys.argv[1], 'w')"
    ".write(os.environ.get('CUDA_VISIBLE_DEVICES', '') + chr(10))\" {output} > {log} 2>&1"
)
SCRATCH_SNAKEFILE = textwrap.dedent(
    f'''\
    localrules:
        all,


    rule all:
        input:
            "results/summary.txt",


    rule write_corpus:
        output:
            "results/corpus.txt",
        log:
            "logs/write_corpus.log",
        shell:
            """{RECORD_GPU}"""


    rule train_demo_model:
        input:
            "results/corpus.txt",
        output:
            "results/model.txt",
        log:
            "logs/train_demo_model.log",
        resources:
            gpu=1,
        shell:
            """{RECORD_GPU}"""


    rule score_chunk:
        input:
            "results/model.txt",
        output:
            "results/scores/{{chunk}}.txt",
        log:
            "logs/score_chunk/{{chunk}}.log",
        resources:
            gpu=1,
        shell:
            """{RECORD_GPU}"""


    rule summarize:
        input:
            expand("results/scores/{{chunk}}.txt", chunk=[0, 1]),
        output:
            "results/summary.txt",
        log:
            "logs/summarize.log",
        shell:
            """{RECORD_GPU}"""
    '''
)
SCRATCH_CPU_RULES = {"write_corpus", "summarize"}
SCRATCH_CPU_OUTPUTS = ("results/corpus.txt", "results/summary.txt")
SCRATCH_GPU_OUTPUTS = ("results/model.txt", "results/scores/0.txt", "results/scores/1.txt")


def _why_not_runnable() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"the SLURM test cluster needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (it starts munged, slurmctld and slurmd)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld", path="/usr/sbin") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def _cluster(command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@dataclass
class Cluster:
    env: dict[str, str]
    conf: Path
    start_s: float


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A running single-node cluster; stopped afterwards if this module started it."""
    reason = _why_not_runnable()
    if reason is not None:
        message = f"SLURM PROFILE NOT TESTED: {reason}"
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this must run)")
        warnings.warn(message, pytest.PytestWarning, stacklevel=1)
        print(f"\n*** {message} ***", file=sys.__stderr__)
        pytest.skip(message)

    was_up = _cluster("status").returncode == 0
    start = time.monotonic()
    try:
        up = _cluster("up", timeout=900)  # first use installs SLURM with apt-get
        if up.returncode != 0:
            pytest.fail(f"slurm_cluster.sh up failed:\n{up.stdout}\n{up.stderr}")
        start_s = time.monotonic() - start
        conf = Path(_cluster("env").stdout.strip().removeprefix("export SLURM_CONF="))
        env = {
            **os.environ,
            "SLURM_CONF": str(conf),
            # SLURM jobs inherit this environment (--export=ALL): the venv's python and snakemake.
            "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            "PYTHONUNBUFFERED": "1",
        }
        yield Cluster(env=env, conf=conf, start_s=start_s)
    finally:
        if not was_up:
            down = _cluster("down")
            assert down.returncode == 0, f"slurm_cluster.sh down failed:\n{down.stderr}"


@dataclass
class Run:
    workdir: Path
    proc: subprocess.CompletedProcess
    seconds: float
    jobs: list[dict[str, str]]  # `scontrol show job` fields of every job the run submitted
    ctld_log: str  # tail of the controller's log, for failure messages


def _slurm_jobs(env: dict[str, str], workdir: Path) -> list[dict[str, str]]:
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert out.returncode == 0 or "No jobs" in out.stdout + out.stderr, out.stderr
    jobs = []
    for line in out.stdout.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if fields.get("WorkDir") == str(workdir):
            jobs.append(fields)
    return jobs


def _rule_of(job: dict[str, str]) -> str:
    """The rule name from the comment the plugin gives every job: rule_<name>[_wildcards_...]."""
    comment = job.get("Comment", "")
    assert comment.startswith("rule_"), f"job {job['JobId']} has no rule comment: {comment!r}"
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def _gpu_request(job: dict[str, str]) -> str:
    """Every GPU (gres) request of a job, as SLURM recorded it ('' when none)."""
    keys = ("TresPerJob", "TresPerNode", "TresPerSocket", "TresPerTask", "Gres")
    return ",".join(job[k] for k in keys if "gpu" in job.get(k, ""))


@pytest.fixture(scope="module")
def run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Run:
    workdir = tmp_path_factory.mktemp("slurm_run").resolve()
    if TARGET == "scratch":
        snakefile = workdir.parent / "Snakefile.slurm_scratch"
        snakefile.write_text(SCRATCH_SNAKEFILE)
        config_args: tuple[str, ...] = ()
    elif TARGET == "repo":
        snakefile = REPO / "Snakefile"
        config_args = ("--configfile", str(REPO / "config.yaml"), str(REPO / "config/quick.yaml"))
    else:
        raise ValueError(f"MEMAUDIT_SLURM_TARGET must be 'scratch' or 'repo', not {TARGET!r}")

    cmd = [
        "timeout",
        "-k",
        "30",
        str(RUN_LIMIT_S[TARGET]),
        str(BIN / "snakemake"),
        "--profile",
        str(PROFILE),
        "--snakefile",
        str(snakefile),
        "--directory",
        str(workdir),
        *WORKFLOW_PROFILE_ARGS,
        *config_args,
        *FAST_STATUS,
    ]
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=workdir, env=cluster.env, capture_output=True, text=True)
    seconds = time.monotonic() - start
    jobs = _slurm_jobs(cluster.env, workdir)
    # A run killed by the timeout leaves its jobs behind: cancel them before anything else.
    leftover = [j["JobId"] for j in jobs if j.get("JobState") in {"PENDING", "RUNNING"}]
    if leftover:
        subprocess.run(["scancel", *leftover], env=cluster.env, timeout=60, check=False)
    ctld_log = cluster.conf.parent.parent / "log" / "slurmctld.log"
    lines = ctld_log.read_text(errors="replace").splitlines() if ctld_log.exists() else []
    tail = "\n".join(lines[-40:])
    print(
        f"\nSLURM cluster ready in {cluster.start_s:.1f} s; "
        f"{TARGET} workflow through profiles/slurm: {seconds:.1f} s, {len(jobs)} SLURM jobs",
        file=sys.__stderr__,
    )
    return Run(workdir=workdir, proc=proc, seconds=seconds, jobs=jobs, ctld_log=tail)


def test_workflow_runs_through_slurm(run: Run):
    log = f"{run.proc.stdout[-3000:]}\n{run.proc.stderr[-6000:]}\n--- slurmctld ---\n{run.ctld_log}"
    assert run.proc.returncode not in (124, 137), f"snakemake hung; `timeout` killed it:\n{log}"
    assert run.proc.returncode == 0, f"snakemake failed ({run.proc.returncode}):\n{log}"
    assert "SLURM run ID: memaudit_" in run.proc.stderr, "not run by the slurm executor"
    assert run.jobs, f"SLURM knows no job with WorkDir={run.workdir}"
    for job in run.jobs:
        assert job["JobState"] == "COMPLETED", (job["JobId"], job["JobState"], _rule_of(job))
        assert job["ExitCode"] == "0:0", (job["JobId"], job["ExitCode"], _rule_of(job))
        assert job["JobName"].startswith("memaudit_"), job["JobName"]


def test_gpu_rules_request_one_gpu_and_cpu_rules_none(run: Run):
    rules = {_rule_of(job) for job in run.jobs}
    assert rules >= GPU_RULES, f"GPU rules missing from SLURM's jobs: {GPU_RULES - rules}"
    assert rules - GPU_RULES, "no CPU rule was submitted to SLURM"
    for job in run.jobs:
        rule, request = _rule_of(job), _gpu_request(job)
        if rule in GPU_RULES:
            # --gpus=1 -> gres:gpu:1; with gpu_model set, --gpus=<model>:1 -> gres:gpu:<model>:1
            assert re.fullmatch(r"gres:gpu(:[\w.]+)?:1", request), (rule, job["JobId"], request)
        else:
            assert request == "", (rule, job["JobId"], request)


def test_gpu_rule_count_matches_the_dag(run: Run):
    rules = [_rule_of(job) for job in run.jobs]
    assert rules.count("train_demo_model") == 1, rules
    if TARGET == "scratch":
        assert rules.count("score_chunk") == 2, rules
        assert set(rules) == GPU_RULES | SCRATCH_CPU_RULES, rules
    else:
        assert rules.count("score_chunk") >= 1, rules


def test_gpu_chunks_are_submitted_together(run: Run):
    """A SLURM run must not queue GPU jobs one at a time (e.g. a local `resources: gpu=1` limit).

    SLURM's own record: the last score_chunk job was submitted before the first one ended.
    """
    chunks = [job for job in run.jobs if _rule_of(job) == "score_chunk"]
    if len(chunks) < 2:
        pytest.skip(f"{len(chunks)} score_chunk job(s): nothing to run side by side")
    last_submit = max(job["SubmitTime"] for job in chunks)
    first_end = min(job["EndTime"] for job in chunks)
    provided = [line for line in run.proc.stderr.splitlines() if "Provided resources" in line]
    assert last_submit < first_end, (
        f"score_chunk jobs were submitted one after another ({last_submit} >= {first_end}); "
        f"snakemake said: {provided}"
    )


@pytest.mark.skipif(TARGET != "scratch", reason="the stand-in workflow records its environment")
def test_slurm_gave_a_gpu_only_to_gpu_jobs(run: Run):
    """Inside the jobs: SLURM sets CUDA_VISIBLE_DEVICES only where it allocated a (fake) GPU."""
    for name in SCRATCH_GPU_OUTPUTS:
        assert (run.workdir / name).read_text().strip() != "", name
    for name in SCRATCH_CPU_OUTPUTS:
        assert (run.workdir / name).read_text().strip() == "", name


@pytest.mark.skipif(TARGET != "scratch", reason="the real rules may declare their own resources")
def test_profile_resources_reach_sbatch(run: Run):
    """default-resources (CPU jobs) and set-resources (GPU jobs) become sbatch's memory, CPUs."""
    for job in run.jobs:
        expected_mem = "8000M" if _rule_of(job) in GPU_RULES else "2000M"
        assert job["MinMemoryNode"] == expected_mem, (_rule_of(job), job["MinMemoryNode"])
        assert job["NumCPUs"] == "1", (_rule_of(job), job["NumCPUs"])
        assert job["TimeLimit"] != "UNLIMITED", (_rule_of(job), job["TimeLimit"])
