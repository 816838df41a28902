"""Report tables (CSV / TSV / parquet) as counted streams of reports, and the metadata filter.

Cells are checked before any becomes a prompt: a text column that holds numbers is refused
(numbers are not report text), and bytes that are not text in the table's encoding are named
by row and report id, not by a byte offset into the file.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from memaudit.prompts.sources import RawReport, ReportStream, Skip

_STUDY_ID = re.compile(r"s?(\d+)")
# Bytes the decoder could not read, kept by "surrogateescape" as U+DC80..U+DCFF.
_UNDECODED = re.compile("[\udc80-\udcff]")


def check_encoding(encoding: str) -> str:
    """The codec name of ``encoding``, or a ValueError naming the setting."""
    try:
        return codecs.lookup(encoding).name
    except LookupError as err:
        raise ValueError(
            f"unknown text encoding {encoding!r} (reports.encoding), e.g. utf-8, latin-1, cp1252"
        ) from err


def _read_table(path: Path, columns: list[str], encoding: str = "utf-8") -> pd.DataFrame:
    """The named columns of a CSV / TSV / parquet table (errors name the file).

    CSV cells that are not ``encoding`` text keep their bytes as escapes (see
    :func:`_check_decoded`), so the error can say where they are.
    """
    name = path.name.lower()
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            present = list(pq.read_schema(path).names)
            frame = None
        else:
            sep = "\t" if name.endswith((".tsv", ".tsv.gz")) else ","
            # object cells: the arrow-backed string dtype cannot hold the escaped bytes
            frame = pd.read_csv(
                path,
                sep=sep,
                dtype=object,
                keep_default_na=False,
                encoding=encoding,
                encoding_errors="surrogateescape",
            )
            present = list(frame.columns)
    except FileNotFoundError:
        raise
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"table {path} is empty") from err
    except UnicodeError as err:
        raise ValueError(f"table {path} is not {encoding} text: {err}") from err
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


def _shown(text: str) -> str:
    """``text`` with undecoded bytes written as ``\\xNN``."""
    return _UNDECODED.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text)


def _check_decoded(
    path: Path, columns: Mapping[str, list[str]], ids: list[str], encoding: str
) -> None:
    """Raise, naming the first row, its report id and the column, if a cell holds bytes that
    are not ``encoding`` text."""
    for column, cells in columns.items():
        for row, cell in enumerate(cells):
            found = _UNDECODED.search(cell)
            if found is None:
                continue
            byte = ord(found.group()) - 0xDC00
            raise ValueError(
                f"table {path} is not {encoding} text: row {row} (report id "
                f"'{_shown(ids[row])}'), column {column!r} holds byte 0x{byte:02x} in "
                f"'{_shown(cell[max(0, found.start() - 20) : found.end() + 20])}'; set "
                "reports.encoding to the table's encoding (e.g. latin-1 or cp1252)"
            )


def _numbers_dtype(cells: list[str]) -> str | None:
    """The dtype pandas would give text cells that all hold numbers, else None."""
    filled = [c for c in cells if c.strip()]
    if not filled:
        return None
    try:
        float(filled[0])
    except ValueError:
        return None  # the usual case, text: no need to parse every cell
    parsed = pd.to_numeric(pd.Series(filled, dtype=object), errors="coerce")
    return None if parsed.isna().any() else str(parsed.dtype)


def _check_not_numeric(path: Path, frame: pd.DataFrame, columns: list[str]) -> None:
    """Refuse a text column that holds numbers: they would become prompts without a word."""
    for column in columns:
        values = frame[column]
        if pd.api.types.is_numeric_dtype(values.dtype):  # bool included
            # a column of missing values only holds no numbers (its rows are empty skips)
            dtype = str(values.dtype) if values.notna().any() else None
        else:
            dtype = _numbers_dtype([_cell(v) for v in values.tolist()])
        if dtype is not None:
            raise ValueError(
                f"table {path}: text column {column!r} holds numbers (dtype {dtype}), not "
                "report text; set reports.text_column to the column(s) with the report text"
            )


def iter_table(
    table_path: str | Path,
    *,
    text_column: str | Sequence[str],
    id_column: str | None = None,
    max_report_bytes: int = 1_000_000,
    keep_study_ids: frozenset[int] | None = None,
    encoding: str = "utf-8",
) -> ReportStream:
    """Rows of a CSV / TSV / parquet report table, in row order.

    ``text_column`` is one column or a list tried in order (the first non-blank cell is the
    text, and its column the section name). The report id is the ``id_column`` value, else
    ``row<N>`` (N counted from 0); an id like ``50414267`` or ``s50414267`` is also the study id
    used by the metadata filter. ``encoding`` decodes CSV and TSV files (parquet text is
    UTF-8 by definition).
    """
    table_path = Path(table_path)
    if not table_path.exists():
        raise FileNotFoundError(f"report table not found: {table_path}")
    text_columns = [text_column] if isinstance(text_column, str) else list(text_column)
    if not text_columns:
        raise ValueError(f"no text column given for table {table_path}")
    columns = list(dict.fromkeys(text_columns + ([id_column] if id_column else [])))
    frame = _read_table(table_path, columns, check_encoding(encoding))
    _check_not_numeric(table_path, frame, text_columns)
    cells = {c: [_cell(v) for v in frame[c].tolist()] for c in columns}
    given_ids = cells[id_column] if id_column else [""] * len(frame)
    ids = [given or f"row{row}" for row, given in enumerate(given_ids)]
    _check_decoded(table_path, cells, ids, encoding)

    def items() -> Iterator[RawReport | Skip]:
        for row, report_id in enumerate(ids):
            study_match = _STUDY_ID.fullmatch(report_id) if id_column else None
            study_id = int(study_match.group(1)) if study_match else None
            if keep_study_ids is not None and study_id not in keep_study_ids:
                yield Skip(report_id, "filtered_out")
                continue
            chosen = next(
                ((col, cells[col][row]) for col in text_columns if cells[col][row].strip()),
                None,
            )
            if chosen is None:
                yield Skip(report_id, "empty")
                continue
            if len(chosen[1].encode("utf-8")) > max_report_bytes:
                yield Skip(report_id, "too_large")
                continue
            yield RawReport(report_id, None, study_id, chosen[1], section=chosen[0])

    return ReportStream(len(frame), items())


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
    cells = {c: [_cell(v) for v in frame[c].tolist()] for c in wanted}
    _check_decoded(metadata_path, cells, cells[id_column], "utf-8")
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
            f"e.g. {_shown(bad.iloc[0])!r}"
        )
    return frozenset(int(v.lstrip("s")) for v in kept)
