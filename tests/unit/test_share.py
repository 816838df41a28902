"""The shareable bundle carries no report text (memaudit.share)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from memaudit.share import (
    ShareLeakError,
    build_share_bundle,
    find_text_leaks,
    memorized_table,
    numbers_only,
    shareable_word_types,
    text_sha256,
)
from memaudit.text import prompt_id

TEXTS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion, unchanged since ___.",
    "Reviewed with Dr. Zhahoudrick who agrees. Mild cardiomegaly.",
    "Mild cardiomegaly. No pleural effusion.",
]


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    prompts = pd.DataFrame(
        {
            "prompt_id": [prompt_id(t) for t in TEXTS],
            "text": TEXTS,
            "n_reports": [40, 3, 30, 5],
            "has_marker": [False, True, False, False],
        }
    )
    ranked = prompts.assign(
        d_mem=[0.1, 0.9, 0.8, 0.2], rank=[4, 1, 2, 3], memorized=[False, True, True, False]
    )
    report_map = pd.DataFrame(
        {
            "report_id": [f"s{i}" for i in range(6)],
            "study_id": pd.array([50, 51, 52, 53, 54, None], dtype="Int64"),
            "prompt_id": [prompt_id(TEXTS[i]) for i in (1, 1, 2, 0, 3, 2)],
        }
    )
    return prompts, ranked, report_map


def test_memorized_table_has_hashes_and_study_ids_but_no_text() -> None:
    _, ranked, report_map = _tables()
    table = memorized_table(ranked, report_map)
    assert list(table["prompt_id"]) == [prompt_id(TEXTS[1]), prompt_id(TEXTS[2])]
    assert list(table["text_sha256"]) == [text_sha256(TEXTS[1]), text_sha256(TEXTS[2])]
    assert [list(s) for s in table["study_ids"]] == [[50, 51], [52]]  # missing study id dropped
    assert "text" not in table.columns


def test_numbers_only_drops_every_string() -> None:
    value = {
        "source": "/data/mimic",
        "skipped": {"empty": 2, "not_utf8": 1},
        "examples": ["files/p10/p1/s1.txt"],
        "most_repeated": [{"text": TEXTS[0], "n_reports": 40}],
        "auc": float("nan"),
        "ok": True,
    }
    assert numbers_only(value) == {
        "skipped": {"empty": 2, "not_utf8": 1},
        "most_repeated": [{"n_reports": 40}],
        "ok": True,
    }


def test_leak_check_finds_three_consecutive_prompt_words() -> None:
    strings = ["d_mem", "left pleural effusion is common", "effusion left pleural", "percentile"]
    assert find_text_leaks(strings, TEXTS, min_words=3) == ["left pleural effusion is common"]
    assert find_text_leaks(["since ___ and"], TEXTS, min_words=2) == ["since ___ and"]


def test_rare_word_types_are_withheld_and_the_marker_kept() -> None:
    word_types = pd.DataFrame(
        {
            "word_type": ["___", "zhahoudrick", "cardiomegaly", "effusion"],
            "is_marker": [True, False, False, False],
            "mean_rank": [1.0, 1.0, 2.0, 3.0],
        }
    )
    kept, withheld = shareable_word_types(word_types, TEXTS, min_word_prompts=2)
    assert list(kept["word_type"]) == ["___", "cardiomegaly", "effusion"]
    assert withheld == 1


def test_bundle_is_written_and_leaks_are_refused(tmp_path: Path) -> None:
    prompts, ranked, report_map = _tables()
    figure = tmp_path / "fig2.png"
    figure.write_bytes(b"\x89PNG fake")
    figure.with_suffix(".pdf").write_bytes(b"%PDF fake")
    summaries = {
        "prompts": {"reports_read": 6, "most_repeated": [{"text": TEXTS[2]}]},
        # per-word rows: withheld by the bundle itself, whoever calls it
        "attribution": {
            "n_prompts": 2,
            "top_word_types": [{"word_type": "zhahoudrick", "n_prompts": 1, "mean_rank": 1.0}],
        },
    }
    written = build_share_bundle(
        tmp_path / "share",
        prompts=prompts,
        ranked=ranked,
        report_map=report_map,
        stage_summaries=summaries,
        word_types=pd.DataFrame({"word_type": ["zhahoudrick", "mild"], "is_marker": [0, 0]}),
        figures=[figure],
        min_word_prompts=2,
    )
    assert set(written["files"]) == {
        "README.md",
        "memorized_prompts.parquet",
        "summary.json",
        "word_types.parquet",
        "figures/fig2.png",
        "figures/fig2.pdf",
    }
    summary = json.loads((tmp_path / "share/summary.json").read_text())
    assert summary["prompts"] == {"reports_read": 6}
    assert summary["attribution"] == {"n_prompts": 2}
    assert summary["share"]["word_types_withheld"] == 1
    for path in (tmp_path / "share").rglob("*.parquet"):
        frame = pd.read_parquet(path)
        assert not find_text_leaks(frame.astype(str).to_numpy().ravel().tolist(), TEXTS, 3)
    # a key that quotes a prompt is a leak: nothing is written
    with pytest.raises(ShareLeakError, match="summary.json"):
        build_share_bundle(
            tmp_path / "bad",
            prompts=prompts,
            ranked=ranked,
            report_map=report_map,
            stage_summaries={"words": {"reviewed with dr": 1}},
        )
    assert not (tmp_path / "bad").exists()
