"""Atomic writes: a job killed half-way leaves no output file that a re-run would trust.

Every output goes to a temporary file in its own folder first and is renamed into place when
complete (a rename within one folder is atomic on POSIX file systems, shared ones included).
Snakemake re-runs a job whose output is missing; these helpers make sure "present" implies
"complete". Files get the usual permissions of the user's umask (``mkstemp`` alone would make
them private).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd


def _shared_mode() -> int:
    """0o666 less the process umask: what ``open(path, "w")`` would have given the file."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _stage(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    os.chmod(name, _shared_mode())
    return Path(name)


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a binary handle of a temporary file, then rename it over ``path``."""
    path = Path(path)
    temp = _stage(path)
    try:
        with open(temp, "wb") as stream:
            write(stream)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def atomic_parquet(table: pd.DataFrame, path: str | Path) -> None:
    """Write a table as parquet (no index), atomically."""
    atomic_write(path, lambda handle: table.to_parquet(handle, index=False))


def atomic_npy(path: str | Path, array: np.ndarray) -> None:
    """Write an array as ``.npy``, atomically."""
    atomic_write(path, lambda handle: np.save(handle, array))


def json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays (non-finite floats become null), else ``str``."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value) if math.isfinite(float(value)) else None
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def write_atomically(items: Mapping[str | Path, pd.DataFrame | dict]) -> None:
    """Write tables (parquet) and dicts (JSON) so that either all files appear or none.

    Every item goes to a temporary file in its folder first; only when all are written are
    they renamed into place. On any failure the temporary files, and those already renamed,
    are removed.
    """
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    try:
        for target, value in items.items():
            temp = _stage(Path(target))
            staged.append((temp, Path(target)))
            if isinstance(value, pd.DataFrame):
                value.to_parquet(temp, index=False)
            else:
                temp.write_text(json.dumps(value, indent=2, default=json_default) + "\n")
        for temp, target in staged:
            os.replace(temp, target)
            placed.append(target)
    except BaseException:
        for temp, _target in staged:
            temp.unlink(missing_ok=True)
        for target in placed:
            target.unlink(missing_ok=True)
        raise
