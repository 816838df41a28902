"""A job that fails on bad input ends with one clear line naming the rule, the input and the
problem (the traceback stays in the rule's log), instead of a library traceback."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.conftest import QUICK, snakemake


def test_a_failing_job_prints_one_line_naming_rule_input_and_problem(
    workdir: Path, tmp_path: Path
) -> None:
    table = workdir / "reports.csv"
    table.write_text("id,report\n1,12\n2,7\n3,3.5\n")
    overlay = tmp_path / "numeric.yaml"
    overlay.write_text(
        yaml.safe_dump(
            {"reports": {"path": str(table), "text_column": "report", "id_column": "id"}}
        )
    )
    proc = snakemake(
        "--cores",
        "1",
        "results/prompts/texts.parquet",
        workdir=workdir,
        overlays=(QUICK, overlay),
        check=False,
    )
    assert proc.returncode != 0
    lines = [line for line in (proc.stdout + proc.stderr).splitlines() if "memaudit: rule" in line]
    assert lines, proc.stderr[-3000:]
    line = lines[0]
    assert line.startswith("memaudit: rule extract_prompts failed on ")
    assert str(table) in line and "report" in line  # the input and the column
    assert line.endswith("(traceback in logs/extract_prompts.log)")
    log = (workdir / "logs/extract_prompts.log").read_text()
    assert "Traceback" in log and log.rstrip().endswith(line)
