r"""Raw radiology reports -> unique prompt texts (the ``extract_prompts`` stage).

Reports come from one of three places:

- a MIMIC-CXR report tree (``files/pXX/pSUBJECT/sSTUDY.txt``; linked folders are followed),
- the MIMIC-CXR report zip (read member by member, never unpacked),
- a table (CSV / TSV / parquet) with a text column, e.g. IU X-ray's ``indiana_reports.csv``.

MIMIC reports are split into sections and one section is the prompt, under one of two rule
sets (``rules``): ``memaudit`` (the default, :mod:`memaudit.prompts.sections`: the official
MIT-LCP parser with a few deliberate changes) or ``official``
(:mod:`memaudit.prompts.official`: MIT-LCP's ``create_section_files.py`` choice exactly). Either
way the prompt is the LAST section of the first name in the order (default impression,
findings, last_paragraph, comparison), with its whitespace normalised.

Every report seen is either used or a counted skip with a reason (see :data:`SKIP_REASONS`),
and the stage checks that ``reports_read == reports_used + sum(skipped.values())``; a source
without one usable report stops the stage. De-identification markers are counted by the next
stage (:mod:`memaudit.prompts.markers`): the texts written here change only when the reports or
the way they are read change, so the scoring that reads them is not re-run when only the marker
patterns do.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from memaudit.prompts.official import official_prompt
from memaudit.prompts.sections import DEFAULT_SECTION_ORDER, choose_section, split_sections
from memaudit.prompts.sources import (
    RawReport,
    ReportStream,
    Skip,
    iter_mimic_folder,
    iter_mimic_zip,
    source_kind,
)
from memaudit.prompts.tables import check_encoding, iter_table, load_metadata_filter
from memaudit.text import normalize_whitespace, prompt_id

#: Why a report was not used; every reason is a key of ``summary["skipped"]`` when it occurs.
SKIP_REASONS: dict[str, str] = {
    "not_a_report": "file or zip member not named pNN/pSUBJECT/sSTUDY.txt",
    "dangling_link": "symbolic link to a file or folder that does not exist",
    "link_loop": "symbolic link back to a folder on its own path (or a circle of links)",
    "duplicate_report": "a report with the same id was already read",
    "filtered_out": "study id not kept by the metadata filter",
    "too_large": "report larger than max_report_bytes",
    "empty": "empty file, or blank text cells",
    "not_utf8": "bytes that are not UTF-8 text (or contain NUL bytes)",
    "unreadable": "zip member that cannot be decompressed (bad CRC, unsupported method)",
    "no_usable_section": "no section of the configured order has text",
    "empty_prompt": "the chosen text is empty after whitespace normalisation",
}

#: The section rule sets (``reports.rules``).
SECTION_RULES: tuple[str, ...] = ("memaudit", "official")

#: How many report names per skip reason ``summary["skipped_examples"]`` keeps.
MAX_SKIP_EXAMPLES = 5

#: Columns and dtypes of the texts table (sorted by n_reports descending, then prompt_id).
TEXT_COLUMNS = {"prompt_id": "str", "text": "str", "n_reports": "int64"}


class NoUsableReports(ValueError):
    """A report source from which not one prompt could be taken."""


@dataclass
class _Tally:
    """The reports used so far (one entry per column of the report map) and the skips."""

    skipped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)
    seen_ids: set[str] = field(default_factory=set)
    report_ids: list[str] = field(default_factory=list)
    subjects: list[str | None] = field(default_factory=list)
    studies: list[int | None] = field(default_factory=list)
    sections: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def skip(self, name: str, reason: str) -> None:
        """Count a skip, keeping the first few names per reason for the summary."""
        self.skipped[reason] += 1
        names = self.examples.setdefault(reason, [])
        if len(names) < MAX_SKIP_EXAMPLES:
            names.append(name)

    def use(self, report: RawReport, section: str, text: str) -> None:
        self.report_ids.append(report.report_id)
        self.subjects.append(report.subject_id)
        self.studies.append(report.study_id)
        self.sections.append(section)
        self.texts.append(text)


def extract_prompts(
    source: str | Path,
    *,
    kind: str = "auto",
    text_column: str | Sequence[str] | None = None,
    id_column: str | None = None,
    sections: Sequence[str] = DEFAULT_SECTION_ORDER,
    rules: str = "memaudit",
    encoding: str = "utf-8",
    metadata: Mapping[str, Any] | None = None,
    max_report_bytes: int = 1_000_000,
    parse_sections_in_table: bool = False,
    progress: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """Read every report of ``source`` and return its unique prompt texts.

    Args:
        source: MIMIC-CXR report folder or zip, or a CSV / TSV / parquet table.
        kind: "auto" (folder / .zip -> mimic, table suffix -> table), "mimic" or "table".
        text_column: table only: the text column, or a list tried in order.
        id_column: table only: the report id column (default: the row number, ``row<N>``).
        sections: section names tried in order for the prompt (the last of a name wins).
        rules: section rules, "memaudit" (default) or "official" (MIT-LCP's choice exactly).
        encoding: text encoding of a CSV / TSV table.
        metadata: optional filter ``{"path": csv, "id_column": "study_id", "where": {col: [...]}}``.
        max_report_bytes: larger reports are skipped as ``too_large``.
        parse_sections_in_table: table only: split cell text into sections as for MIMIC files.
        progress: show a tqdm bar (on stderr) while reading.

    Returns:
        ``(texts, report_map, reading)``: one row per unique normalised prompt (columns
        :data:`TEXT_COLUMNS`), one row per report used, and a JSON-ready dict of counts.

    Raises:
        NoUsableReports: when no report of ``source`` gives a prompt (the message names the
            source and the skip counts).
    """
    # 1. Check the options and open the source
    source = Path(source)
    order = _check_options(sections, rules, max_report_bytes, encoding)
    kind = source_kind(source, kind)
    keep_ids, metadata_summary = _metadata_filter(metadata)
    stream, parse = _open_source(
        source,
        kind,
        text_column=text_column,
        id_column=id_column,
        max_report_bytes=max_report_bytes,
        keep_ids=keep_ids,
        encoding=encoding,
        parse_sections_in_table=parse_sections_in_table,
    )
    # 2. Choose the prompt of every report
    tally = _read_reports(stream, parse, order, rules, progress)
    _check_tally(source, stream, tally)
    # 3. Tables and counts
    texts, report_map = _tables(tally)
    reading: dict[str, Any] = {
        "source": str(source),
        "kind": kind,
        "format": "folder" if source.is_dir() else ("zip" if kind == "mimic" else "table"),
        "reports_read": stream.n_seen,
        "reports_used": len(report_map),
        "skipped": dict(sorted(tally.skipped.items())),
        "skipped_examples": dict(sorted(tally.examples.items())),
        "unique_prompts": len(texts),
        "section_order": list(order),
        "section_rules": rules,
        "section_counts": dict(Counter(tally.sections).most_common()),
        "max_report_bytes": max_report_bytes,
        "encoding": encoding,
        "metadata": metadata_summary,
    }
    return texts, report_map, reading


def _check_options(
    sections: Sequence[str], rules: str, max_report_bytes: int, encoding: str
) -> tuple[str, ...]:
    """The section order, after checking every reading option."""
    order = tuple(sections)
    if not order or not all(isinstance(s, str) and s for s in order):
        raise ValueError(f"sections must be a non-empty list of section names, got {sections!r}")
    if rules not in SECTION_RULES:
        raise ValueError(f"section rules must be one of {list(SECTION_RULES)}, not {rules!r}")
    if max_report_bytes <= 0:
        raise ValueError(f"max_report_bytes must be positive, got {max_report_bytes}")
    check_encoding(encoding)
    return order


def _metadata_filter(
    metadata: Mapping[str, Any] | None,
) -> tuple[frozenset[int] | None, dict[str, Any] | None]:
    """The study ids a metadata filter keeps and its summary, or (None, None) without one."""
    if metadata is None:
        return None, None
    unknown = set(metadata) - {"path", "id_column", "where"}
    if "path" not in metadata or unknown:
        raise ValueError(
            "metadata must be {path, id_column (optional), where (optional)}; "
            f"got keys {sorted(metadata)}"
        )
    id_column = metadata.get("id_column") or "study_id"
    keep_ids = load_metadata_filter(
        metadata["path"], id_column=id_column, where=metadata.get("where")
    )
    return keep_ids, {
        "path": str(metadata["path"]),
        "id_column": id_column,
        "where": {k: list(v) for k, v in (metadata.get("where") or {}).items()},
        "studies_kept": len(keep_ids),
    }


def _open_source(
    source: Path,
    kind: str,
    *,
    text_column: str | Sequence[str] | None,
    id_column: str | None,
    max_report_bytes: int,
    keep_ids: frozenset[int] | None,
    encoding: str,
    parse_sections_in_table: bool,
) -> tuple[ReportStream, bool]:
    """The stream of ``source``'s reports, and whether their text is split into sections."""
    if kind == "mimic":
        if text_column is not None or id_column is not None:
            raise ValueError("text_column / id_column apply to tables only, not MIMIC reports")
        reader = iter_mimic_folder if source.is_dir() else iter_mimic_zip
        return reader(source, max_report_bytes=max_report_bytes, keep_study_ids=keep_ids), True
    if source.is_dir():
        raise ValueError(f"kind 'table' needs a table file, but {source} is a folder")
    if text_column is None:
        raise ValueError(f"text_column is required to read report table {source}")
    stream = iter_table(
        source,
        text_column=text_column,
        id_column=id_column,
        max_report_bytes=max_report_bytes,
        keep_study_ids=keep_ids,
        encoding=encoding,
    )
    return stream, parse_sections_in_table


def _read_reports(
    stream: ReportStream, parse: bool, order: tuple[str, ...], rules: str, progress: bool
) -> _Tally:
    """Every item of ``stream`` used (its prompt chosen and normalised) or counted as a skip."""
    tally = _Tally()
    bar = tqdm(stream, desc="reports", unit=" reports", disable=not progress, mininterval=5)
    for item in bar:
        if isinstance(item, Skip):
            tally.skip(item.name, item.reason)
            continue
        if item.report_id in tally.seen_ids:
            tally.skip(item.report_id, "duplicate_report")
            continue
        tally.seen_ids.add(item.report_id)
        if not parse:
            section, text = item.section or "text", item.text
        else:
            if rules == "official":
                chosen = official_prompt(item.text, item.report_id, order)
            else:
                chosen = choose_section(split_sections(item.text), order)
            if chosen is None:
                tally.skip(item.report_id, "no_usable_section")
                continue
            section, text = chosen
        text = normalize_whitespace(text)
        if not text:
            tally.skip(item.report_id, "empty_prompt")
            continue
        tally.use(item, section, text)
    return tally


def _check_tally(source: Path, stream: ReportStream, tally: _Tally) -> None:
    """Every file seen was used or skipped, and at least one was used."""
    n_used, n_skipped = len(tally.report_ids), sum(tally.skipped.values())
    if stream.n_seen != n_used + n_skipped:
        raise RuntimeError(
            f"internal error reading {source}: {stream.n_seen} files seen, but {n_used} used "
            f"+ {n_skipped} skipped"
        )
    if n_used == 0:
        raise NoUsableReports(
            f"no usable report in {source}: {stream.n_seen} read, none used; skipped "
            f"{dict(sorted(tally.skipped.items())) or 'none'} (examples: "
            f"{dict(sorted(tally.examples.items()))}); check reports.path, reports.kind and "
            "reports.sections"
        )


def _tables(tally: _Tally) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The texts table (unique prompts, most repeated first) and the report map."""
    counts = Counter(tally.texts)
    ids = {text: prompt_id(text) for text in counts}
    texts = pd.DataFrame(
        {
            "prompt_id": [ids[t] for t in counts],
            "text": list(counts),
            "n_reports": [counts[t] for t in counts],
        }
    ).astype(TEXT_COLUMNS)
    texts = texts.sort_values(
        ["n_reports", "prompt_id"], ascending=[False, True], kind="stable"
    ).reset_index(drop=True)
    report_map = pd.DataFrame(
        {
            "report_id": pd.Series(tally.report_ids, dtype="str"),
            "subject_id": pd.Series(tally.subjects, dtype="str"),
            "study_id": pd.Series(tally.studies, dtype="Int64"),
            "section": pd.Series(tally.sections, dtype="str"),
            "prompt_id": pd.Series([ids[t] for t in tally.texts], dtype="str"),
        }
    )
    return texts, report_map
