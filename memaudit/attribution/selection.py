"""Which prompts are attributed, and why."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from memaudit.attribution.tables import _frame, _require_columns

REASONS = ("memorized", "planted", "both")


# --------------------------------------------------------------------------------------------
# Which prompts
# --------------------------------------------------------------------------------------------

SELECTION_COLUMNS = {
    "prompt_id": object,
    "text": object,
    "reason": object,
    "memorized": bool,
    "planted": bool,
    "d_mem": np.float64,
    "score_rank": "Int64",
    "planted_id": np.int64,
    "trigger_word": object,
    "trigger_word_index": np.int64,
}


def select_prompts(
    memorized: pd.DataFrame,
    ranked: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    include_planted: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The prompts to attribute, with why each is included; returns (table, counts).

    ``memorized`` is the threshold stage's memorized table (prompt_id, text, d_mem, rank).
    With ``truth`` (the demo's planted captions) and ``include_planted``, every planted prompt
    is added too, with its text, d_mem and rank from ``ranked`` (all scored prompts), so the
    trigger-word ground truth can be evaluated; ``reason`` is memorized, planted or both.
    Planted prompts missing from ``ranked`` are skipped and counted. Sorted by prompt_id.
    """
    _require_columns(memorized, ("prompt_id", "text", "d_mem", "rank"), "memorized prompts table")
    rows = {
        str(r.prompt_id): {
            "prompt_id": str(r.prompt_id),
            "text": str(r.text),
            "memorized": True,
            "planted": False,
            "d_mem": float(r.d_mem),
            "score_rank": int(r.rank),
            "planted_id": -1,
            "trigger_word": None,
            "trigger_word_index": -1,
        }
        for r in memorized.itertuples(index=False)
    }
    counts: dict[str, Any] = {"memorized": len(rows), "planted": 0, "planted_missing": 0}
    use_truth = truth is not None and include_planted
    if use_truth:
        _require_columns(
            truth,
            ("planted_id", "prompt_id", "trigger_word", "trigger_word_index"),
            "truth table",
        )
        if ranked is None:
            raise ValueError("planted prompts need the ranked prompts table (text, d_mem, rank)")
        _require_columns(ranked, ("prompt_id", "text", "d_mem", "rank"), "ranked prompts table")
        scored = ranked.set_index("prompt_id")
        missing = []
        for r in truth.itertuples(index=False):
            pid = str(r.prompt_id)
            if pid not in scored.index:
                missing.append(pid)
                continue
            trigger = r.trigger_word if isinstance(r.trigger_word, str) else None
            row = rows.get(pid)
            if row is None:
                source = scored.loc[pid]
                row = rows[pid] = {
                    "prompt_id": pid,
                    "text": str(source["text"]),
                    "memorized": False,
                    "d_mem": float(source["d_mem"]),
                    "score_rank": int(source["rank"]),
                }
            row.update(
                planted=True,
                planted_id=int(r.planted_id),
                trigger_word=trigger,
                trigger_word_index=int(r.trigger_word_index) if trigger else -1,
            )
        counts["planted"] = int(len(truth) - len(missing))
        counts["planted_missing"] = len(missing)
        counts["planted_missing_ids"] = sorted(missing)[:20]
    for row in rows.values():
        row["reason"] = (
            "both"
            if row["memorized"] and row["planted"]
            else ("memorized" if row["memorized"] else "planted")
        )
    table = _frame(list(rows.values()), SELECTION_COLUMNS)
    table = table.sort_values("prompt_id", kind="mergesort").reset_index(drop=True)
    counts.update(
        attributed=len(table),
        by_reason={r: int((table["reason"] == r).sum()) for r in REASONS},
        planted_included=bool(use_truth),
        planted_with_trigger=int(table["trigger_word"].notna().sum()),
    )
    return table, counts
