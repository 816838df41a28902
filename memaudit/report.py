"""The report stage: what the audit found, on one page, in numbers and word types.

:func:`audit_summary` reads the summaries the stages write — their JSON shapes are the
contracts: ``extract_prompts``' ``summary.json``, ``threshold.json``
(:func:`memaudit.threshold.enrichment.marker_enrichment`), ``detection.json``
(:func:`memaudit.evaluation.detection.evaluate_truth`), attribution's ``summary.json``
(:func:`memaudit.attribution.statistics.summarize_attribution`) and mitigation's ``summary.json``
(:func:`memaudit.mitigation.evaluation.summary_document`) — and :func:`summary_markdown` writes
the page ``make demo`` prints and the HTML report opens with.

The page is shown beside figures that draw report text, but it must itself be safe to paste
anywhere: it copies no string of the inputs except strategy names, the threshold method and
word types, and a word type only when it occurs in at least ``min_word_prompts`` distinct
prompts (the share bundle's rule, so a rare word such as a leaked name never appears).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pandas as pd

from memaudit.atomic import json_safe
from memaudit.attribution.statistics import MARKER_TYPE, TRIGGER_TYPE
from memaudit.share import shareable_word_types

#: Where each summary comes from, for error messages and the page's closing lines.
SOURCES = {
    "prompts": "results/prompts/summary.json",
    "threshold": "results/threshold/threshold.json",
    "detection": "results/evaluation/detection.json",
    "attribution": "results/attribution/summary.json",
    "mitigation": "results/mitigation/summary.json",
    "copy_detection": "results/copy_detection/summary.json",
    "synthetic": "results/synthetic/summary.json",
}
WHERE = {
    "html_report": "results/report.html",
    "summary": "results/report/summary.md",
    "brief": "results/report/brief.md",
    "summary_json": "results/report/summary.json",
    "share_bundle": "results/share/",
}
POOLED_TYPES = {MARKER_TYPE: "de-identification marker", TRIGGER_TYPE: "planted trigger word"}
DETECTION_WINDOWS = {
    "configured": "configured window (d_mem)",
    "first_step": "first step only",
    "all_steps": "all steps",
}
NA = "n/a"


# --------------------------------------------------------------------------------------------
# Numbers
# --------------------------------------------------------------------------------------------


def _get(document: Mapping[str, Any], stage: str, *keys: str) -> Any:
    """``document[k1][k2]...``, or a ValueError naming the stage's file and the key."""
    value: Any = document
    for depth, key in enumerate(keys):
        if not isinstance(value, Mapping) or key not in value:
            path = ".".join(keys[: depth + 1])
            raise ValueError(f"{SOURCES[stage]} has no key {path!r} (is it from this memaudit?)")
        value = value[key]
    return value


def _number(value: Any) -> float | None:
    """A finite float, or None for None, NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _interval(pair: Any) -> list[float | None]:
    """A two-item [low, high] list (Nones when the input has no such pair)."""
    if isinstance(pair, Sequence) and not isinstance(pair, str) and len(pair) == 2:
        return [_number(pair[0]), _number(pair[1])]
    return [None, None]


def interval_verdict(
    low: Any, high: Any, null: float, above: str, below: str, neither: str = "no clear change"
) -> str:
    """``above`` when the 95 % interval lies above ``null``, ``below`` when under it,
    ``neither`` when it holds ``null``, n/a when an end is missing."""
    low, high = _number(low), _number(high)
    if low is None or high is None:
        return NA
    if low > null:
        return above
    if high < null:
        return below
    return neither


def prompt_counts(prompts: Mapping[str, Any], threshold: Mapping[str, Any]) -> dict[str, Any]:
    """Reports read, prompts scored and flagged, and the threshold that flagged them."""
    scored = _get(threshold, "threshold", "n_prompts")
    flagged = _get(threshold, "threshold", "n_memorized")
    method = _get(threshold, "threshold", "method")
    name = method.get("method") if isinstance(method, Mapping) else None
    setting = {"percentile": "percentile", "zscore": "z"}.get(str(name))
    return {
        "reports_read": _get(prompts, "prompts", "reports_read"),
        "reports_used": _get(prompts, "prompts", "reports_used"),
        "unique_prompts": _get(prompts, "prompts", "unique_prompts"),
        "prompts_with_marker": _get(prompts, "prompts", "prompts_with_marker"),
        "scored": scored,
        "flagged": flagged,
        "flagged_share": flagged / scored if scored else None,
        "threshold": _number(_get(threshold, "threshold", "threshold")),
        "threshold_method": name,
        "threshold_setting": method.get(setting) if setting else None,
    }


def enrichment_numbers(threshold: Mapping[str, Any]) -> dict[str, Any]:
    """Finding 2: marker shares among flagged prompts and the rest, odds ratio, CI, p."""
    ci = _interval(_get(threshold, "threshold", "odds_ratio_ci95"))
    return {
        "share_marker_flagged": _number(_get(threshold, "threshold", "share_marker_memorized")),
        "share_marker_rest": _number(_get(threshold, "threshold", "share_marker_rest")),
        "odds_ratio": _number(_get(threshold, "threshold", "odds_ratio")),
        "odds_ratio_ci95": ci,
        "fisher_p": _number(_get(threshold, "threshold", "fisher_p")),
        "haldane_corrected": bool(threshold.get("haldane_corrected", False)),
        "verdict": interval_verdict(*ci, 1.0, "enriched", "depleted", "no clear enrichment"),
    }


def top_word_types(
    attribution: Mapping[str, Any],
    prompt_texts: Iterable[str],
    min_word_prompts: int,
    n_types: int = 5,
) -> dict[str, Any]:
    """Finding 3: the word types of memorized prompts most often ranked first (gradient).

    Ordered by top-1 rate, then mean rank; the pooled marker and trigger labels are always
    shown, other word types only when found in ``min_word_prompts`` distinct prompts of
    ``prompt_texts``; how many were held back is counted. An empty attribution (no memorized
    prompt) lists none.
    """
    rows = [] if attribution.get("empty") else _get(attribution, "attribution", "top_word_types")
    listed = pd.DataFrame(list(rows), columns=["word_type", "n_prompts", "frac_top1", "mean_rank"])
    listed["pooled"] = listed["word_type"].isin(list(POOLED_TYPES))
    kept, withheld = shareable_word_types(
        listed, prompt_texts, min_word_prompts, marker_column="pooled"
    )
    kept = kept.sort_values(
        ["frac_top1", "mean_rank"], ascending=[False, True], na_position="last", kind="mergesort"
    ).head(n_types)
    marker = attribution.get("marker", {}).get("memorized", {}).get("gradient", {})
    method = attribution.get("top_word_types_method", "gradient")
    return {
        "n_attributed": _get(attribution, "attribution", "n_prompts", "attributed"),
        "method": method,
        "methods": attribution.get("methods"),
        "marker_controlled": attribution.get("marker_controlled"),
        "population": "memorized",
        "types": [
            {
                "word_type": row.word_type,
                "pooled": POOLED_TYPES.get(row.word_type),
                "n_prompts": int(row.n_prompts),
                "frac_top1": _number(row.frac_top1),
                "mean_rank": _number(row.mean_rank),
            }
            for row in kept.itertuples(index=False)
        ],
        "n_withheld_rare": withheld,
        "min_word_prompts": min_word_prompts,
        "marker_position_by_top1": marker.get("position_among_types_by_top1")
        if method == "gradient"
        else None,
        "n_types_listed": marker.get("n_types_listed"),
    }


def mitigation_numbers(mitigation: Mapping[str, Any]) -> dict[str, Any]:
    """Finding 4 per strategy (all selected prompts): the paired diversity change vs the
    original prompt with its 95 % CI and verdict, and the copy fraction with its CI."""
    table = _get(mitigation, "mitigation", "strategies").get("all", {})
    copies = mitigation.get("copy_detection", {})
    strategies = []
    for name, row in table.items():
        change_ci = [row.get("diversity_change_ci_low"), row.get("diversity_change_ci_high")]
        strategies.append(
            {
                "strategy": name,
                "n_prompts": row.get("n_prompts"),
                "diversity_mean": _number(row.get("diversity_mean")),
                "diversity_change_mean": _number(row.get("diversity_change_mean")),
                "diversity_change_ci95": _interval(change_ci),
                "verdict": "baseline"
                if name == "original"
                else interval_verdict(*change_ci, 0.0, "raised", "lowered"),
                "copy_rate": _number(row.get("copy_rate")),
                "copy_rate_ci95": _interval(
                    [row.get("copy_rate_ci_low"), row.get("copy_rate_ci_high")]
                ),
            }
        )
    return {
        "n_prompts": _get(mitigation, "mitigation", "n_prompts"),
        "copy_detection": isinstance(copies, Mapping) and "threshold" in copies,
        "strategies": strategies,
        "raised_diversity": [s["strategy"] for s in strategies if s["verdict"] == "raised"],
    }


def detection_numbers(detection: Mapping[str, Any]) -> dict[str, Any]:
    """Demo only: AUC and TPR at 1 % FPR of d_mem against the planted truth, per window."""
    windows = _get(detection, "detection", "windows")
    return {
        "n_prompts": detection.get("n_prompts"),
        "n_planted_scored": detection.get("n_planted_scored"),
        "windows": {
            name: {
                "auc": _number(windows[name].get("auc")),
                "tpr_at_1pct_fpr": _number(windows[name].get("tpr_at_1pct_fpr")),
            }
            for name in DETECTION_WINDOWS
            if name in windows
        },
    }


def copy_numbers(validity: Mapping[str, Any]) -> dict[str, Any]:
    """Per embedding (configured first): threshold, copy recall and false-copy rate of the
    original prompts' generations with 95 % CIs, and the ROC AUC."""
    rows = []
    for embedding, block in _get(validity, "copy_detection", "embeddings").items():
        original = block.get("mitigation") or {}
        recall = original.get("copy_recall") or {}
        false = original.get("false_copy_rate") or {}
        rows.append(
            {
                "embedding": embedding,
                "threshold": _number(block.get("threshold")),
                "copy_recall": _number(recall.get("rate")),
                "copy_recall_ci95": _interval(recall.get("ci")),
                "false_copy_rate": _number(false.get("rate")),
                "false_copy_rate_ci95": _interval(false.get("ci")),
                "roc_auc": _number(block.get("roc_auc")),
            }
        )
    return {"embedding": validity.get("embedding"), "embeddings": rows}


def synthetic_numbers(synthetic: Mapping[str, Any]) -> dict[str, Any]:
    """The synthetic set's size and copy fraction with its 95 % CI."""
    return {
        "n_images": _get(synthetic, "synthetic", "n_images"),
        "copy_fraction": _number(_get(synthetic, "synthetic", "copy_fraction")),
        "copy_fraction_ci95": _interval(synthetic.get("copy_fraction_ci")),
        "n_copied_train_images": synthetic.get("n_copied_train_images"),
    }


def audit_summary(
    prompts: Mapping[str, Any],
    threshold: Mapping[str, Any],
    attribution: Mapping[str, Any] | None = None,
    mitigation: Mapping[str, Any] | None = None,
    detection: Mapping[str, Any] | None = None,
    prompt_texts: Iterable[str] = (),
    min_word_prompts: int = 20,
    n_word_types: int = 5,
    copy_detection: Mapping[str, Any] | None = None,
    synthetic: Mapping[str, Any] | None = None,
    detectors: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``summary.json``: the numbers of every stage that ran (None for a stage that did not:
    detection outside the demo), and where the full report is."""
    if min_word_prompts < 1:
        raise ValueError(f"min_word_prompts must be >= 1, got {min_word_prompts}")
    summary = {
        "prompts": prompt_counts(prompts, threshold),
        "enrichment": enrichment_numbers(threshold),
        "attribution": None
        if attribution is None
        else top_word_types(attribution, prompt_texts, min_word_prompts, n_word_types),
        "mitigation": None if mitigation is None else mitigation_numbers(mitigation),
        "detection": None if detection is None else detection_numbers(detection),
        "copy_detection": None if copy_detection is None else copy_numbers(copy_detection),
        "synthetic": None if synthetic is None else synthetic_numbers(synthetic),
        "detectors": None if detectors is None else detector_numbers(detectors),
        "where": dict(WHERE),
    }
    summary["validity"] = validity_numbers(summary)
    return json_safe(summary)


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------


def fmt(value: Any, spec: str = ".3g") -> str:
    """``value`` formatted by ``spec``; n/a for None, NaN, infinities and non-numbers."""
    number = _number(value)
    if number is None:
        return NA
    if spec == ",":  # counts
        return f"{round(number):,}"
    return format(number, spec)


def pct(value: Any) -> str:
    """A share as a percentage with one decimal (n/a when missing)."""
    number = _number(value)
    return NA if number is None else f"{100 * number:.1f} %"


def ci(pair: Sequence[Any], spec: str = ".3g", as_pct: bool = False) -> str:
    """A 95 % interval as "low to high" (n/a when an end is missing)."""
    low, high = _interval(pair)
    if low is None or high is None:
        return NA
    show = pct if as_pct else (lambda v: fmt(v, spec))
    return f"{show(low)} to {show(high)}"


def _cell(text: str) -> str:
    """A word type as a table cell: code-quoted, with the characters that break tables out."""
    return "`" + text.replace("`", "'").replace("|", "/") + "`"


def _prompt_lines(numbers: Mapping[str, Any], enrichment: Mapping[str, Any]) -> list[str]:
    method = numbers["threshold_method"] or NA
    setting = numbers["threshold_setting"]
    rule = f"{method} {fmt(setting, 'g')}" if setting is not None else method
    corrected = "; Haldane-corrected for an empty cell" if enrichment["haldane_corrected"] else ""
    return [
        f"- **Prompts scored:** {fmt(numbers['scored'], ',')} unique prompts (from "
        f"{fmt(numbers['reports_read'], ',')} reports read, {fmt(numbers['reports_used'], ',')} "
        f"used; {fmt(numbers['prompts_with_marker'], ',')} prompts carry a de-identification "
        "marker).",
        f"- **Flagged as memorized:** {fmt(numbers['flagged'], ',')} prompts "
        f"({pct(numbers['flagged_share'])}), d_mem above {fmt(numbers['threshold'], '.4g')} "
        f"(threshold: {rule}).",
        f"- **Marker enrichment (finding 2):** {pct(enrichment['share_marker_flagged'])} of "
        f"flagged prompts carry a marker vs {pct(enrichment['share_marker_rest'])} of the rest; "
        f"odds ratio {fmt(enrichment['odds_ratio'])} (95 % CI "
        f"{ci(enrichment['odds_ratio_ci95'])}{corrected}), Fisher's exact p = "
        f"{fmt(enrichment['fisher_p'], '.2g')}: **{_enrichment_words(enrichment['verdict'])}**.",
    ]


def _enrichment_words(verdict: str) -> str:
    return {
        "enriched": "markers are over-represented among flagged prompts (CI above 1)",
        "depleted": "markers are under-represented among flagged prompts (CI below 1)",
        "no clear enrichment": "no clear enrichment (the CI includes 1)",
    }.get(verdict, "enrichment not estimable")


def _attribution_lines(attribution: Mapping[str, Any] | None) -> list[str]:
    if attribution is None:
        return ["", "## Top attributed word types (finding 3)", "", "Attribution did not run."]
    lines = ["", "## Top attributed word types (finding 3)", ""]
    if not attribution["types"]:
        n = fmt(attribution["n_attributed"], ",")
        return [*lines, f"No word type to show ({n} prompts attributed)."]
    lines += [
        f"Attribution by {attribution['method']} "
        f"({fmt(attribution['n_attributed'], ',')} prompts attributed): "
        "the word types of memorized prompts that are most often the most significant word "
        "(ties: lower mean rank first).",
        "",
        "| word type | prompts | ranked first | mean rank |",
        "| --- | ---: | ---: | ---: |",
    ]
    for row in attribution["types"]:
        label = _cell(row["word_type"]) + (f" ({row['pooled']})" if row["pooled"] else "")
        lines.append(
            f"| {label} | {fmt(row['n_prompts'], ',')} | {pct(row['frac_top1'])} | "
            f"{fmt(row['mean_rank'], '.1f')} |"
        )
    position = attribution.get("marker_position_by_top1")
    if position is not None:
        lines += [
            "",
            f"The marker is word type {position} of {fmt(attribution['n_types_listed'], ',')} "
            "listed by top-1 rate.",
        ]
    if attribution["n_withheld_rare"]:
        lines += [
            "",
            f"Not shown: {attribution['n_withheld_rare']} word type(s) found in fewer than "
            f"{attribution['min_word_prompts']} prompts (a rare word can identify a report).",
        ]
    return (
        lines
        + _method_lines(attribution.get("methods"))
        + _marker_test_lines(attribution.get("marker_controlled"))
    )


def _method_lines(methods: Mapping[str, Any] | None) -> list[str]:
    """The attribution methods scored against the demo's causal keys (demo only)."""
    if not methods or "keys" not in methods:
        return []
    keys = methods["keys"]
    lines = [
        "",
        f"Attribution methods against the demo's causal keys: {keys.get('keyed_causal', 0)} of "
        f"{keys.get('keyed_checked', 0)} keyed planted captions have a causal key (without the "
        "key the prompt's d_mem falls below the ordinary prompts' 90th percentile), and "
        f"{keys.get('causal', 0) - keys.get('keyed_causal', 0)} of "
        f"{keys.get('checked', 0) - keys.get('keyed_checked', 0)} composed captions' trigger "
        f"words; {keys.get('scored', 0)} causal keys scored. "
        f"Best: **{methods.get('best')}**; finding 3 uses {methods.get('primary')}.",
        "",
        "| method | key ranked first (95 % CI) | mean key rank | UNet rows / prompt |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, block in methods.get("per_method", {}).items():
        lo, hi = block.get("key_top1_ci95") or (None, None)
        lines.append(
            f"| {name} | {pct(block.get('key_top1'))} ({pct(lo)}–{pct(hi)}) | "
            f"{fmt(block.get('key_mean_rank'), '.2f')} | "
            f"{fmt(block.get('unet_rows_per_prompt'), ',.0f')} |"
        )
    return lines


def _marker_test_lines(marker: Mapping[str, Any] | None) -> list[str]:
    """The controlled marker statistic under the primary method."""
    if not marker or not marker.get("all", {}).get("n_prompts"):
        return []
    stats = marker["all"]
    lines = [
        "",
        f"Marker against a matched word of the same prompt ({marker['method']}, "
        f"{stats['n_prompts']} memorized prompts with a marker): the marker is the top word in "
        f"{pct(stats['marker_top1_fraction'])} of them, the matched word in "
        f"{pct(stats['control_top1_fraction'])}; mean rank {fmt(stats['marker_rank_mean'], '.2f')}"
        f" vs {fmt(stats['control_rank_mean'], '.2f')} (sign-flip p = "
        f"{fmt(stats['rank_p_value'], '.3g')}).",
    ]
    for origin, block in marker.get("by_origin", {}).items():
        if block.get("n_prompts"):
            lines.append(
                f"- {origin} ({block['n_prompts']}): marker first in "
                f"{pct(block['marker_top1_fraction'])}, matched word in "
                f"{pct(block['control_top1_fraction'])} — {block['construction']}."
            )
    return lines


def _mitigation_lines(mitigation: Mapping[str, Any] | None) -> list[str]:
    head = ["", "## Mitigations (finding 4)", ""]
    if mitigation is None:
        return [*head, "Mitigation did not run."]
    if not mitigation["strategies"]:
        return [*head, "No prompt was selected for mitigation."]
    raised = ", ".join(f"`{s}`" for s in mitigation["raised_diversity"]) or "none"
    copy_note = "" if mitigation["copy_detection"] else " (copy detection skipped: n/a)"
    lines = [
        *head,
        f"{fmt(mitigation['n_prompts'], ',')} prompts. Strategies whose paired diversity "
        f"change vs the original has a 95 % CI above 0: **{raised}**. Copy fraction = share "
        f"of generations whose nearest training image counts as copied{copy_note}.",
        "",
        "| strategy | diversity | change vs original (95 % CI) | verdict | copy fraction "
        "(95 % CI) |",
        "| --- | ---: | ---: | --- | ---: |",
    ]
    for row in mitigation["strategies"]:
        change = (
            f"{fmt(row['diversity_change_mean'], '+.4f')} "
            f"({ci(row['diversity_change_ci95'], '+.4f')})"
            if row["verdict"] != "baseline"
            else "-"
        )
        copies = f"{pct(row['copy_rate'])} ({ci(row['copy_rate_ci95'], as_pct=True)})"
        lines.append(
            f"| `{row['strategy']}` | {fmt(row['diversity_mean'], '.4f')} | {change} | "
            f"{row['verdict']} | {copies} |"
        )
    return lines


def _detection_lines(detection: Mapping[str, Any] | None) -> list[str]:
    if detection is None:
        return []
    lines = [
        "",
        "## Detection against the planted truth (demo)",
        "",
        f"{fmt(detection['n_planted_scored'], ',')} planted prompts among "
        f"{fmt(detection['n_prompts'], ',')} scored.",
        "",
        "| window | AUC | TPR at 1 % FPR |",
        "| --- | ---: | ---: |",
    ]
    for name, row in detection["windows"].items():
        lines.append(
            f"| {DETECTION_WINDOWS[name]} | {fmt(row['auc'], '.4f')} | "
            f"{fmt(row['tpr_at_1pct_fpr'], '.2f')} |"
        )
    return lines


def detector_numbers(comparison: Mapping[str, Any]) -> dict[str, Any]:
    """The detectors' table of ``results/evaluation/detectors.json``, trimmed for the page."""
    keep = (
        "detector",
        "auc",
        "auc_low",
        "auc_high",
        "tpr_at_1pct_fpr",
        "tpr_at_1pct_fpr_low",
        "tpr_at_1pct_fpr_high",
        "unet_rows_per_prompt",
        "backward_rows_per_prompt",
        "seconds_per_1000_prompts",
        "published",
    )
    rows = [{k: row.get(k) for k in keep} for row in comparison["detectors"]]
    return {
        "primary": comparison["primary"],
        "rows": rows,
        "memorized_sets": comparison["memorized_sets"],
        "combination": comparison["combination"]["verdict"],
    }


def _detector_lines(detectors: Mapping[str, Any] | None) -> list[str]:
    if detectors is None:
        return []
    lines = [
        "",
        "## Detectors side by side (demo)",
        "",
        f"The threshold uses `{detectors['primary']}`. Rows: UNet forward + derivative rows per "
        "prompt; Jaccard: overlap of the flagged set with the primary detector's.",
        "",
        "| detector | AUC (95 % CI) | TPR at 1 % FPR (95 % CI) | rows / prompt | "
        "s / 1,000 prompts | Jaccard | published AUC / TPR (SD 1.4) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    sets = detectors["memorized_sets"]
    for row in detectors["rows"]:
        rows = (row.get("unet_rows_per_prompt") or 0) + (row.get("backward_rows_per_prompt") or 0)
        jaccard = sets.get(row["detector"], {}).get("jaccard")
        lines.append(
            f"| `{row['detector']}` | {fmt(row['auc'], '.4f')} "
            f"({ci((row.get('auc_low'), row.get('auc_high')), '.3f')}) | "
            f"{fmt(row['tpr_at_1pct_fpr'], '.2f')} "
            f"({ci((row.get('tpr_at_1pct_fpr_low'), row.get('tpr_at_1pct_fpr_high')), '.2f')}) | "
            f"{fmt(rows, '.0f')} | {fmt(row.get('seconds_per_1000_prompts'), '.0f')} | "
            f"{fmt(jaccard, '.2f')} | {row.get('published') or 'n/a'} |"
        )
    lines += ["", f"Combined detector: {detectors['combination']}."]
    return lines


def _copy_lines(copies: Mapping[str, Any] | None, synthetic: Mapping[str, Any] | None) -> list[str]:
    lines: list[str] = []
    if synthetic is not None:
        lines += [
            "",
            "## How much of a synthetic set is copies",
            "",
            f"Of {fmt(synthetic['n_images'], ',')} images generated from prompts drawn by report "
            f"frequency, {pct(synthetic['copy_fraction'])} "
            f"({ci(synthetic['copy_fraction_ci95'], as_pct=True)}) are copies of training "
            f"images ({fmt(synthetic['n_copied_train_images'], ',')} distinct images copied).",
        ]
    if copies is None:
        return lines
    lines += [
        "",
        "## Copy detection against the planted truth (demo)",
        "",
        "Generations of the original strategy: copy recall (planted captions' generations "
        "flagged as copies of their own image) and false copies (generations of ordinary "
        "captions - the control prompts of `copy_detection.controls` - flagged as a copy of "
        "anything).",
        "",
        "| embedding | threshold | copy recall (95 % CI) | false copies (95 % CI) | ROC AUC |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for row in copies["embeddings"]:
        lines.append(
            f"| `{row['embedding']}` | {fmt(row['threshold'], '.3f')} | "
            f"{fmt(row['copy_recall'], '.2f')} ({ci(row['copy_recall_ci95'], '.2f')}) | "
            f"{fmt(row['false_copy_rate'], '.2f')} ({ci(row['false_copy_rate_ci95'], '.2f')}) | "
            f"{fmt(row['roc_auc'], '.3f')} |"
        )
    return lines


# --------------------------------------------------------------------------------------------
# The answer in brief, and the demo's self-check against its planted truth
# --------------------------------------------------------------------------------------------

#: The bars the demo organism must clear to count as a valid instrument (issues 12, 13, 17):
#: (what, the summary value's path, "min" | "max", the bar).
VALIDITY_BARS = (
    ("detection AUC (primary detector, configured window)", "detection_auc", "min", 0.99),
    ("detection TPR at 1 % FPR", "detection_tpr", "min", 0.9),
    ("keyed captions with a causal key", "keys_causal_share", "min", 0.9),
    ("causal key ranked first (best attribution method)", "key_top1", "min", 0.9),
    ("copy recall (original strategy, configured embedding)", "copy_recall", "min", 0.9),
    ("false copies (original strategy, ordinary controls)", "false_copy_rate", "max", 0.05),
)


def validity_numbers(summary: Mapping[str, Any]) -> dict[str, Any] | None:
    """The demo's self-check: each bar of :data:`VALIDITY_BARS` with the run's value and
    whether it holds (None outside the demo, where there is no planted truth).

    A value the run could not measure (no causal key, no copy detection) is None and fails
    its bar: a check that did not run is not a pass.
    """
    detection = summary.get("detection")
    if detection is None:
        return None
    configured = (detection.get("windows") or {}).get("configured") or {}
    methods = (summary.get("attribution") or {}).get("methods") or {}
    keys = methods.get("keys") or {}
    best = (methods.get("per_method") or {}).get(methods.get("best")) or {}
    copies = summary.get("copy_detection") or {}
    configured_copies = next(
        (
            row
            for row in copies.get("embeddings", [])
            if row.get("embedding") == copies.get("embedding")
        ),
        {},
    )
    keyed = keys.get("keyed_checked") or 0
    values = {
        "detection_auc": _number(configured.get("auc")),
        "detection_tpr": _number(configured.get("tpr_at_1pct_fpr")),
        "keys_causal_share": keys.get("keyed_causal", 0) / keyed if keyed else None,
        "key_top1": _number(best.get("key_top1")),
        "copy_recall": _number(configured_copies.get("copy_recall")),
        "false_copy_rate": _number(configured_copies.get("false_copy_rate")),
    }
    checks = []
    for label, name, direction, bar in VALIDITY_BARS:
        value = values[name]
        holds = value is not None and (value >= bar if direction == "min" else value <= bar)
        checks.append(
            {
                "check": label,
                "name": name,
                "value": value,
                "bar": bar,
                "direction": direction,
                "holds": holds,
            }
        )
    return {
        "checks": checks,
        "all_hold": all(c["holds"] for c in checks),
        "key_top1_method": methods.get("best"),
        "key_top1_ci95": _interval(best.get("key_top1_ci95")),
        "copy_recall_ci95": _interval(configured_copies.get("copy_recall_ci95")),
    }


def brief_lines(summary: Mapping[str, Any]) -> list[str]:
    """The answer in a few lines (what ``make demo`` prints and the report opens with):
    prompts scored and flagged, marker enrichment, the top attributed word types, whether a
    mitigation raised diversity, the copy fractions, the demo's self-check, where the report
    is. Numbers and shareable word types only, like the rest of the page."""
    prompts, enrichment = summary["prompts"], summary["enrichment"]
    lines = [
        f"- Scored {fmt(prompts['scored'], ',')} unique prompts; flagged "
        f"{fmt(prompts['flagged'], ',')} as memorized ({pct(prompts['flagged_share'])}).",
        f"- Marker enrichment among flagged prompts: odds ratio {fmt(enrichment['odds_ratio'])} "
        f"(95 % CI {ci(enrichment['odds_ratio_ci95'])}): "
        f"{_enrichment_words(enrichment['verdict'])}.",
    ]
    attribution = summary.get("attribution")
    if attribution is not None:
        types = [
            _cell(row["word_type"]) + f" {pct(row['frac_top1'])}" for row in attribution["types"]
        ][:3]
        lines.append(
            f"- Top attributed word types ({attribution['method']}, share ranked first): "
            + (", ".join(types) if types else "none to show")
            + "."
        )
    mitigation = summary.get("mitigation")
    if mitigation is not None and mitigation["strategies"]:
        raised = mitigation["raised_diversity"]
        original = next((s for s in mitigation["strategies"] if s["strategy"] == "original"), {})
        lines.append(
            "- Mitigations that raised diversity: "
            + (", ".join(f"`{s}`" for s in raised) if raised else "none")
            + f"; the original prompts' generations are copies in "
            f"{pct(original.get('copy_rate'))}."
        )
    synthetic = summary.get("synthetic")
    if synthetic is not None:
        lines.append(
            f"- Copy fraction of a {fmt(synthetic['n_images'], ',')}-image synthetic set: "
            f"{pct(synthetic['copy_fraction'])} "
            f"({ci(synthetic['copy_fraction_ci95'], as_pct=True)})."
        )
    validity = summary.get("validity")
    if validity is not None:
        failed = [c["check"] for c in validity["checks"] if not c["holds"]]
        shown = ", ".join(
            f"{c['name']} {fmt(c['value'], '.3g')} ({'≥' if c['direction'] == 'min' else '≤'}"
            f" {fmt(c['bar'], 'g')})"
            for c in validity["checks"]
        )
        lines.append(
            "- Demo self-check against the planted truth: "
            + ("**every bar holds**" if not failed else f"**FAILED: {'; '.join(failed)}**")
            + f" — {shown}."
        )
    lines.append(f"- Full report: `{summary['where']['html_report']}`.")
    return lines


def brief_text(summary: Mapping[str, Any]) -> str:
    """``brief.md``: the heading and :func:`brief_lines`, printed at the end of ``make demo``."""
    return "\n".join(["# The audit in brief", "", *brief_lines(summary)]) + "\n"


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md`` from :func:`audit_summary`'s document: numbers and word types only; it
    opens with :func:`brief_lines`, so the report's first screen gives the answer."""
    where = summary["where"]
    lines = [
        "# Audit summary",
        "",
        "## In brief",
        "",
        *brief_lines(summary),
        "",
        "## Prompts and the marker (findings 1 and 2)",
        "",
        *_prompt_lines(summary["prompts"], summary["enrichment"]),
        *_attribution_lines(summary["attribution"]),
        *_mitigation_lines(summary["mitigation"]),
        *_copy_lines(summary.get("copy_detection"), summary.get("synthetic")),
        *_detection_lines(summary["detection"]),
        *_detector_lines(summary.get("detectors")),
        "",
        "## Where the report is",
        "",
        f"- HTML report with every figure and table: `{where['html_report']}` (`make report`; "
        "it shows report text: keep it inside the credentialed group).",
        f"- This page: `{where['summary']}`; its numbers: `{where['summary_json']}`.",
        f"- Shareable numbers without report text: `{where['share_bundle']}`.",
    ]
    return "\n".join(lines) + "\n"
