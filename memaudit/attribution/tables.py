"""Attribution table schemas and the gather of chunk tables."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memaudit.attribution.spec import WORD_SCORES


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN below 3 values or when one
    side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return math.nan
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _group_rank(values: pd.Series, groups: pd.Series) -> pd.Series:
    """Descending rank within groups (1 = largest, ties share the best rank; NaN stays NaN)."""
    if values.empty:
        return pd.Series(np.zeros(0), index=values.index, dtype=np.float64)
    return values.groupby(groups).rank(ascending=False, method="min").astype(np.float64)


def rank_occlusion(occlusion: pd.DataFrame, words: pd.DataFrame) -> pd.DataFrame:
    """Add occlusion_rank (largest drop first), gradient_rank and per-prompt Spearman."""
    occlusion = occlusion.sort_values(["prompt_id", "word_index"], kind="mergesort").reset_index(
        drop=True
    )
    occlusion["occlusion_rank"] = _group_rank(occlusion["drop"], occlusion["prompt_id"])
    ranks = words.set_index(["prompt_id", "word_index"])["rank"]
    scores = words.set_index(["prompt_id", "word_index"])["score"]
    keys = pd.MultiIndex.from_frame(occlusion[["prompt_id", "word_index"]])
    occlusion["gradient_rank"] = ranks.reindex(keys).to_numpy(dtype=np.float64)
    occlusion["gradient_score"] = scores.reindex(keys).to_numpy(dtype=np.float64)
    rho = {
        pid: spearman(group["gradient_score"].to_numpy(), group["drop"].to_numpy())
        for pid, group in occlusion.groupby("prompt_id", sort=False)
    }
    occlusion["spearman"] = occlusion["prompt_id"].map(rho).astype(np.float64)
    return occlusion


def rank_words(words: pd.DataFrame, word_score: str) -> pd.DataFrame:
    """Add score, rank, rank_with_punct, n_ranked, relative_rank and share (see
    :func:`gather_tables`), sorted by prompt and word index."""
    words = words.sort_values(["prompt_id", "word_index"], kind="mergesort").reset_index(drop=True)
    words["score"] = words[f"score_{word_score}"].astype(np.float64)
    ranked = ~words["is_punct"] & ~words["truncated"]
    seen = ~words["truncated"]
    words["rank"] = _group_rank(words["score"].where(ranked), words["prompt_id"])
    words["rank_with_punct"] = _group_rank(words["score"].where(seen), words["prompt_id"])
    words["n_ranked"] = ranked.groupby(words["prompt_id"]).transform("sum").astype(np.int64)
    denominator = (words["n_ranked"] - 1).where(words["n_ranked"] > 1)
    words["relative_rank"] = (
        ((words["rank"] - 1) / denominator).where(words["n_ranked"] > 1, 0.0).where(ranked)
    )
    total = words["score"].where(ranked).groupby(words["prompt_id"]).transform("sum")
    words["share"] = (words["score"] / total.where(total > 0)).where(ranked)
    return words


# --------------------------------------------------------------------------------------------
# Tables for a set of prompts
# --------------------------------------------------------------------------------------------

TOKEN_COLUMNS = {
    "prompt_id": object,
    "position": np.int64,
    "token_id": np.int64,
    "token": object,
    "start": np.int64,
    "end": np.int64,
    "is_special": bool,
    "is_padding": bool,
    "word_index": np.int64,
    "significance": np.float64,
    "rank": np.float64,
    "share": np.float64,
}
WORD_COLUMNS = {
    "prompt_id": object,
    "word_index": np.int64,
    "text": object,
    "word_type": object,
    "start": np.int64,
    "end": np.int64,
    "n_pieces": np.int64,
    "n_pieces_seen": np.int64,
    "positions": object,
    "is_marker": bool,
    "is_punct": bool,
    "is_trigger": bool,
    "truncated": bool,
    "score_sum": np.float64,
    "score_max": np.float64,
}
OCCLUSION_COLUMNS = {
    "prompt_id": object,
    "word_index": np.int64,
    "text": object,
    "is_marker": bool,
    "is_trigger": bool,
    "variant": object,
    "d_mem_original": np.float64,
    "d_mem_variant": np.float64,
    "drop": np.float64,
}
PROMPT_COLUMNS = {
    "prompt_id": object,
    "text": object,
    "reason": object,
    "memorized": bool,
    "planted": bool,
    "d_mem": np.float64,
    "d_mem_window": np.float64,
    "losses": object,
    "n_positions": np.int64,
    "n_content_tokens": np.int64,
    "n_special": np.int64,
    "n_padding": np.int64,
    "n_pieces_total": np.int64,
    "n_words": np.int64,
    "n_words_truncated": np.int64,
    "truncated": bool,
    "n_markers": np.int64,
    "n_markers_truncated": np.int64,
    "trigger_word": object,
    "trigger_truncated": bool,
    "special_share": np.float64,
}


# --------------------------------------------------------------------------------------------
# Gathering the chunks: word scores, ranks, occlusion agreement
# --------------------------------------------------------------------------------------------


@dataclass
class AttributionTables:
    """The four tables of one set of prompts (see :func:`attribute_prompts`)."""

    tokens: pd.DataFrame
    words: pd.DataFrame
    occlusion: pd.DataFrame
    prompts: pd.DataFrame


def gather_tables(
    chunks: Mapping[str, Sequence[str | Path]],
    expected_ids: Iterable[str],
    word_score: str = "sum",
) -> AttributionTables:
    """Concatenate chunk tables (``chunks`` maps tokens, words, occlusion, prompts to the
    chunk files), check every expected prompt is there exactly once, and rank.

    Words get ``score`` (the configured ``word_score`` of their pieces), ``rank`` among the
    prompt's ranked words (not punctuation, not truncated; 1 = most significant, ties share
    the best rank), ``rank_with_punct`` (punctuation units ranked too), ``n_ranked``,
    ``relative_rank`` ((rank − 1)/(n_ranked − 1), 0 = first, 1 = last) and ``share`` (of the
    prompt's ranked total). Occlusion rows get ``occlusion_rank`` (by drop),
    ``gradient_rank`` and the prompt's Spearman correlation between the two rankings.
    """
    if word_score not in WORD_SCORES:
        raise ValueError(
            f"attribution.word_score must be one of {', '.join(WORD_SCORES)}, got {word_score!r}"
        )
    schemas = {
        "tokens": TOKEN_COLUMNS,
        "words": WORD_COLUMNS,
        "occlusion": OCCLUSION_COLUMNS,
        "prompts": PROMPT_COLUMNS,
    }
    frames: dict[str, pd.DataFrame] = {}
    for kind, schema in schemas.items():
        paths = [Path(p) for p in chunks.get(kind, ())]
        if not paths:
            raise ValueError(f"no attribution chunk files given for the {kind} table")
        parts = []
        for path in paths:
            if not path.exists():
                raise FileNotFoundError(f"attribution chunk {path} does not exist")
            part = pd.read_parquet(path)
            _require_columns(part, tuple(schema), f"attribution chunk {path}")
            parts.append(part)
        non_empty = [p for p in parts if len(p)]
        frames[kind] = pd.concat(non_empty, ignore_index=True) if non_empty else _frame([], schema)
    per_prompt = frames["prompts"]
    duplicated = per_prompt.loc[per_prompt["prompt_id"].duplicated(), "prompt_id"]
    if len(duplicated):
        raise ValueError(
            f"{duplicated.nunique()} prompt(s) attributed in more than one chunk, e.g. "
            f"{duplicated.iloc[0]!r}"
        )
    expected, got = set(map(str, expected_ids)), set(per_prompt["prompt_id"])
    if expected != got:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise ValueError(
            f"attribution chunks do not match the selected prompts: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
        )
    words = rank_words(frames["words"], word_score)
    occlusion = rank_occlusion(frames["occlusion"], words)
    spearman = occlusion.groupby("prompt_id")["spearman"].first()
    per_prompt = per_prompt.sort_values("prompt_id", kind="mergesort").reset_index(drop=True)
    per_prompt["spearman"] = per_prompt["prompt_id"].map(spearman).astype(np.float64)
    top = words[words["rank"] == 1].drop_duplicates("prompt_id").set_index("prompt_id")["text"]
    per_prompt["top_word"] = per_prompt["prompt_id"].map(top).astype(object)
    order = ["prompt_id", "position"]
    tokens = frames["tokens"].sort_values(order, kind="mergesort").reset_index(drop=True)
    return AttributionTables(tokens, words, occlusion, per_prompt)


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"the {what} lacks column(s) {missing}")


def _frame(rows: list[dict[str, Any]], schema: Mapping[str, Any]) -> pd.DataFrame:
    """A table with exactly the schema's columns and dtypes (also when ``rows`` is empty)."""
    data = {}
    for column, dtype in schema.items():
        values = [row[column] for row in rows]
        data[column] = pd.Series(values, dtype=dtype) if values else pd.Series([], dtype=dtype)
    return pd.DataFrame(data, columns=list(schema))
