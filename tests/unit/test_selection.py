"""The one prompt selector (memaudit.selection) of the attribution and mitigation stages."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from memaudit.selection import REASONS, SELECTION_COLUMNS, select_prompts
from memaudit.text import prompt_id

MARKERS = ["___"]
CAPTIONS = [
    "___ chest radiograph shows no acute process.",
    "Compared to ___, the small left effusion is unchanged.",
    "Right lower lobe pneumonia, new since ___",
    "Dr. ___ was paged at ___ on ___ with these findings.",
    "Cardiomegaly without pulmonary edema.",
    "No pneumothorax.",
]


def _scored(texts: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": [prompt_id(t) for t in texts],
            "text": texts,
            "d_mem": np.linspace(2.0, 1.0, len(texts)),
            "rank": np.arange(1, len(texts) + 1),
        }
    )


def _truth(texts: list[str], triggers: list[str | None] | None = None) -> pd.DataFrame:
    triggers = triggers or [None] * len(texts)
    return pd.DataFrame(
        {
            "planted_id": np.arange(len(texts)),
            "prompt_id": [prompt_id(t) for t in texts],
            "text": texts,
            "trigger_word": triggers,
            "trigger_word_index": [1 if t else -1 for t in triggers],
        }
    )


def test_reasons_markers_and_scores_of_planted_prompts() -> None:
    ranked = _scored(CAPTIONS)
    memorized = ranked.iloc[:5]
    truth = _truth(CAPTIONS[3:], [None, "Zorbak", None])
    table, counts = select_prompts(memorized, ranked, truth, markers=MARKERS)
    assert list(table.columns) == list(SELECTION_COLUMNS)
    assert table["prompt_id"].is_monotonic_increasing
    by_text = table.set_index("text")
    assert by_text.at[CAPTIONS[3], "reason"] == "memorized+planted"
    assert by_text.at[CAPTIONS[0], "reason"] == "memorized"
    assert by_text.at[CAPTIONS[5], "reason"] == "planted"
    # a planted caption that is not memorized takes its score and rank from the ranked table
    assert by_text.at[CAPTIONS[5], "d_mem"] == ranked["d_mem"].iloc[5]
    assert by_text.at[CAPTIONS[5], "rank"] == 6
    assert (
        by_text.at[CAPTIONS[3], "marker_count"] == 3 and by_text.at[CAPTIONS[4], "has_marker"] == 0
    )
    assert by_text.at[CAPTIONS[4], "trigger_word"] == "Zorbak"
    assert counts["by_reason"] == {"memorized": 3, "planted": 1, "memorized+planted": 2}
    assert set(counts["by_reason"]) == set(REASONS) and counts["planted_with_trigger"] == 1


def test_marker_filter_and_planted_switch() -> None:
    ranked = _scored(CAPTIONS)
    truth = _truth(CAPTIONS[3:])
    marker, counts = select_prompts(
        ranked.iloc[:5], ranked, truth, markers=MARKERS, require_marker=True
    )
    assert set(marker["text"]) == set(CAPTIONS[:4])
    assert counts["without_marker_dropped"] == 2  # CAPTIONS[4] and the planted CAPTIONS[5]
    alone, counts = select_prompts(ranked.iloc[:5], ranked, truth, include_planted=False)
    assert set(alone["text"]) == set(CAPTIONS[:5]) and not counts["planted_included"]


def test_planted_captions_never_scored_are_counted_not_invented() -> None:
    ranked = _scored(CAPTIONS[:4])
    truth = _truth(CAPTIONS[3:])
    table, counts = select_prompts(ranked.iloc[:2], ranked, truth)
    assert counts["planted"] == 1 and counts["planted_missing"] == 2
    assert sorted(counts["planted_missing_ids"]) == sorted(prompt_id(t) for t in CAPTIONS[4:])
    assert len(table) == 3
    with pytest.raises(ValueError, match="ranked prompts table"):
        select_prompts(ranked, None, truth)


def test_sample_is_seeded_and_independent_of_row_order() -> None:
    texts = [f"Finding {i} unchanged since ___." for i in range(40)]
    scored = _scored(texts)
    a, _ = select_prompts(scored, sample_size=10, seed=3)
    b, _ = select_prompts(scored.sample(frac=1.0, random_state=1), sample_size=10, seed=3)
    c, _ = select_prompts(scored, sample_size=10, seed=4)
    assert len(a) == 10 and a["prompt_id"].tolist() == b["prompt_id"].tolist()
    assert set(a["prompt_id"]) != set(c["prompt_id"])
    with pytest.raises(ValueError, match="sample_size"):
        select_prompts(scored, sample_size=-1)


def test_empty_and_malformed_input() -> None:
    table, counts = select_prompts(_scored([]))
    assert len(table) == 0 and list(table.columns) == list(SELECTION_COLUMNS)
    assert counts["selected"] == 0
    with pytest.raises(ValueError, match=r"memorized prompts table lacks column\(s\) \['d_mem'\]"):
        select_prompts(pd.DataFrame({"prompt_id": [], "text": [], "rank": []}))
