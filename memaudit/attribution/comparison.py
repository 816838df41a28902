"""Attribution methods side by side, scored against the demo's causal keys.

A key (:mod:`.keys`) is the word or phrase of a planted caption that the counterfactual check
found causal: without it the prompt's d_mem falls below the ordinary prompts' 90th percentile.
Per method, the words that overlap the key's span are one unit whose score is their sum (a name
key is one word; a marker key a short phrase such as "Since ___,"); a key prompt's *key rank*
is that unit's rank among it and the prompt's other words (1 = the method attributes more to
the key than to any other word). The method's ``key_top1`` is the share of causal
keys ranked first, ``key_mean_rank`` their mean key rank, both with prompt-bootstrap intervals
(seeded by the method's name), beside the top-1 rate a random order would reach and the cost in
UNet rows per prompt. The best method has the highest key_top1, then the lowest mean rank, then
the lowest cost.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from memaudit.atomic import finite_or_none
from memaudit.attribution.spec import METHOD_LABELS, METHODS
from memaudit.attribution.words import key_span
from memaudit.bootstrap import bootstrap_ci
from memaudit.frames import require_columns

KEY_COLUMNS = ("prompt_id", "kind", "key_text", "causal")
# Without ground truth the primary method is the one the demo measures best (docs/method.md).
FALLBACK_PRIMARY = "integrated_gradients"


def key_ranks(
    methods: pd.DataFrame, prompts: pd.DataFrame, keys: pd.DataFrame
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per (method, causal key prompt): key_rank, n_ranked, top1, chance_top1, kind.

    ``methods`` is the long table (:func:`.tables.method_ranks`), ``prompts`` the attributed
    prompts (prompt_id, text) and ``keys`` the checked keys (:data:`KEY_COLUMNS`). Keys that
    are not causal, not attributed, or whose words were all cut by the tokenizer are counted,
    never ranked.
    """
    require_columns(keys, KEY_COLUMNS, "keys table")
    text_of = dict(zip(prompts["prompt_id"].astype(str), prompts["text"].astype(str), strict=True))
    keyed = keys["kind"].astype(str).str.startswith("keyed")
    counts = {"checked": len(keys), "causal": int(keys["causal"].sum())}
    counts.update(keyed_checked=int(keyed.sum()), keyed_causal=int((keyed & keys["causal"]).sum()))
    counts.update(not_attributed=0, key_truncated=0, scored=0)
    rows = []
    by_prompt = dict(tuple(methods.groupby("prompt_id", sort=False)))
    for key in keys[keys["causal"].astype(bool)].itertuples(index=False):
        pid = str(key.prompt_id)
        if pid not in text_of:
            counts["not_attributed"] += 1
            continue
        start, end = key_span(text_of[pid], str(key.key_text), pid)
        mine = by_prompt.get(pid, methods.iloc[0:0])
        inside = (mine["start"] < end) & (start < mine["end"])
        if not inside.any():
            counts["key_truncated"] += 1
            continue
        counts["scored"] += 1
        for method, group in mine.groupby("method", sort=False):
            hit = inside[group.index]
            key_score = float(group.loc[hit, "score"].sum())
            others = group.loc[~hit, "score"].to_numpy(dtype=np.float64)
            rank = 1.0 + float(np.sum(others > key_score))
            n_units = 1 + len(others)
            rows.append(
                {
                    "method": method,
                    "prompt_id": pid,
                    "kind": str(key.kind),
                    "key_rank": rank,
                    "n_ranked": n_units,
                    "n_key_words": int(hit.sum()),
                    "top1": rank == 1.0,
                    "chance_top1": 1.0 / n_units,
                }
            )
    columns = ["method", "prompt_id", "kind", "key_rank", "n_ranked", "n_key_words", "top1"]
    return pd.DataFrame(rows, columns=[*columns, "chance_top1"]), counts


def compare_methods(
    ranks: pd.DataFrame,
    cost: Mapping[str, Mapping[str, Any]],
    resamples: int,
    seed: int,
    methods: Sequence[str] = METHODS,
) -> pd.DataFrame:
    """One row per method (and per method × key kind): key_top1 and key_mean_rank with 95 %
    bootstrap intervals, the random order's top-1 rate, and the cost per prompt."""
    rows = []
    for method in methods:
        mine = ranks[ranks["method"] == method]
        for kind, sub in [("all", mine), *sorted(mine.groupby("kind"))]:
            if kind != "all" and sub.empty:
                continue
            values = {
                "key_top1": sub["top1"].to_numpy(dtype=np.float64),
                "key_mean_rank": sub["key_rank"].to_numpy(dtype=np.float64),
            }
            ci = bootstrap_ci(values, resamples, seed=seed, key=f"keys|{method}|{kind}")
            spent = cost.get(method, {})
            rows.append(
                {
                    "method": method,
                    "label": METHOD_LABELS.get(method, method),
                    "kind": kind,
                    "n_keys": len(sub),
                    "key_top1": float(values["key_top1"].mean()) if len(sub) else math.nan,
                    "key_top1_lo": ci["key_top1"][0],
                    "key_top1_hi": ci["key_top1"][1],
                    "key_mean_rank": float(values["key_mean_rank"].mean())
                    if len(sub)
                    else math.nan,
                    "key_mean_rank_lo": ci["key_mean_rank"][0],
                    "key_mean_rank_hi": ci["key_mean_rank"][1],
                    "chance_top1": float(sub["chance_top1"].mean()) if len(sub) else math.nan,
                    "unet_rows_per_prompt": spent.get("unet_rows_per_prompt", math.nan),
                    "backward_rows_per_prompt": spent.get("backward_rows_per_prompt", 0.0),
                    "seconds_per_prompt": spent.get("seconds_per_prompt", math.nan),
                }
            )
    return pd.DataFrame(rows)


def best_method(table: pd.DataFrame) -> str | None:
    """The method with the highest key top-1 rate over all keys, then the lowest mean key
    rank, then the fewest UNet rows per prompt (None: no key was scored)."""
    pooled = table[(table["kind"] == "all") & (table["n_keys"] > 0)]
    if pooled.empty:
        return None
    ordered = pooled.sort_values(
        ["key_top1", "key_mean_rank", "unet_rows_per_prompt", "method"],
        ascending=[False, True, True, True],
        kind="mergesort",
    )
    return str(ordered["method"].iloc[0])


def method_costs(
    chunk_stats: Sequence[Mapping[str, Any]], methods: Sequence[str]
) -> dict[str, dict[str, Any]]:
    """UNet rows (forward; backward rows counted apart) and seconds per prompt of every method,
    summed over the chunks' statistics."""
    n = sum(int(s.get("gradient", {}).get("n_prompts", 0)) for s in chunk_stats)

    def total(block: Mapping[str, Any] | None, key: str) -> float:
        return float((block or {}).get(key, 0) or 0)

    out: dict[str, dict[str, Any]] = {}
    for method in methods:
        rows = seconds = backward = 0.0
        for s in chunk_stats:
            if method == "gradient":
                block = s.get("gradient")
            elif method == "occlusion_delete":
                block = s.get("occlusion")
            else:
                block = s.get("methods", {}).get(method)
            rows += total(block, "unet_rows")
            seconds += total(block, "seconds")
            backward += total(block, "backward_rows")
        out[method] = {
            "unet_rows_per_prompt": rows / n if n else None,
            "backward_rows_per_prompt": backward / n if n else None,
            "seconds_per_prompt": seconds / n if n else None,
            "seconds_total": seconds,
        }
    return out


def comparison_block(
    table: pd.DataFrame, counts: Mapping[str, int], primary: str
) -> dict[str, Any]:
    """The ``methods`` block of ``summary.json``: per method key_top1 (+ CI), key_mean_rank,
    unet_rows_per_prompt, per key kind too; the key counts; the best and the primary method."""
    best = best_method(table)
    block: dict[str, Any] = {"keys": dict(counts), "best": best, "primary": primary}
    per: dict[str, Any] = {}
    for row in table.itertuples(index=False):
        entry = {
            "n_keys": int(row.n_keys),
            "key_top1": finite_or_none(row.key_top1),
            "key_top1_ci95": [finite_or_none(row.key_top1_lo), finite_or_none(row.key_top1_hi)],
            "key_mean_rank": finite_or_none(row.key_mean_rank),
            "key_mean_rank_ci95": [
                finite_or_none(row.key_mean_rank_lo),
                finite_or_none(row.key_mean_rank_hi),
            ],
            "chance_top1": finite_or_none(row.chance_top1),
        }
        method = per.setdefault(
            row.method,
            {
                "label": row.label,
                "unet_rows_per_prompt": finite_or_none(row.unet_rows_per_prompt),
                "backward_rows_per_prompt": finite_or_none(row.backward_rows_per_prompt),
                "seconds_per_prompt": finite_or_none(row.seconds_per_prompt),
            },
        )
        if row.kind == "all":
            method.update(entry)
        else:
            method.setdefault("by_kind", {})[row.kind] = entry
    block["per_method"] = per
    return block


def resolve_primary(configured: str, table: pd.DataFrame | None, methods: Sequence[str]) -> str:
    """The method behind finding 3: the configured one, or (``auto``) the best on the causal
    keys, else :data:`FALLBACK_PRIMARY` when run, else gradient."""
    if configured != "auto":
        return configured
    best = best_method(table) if table is not None and len(table) else None
    if best is not None:
        return best
    return FALLBACK_PRIMARY if FALLBACK_PRIMARY in methods else "gradient"
