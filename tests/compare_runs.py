"""Compare the tables, JSON and arrays of two finished runs (e.g. before and after a refactor).

    python tests/compare_runs.py OLD_RUN NEW_RUN [--rename old=new ...] [--expect PATH ...]

Tables are compared by content (columns, dtypes, every value exactly), JSON by value after
dropping run-time measurements (seconds, rates, memory), arrays and weights exactly. Files
renamed between the runs are mapped with ``--rename`` (a path prefix); files that a deliberate
fix changes are listed with ``--expect`` and reported, not failed. Exit status 1 when any other
file differs or is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

# Keys whose values are measurements of the run, not results (wall time, throughput, memory).
VOLATILE = re.compile(r"seconds|_per_s$|per_second|rss|elapsed|wall|batch_size_final|halvings")
SUFFIXES = (".parquet", ".json", ".npy", ".npz", ".safetensors")


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def _first_difference(a: Any, b: Any, where: str = "") -> str | None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b), key=str):
            if key not in a or key not in b:
                return f"{where}.{key}: only in {'new' if key in b else 'old'}"
            found = _first_difference(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = _first_difference(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where}: {a!r} vs {b!r}"


def compare_file(old: Path, new: Path) -> str | None:
    """None when equal, else a one-line description of the first difference."""
    if old.suffix == ".parquet":
        a, b = pd.read_parquet(old), pd.read_parquet(new)
        if list(a.columns) != list(b.columns):
            return f"columns {list(a.columns)} vs {list(b.columns)}"
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as error:
            return " ".join(str(error).split())[:300]
        return None
    if old.suffix == ".json":
        a = _strip(json.loads(old.read_text()))
        b = _strip(json.loads(new.read_text()))
        return _first_difference(a, b)
    if old.suffix == ".npy":
        return None if np.array_equal(np.load(old), np.load(new)) else "array values differ"
    if old.suffix == ".npz":
        with np.load(old) as a, np.load(new) as b:
            if sorted(a.files) != sorted(b.files):
                return f"arrays {sorted(a.files)} vs {sorted(b.files)}"
            bad = [k for k in a.files if not np.array_equal(a[k], b[k])]
            return f"arrays differ: {bad}" if bad else None
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (old, new)]
    return None if digest[0] == digest[1] else "bytes differ"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
    parser.add_argument("--expect", action="append", default=[], metavar="PATH")
    args = parser.parse_args(argv)
    renames = [tuple(r.split("=", 1)) for r in args.rename]
    expected = set(args.expect)
    files = sorted(
        p.relative_to(args.old)
        for p in (args.old / "results").rglob("*")
        if p.suffix in SUFFIXES and p.is_file()
    )
    failures = 0
    for rel in files:
        name = str(rel)
        for old_prefix, new_prefix in renames:
            if name.startswith(old_prefix):
                name = new_prefix + name[len(old_prefix) :]
        new = args.new / name
        if not new.exists():
            problem = "missing in the new run"
        else:
            problem = compare_file(args.old / rel, new)
        if problem is None:
            print(f"same      {name}")
        elif name in expected:
            print(f"expected  {name}: {problem}")
        else:
            failures += 1
            print(f"DIFFERS   {name}: {problem}")
    print(f"{len(files)} files compared, {failures} unexpected difference(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
