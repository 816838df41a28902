"""Which prompts a downstream stage (attribution, mitigation) studies, and why.

One selector serves both stages: the memorized prompts of the threshold stage, plus, on the
demo, every planted caption (the demo's top 1 % holds only a handful of prompts, and the planted
ones carry the ground truth the stages are scored against). A stage may keep only prompts with
a de-identification marker (mitigation's ``marker_memorized``) and a seeded sample of them.

``reason`` says why a prompt is in: ``memorized``, ``planted`` or ``memorized+planted``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from memaudit.frames import require_columns
from memaudit.seeds import hashed_seed
from memaudit.text import marker_pattern

REASONS = ("memorized", "planted", "memorized+planted")

SELECTION_COLUMNS: dict[str, Any] = {
    "prompt_id": object,
    "text": object,
    "reason": object,
    "memorized": bool,
    "planted": bool,
    "d_mem": np.float64,
    "rank": "Int64",
    "marker_count": np.int64,
    "has_marker": bool,
    "planted_id": np.int64,
    "trigger_word": object,
    "trigger_word_index": np.int64,
}


def sample_order(seed: int, prompt_id: str) -> int:
    """The sampling key of a prompt: a hash of (seed, prompt id), never a row position."""
    return hashed_seed("memaudit-selection", seed, prompt_id)


def _reason(memorized: bool, planted: bool) -> str:
    return "memorized+planted" if memorized and planted else REASONS[0 if memorized else 1]


def select_prompts(
    memorized: pd.DataFrame,
    ranked: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    *,
    include_planted: bool = True,
    markers: Sequence[str] = (),
    require_marker: bool = False,
    sample_size: int | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The selected prompts sorted by prompt_id (columns :data:`SELECTION_COLUMNS`), and counts.

    ``memorized`` is the threshold stage's memorized table (prompt_id, text, d_mem, rank);
    ``ranked`` all scored prompts, from which planted captions that are not memorized take their
    text, d_mem and rank. With ``truth`` (the demo's planted captions) and ``include_planted``,
    every planted caption is added; one missing from ``ranked`` (never scored) is skipped and
    counted. ``markers`` count marker matches per prompt; ``require_marker`` keeps only prompts
    with at least one. ``sample_size`` keeps that many, chosen by :func:`sample_order`.
    """
    # 1. Check inputs
    if sample_size is not None and (
        isinstance(sample_size, bool) or not isinstance(sample_size, int) or sample_size < 0
    ):
        raise ValueError(f"sample_size must be null or an integer >= 0, got {sample_size!r}")
    require_columns(memorized, ("prompt_id", "text", "d_mem", "rank"), "memorized prompts table")
    use_truth = truth is not None and include_planted
    if use_truth:
        require_columns(truth, ("prompt_id",), "truth table")
        if ranked is None:
            raise ValueError("planted prompts need the ranked prompts table (text, d_mem, rank)")
        require_columns(ranked, ("prompt_id", "text", "d_mem", "rank"), "ranked prompts table")
    pattern = marker_pattern(markers)

    # 2. Memorized prompts, then planted captions
    rows = {
        str(r.prompt_id): _row(str(r.prompt_id), str(r.text), r.d_mem, r.rank, memorized=True)
        for r in memorized.itertuples(index=False)
    }
    counts: dict[str, Any] = {"memorized": len(rows), "planted": 0, "planted_missing": 0}
    if use_truth:
        counts.update(_add_planted(rows, truth, ranked))

    # 3. Marker filter and sample
    for row in rows.values():
        row["marker_count"] = len(pattern.findall(row["text"])) if pattern is not None else 0
        row["has_marker"] = row["marker_count"] > 0
        row["reason"] = _reason(row["memorized"], row["planted"])
    ids = sorted(p for p, row in rows.items() if row["has_marker"] or not require_marker)
    counts["without_marker_dropped"] = len(rows) - len(ids)
    if sample_size is not None:
        ids = sorted(sorted(ids, key=lambda p: sample_order(seed, p))[:sample_size])

    # 4. Table and counts
    table = pd.DataFrame([rows[p] for p in ids], columns=list(SELECTION_COLUMNS))
    table = table.astype(SELECTION_COLUMNS).reset_index(drop=True)
    counts.update(
        selected=len(table),
        by_reason={r: int((table["reason"] == r).sum()) for r in REASONS},
        planted_included=bool(use_truth),
        planted_with_trigger=int(table["trigger_word"].notna().sum()),
        with_marker=int(table["has_marker"].sum()),
    )
    return table, counts


def _add_planted(
    rows: dict[str, dict[str, Any]], truth: pd.DataFrame, ranked: pd.DataFrame
) -> dict[str, Any]:
    """Mark (or add, scored from ``ranked``) every planted caption; count the unscored ones."""
    scored = ranked.set_index("prompt_id")
    missing = []
    for r in truth.itertuples(index=False):
        pid = str(r.prompt_id)
        if pid not in scored.index:
            missing.append(pid)
            continue
        if pid not in rows:
            source = scored.loc[pid]
            rows[pid] = _row(pid, str(source["text"]), source["d_mem"], source["rank"])
        trigger = getattr(r, "trigger_word", None)
        trigger = trigger if isinstance(trigger, str) else None
        rows[pid].update(
            planted=True,
            planted_id=int(getattr(r, "planted_id", -1)),
            trigger_word=trigger,
            trigger_word_index=int(r.trigger_word_index) if trigger else -1,
        )
    return {
        "planted": len(truth) - len(missing),
        "planted_missing": len(missing),
        "planted_missing_ids": sorted(missing)[:20],
    }


def _row(pid: str, text: str, d_mem: Any, rank: Any, memorized: bool = False) -> dict[str, Any]:
    rank = None if rank is None or (isinstance(rank, float) and math.isnan(rank)) else int(rank)
    return {
        "prompt_id": pid,
        "text": text,
        "memorized": memorized,
        "planted": False,
        "d_mem": float(d_mem),
        "rank": rank,
        "planted_id": -1,
        "trigger_word": None,
        "trigger_word_index": -1,
    }
