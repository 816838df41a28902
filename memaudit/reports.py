"""Raw radiology reports -> unique prompts (the ``extract_prompts`` stage).

Reports come from one of three places:

- a MIMIC-CXR report tree (``files/pXX/pSUBJECT/sSTUDY.txt``),
- the MIMIC-CXR report zip (read member by member, never unpacked),
- a table (CSV / TSV / parquet) with a text column, e.g. IU X-ray's ``indiana_reports.csv``.

MIMIC reports are split into sections following the rules of the official MIT-LCP section
parser (re-implemented here): headers are upper case, indented one space and followed by a colon
(``\\n ([A-Z ()/,-]+):\\s``); the text before the first header is the ``preamble``; a report with
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

import os
import re
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from memaudit.text import compile_markers, count_markers, normalize_whitespace, prompt_id

# --------------------------------------------------------------------------------------------
# Data: section names
# --------------------------------------------------------------------------------------------

#: Header names (lower case, inner whitespace collapsed) -> canonical section name. The variants
#: are those the official MIMIC-CXR section parser knows, misspellings included. One deliberate
#: change: the official table maps the typo "ndication" to "impression", which is read here as a
#: slip and mapped to "indication".
SECTION_NAME_MAP: dict[str, str] = {
    # the canonical names themselves
    "preamble": "preamble",
    "impression": "impression",
    "comparison": "comparison",
    "indication": "indication",
    "findings": "findings",
    "examination": "examination",
    "technique": "technique",
    "history": "history",
    "notification": "notification",
    "recommendations": "recommendations",
    "addendum": "addendum",
    "date": "date",
    "comment": "comment",
    "wet read": "wet read",
    # frequent variants
    "comparisons": "comparison",
    "comparison exam": "comparison",
    "comparison film": "comparison",
    "reference exam": "comparison",
    "clinical history": "history",
    "clinical information": "history",
    "patient history": "history",
    "pfi": "history",
    "reason for examination": "indication",
    "reason for exam": "indication",
    "clinical indication": "indication",
    "exam": "examination",
    "type of examination": "examination",
    "conclusion": "impression",
    "findings and impression": "impression",
    "findings/impression": "impression",
    "findings/ impression": "impression",
    "chest, two views": "findings",
    "reference findings": "findings",
    "recommendation(s)": "recommendations",
    "recommendation": "recommendations",
    "wetread": "wet read",
    # misspellings seen in the reports
    "impresson": "impression",
    "imprression": "impression",
    "imoression": "impression",
    "impressoin": "impression",
    "imprssion": "impression",
    "impresion": "impression",
    "imperssion": "impression",
    "mpression": "impression",
    "impession": "impression",
    "finding": "findings",
    "findins": "findings",
    "findindgs": "findings",
    "findgings": "findings",
    "findngs": "findings",
    "findnings": "findings",
    "finidngs": "findings",
    "idication": "indication",
    "ndication": "indication",
    "comparision": "comparison",
    "comparsion": "comparison",
    "comparrison": "comparison",
    "comparisions": "comparison",
}

#: Fallback for headers not in :data:`SECTION_NAME_MAP`: the first of these words contained in
#: the header name becomes its section name ("wet read impression" -> impression).
SECTION_KEYWORDS: tuple[str, ...] = ("impression", "findings", "history", "comparison", "addendum")

#: Last fallback: a header naming the views of the study ("CHEST, PA AND LATERAL:",
#: "PORTABLE AP VIEW:") describes the whole study and is read as findings.
FINDINGS_HEADER_WORDS: tuple[str, ...] = (
    "chest",
    "portable",
    "pa and lateral",
    "lateral and pa",
    "ap and lateral",
    "lateral and ap",
    "frontal and",
    "two views",
    "frontal view",
    "pa view",
    "ap view",
    "one view",
    "lateral view",
    "bone window",
    "frontal upright",
    "frontal semi-upright",
    "ribs",
    "pa and lat",
)

#: Default order in which sections are tried for the prompt (the last section of a name wins).
DEFAULT_SECTION_ORDER: tuple[str, ...] = ("impression", "findings", "last_paragraph", "comparison")

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

# Section header (official pattern) or a line holding only the word ADDENDUM (our addition).
_HEADER = re.compile(r"\n (?P<header>[A-Z ()/,-]+):\s|\n[ \t]*(?P<title>ADDENDUM)[ \t]*(?=\r?\n|$)")
# First blank line of a section (MIMIC writes "\n \n"; plain "\n\n" is accepted too).
_BLANK_LINE = re.compile(r"\n[ \t]*\r?\n")
# Report path inside a tree or zip: pNN/pSUBJECT/sSTUDY.txt (possibly under files/ and a prefix).
_REPORT_PATH = re.compile(r"(?:^|/)p(\d{2})/p(\d+)/s(\d+)\.txt$")
_FINDINGS_WORDS = re.compile("|".join(re.escape(w) for w in FINDINGS_HEADER_WORDS))
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


# --------------------------------------------------------------------------------------------
# Section splitting
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def canonical_section_name(header: str) -> str:
    """Canonical section name of a header as written in a report (``" FINDINGS"`` -> findings).

    Looks the lower-cased name up in :data:`SECTION_NAME_MAP`, then tries the words of
    :data:`SECTION_KEYWORDS` and :data:`FINDINGS_HEADER_WORDS`; an unknown header keeps its
    lower-cased name (e.g. "procedure").
    """
    name = " ".join(header.lower().split())
    if name in SECTION_NAME_MAP:
        return SECTION_NAME_MAP[name]
    for keyword in SECTION_KEYWORDS:
        if keyword in name:
            return keyword
    if _FINDINGS_WORDS.search(name):
        return "findings"
    return name


def split_sections(text: str) -> list[tuple[str, str]]:
    """Split one MIMIC-CXR report into ``(canonical name, text)`` sections, in report order.

    Section texts are returned as written (line breaks kept). Empty impression and findings
    sections are dropped; when no impression or findings is left and the last section has a
    blank line, the text after its first blank line is appended as ``last_paragraph``.
    """
    matches = list(_HEADER.finditer(text))
    if not matches:
        sections = [("full report", text)]
    else:
        sections = [("preamble", text[: matches[0].start()])]
        for i, match in enumerate(matches):
            end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
            header = match.group("header")
            name = canonical_section_name(header) if header is not None else "addendum"
            sections.append((name, text[match.end() : end]))
    sections = [
        (name, body)
        for name, body in sections
        if not (name in ("impression", "findings") and not body.strip())
    ]
    if not any(name in ("impression", "findings") for name, _ in sections) and sections:
        blank = _BLANK_LINE.search(sections[-1][1])
        if blank is not None:
            sections.append(("last_paragraph", sections[-1][1][blank.end() :]))
    return sections


def choose_section(
    sections: Sequence[tuple[str, str]], order: Sequence[str] = DEFAULT_SECTION_ORDER
) -> tuple[str, str] | None:
    """The prompt section: for the first name in ``order`` that has a section with text, the
    LAST such section (an addendum's impression beats the original one), stripped.

    Returns ``(name, text)``, or None when no section of the order has text.
    """
    for wanted in order:
        for name, body in reversed(sections):
            if name == wanted and body.strip():
                return name, body.strip()
    return None


# --------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RawReport:
    """One report as read: its ids and text; ``section`` is preset for table rows (the column
    the text came from) and None for MIMIC files (found by section splitting)."""

    report_id: str
    subject_id: str | None
    study_id: int | None
    text: str
    section: str | None = None


@dataclass(frozen=True)
class Skip:
    """One report (file, zip member or table row) that was read but not used, and why."""

    name: str
    reason: str


def _decode(data: bytes) -> str | Skip:
    """UTF-8 text of a report, or the reason it is not usable (never decodes with replacement)."""
    if not data.strip():
        return Skip("", "empty")
    if b"\x00" in data:
        return Skip("", "not_utf8")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Skip("", "not_utf8")
    return text.removeprefix("\ufeff")


def _mimic_ids(path: str, keep: frozenset[int] | None) -> tuple[str, str, int] | Skip:
    """(report_id, subject_id, study_id) from a report path, or why the path is skipped."""
    match = _REPORT_PATH.search(path)
    if match is None:
        return Skip(path, "not_a_report")
    study_id = int(match.group(3))
    if keep is not None and study_id not in keep:
        return Skip(path, "filtered_out")
    return f"s{match.group(3)}", match.group(2), study_id


def _mimic_root(folder: Path) -> Path:
    """The folder to walk: ``folder/files`` when it exists (the parent of ``files/`` was given)."""
    inner = folder / "files"
    return inner if inner.is_dir() else folder


def iter_mimic_folder(
    folder: str | Path,
    *,
    max_report_bytes: int = 1_000_000,
    keep_study_ids: frozenset[int] | None = None,
) -> Iterator[RawReport | Skip]:
    """Reports of a MIMIC-CXR tree (``files/`` itself or its parent), in sorted path order.

    Every regular file below the root is one item: a report, or a :class:`Skip`. Hidden files
    and folders (names starting with ``.``: ``.DS_Store``, snakemake's
    ``.snakemake_timestamp``) are not part of the MIMIC-CXR layout and are not read.
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"report folder not found: {folder}")
    root = _mimic_root(folder)
    relative_paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = os.path.relpath(dirpath, root)
        for filename in filenames:
            if filename.startswith("."):
                continue
            rel = filename if rel_dir == "." else f"{rel_dir}/{filename}"
            relative_paths.append(rel.replace(os.sep, "/"))
    relative_paths.sort()
    for rel in relative_paths:
        ids = _mimic_ids(rel, keep_study_ids)
        if isinstance(ids, Skip):
            yield ids
            continue
        with open(root / rel, "rb") as handle:
            if os.fstat(handle.fileno()).st_size > max_report_bytes:
                yield Skip(rel, "too_large")
                continue
            data = handle.read()
        text = _decode(data)
        if isinstance(text, Skip):
            yield Skip(rel, text.reason)
            continue
        yield RawReport(ids[0], ids[1], ids[2], text)


def iter_mimic_zip(
    zip_path: str | Path,
    *,
    max_report_bytes: int = 1_000_000,
    keep_study_ids: frozenset[int] | None = None,
) -> Iterator[RawReport | Skip]:
    """Reports of the MIMIC-CXR report zip, read without unpacking, in sorted member order.

    Every member that is not a directory is one item: a report, or a :class:`Skip`
    (``not_a_report`` for README, LICENSE, CSV files, ...). Directory entries hold no data and
    are not items.
    """
    zip_path = Path(zip_path)
    if not zip_path.exists():
        raise FileNotFoundError(f"report zip not found: {zip_path}")
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{zip_path} is not a valid zip file: {err}") from err
    with archive:
        members = sorted(
            (info for info in archive.infolist() if not info.is_dir()),
            key=lambda info: info.filename,
        )
        for info in members:
            ids = _mimic_ids(info.filename, keep_study_ids)
            if isinstance(ids, Skip):
                yield ids
                continue
            if info.file_size > max_report_bytes:
                yield Skip(info.filename, "too_large")
                continue
            try:
                data = archive.read(info)
            except (zipfile.BadZipFile, NotImplementedError, OSError, EOFError):
                yield Skip(info.filename, "unreadable")
                continue
            text = _decode(data)
            if isinstance(text, Skip):
                yield Skip(info.filename, text.reason)
                continue
            yield RawReport(ids[0], ids[1], ids[2], text)


def _read_table(path: Path, columns: list[str]) -> pd.DataFrame:
    """The named columns of a CSV / TSV / parquet table (errors name the file)."""
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            present = list(pq.read_schema(path).names)
            frame = None
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
            frame = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
            present = list(frame.columns)
    except FileNotFoundError:
        raise
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"table {path} is empty") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"table {path} is not UTF-8 text: {err}") from err
    except (pd.errors.ParserError, OSError, ValueError) as err:
        raise ValueError(f"table {path} cannot be read: {err}") from err
    _check_columns(path, columns, present)
    if frame is None:
        try:
            frame = pd.read_parquet(path, columns=columns)
        except (OSError, ValueError) as err:
            raise ValueError(f"table {path} cannot be read: {err}") from err
    return frame[columns]


def _check_columns(path: Path, wanted: list[str], present: list[str]) -> None:
    missing = [c for c in wanted if c not in present]
    if missing:
        raise ValueError(
            f"table {path} has no column(s) {missing}; columns present: {list(present)}"
        )


def _cell(value: Any) -> str:
    """A table cell as text: missing values (None, NaN) are empty."""
    if isinstance(value, str):
        return value
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return str(value)


_STUDY_ID = re.compile(r"s?(\d+)")


def iter_table(
    table_path: str | Path,
    *,
    text_column: str | Sequence[str],
    id_column: str | None = None,
    max_report_bytes: int = 1_000_000,
    keep_study_ids: frozenset[int] | None = None,
) -> Iterator[RawReport | Skip]:
    """Rows of a CSV / TSV / parquet report table, in row order.

    ``text_column`` is one column or a list tried in order (the first non-blank cell is the
    text, and its column the section name). The report id is the ``id_column`` value, else
    ``row<N>`` (N counted from 0); an id like ``50414267`` or ``s50414267`` is also the study id
    used by the metadata filter.
    """
    table_path = Path(table_path)
    if not table_path.exists():
        raise FileNotFoundError(f"report table not found: {table_path}")
    text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
    if not text_columns:
        raise ValueError(f"no text column given for table {table_path}")
    columns = list(dict.fromkeys(text_columns + ([id_column] if id_column else [])))
    frame = _read_table(table_path, columns)
    cells = [[_cell(v) for v in frame[c].tolist()] for c in text_columns]
    ids = [_cell(v) for v in frame[id_column].tolist()] if id_column else None
    for row in range(len(frame)):
        report_id = ids[row] if ids is not None and ids[row] else f"row{row}"
        study_match = _STUDY_ID.fullmatch(report_id) if ids is not None else None
        study_id = int(study_match.group(1)) if study_match else None
        if keep_study_ids is not None and study_id not in keep_study_ids:
            yield Skip(report_id, "filtered_out")
            continue
        chosen = next(
            (
                (col, col_cells[row])
                for col, col_cells in zip(text_columns, cells, strict=True)
                if col_cells[row].strip()
            ),
            None,
        )
        if chosen is None:
            yield Skip(report_id, "empty")
            continue
        if len(chosen[1].encode("utf-8")) > max_report_bytes:
            yield Skip(report_id, "too_large")
            continue
        yield RawReport(report_id, None, study_id, chosen[1], section=chosen[0])


# --------------------------------------------------------------------------------------------
# Metadata filter
# --------------------------------------------------------------------------------------------


def load_metadata_filter(
    metadata_path: str | Path,
    *,
    id_column: str = "study_id",
    where: Mapping[str, Sequence[Any]] | None = None,
) -> frozenset[int]:
    """Study ids kept by a metadata CSV (e.g. ``mimic-cxr-2.0.0-split.csv``).

    A study is kept when at least one of its rows has, for every ``where`` column, one of the
    allowed values (compared as text: ``{"split": ["train"], "ViewPosition": ["PA", "AP"]}``).
    """
    metadata_path = Path(metadata_path)
    if not metadata_path.exists():
        raise FileNotFoundError(f"metadata table not found: {metadata_path}")
    where = dict(where or {})
    wanted = list(dict.fromkeys([id_column, *where]))
    frame = _read_table(metadata_path, wanted)
    keep = pd.Series(True, index=frame.index)
    for column, allowed in where.items():
        if isinstance(allowed, (str, int, float)):
            allowed = [allowed]
        keep &= frame[column].astype(str).isin([str(v) for v in allowed])
    kept = frame.loc[keep, id_column].astype(str).str.strip()
    bad = kept[~kept.str.fullmatch(r"s?\d+")]
    if len(bad):
        raise ValueError(
            f"metadata table {metadata_path}: column {id_column!r} holds non-integer study ids, "
            f"e.g. {bad.iloc[0]!r}"
        )
    return frozenset(int(v.lstrip("s")) for v in kept)


# --------------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------------


def _source_kind(source: Path, kind: str) -> str:
    if kind not in ("auto", "mimic", "table"):
        raise ValueError(f"kind must be 'auto', 'mimic' or 'table', not {kind!r}")
    if not source.exists():
        raise FileNotFoundError(f"report source not found: {source}")
    if kind != "auto":
        return kind
    if source.is_dir() or source.name.lower().endswith(".zip"):
        return "mimic"
    if source.name.lower().endswith(_TABLE_SUFFIXES):
        return "table"
    raise ValueError(
        f"cannot tell the kind of report source {source}: expected a folder, a .zip, or a table "
        f"({', '.join(_TABLE_SUFFIXES)}); set kind explicitly"
    )


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
