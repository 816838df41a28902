r"""Raw radiology reports -> unique prompts (the ``extract_prompts`` stage).

Reports come from one of three places:

- a MIMIC-CXR report tree (``files/pXX/pSUBJECT/sSTUDY.txt``),
- the MIMIC-CXR report zip (read member by member, never unpacked),
- a table (CSV / TSV / parquet) with a text column, e.g. IU X-ray's ``indiana_reports.csv``.

MIMIC reports are split into sections following the rules of the official MIT-LCP section
parser (re-implemented here): headers are upper case, indented one space and followed by a colon
(``\n ([A-Z ()/,-]+):\s``); the text before the first header is the ``preamble``; a report with
no header is one ``full report`` section; header names are mapped onto canonical names
(:data:`SECTION_NAME_MAP`, then :data:`SECTION_KEYWORDS`, then :data:`FINDINGS_HEADER_WORDS`);
empty impression / findings sections are dropped; when neither impression nor findings is left,
the text of the last section after its first blank line becomes a ``last_paragraph`` section.
The prompt is the LAST section of the first name in the order (default impression, findings,
last_paragraph, comparison) that has text.

Two deliberate differences from the official parser, both documented where they live:
a line holding only ``ADDENDUM`` (the centred title MIMIC puts before text appended to a final
report) also starts an ``addendum`` section, so an addendum never leaks into the impression
above it; and the official per-study manual overrides (a hard-coded list of study ids) are not
reproduced.

Every report read is either used or a counted skip with a reason (see :data:`SKIP_REASONS`), so
``reports_read == reports_used + sum(skipped.values())`` always holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from memaudit.prompts.sections import DEFAULT_SECTION_ORDER, choose_section, split_sections
from memaudit.prompts.sources import (
    RawReport,
    Skip,
    _source_kind,
    iter_mimic_folder,
    iter_mimic_zip,
    iter_table,
    load_metadata_filter,
)
from memaudit.text import compile_markers, count_markers, normalize_whitespace, prompt_id

#: Why a report was not used; every reason is a key of ``summary["skipped"]`` when it occurs.
SKIP_REASONS: dict[str, str] = {
    "not_a_report": "file or zip member not named pNN/pSUBJECT/sSTUDY.txt",
    "duplicate_report": "a report with the same id was already read",
    "filtered_out": "study id not kept by the metadata filter",
    "too_large": "report larger than max_report_bytes",
    "empty": "empty file, or blank text cells",
    "not_utf8": "bytes that are not UTF-8 text (or contain NUL bytes)",
    "unreadable": "zip member that cannot be decompressed (bad CRC, unsupported method)",
    "no_usable_section": "no section of the configured order has text",
    "empty_prompt": "the chosen text is empty after whitespace normalisation",
}

#: How many report names per skip reason ``summary["skipped_examples"]`` keeps.
MAX_SKIP_EXAMPLES = 5


def _count_skip(skipped: Counter[str], examples: dict[str, list[str]], skip: Skip) -> None:
    """Count a skip, keeping the first few names per reason for the summary."""
    skipped[skip.reason] += 1
    names = examples.setdefault(skip.reason, [])
    if len(names) < MAX_SKIP_EXAMPLES:
        names.append(skip.name)


_PROMPT_COLUMNS = {
    "prompt_id": "str",
    "text": "str",
    "n_reports": "int64",
    "marker_count": "int64",
    "has_marker": "bool",
    "n_words": "int64",
}


def extract_prompts(
    source: str | Path,
    *,
    kind: str = "auto",
    text_column: str | Sequence[str] | None = None,
    id_column: str | None = None,
    sections: Sequence[str] = DEFAULT_SECTION_ORDER,
    markers: Sequence[str] = ("___",),
    metadata: Mapping[str, Any] | None = None,
    max_report_bytes: int = 1_000_000,
    top_n: int = 20,
    parse_sections_in_table: bool = False,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read every report of ``source`` and return its unique prompts.

    Args:
        source: MIMIC-CXR report folder or zip, or a CSV / TSV / parquet table.
        kind: "auto" (folder / .zip -> mimic, table suffix -> table), "mimic" or "table".
        text_column: table only: the text column, or a list tried in order.
        id_column: table only: the report id column (default: the row number, ``row<N>``).
        sections: section names tried in order for the prompt (the last of a name wins).
        markers: de-identification marker regexes (``___`` for MIMIC, ``XXXX`` for IU X-ray).
        metadata: optional filter ``{"path": csv, "id_column": "study_id", "where": {col: [...]}}``.
        max_report_bytes: larger reports are skipped as ``too_large``.
        top_n: length of ``summary["most_repeated"]``.
        parse_sections_in_table: table only: split cell text into sections as for MIMIC files.
        progress: show a tqdm bar (on stderr) while reading.

    Returns:
        ``(prompts, report_map, summary)``: one row per unique normalised prompt (sorted by
        n_reports descending, then prompt_id), one row per report used, and a JSON-ready dict.
    """
    source = Path(source)
    kind = _source_kind(source, kind)
    order = tuple(sections)
    if not order or not all(isinstance(s, str) and s for s in order):
        raise ValueError(f"sections must be a non-empty list of section names, got {sections!r}")
    if max_report_bytes <= 0:
        raise ValueError(f"max_report_bytes must be positive, got {max_report_bytes}")
    patterns = compile_markers(list(markers))

    keep_ids = None
    metadata_summary = None
    if metadata is not None:
        unknown = set(metadata) - {"path", "id_column", "where"}
        if "path" not in metadata or unknown:
            raise ValueError(
                "metadata must be {path, id_column (optional), where (optional)}; "
                f"got keys {sorted(metadata)}"
            )
        keep_ids = load_metadata_filter(
            metadata["path"],
            id_column=metadata.get("id_column") or "study_id",
            where=metadata.get("where"),
        )
        metadata_summary = {
            "path": str(metadata["path"]),
            "id_column": metadata.get("id_column") or "study_id",
            "where": {k: list(v) for k, v in (metadata.get("where") or {}).items()},
            "studies_kept": len(keep_ids),
        }

    if kind == "mimic":
        if text_column is not None or id_column is not None:
            raise ValueError("text_column / id_column apply to tables only, not MIMIC reports")
        if source.is_dir():
            items: Iterable[RawReport | Skip] = iter_mimic_folder(
                source, max_report_bytes=max_report_bytes, keep_study_ids=keep_ids
            )
        else:
            items = iter_mimic_zip(
                source, max_report_bytes=max_report_bytes, keep_study_ids=keep_ids
            )
        parse = True
    else:
        if source.is_dir():
            raise ValueError(f"kind 'table' needs a table file, but {source} is a folder")
        if text_column is None:
            raise ValueError(f"text_column is required to read report table {source}")
        items = iter_table(
            source,
            text_column=text_column,
            id_column=id_column,
            max_report_bytes=max_report_bytes,
            keep_study_ids=keep_ids,
        )
        parse = parse_sections_in_table

    skipped: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    seen_ids: set[str] = set()
    n_read = 0
    map_ids: list[str] = []
    map_subjects: list[str | None] = []
    map_studies: list[int | None] = []
    map_sections: list[str] = []
    map_texts: list[str] = []
    for item in tqdm(items, desc="reports", unit=" reports", disable=not progress, mininterval=5):
        n_read += 1
        if isinstance(item, Skip):
            _count_skip(skipped, examples, item)
            continue
        if item.report_id in seen_ids:
            _count_skip(skipped, examples, Skip(item.report_id, "duplicate_report"))
            continue
        seen_ids.add(item.report_id)
        if parse:
            chosen = choose_section(split_sections(item.text), order)
            if chosen is None:
                _count_skip(skipped, examples, Skip(item.report_id, "no_usable_section"))
                continue
            section, text = chosen
        else:
            section, text = item.section or "text", item.text
        text = normalize_whitespace(text)
        if not text:
            _count_skip(skipped, examples, Skip(item.report_id, "empty_prompt"))
            continue
        map_ids.append(item.report_id)
        map_subjects.append(item.subject_id)
        map_studies.append(item.study_id)
        map_sections.append(section)
        map_texts.append(text)

    counts = Counter(map_texts)
    ids = {text: prompt_id(text) for text in counts}
    marker_counts = {text: count_markers(text, patterns) for text in counts}
    prompts = pd.DataFrame(
        {
            "prompt_id": [ids[t] for t in counts],
            "text": list(counts),
            "n_reports": [counts[t] for t in counts],
            "marker_count": [marker_counts[t] for t in counts],
            "has_marker": [marker_counts[t] > 0 for t in counts],
            "n_words": [len(t.split()) for t in counts],
        }
    ).astype(_PROMPT_COLUMNS)
    prompts = prompts.sort_values(
        ["n_reports", "prompt_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    report_map = pd.DataFrame(
        {
            "report_id": pd.Series(map_ids, dtype="str"),
            "subject_id": pd.Series(map_subjects, dtype="str"),
            "study_id": pd.Series(map_studies, dtype="Int64"),
            "section": pd.Series(map_sections, dtype="str"),
            "prompt_id": pd.Series([ids[t] for t in map_texts], dtype="str"),
        }
    )
    n_used = len(map_ids)
    assert n_read == n_used + sum(skipped.values()), "internal error: a report was lost"
    top = prompts.head(top_n)
    summary: dict[str, Any] = {
        "source": str(source),
        "kind": kind,
        "format": "folder" if source.is_dir() else ("zip" if kind == "mimic" else "table"),
        "reports_read": n_read,
        "reports_used": n_used,
        "skipped": dict(sorted(skipped.items())),
        "skipped_examples": dict(sorted(examples.items())),
        "unique_prompts": len(prompts),
        "prompts_with_marker": int(prompts["has_marker"].sum()),
        "reports_with_marker": int(prompts.loc[prompts["has_marker"], "n_reports"].sum()),
        "marker_patterns": list(markers),
        "section_order": list(order),
        "section_counts": dict(Counter(map_sections).most_common()),
        "max_report_bytes": max_report_bytes,
        "metadata": metadata_summary,
        "most_repeated": [
            {"prompt_id": pid, "text": text, "n_reports": int(n)}
            for pid, text, n in zip(top["prompt_id"], top["text"], top["n_reports"], strict=True)
        ],
    }
    return prompts, report_map, summary
