"""Which prompts are mitigated, and why."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from memaudit.mitigation.spec import SELECTION_MODES, derived_seed
from memaudit.mitigation.strategies import marker_pattern

# --------------------------------------------------------------------------------------------
# Which prompts
# --------------------------------------------------------------------------------------------

SELECTION_COLUMNS = (
    "prompt_id",
    "text",
    "marker_count",
    "has_marker",
    "memorized",
    "planted",
    "reason",
    "d_mem",
    "rank",
)


def select_prompts(
    memorized: pd.DataFrame,
    markers: Sequence[str],
    mode: str = "marker_memorized",
    sample_size: int | None = None,
    seed: int = 0,
    truth: pd.DataFrame | None = None,
    include_planted: bool = True,
    ranked: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The prompts to mitigate, sorted by prompt_id, with why each is included.

    ``mode`` ``marker_memorized`` keeps the memorized prompts with at least one marker match,
    ``memorized`` all memorized prompts. With ``truth`` (the demo's planted captions) and
    ``include_planted``, planted captions passing the same marker filter are added, since the
    demo's top 1 % holds only a handful of prompts. ``reason`` is ``memorized``, ``planted`` or
    ``memorized+planted``. ``sample_size`` keeps a seeded sample ordered by a hash of
    (seed, prompt_id), so it does not depend on row order. ``d_mem``/``rank`` come from
    ``memorized`` or, for planted prompts not memorized, from ``ranked`` (NaN without it).
    """
    if mode not in SELECTION_MODES:
        raise ValueError(f"mitigation.prompts must be one of {list(SELECTION_MODES)}, got {mode!r}")
    if sample_size is not None and (not isinstance(sample_size, int) or sample_size < 0):
        raise ValueError(f"mitigation.sample_size must be null or >= 0, got {sample_size!r}")
    pattern = marker_pattern(markers)
    for name, table in (("memorized prompts", memorized), ("truth", truth), ("ranked", ranked)):
        if table is None:
            continue
        missing = {"prompt_id", "text"} - set(table.columns)
        if missing:
            raise ValueError(f"the {name} table lacks column(s) {sorted(missing)}")
    scores: dict[str, tuple[float, float]] = {}
    for table in (ranked, memorized):
        if table is not None and {"d_mem", "rank"} <= set(table.columns):
            for pid, d, r in zip(table["prompt_id"], table["d_mem"], table["rank"], strict=True):
                scores[pid] = (float(d), float(r))
    rows: dict[str, dict[str, Any]] = {}

    def add(pid: str, text: str, memorized_flag: bool, planted_flag: bool) -> None:
        count = len(pattern.findall(text)) if pattern is not None else 0
        if mode == "marker_memorized" and count == 0:
            return
        row = rows.setdefault(
            pid,
            {
                "prompt_id": pid,
                "text": text,
                "marker_count": count,
                "has_marker": count > 0,
                "memorized": False,
                "planted": False,
            },
        )
        row["memorized"] |= memorized_flag
        row["planted"] |= planted_flag

    for pid, text in zip(memorized["prompt_id"], memorized["text"], strict=True):
        add(str(pid), str(text), True, False)
    if truth is not None and include_planted:
        for pid, text in zip(truth["prompt_id"], truth["text"], strict=True):
            add(str(pid), str(text), False, True)
    ids = sorted(rows)
    if sample_size is not None:
        order = sorted(ids, key=lambda p: derived_seed(seed, "sample", p))
        ids = sorted(order[:sample_size])
    table = pd.DataFrame([rows[p] for p in ids], columns=list(SELECTION_COLUMNS[:6]))
    table["reason"] = [
        "memorized+planted" if m and p else "memorized" if m else "planted"
        for m, p in zip(table["memorized"], table["planted"], strict=True)
    ]
    table["d_mem"] = [scores.get(p, (math.nan, math.nan))[0] for p in table["prompt_id"]]
    table["rank"] = [scores.get(p, (math.nan, math.nan))[1] for p in table["prompt_id"]]
    return table.astype(
        {"marker_count": "int64", "has_marker": bool, "memorized": bool, "planted": bool}
    ).reset_index(drop=True)
