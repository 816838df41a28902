"""profiles/slurm/ on a real single-node SLURM cluster: the quick demo, as SLURM saw it.

The session fixture ``quick_run`` (tests/conftest.py) brings up the throw-away cluster of
tests/cluster/slurm_cluster.sh (apt-get installs SLURM on first use), runs the quick demo
through ``--profile profiles/slurm`` and keeps SLURM's own record of every job
(``scontrol show job``; the cluster's MinJobAge of an hour keeps finished jobs listed). These
tests check from that record that the GPU rules asked for a GPU and the CPU rules did not.

Needs root on Linux with apt-get. Elsewhere the quick demo runs locally and these tests are
skipped with a warning; under CI (CI set in the environment) the fixture fails instead.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO, QuickRun
from tests.slurm import GPU_RULES, MIXED_GPU_RULES, gpu_request, rule_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(quick_run: QuickRun) -> QuickRun:
    if quick_run.executor != "slurm":
        pytest.skip("the quick demo ran locally (no SLURM test cluster here)")
    return quick_run


def _log(run: QuickRun) -> str:
    return (
        f"{run.proc.stdout[-3000:]}\n{run.proc.stderr[-6000:]}\n"
        f"--- slurmctld ---\n{run.controller_log}"
    )


def test_quick_demo_ran_through_the_slurm_executor(run: QuickRun):
    assert "SLURM run ID: memaudit_" in run.proc.stderr, "not run by the slurm executor"
    assert run.jobs, f"SLURM knows no job with WorkDir={run.workdir}\n{_log(run)}"
    for job in run.jobs:
        assert job["JobState"] == "COMPLETED", (job["JobId"], job["JobState"], rule_of(job))
        assert job["ExitCode"] == "0:0", (job["JobId"], job["ExitCode"], rule_of(job))
        assert job["JobName"].startswith("memaudit_"), job["JobName"]


def test_gpu_rules_request_one_gpu_and_cpu_rules_none(run: QuickRun):
    rules = {rule_of(job) for job in run.jobs}
    assert rules >= GPU_RULES, f"GPU rules missing from SLURM's jobs: {GPU_RULES - rules}"
    assert rules - GPU_RULES, "no CPU rule was submitted to SLURM"
    mixed = {rule: [0, 0] for rule in MIXED_GPU_RULES}
    for job in run.jobs:
        rule, request = rule_of(job), gpu_request(job)
        if rule in MIXED_GPU_RULES:
            mixed[rule][request == ""] += 1
            continue
        if rule in GPU_RULES:
            # --gpus=1 -> gres:gpu:1; with gpu_model set, --gpus=<model>:1 -> gres:gpu:<model>:1
            assert re.fullmatch(r"gres:gpu(:[\w.]+)?:1", request), (rule, job["JobId"], request)
        else:
            assert request == "", (rule, job["JobId"], request)
    assert {rule: tuple(n) for rule, n in mixed.items()} == MIXED_GPU_RULES


def test_job_counts_match_the_dag(run: QuickRun):
    rules = [rule_of(job) for job in run.jobs]
    assert rules.count("train_demo_model") == 1, rules
    assert rules.count("score_chunk") >= 2, rules  # the scattergather chunks
    # localrules (plots, gathers) ran on the submitting host, not through SLURM
    assert "plot_score_distribution" not in rules and "gather_scores" not in rules, rules


def test_gpu_chunks_are_submitted_together(run: QuickRun):
    """A SLURM run must not queue GPU jobs one at a time (e.g. a `resources: gpu=1` limit in
    the workflow profile, which snakemake lays over --profile): SLURM's own record says the
    last score_chunk job was submitted before the first one ended."""
    chunks = [job for job in run.jobs if rule_of(job) == "score_chunk"]
    assert len(chunks) >= 2, [rule_of(j) for j in run.jobs]
    last_submit = max(job["SubmitTime"] for job in chunks)
    first_end = min(job["EndTime"] for job in chunks)
    provided = [line for line in run.proc.stderr.splitlines() if "Provided resources" in line]
    assert last_submit < first_end, (
        f"score_chunk jobs were submitted one after another ({last_submit} >= {first_end}); "
        f"snakemake said: {provided}"
    )


def _rule_threads() -> dict[str, int]:
    """`threads:` of every rule in the workflow (1 where a rule does not say)."""
    threads = {}
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        for block in re.split(r"(?m)^(?=rule \w+:)", smk.read_text()):
            name = re.match(r"rule (\w+):", block)
            if name:
                value = re.search(r"(?m)^    threads: (\d+)$", block)
                threads[name.group(1)] = int(value.group(1)) if value else 1
    return threads


def test_profile_resources_reach_sbatch(run: QuickRun):
    """default-resources (CPU jobs) and set-resources (GPU jobs) become sbatch's memory, CPUs
    (one per thread the rule asks for) and time limit."""
    threads = _rule_threads()
    for job in run.jobs:
        rule = rule_of(job)
        expected_mem = "8000M" if rule in GPU_RULES | set(MIXED_GPU_RULES) else "2000M"
        assert job["MinMemoryNode"] == expected_mem, (rule, job["MinMemoryNode"])
        assert job["NumCPUs"] == str(threads[rule]), (rule, job["NumCPUs"], threads[rule])
        assert job["TimeLimit"] != "UNLIMITED", (rule, job["TimeLimit"])
