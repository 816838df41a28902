"""The job preamble of every workflow script (memaudit.jobs): log redirect, one-line failures."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

from memaudit.jobs import MAX_LINE, failure_line

REPO = Path(__file__).resolve().parents[2]


def test_failure_line_names_rule_inputs_and_problem() -> None:
    error = ValueError("reports.path: table 'x.csv' column 'text' is int64,\n  expected text")
    line = failure_line("extract_prompts", ["x.csv", "m.csv"], error, "logs/extract_prompts.log")
    assert "\n" not in line
    assert line.startswith("memaudit: rule extract_prompts failed on x.csv, m.csv: ValueError: ")
    assert "column 'text' is int64, expected text" in line
    assert line.endswith("(traceback in logs/extract_prompts.log)")
    many = failure_line("r", [f"f{i}" for i in range(5)], KeyError("k"), "l")
    assert "f0, f1, f2 (+2 more)" in many and "KeyError" in many
    long = failure_line("r", [], RuntimeError("x" * 5000), "l")
    assert len(long) <= MAX_LINE and "no input" in long and long.endswith("(traceback in l)")


def test_an_uncaught_error_leaves_the_traceback_in_the_log_and_one_line_on_stderr(
    tmp_path: Path,
) -> None:
    log = tmp_path / "job.log"
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(REPO)!r})
            from types import SimpleNamespace
            from memaudit.jobs import start_job
            snakemake = SimpleNamespace(
                rule="score_chunk", input=["prompts.parquet", ["model"]], log=[{str(log)!r}]
            )
            start_job(snakemake)
            print("working")

            def deep():
                raise ValueError("scoring.window [0, 60] is beyond steps (50)")

            deep()
            """
        )
    )
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert proc.returncode == 1
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert lines == [
        "memaudit: rule score_chunk failed on prompts.parquet, model: ValueError: "
        f"scoring.window [0, 60] is beyond steps (50) (traceback in {log})"
    ]
    text = log.read_text()
    assert "working" in text and "Traceback" in text and "in deep" in text
    assert text.rstrip().endswith(lines[0])


def test_start_job_redirects_output(tmp_path: Path, monkeypatch) -> None:
    from memaudit import jobs

    monkeypatch.setattr(sys, "stdout", sys.stdout)
    monkeypatch.setattr(sys, "stderr", sys.stderr)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    terminal = io.StringIO()
    fake = SimpleNamespace(rule="r", input=[], log=[str(tmp_path / "r.log")])
    log = jobs.start_job(fake, terminal=terminal)
    assert sys.stdout is log and sys.stderr is log
    sys.excepthook(RuntimeError, RuntimeError("boom"), None)
    log.flush()
    assert "memaudit: rule r failed on no input: RuntimeError: boom" in terminal.getvalue()
