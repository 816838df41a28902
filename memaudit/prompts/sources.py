"""Report sources: MIMIC-CXR folders and zips, report tables, the metadata filter, each yielding
raw reports or counted skips.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

# Report path inside a tree or zip: pNN/pSUBJECT/sSTUDY.txt (possibly under files/ and a prefix).
_REPORT_PATH = re.compile(r"(?:^|/)p(\d{2})/p(\d+)/s(\d+)\.txt$")
_TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


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
