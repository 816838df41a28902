"""Atomic writes (memaudit.atomic): present means complete, permissions follow the umask."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from memaudit.atomic import atomic_npy, atomic_parquet, atomic_write, write_atomically


def test_files_get_the_umask_permissions_not_private_ones(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_parquet(pd.DataFrame({"a": [1]}), tmp_path / "t.parquet")
        atomic_npy(tmp_path / "a.npy", np.arange(3))
    finally:
        os.umask(old)
    for name in ("t.parquet", "a.npy"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.arange(3))


def test_a_failed_write_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.bin"

    def half_then_fail(handle) -> None:
        handle.write(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        atomic_write(target, half_then_fail)
    assert list((tmp_path / "sub").iterdir()) == []
    # an existing complete file survives a failed rewrite unchanged
    atomic_write(target, lambda handle: handle.write(b"complete"))
    with pytest.raises(RuntimeError):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"complete"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["out.bin"]


def test_json_documents_hold_no_nan_and_no_numpy(tmp_path: Path) -> None:
    document = {
        "f64_nan": np.float64("nan"),  # a float subclass: json would write NaN by itself
        "inf": float("inf"),
        "f32": np.float32(0.5),
        "i64": np.int64(3),
        "flag": np.bool_(True),
        "array": np.array([1.0, np.nan]),
        "nested": [{"x": (np.float64(2.0), -np.inf)}],
        7: "key",
    }
    path = tmp_path / "doc.json"
    write_atomically({path: document})
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {
        "f64_nan": None,
        "inf": None,
        "f32": 0.5,
        "i64": 3,
        "flag": True,
        "array": [1.0, None],
        "nested": [{"x": [2.0, None]}],
        "7": "key",
    }
