"""MIMIC-CXR report sources (a report folder or the report zip), each a counted stream of raw
reports and skips, and the fingerprint of a report folder.

This module imports no pandas: the workflow fingerprints a report folder while it builds the
DAG, where every import costs start-up time.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# Report path inside a tree or zip: pNN/pSUBJECT/sSTUDY.txt (possibly under files/ and a prefix).
_REPORT_PATH = re.compile(r"(?:^|/)p(\d{2})/p(\d+)/s(\d+)\.txt$")
TABLE_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".parquet")


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


@dataclass
class ReportStream:
    """The items of one source: ``n_seen`` is counted when the source is listed (files, zip
    members, table rows) and ``items`` yields exactly one report or skip for each, so a
    consumer can check that nothing was lost on the way."""

    n_seen: int
    items: Iterator[RawReport | Skip]

    def __iter__(self) -> Iterator[RawReport | Skip]:
        return self.items


def decode_report(data: bytes) -> str | Skip:
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


# --------------------------------------------------------------------------------------------
# Report folders
# --------------------------------------------------------------------------------------------


def mimic_root(folder: str | Path) -> Path:
    """The folder to walk: ``folder/files`` when it exists (the parent of ``files/`` was given)."""
    folder = Path(folder)
    inner = folder / "files"
    return inner if inner.is_dir() else folder


def _link_target(path: str) -> os.stat_result | str:
    """What a symbolic link points to, or the skip reason of a link that leads nowhere."""
    try:
        return os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "link_loop"
        if err.errno in (errno.ENOENT, errno.ENOTDIR):
            return "dangling_link"
        raise OSError(err.errno, f"cannot follow the link {path}: {err.strerror}") from err


def list_report_folder(root: str | Path) -> list[tuple[str, str | None]]:
    """``(relative path, skip reason or None)`` of every file below ``root``, sorted by path.

    Symbolic links are followed, to files and to folders alike (a study or ``pNN`` folder may
    be linked in from elsewhere). A link that leads back to a folder on its own path is a
    ``link_loop`` entry and is not entered again; a link to nothing is a ``dangling_link``
    entry. Hidden files and folders (names starting with ``.``: ``.DS_Store``, snakemake's
    ``.snakemake_timestamp``) are not part of the MIMIC-CXR layout and are not listed.
    """
    return [(rel, reason) for rel, reason, _ in _walk(Path(root), with_stat=False)]


def _walk(root: Path, *, with_stat: bool) -> list[tuple[str, str | None, os.stat_result | None]]:
    """:func:`list_report_folder`, each entry with the stat of its file when ``with_stat``."""
    top = os.stat(root)
    entries: list[tuple[str, str | None, os.stat_result | None]] = []
    # Each folder carries the (device, inode) of the folders on its path: the loop guard.
    todo = [(str(root), "", frozenset({(top.st_dev, top.st_ino)}))]
    while todo:
        folder, prefix, ancestors = todo.pop()
        with os.scandir(folder) as scan:
            children = list(scan)
        for entry in children:
            if entry.name.startswith("."):
                continue
            rel = prefix + entry.name
            if entry.is_symlink():
                target = _link_target(entry.path)
                if isinstance(target, str):
                    entries.append((rel, target, None))
                    continue
                is_dir = stat.S_ISDIR(target.st_mode)
            else:
                is_dir = entry.is_dir(follow_symlinks=False)
                needed = is_dir or with_stat
                target = entry.stat(follow_symlinks=False) if needed else None
            if not is_dir:
                entries.append((rel, None, target if with_stat else None))
                continue
            key = (target.st_dev, target.st_ino)
            if key in ancestors:
                entries.append((rel, "link_loop", None))
                continue
            todo.append((entry.path, rel + "/", ancestors | {key}))
    entries.sort(key=lambda entry: entry[0])
    return entries


def iter_mimic_folder(
    folder: str | Path,
    *,
    max_report_bytes: int = 1_000_000,
    keep_study_ids: frozenset[int] | None = None,
) -> ReportStream:
    """Reports of a MIMIC-CXR tree (``files/`` itself or its parent), in sorted path order.

    Every file of :func:`list_report_folder` is one item: a report, or a :class:`Skip`
    (links that lead nowhere or in a circle included).
    """
    folder = Path(folder)
    if not folder.exists():
        raise FileNotFoundError(f"report folder not found: {folder}")
    root = mimic_root(folder)
    entries = list_report_folder(root)

    def items() -> Iterator[RawReport | Skip]:
        for rel, reason in entries:
            if reason is not None:
                yield Skip(rel, reason)
                continue
            ids = _mimic_ids(rel, keep_study_ids)
            if isinstance(ids, Skip):
                yield ids
                continue
            with open(root / rel, "rb") as handle:
                if os.fstat(handle.fileno()).st_size > max_report_bytes:
                    yield Skip(rel, "too_large")
                    continue
                data = handle.read()
            text = decode_report(data)
            if isinstance(text, Skip):
                yield Skip(rel, text.reason)
                continue
            yield RawReport(ids[0], ids[1], ids[2], text)

    return ReportStream(len(entries), items())


def folder_fingerprint(path: str | Path) -> str:
    """A short hash of the relative names, sizes and modification times of the files of a
    report folder (those :func:`iter_mimic_folder` reads), or ``""`` when ``path`` is not a
    folder (snakemake tracks the modification time of a file input itself).

    Snakemake sees only the top folder's own modification time, which does not change when a
    report deep inside is added or edited; as a rule parameter, this hash does.
    """
    path = Path(path)
    if not path.is_dir():
        return ""
    digest = hashlib.sha256()
    entries = _walk(mimic_root(path), with_stat=True)
    for rel, reason, info in entries:
        if info is not None:
            line = f"{rel}\t{info.st_size}\t{info.st_mtime_ns}\n"
        else:
            line = f"{rel}\t{reason}\n"
        digest.update(line.encode("utf-8", "surrogateescape"))
    return f"{len(entries)} files {digest.hexdigest()[:16]}"


# --------------------------------------------------------------------------------------------
# The report zip
# --------------------------------------------------------------------------------------------


def iter_mimic_zip(
    zip_path: str | Path,
    *,
    max_report_bytes: int = 1_000_000,
    keep_study_ids: frozenset[int] | None = None,
) -> ReportStream:
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
    members = sorted(
        (info for info in archive.infolist() if not info.is_dir()),
        key=lambda info: info.filename,
    )

    def items() -> Iterator[RawReport | Skip]:
        with archive:
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
                text = decode_report(data)
                if isinstance(text, Skip):
                    yield Skip(info.filename, text.reason)
                    continue
                yield RawReport(ids[0], ids[1], ids[2], text)

    return ReportStream(len(members), items())


def source_kind(source: Path, kind: str) -> str:
    """``mimic`` or ``table``: ``kind`` itself, or for ``auto`` what ``source`` looks like."""
    if kind not in ("auto", "mimic", "table"):
        raise ValueError(f"kind must be 'auto', 'mimic' or 'table', not {kind!r}")
    if not source.exists():
        raise FileNotFoundError(f"report source not found: {source}")
    if kind != "auto":
        return kind
    if source.is_dir() or source.name.lower().endswith(".zip"):
        return "mimic"
    if source.name.lower().endswith(TABLE_SUFFIXES):
        return "table"
    raise ValueError(
        f"cannot tell the kind of report source {source}: expected a folder, a .zip, or a table "
        f"({', '.join(TABLE_SUFFIXES)}); set kind explicitly"
    )
