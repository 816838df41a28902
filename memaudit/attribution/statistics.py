"""Attribution statistics: word ranks, word types, the planted-trigger check, bootstrap CIs.

Per word type (and pooled over all markers, and on the demo over all planted trigger words):
the best rank of the type in each prompt, the fraction of prompts where it ranks first, its
share of the prompt's significance, with bootstrap confidence intervals over prompts (seeded by
the type's name, not by row order), under both methods (gradient significance and occlusion).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from memaudit.atomic import finite_or_none, json_safe
from memaudit.attribution.comparison import (
    compare_methods,
    comparison_block,
    key_ranks,
    method_costs,
    resolve_primary,
)
from memaudit.attribution.marker import marker_statistic, matched_pairs
from memaudit.attribution.spec import AttributionSpec
from memaudit.attribution.tables import spearman
from memaudit.bootstrap import bootstrap_ci
from memaudit.selection import REASONS

MARKER_TYPE = "<marker>"
TRIGGER_TYPE = "<trigger>"
METHODS = ("gradient", "occlusion")


# --------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------

TYPE_STAT_COLUMNS = (
    "population",
    "method",
    "group",
    "word_type",
    "is_marker",
    "is_trigger",
    "n_prompts",
    "n_occurrences",
    "mean_rank",
    "mean_rank_lo",
    "mean_rank_hi",
    "mean_relative_rank",
    "mean_relative_rank_lo",
    "mean_relative_rank_hi",
    "frac_top1",
    "frac_top1_lo",
    "frac_top1_hi",
    "chance_top1",
    "mean_share",
    "mean_share_lo",
    "mean_share_hi",
)


def prompt_type_ranks(
    words: pd.DataFrame, occlusion: pd.DataFrame, prompt_ids: Iterable[str], method: str
) -> pd.DataFrame:
    """One row per (prompt, word type) among ``prompt_ids``: the type's best rank in the
    prompt, whether it is first, its summed share and its chance of ranking first.

    ``method`` gradient ranks words by significance (share = of the prompt's significance);
    occlusion ranks them by d_mem drop (share = drop / d_mem of the original prompt). Marker
    units are pooled as ``<marker>`` (group marker) and trigger units as ``<trigger>`` (group
    trigger); every other ranked word counts under its lower-case text (group word). The
    chance of ranking first is occurrences / ranked words (a random order's top-1 rate).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    ids = set(map(str, prompt_ids))
    if method == "gradient":
        table = words[words["rank"].notna() & words["prompt_id"].isin(ids)]
        table = table.assign(value=table["share"])
        rank_column = "rank"
        n_ranked = table.groupby("prompt_id")["word_index"].transform("size")
        types = table["word_type"]
    else:
        table = occlusion[occlusion["prompt_id"].isin(ids)]
        original = table["d_mem_original"].where(table["d_mem_original"] > 0)
        table = table.assign(value=table["drop"] / original)
        rank_column = "occlusion_rank"
        n_ranked = table.groupby("prompt_id")["word_index"].transform("size")
        types = table["text"].astype(str).str.casefold()
    group = np.where(table["is_marker"], "marker", np.where(table["is_trigger"], "trigger", "word"))
    word_type = np.where(
        table["is_marker"], MARKER_TYPE, np.where(table["is_trigger"], TRIGGER_TYPE, types)
    )
    frame = pd.DataFrame(
        {
            "prompt_id": table["prompt_id"].to_numpy(),
            "group": group,
            "word_type": word_type,
            "rank": table[rank_column].to_numpy(dtype=np.float64),
            "value": table["value"].to_numpy(dtype=np.float64),
            "n_ranked": n_ranked.to_numpy(dtype=np.int64),
        }
    )
    per = frame.groupby(["prompt_id", "group", "word_type"], sort=True).agg(
        best_rank=("rank", "min"),
        share=("value", "sum"),
        count=("rank", "size"),
        n_ranked=("n_ranked", "first"),
    )
    per = per.reset_index()
    per["top1"] = per["best_rank"] == 1
    per["relative_rank"] = np.where(
        per["n_ranked"] > 1, (per["best_rank"] - 1) / (per["n_ranked"] - 1).clip(lower=1), 0.0
    )
    per["chance_top1"] = per["count"] / per["n_ranked"]
    return per


def word_type_stats(
    per_prompt: pd.DataFrame,
    population: str,
    method: str,
    min_prompts: int = 3,
    resamples: int = 1000,
    seed: int = 0,
    pooled: Sequence[str] = ("marker",),
) -> pd.DataFrame:
    """Aggregate :func:`prompt_type_ranks` rows per word type, with bootstrap intervals.

    Word types need ``min_prompts`` prompts; pooled groups (marker, trigger) are listed
    whenever they occur, and those in ``pooled`` always get a row, with NaN statistics when no
    prompt has one.
    """
    rows = []
    groups = dict(tuple(per_prompt.groupby(["group", "word_type"], sort=True)))
    for name in pooled:
        label = {"marker": MARKER_TYPE, "trigger": TRIGGER_TYPE}[name]
        groups.setdefault((name, label), per_prompt.iloc[0:0])
    for (group, word_type), sub in sorted(groups.items()):
        if group == "word" and len(sub) < min_prompts:
            continue
        values = {
            "mean_rank": sub["best_rank"].to_numpy(dtype=np.float64),
            "mean_relative_rank": sub["relative_rank"].to_numpy(dtype=np.float64),
            "frac_top1": sub["top1"].to_numpy(dtype=np.float64),
            "mean_share": sub["share"].to_numpy(dtype=np.float64),
        }
        ci = bootstrap_ci(
            values, resamples, seed=seed, key=f"{population}|{method}|{group}|{word_type}"
        )
        row: dict[str, Any] = {
            "population": population,
            "method": method,
            "group": group,
            "word_type": word_type,
            "is_marker": group == "marker",
            "is_trigger": group == "trigger",
            "n_prompts": len(sub),
            "n_occurrences": int(sub["count"].sum()) if len(sub) else 0,
            "chance_top1": float(sub["chance_top1"].mean()) if len(sub) else math.nan,
        }
        for name, array in values.items():
            row[name] = (
                float(np.nanmean(array)) if len(array) and np.isfinite(array).any() else math.nan
            )
            row[f"{name}_lo"], row[f"{name}_hi"] = ci[name]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TYPE_STAT_COLUMNS))


def populations(per_prompt: pd.DataFrame) -> dict[str, list[str]]:
    """Prompt ids of each population: memorized (finding 3) and, when any, planted (demo)."""
    out = {"memorized": per_prompt.loc[per_prompt["memorized"], "prompt_id"].tolist()}
    if per_prompt["planted"].any():
        out["planted"] = per_prompt.loc[per_prompt["planted"], "prompt_id"].tolist()
    return out


def word_type_table(
    words: pd.DataFrame,
    occlusion: pd.DataFrame,
    per_prompt: pd.DataFrame,
    spec: AttributionSpec,
) -> pd.DataFrame:
    """Word-type statistics for every population and both methods (the shareable table)."""
    frames = []
    with_trigger = bool(per_prompt["trigger_word"].notna().any())
    for population, ids in populations(per_prompt).items():
        pooled = ("marker", "trigger") if with_trigger and population == "planted" else ("marker",)
        for method in METHODS:
            per = prompt_type_ranks(words, occlusion, ids, method)
            frames.append(
                word_type_stats(
                    per, population, method, spec.min_prompts, spec.bootstrap, spec.seed, pooled
                )
            )
    table = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TYPE_STAT_COLUMNS)
    )
    return table.sort_values(
        ["population", "method", "group", "frac_top1", "mean_rank", "word_type"],
        ascending=[True, True, True, False, True, True],
        kind="mergesort",
    ).reset_index(drop=True)


def _method_block(per: pd.DataFrame, stats_row: pd.Series | None) -> dict[str, Any]:
    """JSON block of one pooled group under one method: stats, intervals, rank histogram."""
    block: dict[str, Any] = {"n_prompts": int(len(per))}
    if stats_row is not None:
        for name in ("frac_top1", "mean_rank", "mean_relative_rank", "mean_share"):
            block[name] = finite_or_none(stats_row[name])
            block[f"{name}_ci95"] = [
                finite_or_none(stats_row[f"{name}_lo"]),
                finite_or_none(stats_row[f"{name}_hi"]),
            ]
        block["chance_top1"] = finite_or_none(stats_row["chance_top1"])
    counts = per["best_rank"].astype(int).value_counts().sort_index()
    block["rank_counts"] = {str(k): int(v) for k, v in counts.items()}
    return block


def summarize_attribution(
    words: pd.DataFrame,
    occlusion: pd.DataFrame,
    per_prompt: pd.DataFrame,
    word_types: pd.DataFrame,
    selection: Mapping[str, Any],
    chunk_stats: Sequence[Mapping[str, Any]],
    spec: AttributionSpec,
    methods: pd.DataFrame | None = None,
    keys: pd.DataFrame | None = None,
    origin: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Finding 3 in numbers (``summary.json``): marker statistics in memorized prompts (both
    methods), trigger statistics on the demo (both methods, per prompt too), agreement between
    the methods, truncation counts, position bias and the cost per prompt.

    With the long ``methods`` table (:func:`.tables.method_ranks`): every method scored
    against the demo's causal ``keys`` (:mod:`.comparison`, block ``methods``), the primary
    method chosen, and the controlled marker statistic under it (:mod:`.marker`, block
    ``marker_controlled``); ``origin`` maps planted prompt ids to their kind."""
    # 1. Settings and counts
    summary: dict[str, Any] = {
        "settings": {**dataclasses.asdict(spec), "window": list(spec.window)},
        "selection": dict(selection),
        "n_prompts": {
            "attributed": int(len(per_prompt)),
            **{r: int((per_prompt["reason"] == r).sum()) for r in REASONS},
        },
    }
    if len(per_prompt) == 0:
        summary["empty"] = True
        summary["note"] = "no prompts to attribute: the memorized table is empty" + (
            "" if selection.get("planted_included") else " and no planted prompts were added"
        )
        summary["cost"] = _cost(chunk_stats)
        return json_safe(summary)
    summary["empty"] = False
    # 2. What the tokenizer cut off, and the significance on special positions
    summary["truncation"] = {
        "prompts_truncated": int(per_prompt["truncated"].sum()),
        "words_truncated": int(per_prompt["n_words_truncated"].sum()),
        "markers_truncated": int(per_prompt["n_markers_truncated"].sum()),
        "triggers_truncated": int(per_prompt["trigger_truncated"].sum()),
        "truncated_words": _truncated_words(words),
    }
    summary["special_positions_share"] = {
        "mean": finite_or_none(per_prompt["special_share"].mean()),
        "note": "share of the summed token significance on special and padding positions "
        "(excluded from ranks; padding is attended by the text encoder)",
    }
    # 3. The pooled marker per population, and the planted triggers
    markers, triggers = _marker_and_trigger_blocks(words, occlusion, per_prompt, word_types)
    summary["marker"] = markers
    if triggers:
        summary["trigger"] = {**triggers, "per_prompt": _trigger_rows(words, occlusion, per_prompt)}
    # 4. Agreement of the methods, position bias, the leading word types, cost
    rho = per_prompt["spearman"].dropna()
    summary["agreement"] = {
        "n_prompts": int(len(rho)),
        "spearman_median": finite_or_none(rho.median()) if len(rho) else None,
        "spearman_mean": finite_or_none(rho.mean()) if len(rho) else None,
        "note": "Spearman correlation per prompt between gradient significance and occlusion "
        "drop over its ranked words",
    }
    summary["position_bias"] = _position_bias(words)
    summary["top_word_types"] = (
        word_types[
            (word_types["population"] == "memorized")
            & (word_types["method"] == "gradient")
            & (word_types["n_prompts"] > 0)
        ]
        .head(10)[["word_type", "n_prompts", "frac_top1", "mean_rank", "mean_share"]]
        .to_dict(orient="records")
    )
    summary["cost"] = _cost(chunk_stats)
    if methods is not None:
        summary.update(
            _method_and_marker_blocks(methods, per_prompt, keys, origin, chunk_stats, spec)
        )
    return json_safe(summary)


def method_comparison(
    methods: pd.DataFrame,
    per_prompt: pd.DataFrame,
    keys: pd.DataFrame | None,
    chunk_stats: Sequence[Mapping[str, Any]],
    spec: AttributionSpec,
) -> tuple[pd.DataFrame, dict[str, int]]:
    """The methods-by-keys table (:func:`.comparison.compare_methods`) and the key counts;
    an empty table without ground truth."""
    if keys is None:
        return pd.DataFrame(columns=["method", "kind", "n_keys"]), {}
    ranks, counts = key_ranks(methods, per_prompt, keys)
    cost = method_costs(chunk_stats, spec.methods)
    return compare_methods(ranks, cost, spec.bootstrap, spec.seed, spec.methods), counts


def _method_and_marker_blocks(
    methods: pd.DataFrame,
    per_prompt: pd.DataFrame,
    keys: pd.DataFrame | None,
    origin: Mapping[str, str] | None,
    chunk_stats: Sequence[Mapping[str, Any]],
    spec: AttributionSpec,
) -> dict[str, Any]:
    table, counts = method_comparison(methods, per_prompt, keys, chunk_stats, spec)
    primary = resolve_primary(spec.primary, table if keys is not None else None, spec.methods)
    out: dict[str, Any] = {"primary_method": primary}
    if keys is not None:
        out["methods"] = comparison_block(table, counts, primary)
    else:
        out["methods"] = {
            "primary": primary,
            "per_method": method_costs(chunk_stats, spec.methods),
            "note": "no ground truth (not the demo): the methods' key scores need the demo",
        }
    # The word types of memorized prompts under the primary method (the report's table).
    memorized = per_prompt.loc[per_prompt["memorized"], "prompt_id"].tolist()
    chosen = methods[methods["method"] == primary]
    per = prompt_type_ranks(chosen, pd.DataFrame(), memorized, "gradient")
    types = word_type_stats(per, "memorized", primary, spec.min_prompts, spec.bootstrap, spec.seed)
    types = types[types["n_prompts"] > 0].sort_values(
        ["frac_top1", "mean_rank", "word_type"], ascending=[False, True, True], kind="mergesort"
    )
    out["top_word_types"] = types.head(10)[
        ["word_type", "n_prompts", "frac_top1", "mean_rank", "mean_share"]
    ].to_dict(orient="records")
    out["top_word_types_method"] = primary
    pairs, pair_counts = matched_pairs(methods, per_prompt, primary, origin, spec.seed)
    out["marker_controlled"] = marker_statistic(
        pairs, pair_counts, primary, spec.bootstrap, spec.seed
    )
    ranked = methods[methods["method"] == "gradient"].groupby("prompt_id").size()
    out["no_ranked_words"] = {
        "n_prompts": int((~per_prompt["prompt_id"].isin(ranked.index)).sum()),
        "note": "prompts whose words are all punctuation (or cut by the tokenizer): no word to "
        "rank, counted and left out of every statistic",
    }
    return out


def _marker_and_trigger_blocks(
    words: pd.DataFrame,
    occlusion: pd.DataFrame,
    per_prompt: pd.DataFrame,
    word_types: pd.DataFrame,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per population, the pooled marker under both methods and its place among the listed
    word types; on the demo (planted prompts with a trigger), the pooled trigger per method."""
    markers: dict[str, Any] = {}
    triggers: dict[str, Any] = {}
    for population, ids in populations(per_prompt).items():
        with_marker = per_prompt[
            per_prompt["prompt_id"].isin(ids)
            & (per_prompt["n_markers"] > per_prompt["n_markers_truncated"])
        ]
        entry: dict[str, Any] = {
            "n_prompts": len(ids),
            "n_with_marker": int(len(with_marker)),
        }
        for method in METHODS:
            per = prompt_type_ranks(words, occlusion, ids, method)
            stats = _stats_row(word_types, population, method, MARKER_TYPE)
            entry[method] = _method_block(per[per["group"] == "marker"], stats)
            listed = word_types[
                (word_types["population"] == population) & (word_types["method"] == method)
            ]
            listed = listed[listed["n_prompts"] > 0].sort_values(
                ["frac_top1", "mean_rank"], ascending=[False, True], kind="mergesort"
            )
            types = listed["word_type"].tolist()
            entry[method]["position_among_types_by_top1"] = (
                types.index(MARKER_TYPE) + 1 if MARKER_TYPE in types else None
            )
            entry[method]["n_types_listed"] = len(types)
            if population == "planted" and per_prompt["trigger_word"].notna().any():
                stats = _stats_row(word_types, population, method, TRIGGER_TYPE)
                triggers[method] = _method_block(per[per["group"] == "trigger"], stats)
        markers[population] = entry
    return markers, triggers


def _stats_row(
    table: pd.DataFrame, population: str, method: str, word_type: str
) -> pd.Series | None:
    hit = table[
        (table["population"] == population)
        & (table["method"] == method)
        & (table["word_type"] == word_type)
    ]
    return hit.iloc[0] if len(hit) else None


def _trigger_rows(
    words: pd.DataFrame, occlusion: pd.DataFrame, per_prompt: pd.DataFrame
) -> list[dict[str, Any]]:
    """Per planted prompt with a trigger: its ranks under both methods and where it sits."""
    rows = []
    planted = per_prompt[per_prompt["trigger_word"].notna()]
    for r in planted.itertuples(index=False):
        unit = words[(words["prompt_id"] == r.prompt_id) & words["is_trigger"]]
        occl = occlusion[(occlusion["prompt_id"] == r.prompt_id) & occlusion["is_trigger"]]
        ranked = words[(words["prompt_id"] == r.prompt_id) & words["rank"].notna()]
        order = ranked["word_index"].tolist()
        index = int(unit["word_index"].iloc[0]) if len(unit) else None
        top = ranked.sort_values("rank", kind="mergesort").head(1)
        rows.append(
            {
                "prompt_id": r.prompt_id,
                "memorized": bool(r.memorized),
                "trigger_truncated": bool(r.trigger_truncated),
                "n_ranked_words": len(order),
                "trigger_word_position": order.index(index) if index in order else None,
                "gradient_rank": finite_or_none(unit["rank"].min()) if len(unit) else None,
                "occlusion_rank": finite_or_none(occl["occlusion_rank"].min())
                if len(occl)
                else None,
                "gradient_share": finite_or_none(unit["share"].sum()) if len(unit) else None,
                "top_word_type": MARKER_TYPE
                if len(top) and bool(top["is_marker"].iloc[0])
                else (str(top["word_type"].iloc[0]) if len(top) else None),
                "spearman": finite_or_none(r.spearman),
            }
        )
    return rows


def _truncated_words(words: pd.DataFrame, limit: int = 50) -> list[dict[str, Any]]:
    """The words the tokenizer cut off, named per prompt (at most ``limit`` prompts): they
    get no score and no rank."""
    cut = words[words["truncated"] & ~words["is_punct"]]
    return [
        {"prompt_id": pid, "words": group.sort_values("word_index")["text"].tolist()}
        for pid, group in list(cut.groupby("prompt_id", sort=True))[:limit]
    ]


def _position_bias(words: pd.DataFrame) -> dict[str, Any]:
    """Does significance follow the word's position? Per prompt, Spearman between position
    (order among ranked words) and score; and where the top word sits (relative position)."""
    ranked = words[words["rank"].notna()]
    rhos, top_positions = [], []
    for _pid, group in ranked.groupby("prompt_id", sort=True):
        position = np.arange(len(group), dtype=np.float64)
        rhos.append(spearman(position, group["score"].to_numpy()))
        if len(group) > 1:
            top = int(np.argmin(group["rank"].to_numpy()))
            top_positions.append(top / (len(group) - 1))
    rhos_arr = np.asarray([r for r in rhos if np.isfinite(r)])
    return {
        "n_prompts": int(len(rhos_arr)),
        "spearman_position_vs_score_mean": finite_or_none(rhos_arr.mean())
        if len(rhos_arr)
        else None,
        "top_word_relative_position_mean": finite_or_none(np.mean(top_positions))
        if top_positions
        else None,
        "top_word_relative_position_hist": np.histogram(top_positions, bins=5, range=(0, 1))[
            0
        ].tolist()
        if top_positions
        else [],
        "note": "position = order among the prompt's ranked words (0 = first, 1 = last); "
        "a negative Spearman means earlier words score higher",
    }


def _cost(chunk_stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds and UNet rows per prompt for both methods, summed over chunks."""
    n = sum(int(s.get("gradient", {}).get("n_prompts", 0)) for s in chunk_stats)

    def total(method: str, key: str) -> float:
        return float(sum(float(s.get(method, {}).get(key, 0) or 0) for s in chunk_stats))

    devices = sorted({str(s.get("device")) for s in chunk_stats if s.get("device")})
    variants = total("occlusion", "n_variants")
    return {
        "devices": devices,
        "dtypes": sorted({str(s.get("dtype")) for s in chunk_stats if s.get("dtype")}),
        "n_chunks": len(chunk_stats),
        "n_prompts": n,
        "gradient_seconds_per_prompt": total("gradient", "seconds") / n if n else None,
        "gradient_unet_rows_per_prompt": total("gradient", "unet_rows") / n if n else None,
        "occlusion_seconds_per_prompt": total("occlusion", "seconds") / n if n else None,
        "occlusion_unet_rows_per_prompt": total("occlusion", "unet_rows") / n if n else None,
        "occlusion_variants_per_prompt": variants / n if n else None,
        "gradient_seconds_total": total("gradient", "seconds"),
        "occlusion_seconds_total": total("occlusion", "seconds"),
        "oom_halvings": int(total("gradient", "oom_halvings")),
    }
