"""The one bootstrap (memaudit.bootstrap) that every reported interval uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from memaudit.bootstrap import bootstrap_ci, mean_ci


def test_interval_is_reproducible_named_and_covers_the_mean() -> None:
    values = {"x": np.array([0.1, 0.5, 0.9, 0.3, 0.7, 0.2])}
    first = bootstrap_ci(values, 2000, seed=0, key="k")
    assert first == bootstrap_ci(values, 2000, seed=0, key="k")
    assert first != bootstrap_ci(values, 2000, seed=1, key="k")
    assert first != bootstrap_ci(values, 2000, seed=0, key="other")
    lo, hi = first["x"]
    assert lo < values["x"].mean() < hi and lo >= 0.0 and hi <= 1.0


def test_paired_columns_resample_the_same_rows() -> None:
    x = np.arange(10, dtype=np.float64)
    both = bootstrap_ci({"x": x, "y": 2 * x}, 500, seed=3, key="k")
    # the same draws for both columns: y's interval is exactly twice x's
    assert both["y"] == pytest.approx((2 * both["x"][0], 2 * both["x"][1]), rel=1e-12)
    with pytest.raises(ValueError, match="differ in length"):
        bootstrap_ci({"x": x, "y": x[:3]}, 10, seed=0, key="k")


def test_level_widens_the_interval_and_edge_cases_are_nan() -> None:
    x = np.random.default_rng(0).normal(size=50)
    narrow = bootstrap_ci({"x": x}, 2000, seed=0, key="k", level=0.5)["x"]
    wide = bootstrap_ci({"x": x}, 2000, seed=0, key="k", level=0.99)["x"]
    assert wide[0] < narrow[0] < narrow[1] < wide[1]
    assert all(math.isnan(v) for v in bootstrap_ci({"x": []}, 100, seed=0, key="k")["x"])
    assert all(math.isnan(v) for v in bootstrap_ci({"x": x}, 0, seed=0, key="k")["x"])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci({"x": x}, 10, seed=0, key="k", level=1.5)


def test_mean_ci_drops_non_finite_values_and_a_single_value_is_a_point() -> None:
    values = np.array([0.2, np.nan, 0.4, np.inf, 0.6])
    assert mean_ci(values, 300, seed=0, key="k") == mean_ci(
        np.array([0.2, 0.4, 0.6]), 300, seed=0, key="k"
    )
    assert mean_ci(np.array([0.7, np.nan]), 300, seed=0, key="k") == (0.7, 0.7)
