"""Unique prompt texts -> the prompts table with de-identification marker counts, and the
prompts stage summary (the ``count_markers`` stage).

Kept apart from reading (:mod:`memaudit.prompts.extract`) because markers and the summary length
change no prompt text: a new marker pattern re-runs this cheap step and what reads its flags
(thresholding), not the scoring of every prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from memaudit.frames import require_columns
from memaudit.text import compile_markers, count_markers

#: Columns and dtypes of the prompts table (sorted by n_reports descending, then prompt_id).
PROMPT_COLUMNS = {
    "prompt_id": "str",
    "text": "str",
    "n_reports": "int64",
    "marker_count": "int64",
    "has_marker": "bool",
    "n_words": "int64",
}

# The reading counts, in the order the summary lists them around the marker counts.
_BEFORE_MARKERS = (
    "source",
    "kind",
    "format",
    "reports_read",
    "reports_used",
    "skipped",
    "skipped_examples",
    "unique_prompts",
)
_AFTER_MARKERS = (
    "section_order",
    "section_rules",
    "section_counts",
    "max_report_bytes",
    "encoding",
    "metadata",
)


def count_prompt_markers(
    texts: pd.DataFrame,
    reading: Mapping[str, Any],
    *,
    markers: Sequence[str] = ("___",),
    top_n: int = 20,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The prompts table and the stage summary from the outputs of ``extract_prompts``.

    Args:
        texts: the texts table (``prompt_id``, ``text``, ``n_reports``).
        reading: the reading counts (``extract_prompts``'s third result).
        markers: de-identification marker regexes (``___`` for MIMIC, ``XXXX`` for IU X-ray).
        top_n: length of ``summary["most_repeated"]``.

    Returns:
        ``(prompts, summary)``: one row per unique prompt (columns :data:`PROMPT_COLUMNS`,
        sorted by n_reports descending, then prompt_id) and a JSON-ready dict.
    """
    require_columns(texts, ("prompt_id", "text", "n_reports"), "texts table")
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    patterns = compile_markers(list(markers))
    text_list = texts["text"].tolist()
    marker_counts = [count_markers(text, patterns) for text in text_list]
    prompts = pd.DataFrame(
        {
            "prompt_id": texts["prompt_id"].tolist(),
            "text": text_list,
            "n_reports": texts["n_reports"].tolist(),
            "marker_count": marker_counts,
            "has_marker": [n > 0 for n in marker_counts],
            "n_words": [len(text.split()) for text in text_list],
        }
    ).astype(PROMPT_COLUMNS)
    prompts = prompts.sort_values(
        ["n_reports", "prompt_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    top = prompts.head(top_n)
    summary: dict[str, Any] = {key: reading[key] for key in _BEFORE_MARKERS}
    summary["prompts_with_marker"] = int(prompts["has_marker"].sum())
    summary["reports_with_marker"] = int(prompts.loc[prompts["has_marker"], "n_reports"].sum())
    summary["marker_patterns"] = list(markers)
    summary.update({key: reading[key] for key in _AFTER_MARKERS})
    summary["most_repeated"] = [
        {"prompt_id": pid, "text": text, "n_reports": int(n)}
        for pid, text, n in zip(top["prompt_id"], top["text"], top["n_reports"], strict=True)
    ]
    return prompts, summary
