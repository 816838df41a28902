"""Tests of the report stage: the audit summary from the stages' summaries, and its page."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from memaudit.atomic import json_text
from memaudit.mitigation.evaluation import summarize_strategies, summary_document
from memaudit.report import audit_summary, fmt, interval_verdict, pct, summary_markdown
from memaudit.share import find_text_leaks
from memaudit.threshold.enrichment import marker_enrichment

# Prompts of the crafted audit: "effusion" and "pleural" are common (in 30 prompts), the
# name-like "zebrowski" is in one, as a leaked name would be.
COMMON = [f"small right pleural effusion number {i}" for i in range(30)]
RARE = "seen by dr zebrowski today"
TEXTS = [*COMMON, RARE, "no acute cardiopulmonary process"]


def _prompts_summary() -> dict:
    """The shape of extract_prompts' summary.json, report text included where it has some."""
    return {
        "source": "results/demo/corpus/files",
        "reports_read": 1200,
        "reports_used": 1190,
        "skipped": {"empty": 10},
        "skipped_examples": {"empty": ["files/p10/s1.txt"]},
        "unique_prompts": 1000,
        "prompts_with_marker": 96,
        "most_repeated": [{"prompt_id": "ab", "text": TEXTS[-1], "n_reports": 300}],
    }


def _threshold() -> dict:
    """threshold.json as threshold_scores writes it: a = 6, b = 4, c = 90, d = 900."""
    memorized = np.array([True] * 10 + [False] * 990)
    marker = np.array([True] * 6 + [False] * 4 + [True] * 90 + [False] * 900)
    stats = marker_enrichment(pd.DataFrame({"memorized": memorized, "has_marker": marker}))
    method = {"method": "percentile", "percentile": 99, "z": 3, "value": None}
    return json.loads(json_text({"method": method, "threshold": 0.925, **stats}))


def _attribution() -> dict:
    """The keys of attribution's summary.json that the report reads (summarize_attribution)."""
    types = [  # as summarize lists them: marker group first, then words by top-1 rate
        {"word_type": "<marker>", "n_prompts": 6, "frac_top1": 0.5, "mean_rank": 1.8},
        {"word_type": "zebrowski", "n_prompts": 3, "frac_top1": 0.9, "mean_rank": 1.1},
        {"word_type": "effusion", "n_prompts": 5, "frac_top1": 0.2, "mean_rank": 2.5},
        {"word_type": "pleural", "n_prompts": 5, "frac_top1": 0.6, "mean_rank": 3.0},
    ]
    return {
        "n_prompts": {"attributed": 10, "memorized": 10, "planted": 0},
        "empty": False,
        "marker": {
            "memorized": {
                "gradient": {"position_among_types_by_top1": 2, "n_types_listed": 4},
            }
        },
        "top_word_types": [{**t, "mean_share": 0.1} for t in types],
    }


def _mitigation(copies: bool = True) -> dict:
    """mitigation's summary.json from summarize_strategies + summary_document on a crafted
    evaluation:
    rwa raises every prompt's diversity by 0.03, gni lowers it by 0.02, rna moves it +-0.01."""
    n = 8
    base = 0.05 + 0.001 * np.arange(n)
    change = {"original": 0.0, "rwa": 0.03, "gni": -0.02}
    rows = []
    for strategy in ("original", "rwa", "gni", "rna"):
        for i in range(n):
            delta = change.get(strategy, 0.01 if i % 2 else -0.01)
            rows.append(
                {
                    "prompt_id": f"p{i}",
                    "strategy": strategy,
                    "status": "generated",
                    "reason": None,
                    "diversity": base[i] + delta,
                    "copy_rate": (0.5 if strategy == "original" else 0.125) if copies else math.nan,
                    "d_mem": 1.0,
                    "planted": False,
                    "planted_copy_rate": math.nan,
                    "planted_nearest_rate": math.nan,
                    "max_similarity": 0.9,
                }
            )
    evaluation = pd.DataFrame(rows)
    strategies = ["original", "rwa", "gni", "rna"]
    table = summarize_strategies(
        evaluation, strategies, n_bootstrap=200, seed=0, memorization_threshold=0.9
    )
    selection = pd.DataFrame({"prompt_id": [f"p{i}" for i in range(n)], "reason": "memorized"})
    stats = [{"generation_images": 256, "generation_seconds": 10.0, "device": "cpu"}]
    doc = summary_document(table, evaluation, selection, stats, None, "no images", 0.9, 200)
    if copies:  # the reference block as summary_document writes it with a copy reference
        doc["copy_detection"] = {"n_train": 500, "n_heldout": 200, "threshold": 0.97}
    return json.loads(json_text(doc))


def _detection() -> dict:
    windows = {
        "configured": {"auc": 0.99851, "tpr_at_1pct_fpr": 0.9167, "precision_at_10": 1.0},
        "first_step": {"auc": 0.95, "tpr_at_1pct_fpr": None, "precision_at_10": 0.5},
        "all_steps": {"auc": 0.99851, "tpr_at_1pct_fpr": 0.9167, "precision_at_10": 1.0},
    }
    return {"n_prompts": 1000, "n_planted_scored": 12, "windows": windows}


def _summary(**changes) -> dict:
    documents = {
        "prompts": _prompts_summary(),
        "threshold": _threshold(),
        "attribution": _attribution(),
        "mitigation": _mitigation(),
        "detection": _detection(),
        "prompt_texts": TEXTS,
        "min_word_prompts": 20,
    }
    return audit_summary(**{**documents, **changes})


def test_counts_threshold_and_enrichment() -> None:
    summary = _summary()
    prompts = summary["prompts"]
    assert (prompts["scored"], prompts["flagged"], prompts["reports_read"]) == (1000, 10, 1200)
    assert prompts["flagged_share"] == pytest.approx(0.01)
    assert prompts["threshold_method"] == "percentile" and prompts["threshold_setting"] == 99
    enrichment = summary["enrichment"]
    assert enrichment["odds_ratio"] == pytest.approx(6 * 900 / (4 * 90))
    assert enrichment["odds_ratio_ci95"][0] > 1 and enrichment["verdict"] == "enriched"
    assert enrichment["share_marker_flagged"] == pytest.approx(0.6)
    page = summary_markdown(summary)
    assert "1,000 unique prompts" in page and "10 prompts (1.0 %)" in page
    assert "odds ratio 15" in page and "markers are over-represented" in page
    threshold = _threshold()
    threshold["odds_ratio_ci95"] = [0.2, 10.0]
    assert _summary(threshold=threshold)["enrichment"]["verdict"] == "no clear enrichment"
    assert "no clear enrichment (the CI includes 1)" in summary_markdown(
        _summary(threshold=threshold)
    )


def test_top_word_types_are_ordered_and_rare_words_withheld() -> None:
    attribution = _summary()["attribution"]
    shown = [t["word_type"] for t in attribution["types"]]
    # by top-1 rate: pleural 0.6, marker 0.5, effusion 0.2; zebrowski (0.9) is in one prompt
    assert shown == ["pleural", "<marker>", "effusion"]
    assert attribution["n_withheld_rare"] == 1
    assert attribution["types"][1]["pooled"] == "de-identification marker"
    page = summary_markdown(_summary())
    assert "zebrowski" not in page and "| `pleural` | 5 | 60.0 % | 3.0 |" in page
    assert "Not shown: 1 word type(s) found in fewer than 20 prompts" in page
    # with a low enough bar the rare word is common enough, and ranks first
    assert _summary(min_word_prompts=1)["attribution"]["types"][0]["word_type"] == "zebrowski"


def test_mitigation_verdicts_and_copy_fraction_from_the_writers_shapes() -> None:
    mitigation = _summary()["mitigation"]
    rows = {r["strategy"]: r for r in mitigation["strategies"]}
    assert list(rows) == ["original", "rwa", "gni", "rna"]
    assert rows["original"]["verdict"] == "baseline"
    assert rows["rwa"]["verdict"] == "raised" and rows["rwa"]["diversity_change_ci95"][0] > 0
    assert rows["gni"]["verdict"] == "lowered"
    assert rows["rna"]["verdict"] == "no clear change"
    assert mitigation["raised_diversity"] == ["rwa"] and mitigation["copy_detection"]
    assert rows["rwa"]["copy_rate"] == pytest.approx(0.125)
    assert rows["original"]["copy_rate"] == pytest.approx(0.5)
    page = summary_markdown(_summary())
    assert "CI above 0: **`rwa`**" in page
    assert (
        "| `rwa` | 0.0835 | +0.0300 (+0.0300 to +0.0300) | raised | 12.5 % (12.5 % to 12.5 %) |"
        in page
    )
    assert "| `original` | 0.0535 | - | baseline | 50.0 % (50.0 % to 50.0 %) |" in page


def test_detection_windows_and_missing_numbers_read_na() -> None:
    summary = _summary()
    assert summary["detection"]["windows"]["configured"]["auc"] == pytest.approx(0.99851)
    page = summary_markdown(summary)
    assert "| configured window (d_mem) | 0.9985 | 0.92 |" in page
    assert "| first step only | 0.9500 | n/a |" in page
    assert "12 planted prompts among 1,000 scored" in page


def test_optional_inputs_missing_and_nan_values() -> None:
    threshold = _threshold()
    threshold["odds_ratio_ci95"] = [float("nan"), None]
    summary = _summary(detection=None, attribution=None, mitigation=_mitigation(copies=False))
    assert summary["detection"] is None and summary["attribution"] is None
    page = summary_markdown(summary)
    assert "planted truth" not in page and "Attribution did not run." in page
    assert "copy detection skipped" in page
    assert "| `rwa` |" in page and "raised | n/a (n/a) |" in page  # NaN copy rates
    summary = _summary(threshold=threshold, mitigation=None)
    assert summary["enrichment"]["odds_ratio_ci95"] == [None, None]
    assert summary["enrichment"]["verdict"] == "n/a"
    page = summary_markdown(summary)
    assert "(95 % CI n/a)" in page and "Mitigation did not run." in page
    json.loads(json_text(summary))  # strict JSON: no NaN left


def test_empty_stages_say_so() -> None:
    empty_attribution = {"n_prompts": {"attributed": 0}, "empty": True}
    mitigation = _mitigation()
    mitigation["strategies"] = {}
    page = summary_markdown(_summary(attribution=empty_attribution, mitigation=mitigation))
    assert "No word type to show (0 prompts attributed)." in page
    assert "No prompt was selected for mitigation." in page
    unlisted = {**_attribution(), "top_word_types": []}
    assert _summary(attribution=unlisted)["attribution"]["types"] == []
    page = summary_markdown(_summary(attribution=unlisted))
    assert "No word type to show (10 prompts attributed)." in page


def test_detectors_side_by_side_on_the_page() -> None:
    rows = [
        {
            "detector": "wen",
            "auc": 0.9999,
            "auc_low": 0.999,
            "auc_high": 1.0,
            "tpr_at_1pct_fpr": 1.0,
            "tpr_at_1pct_fpr_low": 1.0,
            "tpr_at_1pct_fpr_high": 1.0,
            "unet_rows_per_prompt": 396.0,
            "backward_rows_per_prompt": 0.0,
            "seconds_per_1000_prompts": 4600.0,
            "published": "0.996 / 0.982 (50 steps, 4 gen.)",
        },
        {
            "detector": "sharpness",
            "auc": 0.91,
            "auc_low": 0.85,
            "auc_high": 0.96,
            "tpr_at_1pct_fpr": 0.4,
            "tpr_at_1pct_fpr_low": 0.2,
            "tpr_at_1pct_fpr_high": 0.6,
            "unet_rows_per_prompt": 16.0,
            "backward_rows_per_prompt": 8.0,
            "seconds_per_1000_prompts": 600.0,
            "published": "",
        },
    ]
    comparison = {
        "primary": "wen",
        "detectors": rows,
        "memorized_sets": {"wen": {"jaccard": 1.0}, "sharpness": {"jaccard": 0.25}},
        "combination": {"verdict": "the rank average does not beat wen: not adopted"},
    }
    page = summary_markdown(_summary(detectors=comparison))
    assert "## Detectors side by side (demo)" in page
    assert "| `sharpness` | 0.9100 (0.850 to 0.960) | 0.40 (0.20 to 0.60) | 24 |" in page
    assert "| 0.25 | n/a |" in page  # no published figure
    assert "not adopted" in page
    assert "Detectors side by side" not in summary_markdown(_summary())


def test_page_and_json_hold_no_report_text() -> None:
    summary = _summary(min_word_prompts=20)
    page = summary_markdown(summary)
    for text in (page, json_text(summary)):
        assert not find_text_leaks(text.splitlines(), TEXTS, min_words=3)
        assert "files/p10" not in text and "cardiopulmonary" not in text
    assert "results/report.html" in page and "results/share/" in page


def test_a_missing_key_names_the_file_and_the_key() -> None:
    threshold = _threshold()
    del threshold["n_memorized"]
    with pytest.raises(ValueError, match=r"results/threshold/threshold\.json.*'n_memorized'"):
        _summary(threshold=threshold)
    mitigation = _mitigation()
    del mitigation["strategies"]
    with pytest.raises(ValueError, match=r"results/mitigation/summary\.json.*'strategies'"):
        _summary(mitigation=mitigation)
    with pytest.raises(ValueError, match="min_word_prompts"):
        _summary(min_word_prompts=0)


def test_formatting_helpers() -> None:
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a" and fmt(float("inf")) == "n/a"
    assert fmt("12") == "n/a" and fmt(True) == "n/a"
    assert fmt(1234, ",") == "1,234" and fmt(0.123456) == "0.123"
    assert pct(0.0123) == "1.2 %" and pct(None) == "n/a"
    assert interval_verdict(0.1, 0.2, 0.0, "up", "down") == "up"
    assert interval_verdict(-0.2, -0.1, 0.0, "up", "down") == "down"
    assert interval_verdict(-0.1, 0.1, 0.0, "up", "down") == "no clear change"
    assert interval_verdict(0.0, 0.1, 0.0, "up", "down") == "no clear change"  # touches 0
    assert interval_verdict(-0.1, 0.1, 1.0, "up", "down", "unclear") == "down"
    assert interval_verdict(0.5, 2.0, 1.0, "up", "down", "unclear") == "unclear"
    assert interval_verdict(None, 0.1, 0.0, "up", "down") == "n/a"
    assert interval_verdict(float("nan"), 0.1, 0.0, "up", "down") == "n/a"


def _methods(top1: float, keyed_causal: int = 12) -> dict:
    """attribution summary's ``methods`` block: the best method ranks the key first in top1."""
    return {
        "keys": {"keyed_checked": 12, "keyed_causal": keyed_causal, "scored": keyed_causal},
        "best": "gradient",
        "primary": "gradient",
        "per_method": {
            "gradient": {"key_top1": top1, "key_top1_ci95": [top1 - 0.1, 1.0]},
            "occlusion_delete": {"key_top1": 1.0, "key_top1_ci95": [1.0, 1.0]},
        },
    }


def _copies(recall: float, false_copies: float) -> dict:
    """copy_detection's summary.json: the configured embedding and a baseline."""
    block = {
        "threshold": 0.9,
        "roc_auc": 0.99,
        "mitigation": {
            "copy_recall": {"rate": recall, "ci": [recall - 0.05, 1.0]},
            "false_copy_rate": {"rate": false_copies, "ci": [0.0, false_copies + 0.02]},
        },
    }
    baseline = {**block, "mitigation": {"copy_recall": {"rate": 0.1}, "false_copy_rate": {}}}
    return {"embedding": "learned", "embeddings": {"learned": block, "pixels": baseline}}


def test_validity_holds_only_when_every_bar_holds() -> None:
    attribution = {**_attribution(), "methods": _methods(0.95)}
    good = _summary(attribution=attribution, copy_detection=_copies(0.95, 0.01))
    checks = {c["name"]: c for c in good["validity"]["checks"]}
    assert good["validity"]["all_hold"]
    assert checks["detection_auc"]["value"] == pytest.approx(0.99851)
    assert checks["key_top1"]["value"] == 0.95 and checks["keys_causal_share"]["value"] == 1.0
    assert checks["copy_recall"]["value"] == 0.95  # the configured embedding, not the baseline
    assert good["validity"]["key_top1_method"] == "gradient"
    # each bar fails on its own side of the threshold
    for attribution_top1, causal, recall, false_copies, failing in (
        (0.85, 12, 0.95, 0.01, "key_top1"),
        (0.95, 10, 0.95, 0.01, "keys_causal_share"),
        (0.95, 12, 0.80, 0.01, "copy_recall"),
        (0.95, 12, 0.95, 0.06, "false_copy_rate"),
    ):
        attribution = {**_attribution(), "methods": _methods(attribution_top1, causal)}
        summary = _summary(attribution=attribution, copy_detection=_copies(recall, false_copies))
        failed = [c["name"] for c in summary["validity"]["checks"] if not c["holds"]]
        assert failed == [failing] and not summary["validity"]["all_hold"]
        assert "FAILED" in summary_markdown(summary)


def test_validity_missing_numbers_fail_and_real_runs_have_none() -> None:
    # no attribution methods and no copy detection: those checks did not run, so they fail
    summary = _summary()
    failed = {c["name"] for c in summary["validity"]["checks"] if not c["holds"]}
    assert failed == {"keys_causal_share", "key_top1", "copy_recall", "false_copy_rate"}
    assert _summary(detection=None)["validity"] is None  # outside the demo: no truth, no check


def test_brief_opens_the_page_and_says_the_answer() -> None:
    from memaudit.report import brief_text

    attribution = {**_attribution(), "methods": _methods(1.0)}
    summary = _summary(attribution=attribution, copy_detection=_copies(0.95, 0.01))
    brief = brief_text(summary)
    lines = [line for line in brief.splitlines() if line.startswith("- ")]
    assert len(lines) <= 8  # short: one line per answer
    assert "Scored 1,000 unique prompts; flagged 10" in brief
    assert "odds ratio" in brief and "Top attributed word types" in brief
    assert "Mitigations that raised diversity: `rwa`" in brief
    assert "every bar holds" in brief and "results/report.html" in brief
    assert "zebrowski" not in brief  # a rare word never reaches the brief
    page = summary_markdown(summary)
    assert page.index("## In brief") < page.index("## Prompts and the marker")
    for line in lines:
        assert line in page
