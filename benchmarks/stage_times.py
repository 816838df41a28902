"""Per-stage times of a finished run, from the `benchmark:` files its jobs wrote.

Not a test: run it after `make demo` (or any run) and read the table.

    python benchmarks/stage_times.py                    # this checkout's benchmarks/
    python benchmarks/stage_times.py --wall 612         # also the share of a measured wall time
    python benchmarks/stage_times.py --markdown         # the README's table

A job's seconds are the `s` column of its `benchmarks/<rule>.tsv` (or
`benchmarks/<rule>/<chunk>.tsv`): wall time of the job, Python start-up and imports included.
Each rule belongs to the stage whose `workflow/rules/<stage>.smk` defines it. Rules without a
benchmark file (figures, gathers, tables: local rules of a few seconds each) and the
scheduler's own time are what `--wall` leaves over.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RULE = re.compile(r"^(?:local)?rule\s+(\w+)\s*:", re.MULTILINE)


def rule_stages(rules_dir: Path) -> dict[str, str]:
    """rule name -> stage (the .smk file that defines it)."""
    return {
        rule: smk.stem
        for smk in sorted(rules_dir.glob("*.smk"))
        for rule in RULE.findall(smk.read_text())
    }


def job_seconds(bench_dir: Path) -> dict[str, list[float]]:
    """rule -> seconds of each of its jobs (one per chunk or wildcard value)."""
    jobs: dict[str, list[float]] = {}
    for path in sorted(bench_dir.rglob("*.tsv")):
        rel = path.relative_to(bench_dir)
        rule = rel.parts[0] if len(rel.parts) > 1 else path.stem
        with open(path, newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if rows and "s" in rows[-1]:
            jobs.setdefault(rule, []).append(float(rows[-1]["s"]))
    return jobs


def stage_table(bench_dir: Path, rules_dir: Path) -> list[dict]:
    """Rows of (stage, rules with their job count, seconds), slowest stage first."""
    stages = rule_stages(rules_dir)
    table: dict[str, dict] = {}
    for rule, seconds in job_seconds(bench_dir).items():
        stage = stages.get(rule)
        if stage is None:  # a benchmark file of another workflow version
            continue
        row = table.setdefault(stage, {"stage": stage, "rules": [], "seconds": 0.0})
        row["rules"].append(f"{rule} ×{len(seconds)}" if len(seconds) > 1 else rule)
        row["seconds"] += sum(seconds)
    return sorted(table.values(), key=lambda r: -r["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bench-dir", type=Path, default=REPO / "benchmarks")
    parser.add_argument("--rules-dir", type=Path, default=REPO / "workflow" / "rules")
    parser.add_argument("--wall", type=float, help="measured wall seconds of the whole run")
    parser.add_argument("--markdown", action="store_true", help="a Markdown table")
    args = parser.parse_args(argv)
    rows = stage_table(args.bench_dir, args.rules_dir)
    if not rows:
        raise SystemExit(f"no benchmark files of this workflow's rules under {args.bench_dir}")
    total = sum(r["seconds"] for r in rows)
    if args.markdown:
        print("| stage | jobs (benchmarked) | seconds | share of wall |")
        print("| --- | --- | ---: | ---: |")
    for r in rows:
        share = f"{100 * r['seconds'] / args.wall:.0f} %" if args.wall else "-"
        if args.markdown:
            print(f"| {r['stage']} | {', '.join(r['rules'])} | {r['seconds']:.0f} | {share} |")
        else:
            print(f"{r['stage']:<16} {r['seconds']:>8.1f} s {share:>6}  {', '.join(r['rules'])}")
    rest = (args.wall - total) if args.wall else None
    if args.markdown:
        print(
            f"| benchmarked jobs, total | | {total:.0f} | "
            f"{f'{100 * total / args.wall:.0f} %' if args.wall else '-'} |"
        )
        if rest is not None:
            print(
                f"| the rest: local rules (figures, gathers, tables), scheduling, the HTML "
                f"report | | {rest:.0f} | {100 * rest / args.wall:.0f} % |"
            )
            print(f"| **wall** | | **{args.wall:.0f}** | 100 % |")
    else:
        print(f"{'total':<16} {total:>8.1f} s (jobs with a benchmark file; they run one at a time)")
        if rest is not None:
            print(f"{'rest':<16} {rest:>8.1f} s (local rules, scheduling, the HTML report)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
