"""Score tables: d_mem windows from stored per-step norms, chunking, gathering.

Everything here is numpy/pandas only (no torch, no model stack), so the CPU rules that read or
gather scores (gather_scores, threshold_scores, evaluate_detection) run in the light
``envs/core.yaml``; the engine that computes the norms is :mod:`memaudit.scoring.engine`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd


def d_mem_from_norms(
    norms: np.ndarray | Sequence[float],
    window: tuple[int, int | None],
    n_generations: int | None = None,
) -> float | np.ndarray:
    """d_mem for a step window from stored per-step norms.

    ``norms`` is [generations, steps] (one prompt), [prompts, generations, steps], or a flat
    row-major [generations × steps] vector when ``n_generations`` is given. Returns a float
    for one prompt, an array for many.
    """
    array = np.asarray(norms, dtype=np.float64)
    if array.ndim == 1:
        if n_generations is None or n_generations < 1 or array.size % n_generations:
            raise ValueError(
                f"flat norms of length {array.size} need n_generations dividing it, "
                f"got {n_generations!r}"
            )
        array = array.reshape(n_generations, -1)
    if array.ndim not in (2, 3):
        raise ValueError(
            f"norms must be [gens, steps] or [prompts, gens, steps], got {array.shape}"
        )
    available = array.shape[-1]
    start, stop = window
    stop = available if stop is None else stop
    if not 0 <= start < stop <= available:
        raise ValueError(
            f"window [{start}, {stop}) needs steps the stored norms do not have "
            f"(only {available} step(s) were computed)"
        )
    values = array[..., start:stop].mean(axis=(-2, -1))
    return float(values) if array.ndim == 2 else values


def norms_matrix(scores: pd.DataFrame) -> np.ndarray:
    """Stored norms of a scores table as [prompts, generations, steps] float64."""
    for column in ("norms", "n_generations", "n_steps"):
        if column not in scores.columns:
            raise ValueError(f"scores table has no {column!r} column")
    gens = scores["n_generations"].unique()
    steps = scores["n_steps"].unique()
    if len(gens) != 1 or len(steps) != 1:
        raise ValueError(
            f"scores mix generation/step counts: n_generations {sorted(gens)}, "
            f"n_steps {sorted(steps)}"
        )
    n_gen, n_step = int(gens[0]), int(steps[0])
    flat = [np.asarray(v, dtype=np.float64) for v in scores["norms"]]
    bad = [i for i, v in enumerate(flat) if v.size != n_gen * n_step]
    if bad:
        raise ValueError(
            f"{len(bad)} row(s) have norms of the wrong length (expected {n_gen}x{n_step}), "
            f"first prompt_id {scores['prompt_id'].iloc[bad[0]]!r}"
        )
    if not flat:
        return np.zeros((0, n_gen, n_step))
    return np.stack(flat).reshape(len(flat), n_gen, n_step)


def select_chunk(prompts: pd.DataFrame, index: int, total: int) -> pd.DataFrame:
    """Chunk ``index`` of ``total``: contiguous, balanced slices of the prompts sorted by id.

    The split depends only on the set of prompt ids, never on the table's row order.
    """
    if not isinstance(total, int) or total < 1:
        raise ValueError(f"chunk total must be a positive integer, got {total!r}")
    if not isinstance(index, int) or not 0 <= index < total:
        raise ValueError(f"chunk index must be in [0, {total}), got {index!r}")
    if "prompt_id" not in prompts.columns:
        raise ValueError("prompts table has no 'prompt_id' column")
    ordered = prompts.sort_values("prompt_id", kind="mergesort").reset_index(drop=True)
    bounds = np.linspace(0, len(ordered), total + 1).round().astype(int)
    return ordered.iloc[bounds[index] : bounds[index + 1]].reset_index(drop=True)


def gather_scores(
    paths: Iterable[str | Path], expected_ids: Iterable[str] | None = None
) -> pd.DataFrame:
    """Concatenate chunk score tables, sorted by prompt_id.

    Fails, naming the files and ids, on duplicate prompt ids, mixed generation/step counts or
    (when ``expected_ids`` is given) prompts that are missing or unexpected.
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("no score chunks to gather")
    frames = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"score chunk {path} does not exist")
        frame = pd.read_parquet(path)
        missing_cols = {"prompt_id", "d_mem", "norms", "n_generations", "n_steps"} - set(
            frame.columns
        )
        if missing_cols:
            raise ValueError(f"score chunk {path} lacks column(s) {sorted(missing_cols)}")
        frame["_source"] = str(path)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    dup = table[table["prompt_id"].duplicated(keep=False)]
    if len(dup):
        first = dup["prompt_id"].iloc[0]
        sources = sorted(dup.loc[dup["prompt_id"] == first, "_source"])
        raise ValueError(
            f"{dup['prompt_id'].nunique()} prompt_id(s) scored more than once, e.g. {first!r} "
            f"in {sources}"
        )
    for column in ("n_generations", "n_steps"):
        values = sorted(table[column].unique())
        if len(values) > 1:
            raise ValueError(f"score chunks disagree on {column}: {values}")
    if expected_ids is not None:
        expected = set(expected_ids)
        got = set(table["prompt_id"])
        missing, extra = sorted(expected - got), sorted(got - expected)
        if missing or extra:
            raise ValueError(
                f"gathered scores do not match the prompts: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
            )
    table = table.drop(columns="_source").sort_values("prompt_id", kind="mergesort")
    return table.reset_index(drop=True)
