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


def finite_or_none(value: Any) -> float | None:
    """A finite float for JSON, or None (for None, NaN and infinities)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def json_safe(value: Any) -> Any:
    """Plain JSON values, recursively: numpy scalars and arrays become Python ones and every
    non-finite float (``float`` or numpy, NaN or infinite) becomes None."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return finite_or_none(value)
    return value


def json_text(document: Any) -> str:
    """A JSON document as written by this package: :func:`json_safe`, indented, other objects
    as ``str``, a final newline."""
    return json.dumps(json_safe(document), indent=2, default=str, allow_nan=False) + "\n"


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
                temp.write_text(json_text(value))
        for temp, target in staged:
            os.replace(temp, target)
            placed.append(target)
    except BaseException:
        for temp, _target in staged:
            temp.unlink(missing_ok=True)
        for target in placed:
            target.unlink(missing_ok=True)
        raise
