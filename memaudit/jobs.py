"""What every workflow script does first: send its output to the rule's log, and make a failed
job end with one clear line for the user.

Without this, a failed job reaches the terminal as Snakemake's error block plus the whole log
(tens of lines of traceback from deep inside a library). With it, the traceback stays in the
log and the terminal gets one line naming the rule, its inputs and the problem.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence
from types import TracebackType
from typing import Any, TextIO

MAX_LINE = 600


def failure_line(rule: str, inputs: Sequence[str], error: BaseException, log: str) -> str:
    """``memaudit: rule R failed on INPUTS: Type: message (traceback in LOG)``, one line."""
    message = " ".join(str(error).split()) or "(no message)"
    shown = ", ".join(inputs[:3]) + (f" (+{len(inputs) - 3} more)" if len(inputs) > 3 else "")
    line = f"memaudit: rule {rule} failed on {shown or 'no input'}: {type(error).__name__}: "
    tail = f" (traceback in {log})"
    room = MAX_LINE - len(line) - len(tail)
    if len(message) > room:
        message = message[: max(room - 1, 20)] + "…"
    return line + message + tail


def _input_paths(snakemake: Any) -> list[str]:
    paths: list[str] = []
    for item in snakemake.input:
        paths.extend([item] if isinstance(item, str) else [str(p) for p in item])
    return paths


def start_job(snakemake: Any, terminal: TextIO | None = None) -> TextIO:
    """Redirect stdout and stderr to the rule's log; on an uncaught error, write the traceback
    to the log and :func:`failure_line` to the log and the terminal. Returns the log stream."""
    terminal = terminal or sys.__stderr__
    log_path = str(snakemake.log[0])
    log = open(log_path, "w", buffering=1)  # noqa: SIM115 - open for the job's whole life
    sys.stdout = sys.stderr = log
    rule, inputs = str(snakemake.rule), _input_paths(snakemake)

    def report(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        traceback.print_exception(kind, error, tb, file=log)
        line = failure_line(rule, inputs, error, log_path)
        print(line, file=log, flush=True)
        if terminal is not None:
            print(line, file=terminal, flush=True)

    sys.excepthook = report
    return log
