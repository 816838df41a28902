"""Attribution tables: their schemas, the tables of one chunk, and the gather of the chunks.

Nothing here runs the model, so the CPU rules (gather, summaries) can use it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memaudit.attribution.spec import METHODS, WORD_SCORES
from memaudit.attribution.words import WordUnit, trigger_span, word_units
from memaudit.frames import require_columns, typed_frame

# --------------------------------------------------------------------------------------------
# Table schemas: the columns and dtypes of the four tables of a set of prompts
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
# The tables of one chunk, from its tokenization and gradient significance
# --------------------------------------------------------------------------------------------


def build_tables(
    prompts: pd.DataFrame,
    encoded: Mapping[str, Any],
    significance: np.ndarray,
    losses: np.ndarray,
    norms: np.ndarray,
    tokens_of: Callable[[list[int]], list[str]],
    markers: Sequence[re.Pattern[str]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Token, word and per-prompt tables from the tokenization and the gradient significance.

    ``prompts`` is the selection (prompt_id, text, reason, ... , trigger_word,
    trigger_word_index), in the row order of ``encoded`` (:func:`.engine.encode_with_offsets`)
    and of the :class:`.engine.Significance` arrays ``significance`` [P, L], ``losses`` [P, W]
    and ``norms`` [P, n, W]; ``tokens_of`` maps ids to token strings. Returns (tokens, words,
    per prompt).
    """
    token_rows: list[dict[str, Any]] = []
    word_rows: list[dict[str, Any]] = []
    prompt_rows: list[dict[str, Any]] = []
    for i, row in enumerate(prompts.itertuples(index=False)):
        pid, text = str(row.prompt_id), str(row.text)
        pieces = _prompt_pieces(encoded, i, pid)
        units = word_units(text, pieces.full, markers)
        sig = significance[i]
        token_rows += _token_rows(pid, pieces, units, sig, tokens_of(pieces.ids))
        trigger = row.trigger_word if isinstance(row.trigger_word, str) else None
        trigger_at = trigger_span(text, trigger, int(row.trigger_word_index)) if trigger else None
        words = _word_rows(pid, pieces, units, sig, trigger_at)
        word_rows += words
        trigger_seen = any(w["is_trigger"] and w["n_pieces_seen"] > 0 for w in words)
        prompt_rows.append(
            _prompt_row(row, pieces, units, sig, losses[i], norms[i], trigger, trigger_seen)
        )
    return (
        typed_frame(token_rows, TOKEN_COLUMNS),
        typed_frame(word_rows, WORD_COLUMNS),
        typed_frame(prompt_rows, PROMPT_COLUMNS),
    )


@dataclass(frozen=True)
class _PromptPieces:
    """One prompt's tokenization: the model's positions and the untruncated pieces.

    ``content`` lists the positions that are neither special nor padding; ``full`` holds the
    character span of every untruncated piece (special tokens left out) and ``position_of``
    maps a piece index to the position where the model sees it (absent when truncated).
    """

    ids: list[int]
    offsets: list[Any]
    special: list[bool]
    padding: list[bool]
    content: list[int]
    full: list[tuple[int, int]]
    position_of: dict[int, int]


def _prompt_pieces(encoded: Mapping[str, Any], i: int, pid: str) -> _PromptPieces:
    """Prompt ``i`` of ``encoded``, checked: its seen pieces must be a prefix of the full ones."""
    ids = encoded["input_ids"][i].tolist()
    offsets = encoded["offsets"][i]
    padding = [not a for a in encoded["attention"][i]]
    special = [s and not p for s, p in zip(encoded["special"][i], padding, strict=True)]
    content = [k for k in range(len(ids)) if not special[k] and not padding[k]]
    full = encoded["full_offsets"][i]
    if len(content) > len(full) or any(
        tuple(offsets[k]) != tuple(full[j]) for j, k in enumerate(content)
    ):
        raise ValueError(
            f"prompt {pid}: the truncated and untruncated tokenizations disagree (the "
            "tokenizer's pieces are not a prefix of each other); cannot locate words"
        )
    return _PromptPieces(ids, offsets, special, padding, content, full, dict(enumerate(content)))


def _content_total(sig: np.ndarray, pieces: _PromptPieces) -> float:
    """Summed significance of the content positions (the denominator of token shares)."""
    return float(sig[pieces.content].sum()) if pieces.content else 0.0


def _token_rows(
    pid: str,
    pieces: _PromptPieces,
    units: Sequence[WordUnit],
    sig: np.ndarray,
    token_strings: list[str],
) -> list[dict[str, Any]]:
    """One row per model position: its token, word, significance and rank among content."""
    word_of_piece = {p: u.index for u in units for p in u.pieces}
    content = pieces.content
    content_total = _content_total(sig, pieces)
    content_rank = pd.Series(sig[content]).rank(ascending=False, method="min").tolist()
    rank_of = dict(zip(content, content_rank, strict=True))
    piece_of_position = {k: j for j, k in pieces.position_of.items()}
    rows = []
    for k, token_id in enumerate(pieces.ids):
        piece = piece_of_position.get(k)
        rows.append(
            {
                "prompt_id": pid,
                "position": k,
                "token_id": int(token_id),
                "token": token_strings[k],
                "start": int(pieces.offsets[k][0]),
                "end": int(pieces.offsets[k][1]),
                "is_special": pieces.special[k],
                "is_padding": pieces.padding[k],
                "word_index": word_of_piece.get(piece, -1) if piece is not None else -1,
                "significance": float(sig[k]),
                "rank": rank_of.get(k, math.nan),
                "share": float(sig[k]) / content_total
                if k in rank_of and content_total
                else math.nan,
            }
        )
    return rows


def _word_rows(
    pid: str,
    pieces: _PromptPieces,
    units: Sequence[WordUnit],
    sig: np.ndarray,
    trigger_at: tuple[int, int] | None,
) -> list[dict[str, Any]]:
    """One row per word unit: its span, flags and the sum and max of its seen pieces."""
    rows = []
    for unit in units:
        seen_positions = [pieces.position_of[p] for p in unit.pieces if p in pieces.position_of]
        scores = sig[seen_positions] if seen_positions else np.zeros(0)
        is_trigger = bool(trigger_at and unit.start < trigger_at[1] and trigger_at[0] < unit.end)
        rows.append(
            {
                "prompt_id": pid,
                "word_index": unit.index,
                "text": unit.text,
                "word_type": unit.text.casefold(),
                "start": unit.start,
                "end": unit.end,
                "n_pieces": len(unit.pieces),
                "n_pieces_seen": len(seen_positions),
                "positions": np.asarray(seen_positions, dtype=np.int64),
                "is_marker": unit.is_marker,
                "is_punct": unit.is_punct,
                "is_trigger": is_trigger,
                "truncated": not seen_positions,
                "score_sum": float(scores.sum()) if seen_positions else math.nan,
                "score_max": float(scores.max()) if seen_positions else math.nan,
            }
        )
    return rows


def _prompt_row(
    row: Any,
    pieces: _PromptPieces,
    units: Sequence[WordUnit],
    sig: np.ndarray,
    losses: np.ndarray,
    norms: np.ndarray,
    trigger: str | None,
    trigger_seen: bool,
) -> dict[str, Any]:
    """The per-prompt row: scores, token counts, truncation and the share on special tokens."""
    total = float(sig.sum())
    content_total = _content_total(sig, pieces)
    seen = pieces.position_of
    return {
        "prompt_id": str(row.prompt_id),
        "text": str(row.text),
        "reason": row.reason,
        "memorized": bool(row.memorized),
        "planted": bool(row.planted),
        "d_mem": float(row.d_mem),
        "d_mem_window": float(norms.mean()),
        "losses": losses.astype(np.float64),
        "n_positions": len(pieces.ids),
        "n_content_tokens": len(pieces.content),
        "n_special": int(sum(pieces.special)),
        "n_padding": int(sum(pieces.padding)),
        "n_pieces_total": len(pieces.full),
        "n_words": len(units),
        "n_words_truncated": sum(1 for u in units if not any(p in seen for p in u.pieces)),
        "truncated": len(pieces.full) > len(pieces.content),
        "n_markers": sum(u.is_marker for u in units),
        "n_markers_truncated": sum(
            u.is_marker and not any(p in seen for p in u.pieces) for u in units
        ),
        "trigger_word": trigger,
        "trigger_truncated": bool(trigger) and not trigger_seen,
        "special_share": (total - content_total) / total if total > 0 else math.nan,
    }


# --------------------------------------------------------------------------------------------
# Gathering the chunks: word scores, ranks, occlusion agreement
# --------------------------------------------------------------------------------------------


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


# The other methods' word scores, as a chunk writes them (:mod:`.methods`).
METHOD_WORD_COLUMNS = {
    "prompt_id": object,
    "word_index": np.int64,
    "method": object,
    "score": np.float64,
}
# Every method's scores and ranks, gathered (:func:`method_ranks`).
METHOD_TABLE_COLUMNS = {
    "prompt_id": object,
    "word_index": np.int64,
    "method": object,
    "score": np.float64,
    "rank": np.float64,
    "n_ranked": np.int64,
    "share": np.float64,
    "text": object,
    "word_type": object,
    "start": np.int64,
    "end": np.int64,
    "n_pieces": np.int64,
    "is_marker": bool,
    "is_trigger": bool,
}


def method_ranks(words: pd.DataFrame, occlusion: pd.DataFrame, extra: pd.DataFrame) -> pd.DataFrame:
    """Every method's word scores in one long table, ranked within (prompt, method).

    ``words`` are the ranked word table (:func:`rank_words`; gradient = its ``score``),
    ``occlusion`` the deletion table (occlusion_delete = its ``drop``), ``extra`` the other
    methods' chunk rows (:mod:`.methods`). Only ranked words (not punctuation, not truncated)
    appear. ``rank`` 1 = the word that drives memorization most (ties share the best rank);
    ``share`` = score / Σ|score| over the prompt's words for that method.
    """
    ranked = words[words["rank"].notna()]
    info = ranked.set_index(["prompt_id", "word_index"])[
        ["text", "word_type", "start", "end", "n_pieces", "is_marker", "is_trigger"]
    ]
    parts = [
        ranked[["prompt_id", "word_index"]].assign(
            method="gradient", score=ranked["score"].to_numpy(dtype=np.float64)
        )
    ]
    if len(occlusion):
        parts.append(
            occlusion[["prompt_id", "word_index"]].assign(
                method="occlusion_delete", score=occlusion["drop"].to_numpy(dtype=np.float64)
            )
        )
    if len(extra):
        parts.append(extra[["prompt_id", "word_index", "method", "score"]])
    table = pd.concat(parts, ignore_index=True)
    keys = pd.MultiIndex.from_frame(table[["prompt_id", "word_index"]])
    missing = ~keys.isin(info.index)
    if missing.any():
        first = table.loc[missing, ["prompt_id", "word_index", "method"]].iloc[0].tolist()
        raise ValueError(f"method scores for a word that is not ranked: {first}")
    table = table.join(info, on=["prompt_id", "word_index"])
    groups = [table["prompt_id"], table["method"]]
    table["rank"] = table["score"].groupby(groups).rank(ascending=False, method="min")
    table["n_ranked"] = table.groupby(groups)["score"].transform("size").astype(np.int64)
    scale = table["score"].abs().groupby(groups).transform("sum")
    table["share"] = table["score"] / scale.where(scale > 0)
    order = {m: i for i, m in enumerate(_METHOD_ORDER)}
    table = table.assign(_m=table["method"].map(order).fillna(len(order)))
    table = table.sort_values(["_m", "method", "prompt_id", "word_index"], kind="mergesort")
    return typed_frame(table.drop(columns="_m").to_dict("records"), METHOD_TABLE_COLUMNS)


_METHOD_ORDER = METHODS


@dataclass
class AttributionTables:
    """The tables of one set of prompts (see :func:`.engine.attribute_prompts`); ``methods``
    holds the word scores of the methods beyond gradient and deletion (:mod:`.methods`), and,
    once gathered, of every method with its ranks (:func:`method_ranks`)."""

    tokens: pd.DataFrame
    words: pd.DataFrame
    occlusion: pd.DataFrame
    prompts: pd.DataFrame
    methods: pd.DataFrame | None = None


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
        "methods": METHOD_WORD_COLUMNS,
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
            require_columns(part, tuple(schema), f"attribution chunk {path}")
            parts.append(part)
        non_empty = [p for p in parts if len(p)]
        frames[kind] = (
            pd.concat(non_empty, ignore_index=True) if non_empty else typed_frame([], schema)
        )
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
    methods = method_ranks(words, occlusion, frames["methods"])
    return AttributionTables(tokens, words, occlusion, per_prompt, methods)
