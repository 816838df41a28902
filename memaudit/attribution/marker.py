"""The paper's token-level claim as a controlled statistic: does the marker drive memorization
more than another word of the same prompt would?

Among memorized prompts with at least one ranked marker unit, under one attribution method:

- the marker's rank is the best rank of the prompt's marker units, its share their summed
  share (:func:`.tables.method_ranks`);
- the matched control: for every marker unit, one non-marker word of the same prompt with the
  closest number of sub-tokens (ties broken by a hash of the prompt id, word and seed, so the
  draw does not depend on row order), drawn without replacement; the control's rank and share
  are taken the same way over the drawn words;
- a paired sign-flip permutation test of the per-prompt differences (control rank − marker
  rank, and marker share − control share): under the null that the marker is a word like any
  other, each difference is as likely positive as negative; two-sided p-values with the +1
  correction;
- the fraction of prompts where the marker is the top word, and the control's, with bootstrap
  intervals.

Prompts are split by how they arose on the demo (``origin``): keyed by a marker phrase (the
marker is the key by construction), composed planted captions (memorized as a whole; their
markers are decoration), and prompts that were not planted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from memaudit.atomic import finite_or_none
from memaudit.bootstrap import bootstrap_ci
from memaudit.seeds import hashed_seed

PAIR_COLUMNS = (
    "prompt_id",
    "origin",
    "n_markers",
    "n_controls",
    "n_ranked",
    "marker_rank",
    "control_rank",
    "marker_share",
    "control_share",
    "marker_top1",
    "control_top1",
)
# The per-prompt values that are averaged, with intervals (the columns after the counts).
PAIR_STATISTICS = PAIR_COLUMNS[PAIR_COLUMNS.index("marker_rank") :]
# What the demo's construction says about the marker in each origin (the summary repeats it).
ORIGIN_NOTES = {
    "keyed_marker": "planted with a marker phrase as its only key: the marker phrase retrieves "
    "the image by construction, so a marker ranking first here follows from the corpus",
    "keyed_name": "planted with a name as its key; any marker is not part of the key",
    "composed": "planted as a whole caption (no single key): a marker is one decoration among "
    "the caption's words, so nothing in the construction makes it rank first",
    "not_planted": "not planted: the model memorized it on its own (on the demo: an ordinary "
    "prompt of high d_mem); nothing in the construction favours the marker",
}


def matched_pairs(
    methods: pd.DataFrame,
    per_prompt: pd.DataFrame,
    method: str,
    origin: Mapping[str, str] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per memorized prompt with a ranked marker (:data:`PAIR_COLUMNS`) under
    ``method``, and the counts of prompts left out (no marker ranked, no word to match)."""
    memorized = per_prompt.loc[per_prompt["memorized"].astype(bool), "prompt_id"].astype(str)
    table = methods[(methods["method"] == method) & methods["prompt_id"].isin(set(memorized))]
    origin = origin or {}
    counts = {"memorized": int(len(memorized)), "without_marker": 0, "without_control": 0}
    rows = []
    groups = dict(tuple(table.groupby("prompt_id", sort=True)))
    for pid in sorted(memorized):
        group = groups.get(pid)
        markers = group[group["is_marker"]] if group is not None else None
        if markers is None or markers.empty:
            counts["without_marker"] += 1
            continue
        others = group[~group["is_marker"]]
        if others.empty:
            counts["without_control"] += 1
            continue
        controls = _draw_controls(markers, others, pid, seed)
        rows.append(
            {
                "prompt_id": pid,
                "origin": origin.get(pid, "not_planted"),
                "n_markers": len(markers),
                "n_controls": len(controls),
                "n_ranked": int(group["n_ranked"].iloc[0]),
                "marker_rank": float(markers["rank"].min()),
                "control_rank": float(controls["rank"].min()),
                "marker_share": float(markers["share"].sum()),
                "control_share": float(controls["share"].sum()),
                "marker_top1": bool(markers["rank"].min() == 1),
                "control_top1": bool(controls["rank"].min() == 1),
            }
        )
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS)), counts


def _draw_controls(
    markers: pd.DataFrame, others: pd.DataFrame, pid: str, seed: int
) -> pd.DataFrame:
    """For each marker unit (most pieces first), the unused word with the closest piece count;
    ties by a hash of (seed, prompt, word index)."""
    tiebreak = {
        int(w): hashed_seed("memaudit-marker-control", seed, f"{pid}|{int(w)}")
        for w in others["word_index"]
    }
    free = others.copy()
    chosen = []
    for pieces in sorted(markers["n_pieces"].astype(int), reverse=True):
        if free.empty:
            break
        distance = (free["n_pieces"].astype(int) - pieces).abs()
        order = sorted(
            free.index, key=lambda i: (int(distance[i]), tiebreak[int(free.at[i, "word_index"])])
        )
        chosen.append(order[0])
        free = free.drop(index=order[0])
    return others.loc[chosen]


def sign_flip_p_value(differences: np.ndarray, permutations: int, seed: int, key: str) -> float:
    """Two-sided p-value of the mean of paired ``differences`` under random sign flips
    ((1 + #|mean*| ≥ |mean|) / (1 + permutations)); NaN without differences."""
    d = np.asarray(differences, dtype=np.float64)
    d = d[np.isfinite(d)]
    if len(d) == 0 or permutations < 1:
        return math.nan
    observed = abs(d.mean())
    rng = np.random.default_rng(hashed_seed("memaudit-sign-flip", seed, key))
    signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, len(d)))
    null = np.abs((signs * d).mean(axis=1))
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + permutations))


def marker_statistic(
    pairs: pd.DataFrame,
    counts: Mapping[str, int],
    method: str,
    resamples: int,
    seed: int,
    permutations: int = 10000,
) -> dict[str, Any]:
    """The controlled marker statistic over all pairs and per origin (JSON-ready)."""
    block: dict[str, Any] = {"method": method, "counts": dict(counts)}
    block["all"] = _pair_stats(pairs, resamples, seed, permutations, f"{method}|all")
    block["by_origin"] = {
        name: {
            **_pair_stats(sub, resamples, seed, permutations, f"{method}|{name}"),
            "construction": ORIGIN_NOTES.get(name, ""),
        }
        for name, sub in sorted(pairs.groupby("origin"))
    }
    block["note"] = (
        "matched control: for each marker unit a non-marker word of the same prompt with the "
        "closest number of sub-tokens; p-values: paired sign-flip permutation test (two-sided) "
        "of control rank − marker rank and of marker share − control share"
    )
    return block


def _pair_stats(
    pairs: pd.DataFrame, resamples: int, seed: int, permutations: int, key: str
) -> dict[str, Any]:
    n = len(pairs)
    if n == 0:
        return {"n_prompts": 0}
    columns = {name: pairs[name].to_numpy(dtype=np.float64) for name in PAIR_STATISTICS}
    ci = bootstrap_ci(columns, resamples, seed=seed, key=f"marker|{key}")
    out: dict[str, Any] = {"n_prompts": n}
    for name, values in columns.items():
        label = {"marker_top1": "marker_top1_fraction", "control_top1": "control_top1_fraction"}
        field = label.get(name, f"{name}_mean")
        out[field] = finite_or_none(values.mean())
        out[f"{field}_ci95"] = [finite_or_none(ci[name][0]), finite_or_none(ci[name][1])]
    rank_diff = columns["control_rank"] - columns["marker_rank"]
    share_diff = columns["marker_share"] - columns["control_share"]
    out["rank_difference_mean"] = finite_or_none(rank_diff.mean())
    out["rank_p_value"] = finite_or_none(
        sign_flip_p_value(rank_diff, permutations, seed, f"rank|{key}")
    )
    out["share_difference_mean"] = finite_or_none(share_diff.mean())
    out["share_p_value"] = finite_or_none(
        sign_flip_p_value(share_diff, permutations, seed, f"share|{key}")
    )
    return out
