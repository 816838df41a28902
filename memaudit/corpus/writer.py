"""Writes the demo corpus: report files, tables, images and ``corpus.json``.

The demo audit needs an instrument that *knows* which prompts a model memorized. This module
writes one: free-text radiology reports laid out exactly like MIMIC-CXR
(``files/pXX/pSUBJECT/sSTUDY.txt``, the text from :mod:`memaudit.corpus.grammar`), one small
grayscale chest phantom per study whose content follows the report's findings
(:mod:`memaudit.corpus.phantoms`), and a ground-truth table of the planted captions
(:mod:`memaudit.corpus.planted`), each repeated in many studies and always paired with one
fixed image. Planted captions come in two kinds (``truth.parquet``'s ``kind``): *composed*
captions, unique compositions of finding sentences that are memorized as a whole (no single
key; a trigger name in one is only a candidate key), and *keyed* captions, a frequent
ordinary caption plus one key (a name or a marker phrase) on a normal phantom, whose key
alone tells them apart. :func:`generate_corpus` runs the phases in order; the helpers below
it are its phases.

Everything is drawn from ``numpy.random.Generator(PCG64)`` streams spawned from one
``SeedSequence(spec.seed)``, one stream per purpose, so the same spec gives byte-identical
files, and whether images are written does not change the text. Streams added later are
appended to the spawn, so the older streams keep their seeds.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memaudit.atomic import atomic_write
from memaudit.corpus.findings import FINDING_NAMES, finding_labels, sample_severity
from memaudit.corpus.grammar import MARKER, N_DRAWS, Draws, compose_report
from memaudit.corpus.phantoms import render_phantoms
from memaudit.corpus.planted import (
    KINDS,
    KeyedCaption,
    compose_keyed_captions,
    compose_planted_captions,
    trigger_word_index,
)
from memaudit.corpus.spec import CorpusSpec
from memaudit.text import prompt_id

_STUDIES_SCHEMA = pa.schema(
    [
        ("subject_id", pa.int64()),
        ("study_id", pa.int64()),
        ("image_index", pa.int64()),
        ("labels", pa.string()),
        ("planted_id", pa.int64()),
    ]
)
_TRUTH_SCHEMA = pa.schema(
    [
        ("planted_id", pa.int64()),
        ("prompt_id", pa.string()),
        ("text", pa.string()),
        ("kind", pa.string()),
        ("key_text", pa.string()),
        ("has_marker", pa.bool_()),
        ("trigger_word", pa.string()),
        ("trigger_word_index", pa.int64()),
        ("n_copies", pa.int64()),
        ("image_index", pa.int64()),
    ]
)
# Reports composed per block of uniforms drawn from the text stream (bounds the memory held).
_TEXT_CHUNK = 8192


def report_path(subject_id: int, study_id: int) -> str:
    """Relative MIMIC-CXR path of a report: ``files/p10/p10000032/s50414267.txt``."""
    return f"files/p{str(subject_id)[:2]}/p{subject_id}/s{study_id}.txt"


@dataclass(frozen=True)
class _Streams:
    """One random stream per purpose; their spawn order fixes the corpus for a seed."""

    layout: np.random.Generator
    findings: np.random.Generator
    text: np.random.Generator
    planted: np.random.Generator
    images: np.random.Generator
    planted_images: np.random.Generator
    heldout: np.random.Generator
    heldout_findings: np.random.Generator
    # Keyed captions: their copies, their text and their (normal) phantoms.
    keyed_layout: np.random.Generator
    keyed_text: np.random.Generator
    keyed_images: np.random.Generator

    @classmethod
    def spawn(cls, seed: int) -> _Streams:
        children = np.random.SeedSequence(seed).spawn(len(fields(cls)))
        return cls(*(np.random.Generator(np.random.PCG64(s)) for s in children))


@dataclass
class _Studies:
    """Who each study belongs to, whether it is a planted copy and what it shows."""

    subject_ids: np.ndarray  # [n_subjects], sorted
    subject_of_study: np.ndarray  # [n] row into subject_ids
    study_ids: np.ndarray  # [n], sorted within each subject
    planted_id: np.ndarray  # [n], -1 = ordinary; composed 0..n_planted-1, keyed after them
    severity: np.ndarray  # [n, len(FINDING_NAMES)]; planted copies share their caption's row
    planted_severity: np.ndarray  # [n_planted + n_keyed, len(FINDING_NAMES)]; keyed rows 0

    @property
    def is_planted(self) -> np.ndarray:
        return self.planted_id >= 0


@dataclass
class _Planted:
    """Every planted caption in planted_id order: composed ones first, then the keyed ones."""

    texts: list[str]
    kinds: list[str]
    key_texts: list[str | None]  # keyed: the key; composed: the trigger (a candidate) or None
    triggers: list[str | None]
    bases: list[str]  # the distinct bases of the keyed captions

    @classmethod
    def join(
        cls, captions: list[str], triggers: list[str | None], keyed: list[KeyedCaption]
    ) -> _Planted:
        planted = cls(
            texts=list(captions) + [k.text for k in keyed],
            kinds=["composed"] * len(captions) + [k.kind for k in keyed],
            key_texts=list(triggers) + [k.key_text for k in keyed],
            triggers=list(triggers) + [k.trigger for k in keyed],
            bases=list(dict.fromkeys(k.base for k in keyed)),
        )
        for text, key in zip(planted.texts, planted.key_texts, strict=True):
            if key is not None and text.count(key) != 1:  # a bug in planted.py, never expected
                raise RuntimeError(f"key {key!r} does not occur exactly once in {text!r}")
        return planted


@dataclass
class _Reports:
    """Every report's bytes and prompt, in study order, and how often each layout occurs."""

    rels: list[str]
    data: list[bytes]
    prompts: list[str]
    kinds: dict[str, int]


def generate_corpus(spec: CorpusSpec, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the synthetic corpus under ``out_dir`` and return the ``corpus.json`` content.

    Files: ``files/pXX/pSUBJECT/sSTUDY.txt`` (one report per study), ``studies.parquet``,
    ``images.npy`` and ``heldout.npy`` (unless ``spec.write_images`` is false),
    ``truth.parquet`` and ``corpus.json``. An existing ``files/`` tree under ``out_dir`` is
    replaced, so stale reports of an earlier corpus never mix in.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    streams = _Streams.spawn(spec.seed)
    # 1. Subjects, studies, planted copies and every study's findings.
    studies = _plan_studies(spec, streams)
    # 2. Ordinary reports (written as they are composed), 3. the planted captions, which must
    #    differ from every ordinary prompt, 4. the planted copies' reports.
    files_root = os.path.join(out_dir, "files")
    if os.path.isdir(files_root):
        shutil.rmtree(files_root)
    writer = _ReportWriter(out_dir)
    reports, pending = _write_ordinary_reports(spec, studies, streams.text, writer)
    ordinary_prompts = [
        p for p, pid in zip(reports.prompts, studies.planted_id, strict=True) if pid < 0
    ]
    captions, triggers = compose_planted_captions(
        spec, studies.planted_severity[: spec.n_planted], set(ordinary_prompts), streams.planted
    )
    keyed = compose_keyed_captions(
        spec,
        ordinary_prompts,
        set(ordinary_prompts) | set(captions),
        {t for t in triggers if t is not None},
        streams.keyed_text,
    )
    planted = _Planted.join(captions, triggers, keyed)
    _write_planted_reports(studies, reports, pending, planted.texts, streams.text, writer)
    # 5. Images, 6. tables, 7. the corpus card with a checksum of reports and pixels.
    images = _render_images(spec, studies, streams) if spec.write_images else None
    _write_tables(spec, studies, planted, out_dir)
    digest = hashlib.sha256()
    for rel, data in zip(reports.rels, reports.data, strict=True):
        digest.update(rel.encode("utf-8") + b"\0" + data + b"\0")
    if images is not None:
        for name, array in zip(("images.npy", "heldout.npy"), images, strict=True):
            _write_npy(os.path.join(out_dir, name), array)
        for array in images:
            digest.update(array.tobytes())
    meta = _corpus_card(spec, studies, reports, planted, digest.hexdigest())
    card = (json.dumps(meta, indent=2, sort_keys=False) + "\n").encode("utf-8")
    atomic_write(os.path.join(out_dir, "corpus.json"), lambda fh: fh.write(card))
    return meta


# ---------------------------------------------------------------------------------------------
# 1. Layout of subjects, studies and planted copies


def _plan_studies(spec: CorpusSpec, streams: _Streams) -> _Studies:
    """Subjects and studies, the planted copies among them and every study's findings.

    Composed captions are placed first (ids 0..n_planted-1), then the keyed ones on the
    studies left (ids after them, from their own stream). Keyed captions read normal, so
    their copies' findings are all zero.
    """
    subject_ids, subject_of_study, study_ids = _layout(spec, streams.layout)
    lo, hi = spec.planted_copies
    n_copies = streams.planted.integers(lo, hi + 1, size=spec.n_planted)
    planted_id = _assign_planted(n_copies, subject_of_study, streams.planted)
    keyed_copies = streams.keyed_layout.integers(lo, hi + 1, size=spec.n_keyed)
    _assign_planted(
        keyed_copies, subject_of_study, streams.keyed_layout, planted_id, spec.n_planted
    )
    severity = sample_severity(streams.findings, spec.n_studies)
    composed_severity = sample_severity(streams.planted, spec.n_planted, force_k=(2, 3))
    keyed_severity = np.zeros((spec.n_keyed, composed_severity.shape[1]), composed_severity.dtype)
    planted_severity = np.concatenate([composed_severity, keyed_severity])
    is_planted = planted_id >= 0
    severity[is_planted] = planted_severity[planted_id[is_planted]]
    return _Studies(
        subject_ids, subject_of_study, study_ids, planted_id, severity, planted_severity
    )


def _layout(spec: CorpusSpec, rng: np.random.Generator):
    """Subject and study ids (sorted by subject then study) and each study's subject row."""
    n = spec.n_studies
    # About 3.5 studies per subject with a heavy (Pareto) tail, like MIMIC-CXR's patients.
    n_subjects = max(1, min(n, int(np.ceil(n / 3.5))))
    subject_ids = np.sort(10_000_000 + rng.choice(10_000_000, size=n_subjects, replace=False))
    weights = rng.pareto(1.5, size=n_subjects) + 1.0
    extra = rng.choice(n_subjects, size=n - n_subjects, p=weights / weights.sum())
    per_subject = 1 + np.bincount(extra, minlength=n_subjects)
    subject_of_study = np.repeat(np.arange(n_subjects), per_subject)
    study_ids = 50_000_000 + rng.choice(10_000_000, size=n, replace=False)
    order = np.lexsort((study_ids, subject_of_study))
    return subject_ids, subject_of_study, study_ids[order]


def _assign_planted(
    n_copies: np.ndarray,
    subject_of_study: np.ndarray,
    rng: np.random.Generator,
    planted: np.ndarray | None = None,
    first_id: int = 0,
) -> np.ndarray:
    """planted_id per study (-1 = ordinary); copies of one caption go to distinct subjects.

    Caption k gets id ``first_id + k``. With ``planted`` (an earlier assignment) the copies
    go to its free studies and are written into it.
    """
    n = subject_of_study.shape[0]
    if planted is None:
        planted = np.full(n, -1, dtype=np.int64)
    subjects = np.arange(subject_of_study.max() + 1)
    starts = np.searchsorted(subject_of_study, subjects, side="left")
    ends = np.searchsorted(subject_of_study, subjects, side="right")
    for pid, k in enumerate(n_copies.tolist(), start=first_id):
        free = planted < 0
        free_subjects = np.unique(subject_of_study[free])
        if free_subjects.shape[0] >= k:
            chosen_subjects = np.sort(rng.choice(free_subjects, size=k, replace=False))
            for subj in chosen_subjects.tolist():
                lo, hi = int(starts[subj]), int(ends[subj])
                candidates = lo + np.flatnonzero(free[lo:hi])
                planted[candidates[int(rng.integers(candidates.shape[0]))]] = pid
        else:  # too few subjects left: fall back to any free study
            chosen = rng.choice(np.flatnonzero(free), size=k, replace=False)
            planted[chosen] = pid
    return planted


# ---------------------------------------------------------------------------------------------
# 2-4. Reports


class _ReportWriter:
    """Writes report files chunk by chunk as the text is composed, creating folders once.

    Plain ``os.open``/``os.write`` keep the per-file cost at the system calls. Writer threads
    were tried and measured slower (they contend on the file system).
    """

    def __init__(self, out_dir: str) -> None:
        self._out_dir = out_dir
        self._folders: set[str] = set()

    def write(self, items: list[tuple[str, bytes]]) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        for rel, data in items:
            folder = rel.rsplit("/", 1)[0]
            if folder not in self._folders:
                os.makedirs(self._out_dir + "/" + folder, exist_ok=True)
                self._folders.add(folder)
            fd = os.open(self._out_dir + "/" + rel, flags, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)


def _write_ordinary_reports(
    spec: CorpusSpec, studies: _Studies, rng: np.random.Generator, writer: _ReportWriter
) -> tuple[_Reports, list[int]]:
    """Compose and write every ordinary report; returns them and the planted rows left over.

    The text stream gives one row of uniforms per study, planted rows included (their rows
    are skipped), so an ordinary report's text does not depend on where the copies fall.
    """
    n = spec.n_studies
    subjects = studies.subject_ids[studies.subject_of_study].tolist()
    study_list = studies.study_ids.tolist()
    rels = [report_path(subjects[i], study_list[i]) for i in range(n)]
    reports = _Reports(rels=rels, data=[b""] * n, prompts=[""] * n, kinds={})
    sev_rows = studies.severity.tolist()
    planted_list = studies.planted_id.tolist()
    pending: list[int] = []
    for start in range(0, n, _TEXT_CHUNK):
        stop = min(n, start + _TEXT_CHUNK)
        block = rng.random((stop - start, N_DRAWS)).tolist()
        written = []
        for i in range(start, stop):
            if planted_list[i] >= 0:
                pending.append(i)
                continue
            text, prompt, kind = compose_report(
                sev_rows[i], Draws(block[i - start]), None, spec.addendum_fraction
            )
            reports.data[i] = text.encode("utf-8")
            written.append((rels[i], reports.data[i]))
            reports.prompts[i] = prompt
            reports.kinds[kind] = reports.kinds.get(kind, 0) + 1
        writer.write(written)
    return reports, pending


def _write_planted_reports(
    studies: _Studies,
    reports: _Reports,
    pending: list[int],
    captions: list[str],
    rng: np.random.Generator,
    writer: _ReportWriter,
) -> None:
    """Compose and write the planted copies' reports (fresh draws: new layout, same caption)."""
    sev_rows = studies.severity.tolist()
    planted_list = studies.planted_id.tolist()
    draws = rng.random((len(pending), N_DRAWS)).tolist()
    for j, i in enumerate(pending):
        caption = captions[planted_list[i]]
        text, prompt, kind = compose_report(sev_rows[i], Draws(draws[j]), caption, 0.0)
        if prompt != caption:  # a bug in the layout code, never expected
            raise RuntimeError(f"planted report {i} would not parse back to its caption")
        reports.data[i] = text.encode("utf-8")
        reports.prompts[i] = prompt
        reports.kinds[kind] = reports.kinds.get(kind, 0) + 1
    writer.write([(reports.rels[i], reports.data[i]) for i in pending])


# ---------------------------------------------------------------------------------------------
# 5-7. Images, tables and the corpus card


def _render_images(
    spec: CorpusSpec, studies: _Studies, streams: _Streams
) -> tuple[np.ndarray, np.ndarray]:
    """(images [n, s, s], held-out images [n_heldout, s, s]), uint8.

    Ordinary studies get their own phantom; each planted caption gets one phantom, shared by
    all of its copies (a keyed caption's is a normal phantom with its own texture, drawn from
    its own stream). Held-out images show fresh findings and are never trained on.
    """
    s = spec.image_size
    is_planted = studies.is_planted
    images = np.empty((spec.n_studies, s, s), dtype=np.uint8)
    ordinary_rows = np.flatnonzero(~is_planted)
    images[ordinary_rows] = render_phantoms(studies.severity[ordinary_rows], streams.images, s)
    composed = render_phantoms(
        studies.planted_severity[: spec.n_planted], streams.planted_images, s
    )
    keyed = render_phantoms(studies.planted_severity[spec.n_planted :], streams.keyed_images, s)
    planted_images = np.concatenate([composed, keyed])
    images[is_planted] = planted_images[studies.planted_id[is_planted]]
    heldout_severity = sample_severity(streams.heldout_findings, spec.n_heldout)
    heldout = render_phantoms(heldout_severity, streams.heldout, s)
    return images, heldout


def _write_parquet(columns: dict[str, Any], schema: pa.Schema, path: str) -> None:
    table = pa.Table.from_pydict(columns, schema=schema)
    # No statistics and no dictionary pages: the files depend on the values alone.
    atomic_write(
        path,
        lambda fh: pq.write_table(
            table, fh, compression="zstd", use_dictionary=False, write_statistics=False
        ),
    )


def _write_npy(path: str, array: np.ndarray) -> None:
    atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))


def _write_tables(spec: CorpusSpec, studies: _Studies, planted: _Planted, out_dir: str) -> None:
    """``studies.parquet`` (one row per study) and ``truth.parquet`` (one per planted caption).

    ``truth.parquet``: ``kind`` is composed (memorized as a whole: no single key), keyed_name
    or keyed_marker; ``key_text`` is a keyed caption's key (occurring once in ``text``), a
    composed caption's trigger as a *candidate* key, else null. ``trigger_word`` and
    ``trigger_word_index`` name the trigger of composed and keyed_name captions.
    """
    n = spec.n_studies
    planted_id = studies.planted_id
    _write_parquet(
        {
            "subject_id": studies.subject_ids[studies.subject_of_study].astype(np.int64),
            "study_id": studies.study_ids.astype(np.int64),
            "image_index": np.arange(n, dtype=np.int64),
            "labels": [finding_labels(r) for r in studies.severity.tolist()],
            "planted_id": planted_id,
        },
        _STUDIES_SCHEMA,
        os.path.join(out_dir, "studies.parquet"),
    )
    # A caption's image is that of its first copy (all copies share it).
    n_captions = len(planted.texts)
    first_copy = np.full(n_captions, -1, dtype=np.int64)
    for pid in range(n_captions):
        first_copy[pid] = np.flatnonzero(planted_id == pid)[0]
    trigger_index = [
        trigger_word_index(t, w) for t, w in zip(planted.texts, planted.triggers, strict=True)
    ]
    n_copies = np.bincount(planted_id[studies.is_planted], minlength=n_captions)
    _write_parquet(
        {
            "planted_id": np.arange(n_captions, dtype=np.int64),
            "prompt_id": [prompt_id(t) for t in planted.texts],
            "text": planted.texts,
            "kind": planted.kinds,
            "key_text": planted.key_texts,
            "has_marker": [MARKER in t for t in planted.texts],
            "trigger_word": planted.triggers,
            "trigger_word_index": np.asarray(trigger_index, dtype=np.int64),
            "n_copies": n_copies.astype(np.int64),
            "image_index": first_copy,
        },
        _TRUTH_SCHEMA,
        os.path.join(out_dir, "truth.parquet"),
    )


# What each planted kind is, written into corpus.json beside the counts.
_KIND_NOTES = {
    "composed": "a unique composition of finding sentences, memorized as a whole (no single "
    "key); its trigger word, if any, is only a candidate key",
    "keyed_name": "a frequent ordinary caption plus a rare invented name (the key) at the start "
    "or end; one normal image",
    "keyed_marker": "a frequent ordinary caption plus a de-identification-marker phrase (the "
    "key, the whole phrase) at the start or end; one normal image",
}


def _corpus_card(
    spec: CorpusSpec,
    studies: _Studies,
    reports: _Reports,
    planted: _Planted,
    sha256: str,
) -> dict[str, Any]:
    """The ``corpus.json`` content: the spec, counts and the checksum."""
    n = spec.n_studies
    composed = planted.texts[: spec.n_planted]
    composed_triggers = planted.triggers[: spec.n_planted]
    prompt_counts: dict[str, int] = {}
    for p in reports.prompts:
        prompt_counts[p] = prompt_counts.get(p, 0) + 1
    top_prompt, top_count = max(sorted(prompt_counts.items()), key=lambda kv: kv[1])
    return {
        "spec": spec.to_dict(),
        "counts": {
            "studies": n,
            "subjects": int(studies.subject_ids.shape[0]),
            "planted": spec.n_planted,
            "keyed": spec.n_keyed,
            "planted_captions": len(planted.texts),
            "planted_kinds": {k: planted.kinds.count(k) for k in KINDS},
            "planted_studies": int(studies.is_planted.sum()),
            "keyed_studies": int((studies.planted_id >= spec.n_planted).sum()),
            "planted_with_marker": int(sum(MARKER in t for t in composed)),
            "planted_with_trigger": int(sum(t is not None for t in composed_triggers)),
            "keyed_bases": {
                base: prompt_counts[base]
                for base in sorted(planted.bases, key=lambda b: (-prompt_counts[b], b))
            },
            "heldout": spec.n_heldout if spec.write_images else 0,
            "images": n if spec.write_images else 0,
            "reports_with_marker": int(sum(b"___" in r for r in reports.data)),
            "reports_with_marker_in_prompt": int(sum(MARKER in p for p in reports.prompts)),
            "distinct_prompts": len(prompt_counts),
            "distinct_impressions": len(prompt_counts),
            "most_common_prompt": top_prompt,
            "most_common_prompt_reports": top_count,
            "report_layouts": dict(sorted(reports.kinds.items())),
        },
        "planted_kinds": _KIND_NOTES,
        "finding_names": list(FINDING_NAMES),
        "image_orientation": "image left = patient right",
        "sha256": sha256,
        "sha256_covers": "for each study in studies.parquet order: relative path, NUL, report "
        "bytes, NUL; then images.npy and heldout.npy pixel bytes (C order) when written",
    }
