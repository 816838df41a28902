"""How reproducible are the demo's validity numbers? Run the whole default demo several times
and print each run's self-check beside the spread.

Not a test: run it by hand (each run is a full `make demo`, about 10 minutes on 2 cores).

    python benchmarks/demo_spread.py                          # training seeds 0, 1, 2
    python benchmarks/demo_spread.py --seeds 0 --threads 1    # seed 0 on one thread
    python benchmarks/demo_spread.py --reuse                  # tabulate finished runs only

Float kernels round differently between CPUs and thread counts, so "identical weights on CPU"
holds on one machine only; another machine's run of the same config is another draw from the
same spread. Varying the training seed (`train.seed`: initial weights, batches, noise) draws
wider than a change of kernels does, so the validity bars must hold across seeds, not on one
lucky run. `--threads 1` runs every job on one thread instead of two (`--cores 1`): the same
seed through other float reductions.

Each run is its own Snakemake working directory under ``--out`` (default
``benchmarks/spread/``): ``config.yaml`` there is this repository's, with ``train.seed``
replaced; the demo's other seeds (corpus, scoring, mitigation) stay fixed, so the spread is
the model's. The table reads each run's ``results/report/summary.json`` (``validity``: the
bars of :data:`memaudit.report.VALIDITY_BARS`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from memaudit.report import VALIDITY_BARS  # noqa: E402

TARGET = "results/report/summary.json"


def run_demo(workdir: Path, seed: int, cores: int, snakemake: str) -> float:
    """One default demo with ``train.seed = seed`` in ``workdir``; returns wall seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["train"]["seed"] = seed
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    command = [
        snakemake,
        "--snakefile",
        str(REPO / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(workdir / "config.yaml"),
        "--cores",
        str(cores),
        TARGET,
    ]
    start = time.perf_counter()
    with open(workdir / "snakemake.log", "w") as log:
        done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"the demo in {workdir} failed: see {workdir / 'snakemake.log'}")
    return time.perf_counter() - start


def read_validity(workdir: Path) -> dict:
    """The run's validity block (``summary.json``), or an error naming the file."""
    path = workdir / TARGET
    if not path.exists():
        raise SystemExit(f"{path} is missing: run without --reuse first")
    validity = json.loads(path.read_text()).get("validity")
    if not validity:
        raise SystemExit(f"{path} has no validity block (not a demo run of this memaudit?)")
    return validity


def print_table(runs: dict[str, dict], seconds: dict[str, float]) -> bool:
    """Each run's checks, then min-max over runs and whether every bar holds in every run."""
    names = [name for _, name, _, _ in VALIDITY_BARS]
    header = f"{'run':<18} {'wall s':>7} " + " ".join(f"{n:>17}" for n in names)
    print(header)
    print("-" * len(header))
    values = {n: [] for n in names}
    for run, validity in runs.items():
        by_name = {c["name"]: c for c in validity["checks"]}
        cells = []
        for n in names:
            check = by_name[n]
            values[n].append(check["value"])
            mark = "" if check["holds"] else " !"
            value = "n/a" if check["value"] is None else f"{check['value']:.4f}"
            cells.append(f"{value + mark:>17}")
        wall = f"{seconds[run]:.0f}" if run in seconds else "-"
        print(f"{run:<18} {wall:>7} " + " ".join(cells))
    spread = []
    for n in names:
        present = [v for v in values[n] if v is not None]
        spread.append(f"{min(present):.4f}-{max(present):.4f}" if present else "n/a")
    print(f"{'min-max':<18} {'':>7} " + " ".join(f"{s:>17}" for s in spread))
    bars = {name: (direction, bar) for _, name, direction, bar in VALIDITY_BARS}
    print(
        f"{'bar':<18} {'':>7} "
        + " ".join(
            f"{('>= ' if bars[n][0] == 'min' else '<= ') + format(bars[n][1], 'g'):>17}"
            for n in names
        )
    )
    every = all(v["all_hold"] for v in runs.values())
    print(f"every bar holds in every run: {'yes' if every else 'NO'} ({len(runs)} runs)")
    return every


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="train.seed")
    parser.add_argument(
        "--threads", type=int, default=2, help="cores (and so torch threads per job)"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "spread")
    parser.add_argument("--reuse", action="store_true", help="only tabulate finished runs")
    parser.add_argument("--snakemake", default=str(Path(sys.executable).parent / "snakemake"))
    args = parser.parse_args(argv)
    runs, seconds = {}, {}
    for seed in args.seeds:
        name = f"seed{seed}-threads{args.threads}"
        workdir = args.out / name
        if not args.reuse:
            print(f"{name}: running the demo in {workdir} ...", flush=True)
            seconds[name] = run_demo(workdir, seed, args.threads, args.snakemake)
        runs[name] = read_validity(workdir)
    for existing in sorted(args.out.glob("seed*-threads*")):  # earlier runs, other variants
        if existing.name not in runs and (existing / TARGET).exists():
            runs[existing.name] = read_validity(existing)
    every = print_table(runs, seconds)
    (args.out / "spread.json").write_text(
        json.dumps({"runs": runs, "seconds": seconds, "every_bar_holds": every}, indent=2)
    )
    return 0 if every else 1


if __name__ == "__main__":
    raise SystemExit(main())
