"""A throw-away single-node SLURM cluster for the tests (tests/cluster/slurm_cluster.sh).

Used by the session fixture ``quick_run`` (tests/conftest.py), which runs the quick demo through
``--profile profiles/slurm`` whenever a cluster can be started here, and by the SLURM tests that
then ask SLURM itself what each job requested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CLUSTER_SCRIPT = REPO / "tests" / "cluster" / "slurm_cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
# Rules that declare `resources: gpu=1`.
GPU_RULES = frozenset(
    {
        "train_demo_model",
        "check_demo_memorization",
        "score_chunk",
        "verify_planted_keys",
        "attribute_tokens",
        "generate_mitigations",
        "generate_copy_controls",
        "evaluate_mitigations",
        "train_copy_detector",
        "evaluate_copy_detection",
        "generate_synthetic_set",
        "detect_synthetic_copies",
    }
)
# Rules whose GPU request depends on the wildcard: embed_training_images asks for one GPU for
# a network embedding (learned, torchvision, timm) and none for pixels. Value: the quick demo's
# number of jobs of the rule that request a GPU (learned) and that do not (pixels).
MIXED_GPU_RULES = {"embed_training_images": (1, 1)}
# Test-only speed-up of the plugin's status polling: after a job ends the plugin waits 40 s
# before its next status query (then 10 s more each time no job ended). From 2 s, a job is seen
# ended within seconds. The cluster's MinJobAge (an hour) is far above the 3 x 2 s that the
# squeue status command needs.
FAST_STATUS = (
    "--slurm-init-seconds-before-status-checks",
    "2",
    "--seconds-between-status-checks",
    "2",
)


def why_not_runnable() -> str | None:
    """None when a cluster can be started here, else the reason it cannot."""
    if not sys.platform.startswith("linux"):
        return f"the SLURM test cluster needs Linux, this is {sys.platform}"
    if os.geteuid() != 0:
        return "the SLURM test cluster needs root (it starts munged, slurmctld and slurmd)"
    if shutil.which("apt-get") is None and shutil.which("slurmctld", path="/usr/sbin") is None:
        return "SLURM is not installed and there is no apt-get to install it"
    return None


def cluster(command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``slurm_cluster.sh <command>`` (up, status, env, down)."""
    return subprocess.run(
        ["bash", str(CLUSTER_SCRIPT), command], capture_output=True, text=True, timeout=timeout
    )


def cluster_env(bin_dir: Path) -> dict[str, str]:
    """Environment for sbatch/squeue/snakemake against the running test cluster."""
    conf = cluster("env").stdout.strip().removeprefix("export SLURM_CONF=")
    return {
        **os.environ,
        "SLURM_CONF": conf,
        # Jobs inherit this environment (--export=ALL): the venv's python and snakemake.
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONUNBUFFERED": "1",
    }


def slurm_jobs(env: dict[str, str], workdir: Path) -> list[dict[str, str]]:
    """``scontrol show job`` fields of every job whose WorkDir is ``workdir``."""
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    if out.returncode != 0 and "No jobs" not in out.stdout + out.stderr:
        raise RuntimeError(f"scontrol show job failed: {out.stderr}")
    jobs = []
    for line in out.stdout.splitlines():
        fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
        if fields.get("WorkDir") == str(workdir):
            jobs.append(fields)
    return jobs


def controller_log_tail(env: dict[str, str], lines: int = 40) -> str:
    """The last lines of the controller's log (for failure messages)."""
    log = Path(env["SLURM_CONF"]).parent.parent / "log" / "slurmctld.log"
    if not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def rule_of(job: dict[str, str]) -> str:
    """The rule name from the comment the plugin gives every job: rule_<name>[_wildcards_...]."""
    comment = job.get("Comment", "")
    if not comment.startswith("rule_"):
        raise AssertionError(f"job {job.get('JobId')} has no rule comment: {comment!r}")
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def gpu_request(job: dict[str, str]) -> str:
    """Every GPU (gres) request of a job, as SLURM recorded it ('' when none)."""
    keys = ("TresPerJob", "TresPerNode", "TresPerSocket", "TresPerTask", "Gres")
    return ",".join(job[k] for k in keys if "gpu" in job.get(k, ""))
