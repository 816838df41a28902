"""Tests of the methods' scoring against causal keys and of the controlled marker statistic, on
hand-made tables (no model)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memaudit.attribution.comparison import (
    best_method,
    compare_methods,
    key_ranks,
    resolve_primary,
)
from memaudit.attribution.marker import marker_statistic, matched_pairs, sign_flip_p_value
from memaudit.attribution.tables import method_ranks, rank_words
from memaudit.attribution.words import word_units
from memaudit.text import compile_markers

MARKERS = compile_markers(["___"])


def _words(pid: str, text: str, scores: dict[str, float]) -> list[dict]:
    """Word rows of one prompt from whitespace pieces (one piece per word, punctuation split
    off by word_units), each word scored by ``scores`` (default 0.1)."""
    import re

    offsets = [m.span() for m in re.finditer(r"_+|[A-Za-z]+|[^\sA-Za-z_]", text)]
    rows = []
    for unit in word_units(text, offsets, MARKERS):
        rows.append(
            {
                "prompt_id": pid,
                "word_index": unit.index,
                "text": unit.text,
                "word_type": unit.text.casefold(),
                "start": unit.start,
                "end": unit.end,
                "n_pieces": len(unit.pieces),
                "n_pieces_seen": len(unit.pieces),
                "positions": np.asarray(unit.pieces),
                "is_marker": unit.is_marker,
                "is_punct": unit.is_punct,
                "is_trigger": False,
                "truncated": False,
                "score_sum": scores.get(unit.text, 0.1),
                "score_max": scores.get(unit.text, 0.1),
            }
        )
    return rows


PROMPTS = {
    "k1": ("No acute Vobrak cardiopulmonary process.", {"Vobrak": 3.0, "acute": 1.0}),
    "k2": ("No acute cardiopulmonary process. Dr. ___ was notified.", {"notified": 2.0}),
    "k3": ("No acute Zelmir process.", {"acute": 2.0, "Zelmir": 1.0}),
}


def _tables(extra_scores: dict[str, dict[str, float]] | None = None):
    words = rank_words(
        pd.DataFrame([r for pid, (t, sc) in PROMPTS.items() for r in _words(pid, t, sc)]),
        "sum",
    )
    rows = []
    for method, by_word in (extra_scores or {}).items():
        for r in words[words["rank"].notna()].itertuples(index=False):
            rows.append(
                {
                    "prompt_id": r.prompt_id,
                    "word_index": r.word_index,
                    "method": method,
                    "score": by_word.get(r.text, 0.0),
                }
            )
    extra = pd.DataFrame(rows, columns=["prompt_id", "word_index", "method", "score"])
    table = method_ranks(words, pd.DataFrame(), extra)
    prompts = pd.DataFrame({"prompt_id": list(PROMPTS), "text": [t for t, _ in PROMPTS.values()]})
    return table, prompts


KEYS = pd.DataFrame(
    {
        "prompt_id": ["k1", "k2", "k3", "k9"],
        "kind": ["keyed_name", "keyed_marker", "keyed_name", "keyed_name"],
        "key_text": ["Vobrak", "Dr. ___ was notified.", "Zelmir", "Absent"],
        "causal": [True, True, True, False],
    }
)


def test_key_ranks_use_the_key_span_and_count_what_is_left_out() -> None:
    table, prompts = _tables({"integrated_gradients": {"Vobrak": 1.0, "Zelmir": 1.0, "___": 1.0}})
    ranks, counts = key_ranks(table, prompts, KEYS)
    assert counts == {
        "checked": 4,
        "causal": 3,
        "keyed_checked": 4,
        "keyed_causal": 3,
        "not_attributed": 0,
        "key_truncated": 0,
        "scored": 3,
    }
    gradient = ranks[ranks["method"] == "gradient"].set_index("prompt_id")
    # k1: the key is the top word; k2: the key phrase's words together (2.3) lead; k3: rank 2.
    assert gradient.loc["k1", "key_rank"] == 1 and gradient.loc["k2", "key_rank"] == 1
    assert gradient.loc["k3", "key_rank"] == 2
    assert gradient.loc["k2", "n_key_words"] == 4  # Dr, ___, was, notified: one unit
    assert gradient.loc["k2", "n_ranked"] == 5 and gradient.loc["k2", "chance_top1"] == 0.2
    ig = ranks[ranks["method"] == "integrated_gradients"]
    assert ig["top1"].all()
    table_cmp = compare_methods(
        ranks,
        {
            "gradient": {"unet_rows_per_prompt": 8},
            "integrated_gradients": {"unet_rows_per_prompt": 200},
        },
        resamples=200,
        seed=0,
        methods=("gradient", "integrated_gradients"),
    )
    pooled = table_cmp[table_cmp["kind"] == "all"].set_index("method")
    assert pooled.loc["gradient", "key_top1"] == pytest.approx(2 / 3)
    assert pooled.loc["gradient", "key_mean_rank"] == pytest.approx(4 / 3)
    assert pooled.loc["integrated_gradients", "key_top1"] == 1.0
    assert (
        0 <= pooled.loc["gradient", "key_top1_lo"] <= 2 / 3 <= pooled.loc["gradient", "key_top1_hi"]
    )
    assert set(table_cmp["kind"]) == {"all", "keyed_name", "keyed_marker"}
    assert best_method(table_cmp) == "integrated_gradients"
    assert resolve_primary("auto", table_cmp, ["gradient", "integrated_gradients"]) == (
        "integrated_gradients"
    )
    assert resolve_primary("gradient", table_cmp, ["gradient"]) == "gradient"
    # A tie on top-1 and rank goes to the cheaper method.
    tied = table_cmp.assign(key_top1=1.0, key_mean_rank=1.0)
    assert best_method(tied) == "gradient"


def test_a_key_that_occurs_twice_fails_naming_the_prompt() -> None:
    table, prompts = _tables()
    bad = KEYS.assign(key_text=["No", "Dr. ___ was notified.", "Zelmir", "x"])
    with pytest.raises(ValueError, match="k1"):
        key_ranks(table, prompts, bad.assign(key_text=["o", *bad["key_text"][1:]]))


MARKED = "Findings discussed with Dr. ___ today."
MARKED_WORDS = ("Findings", "discussed", "with", "Dr", "___", "today")


def _marker_table(n: int, marker_first: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    """n memorized prompts with one marker: the marker leads in all of them, or the lead
    (and the rank order) rotates over the six words so the marker is a word like the rest."""
    rows = []
    for i in range(n):
        if marker_first:
            scores = {"___": 5.0}
        else:
            order = MARKED_WORDS[i % 6 :] + MARKED_WORDS[: i % 6]
            scores = {w: 6.0 - k for k, w in enumerate(order)}
        rows += _words(f"p{i:03d}", MARKED, scores)
    words = rank_words(pd.DataFrame(rows), "sum")
    table = method_ranks(words, pd.DataFrame(), pd.DataFrame())
    per_prompt = pd.DataFrame({"prompt_id": sorted(set(words["prompt_id"])), "memorized": True})
    return table, per_prompt


def test_controlled_marker_statistic_detects_a_marker_that_always_leads() -> None:
    table, per_prompt = _marker_table(30, marker_first=True)
    pairs, counts = matched_pairs(table, per_prompt, "gradient", {"p000": "keyed_marker"}, seed=1)
    assert counts == {"memorized": 30, "without_marker": 0, "without_control": 0}
    assert pairs["marker_top1"].all() and not pairs["control_top1"].any()
    assert (pairs["n_controls"] == 1).all()
    stats = marker_statistic(pairs, counts, "gradient", resamples=200, seed=0, permutations=2000)
    assert stats["all"]["marker_top1_fraction"] == 1.0
    assert stats["all"]["rank_p_value"] < 0.01
    assert stats["by_origin"]["keyed_marker"]["n_prompts"] == 1
    assert "by construction" in stats["by_origin"]["keyed_marker"]["construction"]
    # The control is drawn by a hash, not by row order: same draw after shuffling the rows.
    shuffled, _ = matched_pairs(table.sample(frac=1, random_state=3), per_prompt, "gradient")
    pd.testing.assert_series_equal(shuffled["control_rank"], pairs["control_rank"])


def test_controlled_marker_statistic_finds_nothing_when_the_marker_is_ordinary() -> None:
    table, per_prompt = _marker_table(30, marker_first=False)
    pairs, counts = matched_pairs(table, per_prompt, "gradient", seed=1)
    stats = marker_statistic(pairs, counts, "gradient", resamples=200, seed=0, permutations=2000)
    assert stats["all"]["marker_top1_fraction"] == pytest.approx(5 / 30)
    assert stats["all"]["rank_p_value"] > 0.2


def test_prompts_without_marker_or_without_other_words_are_counted() -> None:
    rows = _words("m0", "___ ___", {}) + _words("m1", "No acute process.", {})
    words = rank_words(pd.DataFrame(rows), "sum")
    table = method_ranks(words, pd.DataFrame(), pd.DataFrame())
    per_prompt = pd.DataFrame({"prompt_id": ["m0", "m1"], "memorized": [True, True]})
    pairs, counts = matched_pairs(table, per_prompt, "gradient")
    assert len(pairs) == 0
    assert counts == {"memorized": 2, "without_marker": 1, "without_control": 1}
    stats = marker_statistic(pairs, counts, "gradient", resamples=10, seed=0)
    assert stats["all"] == {"n_prompts": 0}


def test_sign_flip_p_value() -> None:
    assert np.isnan(sign_flip_p_value(np.array([]), 100, 0, "x"))
    assert sign_flip_p_value(np.ones(20), 5000, 0, "x") < 1e-3
    symmetric = np.array([1.0, -1.0] * 10)
    assert sign_flip_p_value(symmetric, 2000, 0, "x") == 1.0
    # Seeded by name: the same call gives the same value.
    d = np.random.default_rng(0).normal(0.3, 1, 25)
    assert sign_flip_p_value(d, 999, 0, "k") == sign_flip_p_value(d, 999, 0, "k")
