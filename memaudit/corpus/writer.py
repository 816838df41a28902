"""A deterministic synthetic corpus in MIMIC-CXR format, with planted (memorizable) captions.

The demo audit needs an instrument that *knows* which prompts a model memorized. This module
writes one: free-text radiology reports laid out exactly like MIMIC-CXR
(``files/pXX/pSUBJECT/sSTUDY.txt``), one small grayscale chest phantom per study whose content
follows the report's findings, and a ground-truth table of planted captions, each repeated in
many studies and always paired with one fixed image.

Reports follow MIMIC-CXR's typography: a ``FINAL REPORT`` title line, section headers indented
one space and followed by a colon, blank lines holding one space, text wrapped below 79
characters with every line indented one space, and ``___`` wherever MIMIC removed protected
health information. Impressions come from a findings grammar with a heavy-tailed frequency: a
few normal impressions repeat hundreds of times, the rest form a long tail.

Images use the radiological convention: the patient's right is on the image's left.

Everything is drawn from ``numpy.random.Generator(PCG64)`` streams spawned from one
``SeedSequence(spec.seed)``, one stream per purpose, so the same spec gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from memaudit.corpus.grammar import (
    _N_DRAWS,
    MARKER,
    _Draws,
    _grammar_vocabulary,
    _labels,
    _planted_caption,
    _report,
    _sample_severity,
    _trigger_word,
)
from memaudit.corpus.phantoms import render_phantoms
from memaudit.corpus.spec import CorpusSpec
from memaudit.corpus.vocabulary import FINDING_NAMES
from memaudit.text import prompt_id

# ---------------------------------------------------------------------------------------------
# Layout of subjects and studies


def _layout(spec: CorpusSpec, rng: np.random.Generator):
    """Subject and study ids (sorted by subject then study) and each study's subject row."""
    n = spec.n_studies
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
    copies: np.ndarray, subject_of_study: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """planted_id per study (-1 = ordinary); copies of one caption go to distinct subjects."""
    n = subject_of_study.shape[0]
    planted = np.full(n, -1, dtype=np.int64)
    subjects = np.arange(subject_of_study.max() + 1)
    starts = np.searchsorted(subject_of_study, subjects, side="left")
    ends = np.searchsorted(subject_of_study, subjects, side="right")
    for pid, k in enumerate(copies.tolist()):
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
# Writing


def _write_parquet(columns: dict[str, Any], schema: pa.Schema, path: str) -> None:
    table = pa.Table.from_pydict(columns, schema=schema)
    pq.write_table(table, path, compression="zstd", use_dictionary=False, write_statistics=False)


def _write_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


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
        ("has_marker", pa.bool_()),
        ("trigger_word", pa.string()),
        ("trigger_word_index", pa.int64()),
        ("n_copies", pa.int64()),
        ("image_index", pa.int64()),
    ]
)


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


def report_path(subject_id: int, study_id: int) -> str:
    """Relative MIMIC-CXR path of a report: ``files/p10/p10000032/s50414267.txt``."""
    return f"files/p{str(subject_id)[:2]}/p{subject_id}/s{study_id}.txt"


def generate_corpus(spec: CorpusSpec, out_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Write the synthetic corpus under ``out_dir`` and return the ``corpus.json`` content.

    Files: ``files/pXX/pSUBJECT/sSTUDY.txt`` (one report per study), ``studies.parquet``,
    ``images.npy`` and ``heldout.npy`` (unless ``spec.write_images`` is false),
    ``truth.parquet`` and ``corpus.json``. An existing ``files/`` tree under ``out_dir`` is
    replaced, so stale reports of an earlier corpus never mix in.
    """
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    streams = [
        np.random.Generator(np.random.PCG64(s)) for s in np.random.SeedSequence(spec.seed).spawn(8)
    ]
    rng_layout, rng_findings, rng_text, rng_planted, rng_images, rng_planted_img, rng_heldout = (
        streams[:7]
    )
    rng_heldout_findings = streams[7]

    subject_ids, subject_of_study, study_ids = _layout(spec, rng_layout)
    n = spec.n_studies
    lo, hi = spec.planted_copies
    copies = rng_planted.integers(lo, hi + 1, size=spec.n_planted)
    planted_id = _assign_planted(copies, subject_of_study, rng_planted)
    subj_per_study = subject_ids[subject_of_study]

    severity = _sample_severity(rng_findings, n)
    planted_severity = _sample_severity(rng_planted, spec.n_planted, force_k=(2, 3))
    is_planted = planted_id >= 0
    severity[is_planted] = planted_severity[planted_id[is_planted]]

    # Text of every report, in study order; uniforms come in fixed-size chunks of one stream.
    files_root = os.path.join(out_dir, "files")
    if os.path.isdir(files_root):
        shutil.rmtree(files_root)
    subj_list = subj_per_study.tolist()
    study_list = study_ids.tolist()
    rels = [report_path(subj_list[i], study_list[i]) for i in range(n)]
    writer = _ReportWriter(out_dir)
    reports: list[bytes] = [b""] * n
    prompts: list[str] = [""] * n
    kinds: dict[str, int] = {}
    sev_rows = severity.tolist()
    planted_list = planted_id.tolist()
    ordinary_prompts: set[str] = set()
    chunk = 8192
    pending_planted: list[int] = []
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        block = rng_text.random((stop - start, _N_DRAWS)).tolist()
        written = []
        for i in range(start, stop):
            if planted_list[i] >= 0:
                pending_planted.append(i)
                continue
            text, prompt, kind = _report(
                sev_rows[i], _Draws(block[i - start]), None, spec.addendum_fraction
            )
            reports[i] = text.encode("utf-8")
            written.append((rels[i], reports[i]))
            prompts[i] = prompt
            ordinary_prompts.add(prompt)
            kinds[kind] = kinds.get(kind, 0) + 1
        writer.write(written)

    # Planted captions: unique, 8-25 words, distinct from every ordinary prompt.
    n_marker = int(round(spec.n_planted * spec.planted_marker_fraction))
    n_trigger = int(round(spec.n_planted * spec.trigger_fraction))
    marker_flags = np.zeros(spec.n_planted, dtype=bool)
    marker_flags[rng_planted.permutation(spec.n_planted)[:n_marker]] = True
    trigger_flags = np.zeros(spec.n_planted, dtype=bool)
    trigger_flags[rng_planted.permutation(spec.n_planted)[:n_trigger]] = True
    banned = set(_grammar_vocabulary())
    captions: list[str] = []
    triggers: list[str | None] = []
    seen = set(ordinary_prompts)
    planted_rows = planted_severity.tolist()
    for pid in range(spec.n_planted):
        trigger = _trigger_word(rng_planted, banned) if trigger_flags[pid] else None
        for _attempt in range(1000):
            text, _ = _planted_caption(
                planted_rows[pid], rng_planted, bool(marker_flags[pid]), trigger
            )
            n_words = len(text.split())
            if 8 <= n_words <= 25 and text not in seen and (MARKER in text) == marker_flags[pid]:
                break
        else:
            raise RuntimeError(f"could not compose planted caption {pid} within 1000 attempts")
        seen.add(text)
        captions.append(text)
        triggers.append(trigger)

    planted_draws = rng_text.random((len(pending_planted), _N_DRAWS)).tolist()
    for j, i in enumerate(pending_planted):
        caption = captions[planted_list[i]]
        text, prompt, kind = _report(sev_rows[i], _Draws(planted_draws[j]), caption, 0.0)
        if prompt != caption:  # a bug in the layout code, never expected
            raise RuntimeError(f"planted report {i} would not parse back to its caption")
        reports[i] = text.encode("utf-8")
        prompts[i] = prompt
        kinds[kind] = kinds.get(kind, 0) + 1
    writer.write([(rels[i], reports[i]) for i in pending_planted])

    # Images: ordinary studies get their own phantom, each planted caption one fixed phantom.
    first_copy = np.full(spec.n_planted, -1, dtype=np.int64)
    for pid in range(spec.n_planted):
        rows = np.flatnonzero(planted_id == pid)
        first_copy[pid] = rows[0]
    digest = hashlib.sha256()
    images = heldout = None
    if spec.write_images:
        images = np.empty((n, spec.image_size, spec.image_size), dtype=np.uint8)
        ordinary_rows = np.flatnonzero(~is_planted)
        images[ordinary_rows] = render_phantoms(
            severity[ordinary_rows], rng_images, spec.image_size
        )
        planted_images = render_phantoms(planted_severity, rng_planted_img, spec.image_size)
        images[is_planted] = planted_images[planted_id[is_planted]]
        heldout_sev = _sample_severity(rng_heldout_findings, spec.n_heldout)
        heldout = render_phantoms(heldout_sev, rng_heldout, spec.image_size)

    for rel, data in zip(rels, reports, strict=True):
        digest.update(rel.encode("utf-8") + b"\0" + data + b"\0")

    _write_parquet(
        {
            "subject_id": subj_per_study.astype(np.int64),
            "study_id": study_ids.astype(np.int64),
            "image_index": np.arange(n, dtype=np.int64),
            "labels": [_labels(r) for r in sev_rows],
            "planted_id": planted_id,
        },
        _STUDIES_SCHEMA,
        os.path.join(out_dir, "studies.parquet"),
    )
    trigger_index = []
    for text, trigger in zip(captions, triggers, strict=True):
        if trigger is None:
            trigger_index.append(-1)
            continue
        words = [w.strip(".,:;") for w in text.split()]
        trigger_index.append(words.index(trigger))
    _write_parquet(
        {
            "planted_id": np.arange(spec.n_planted, dtype=np.int64),
            "prompt_id": [prompt_id(t) for t in captions],
            "text": captions,
            "has_marker": [MARKER in t for t in captions],
            "trigger_word": triggers,
            "trigger_word_index": np.asarray(trigger_index, dtype=np.int64),
            "n_copies": np.bincount(planted_id[is_planted], minlength=spec.n_planted).astype(
                np.int64
            ),
            "image_index": first_copy,
        },
        _TRUTH_SCHEMA,
        os.path.join(out_dir, "truth.parquet"),
    )
    if images is not None:
        _write_npy(os.path.join(out_dir, "images.npy"), images)
        _write_npy(os.path.join(out_dir, "heldout.npy"), heldout)
        digest.update(images.tobytes())
        digest.update(heldout.tobytes())

    prompt_counts: dict[str, int] = {}
    for p in prompts:
        prompt_counts[p] = prompt_counts.get(p, 0) + 1
    top_prompt, top_count = max(sorted(prompt_counts.items()), key=lambda kv: kv[1])
    meta = {
        "spec": spec.to_dict(),
        "counts": {
            "studies": n,
            "subjects": int(subject_ids.shape[0]),
            "planted": spec.n_planted,
            "planted_studies": int(is_planted.sum()),
            "planted_with_marker": int(sum(MARKER in t for t in captions)),
            "planted_with_trigger": int(sum(t is not None for t in triggers)),
            "heldout": spec.n_heldout if spec.write_images else 0,
            "images": n if spec.write_images else 0,
            "reports_with_marker": int(sum(b"___" in r for r in reports)),
            "reports_with_marker_in_prompt": int(sum(MARKER in p for p in prompts)),
            "distinct_prompts": len(prompt_counts),
            "distinct_impressions": len(prompt_counts),
            "most_common_prompt": top_prompt,
            "most_common_prompt_reports": top_count,
            "report_layouts": dict(sorted(kinds.items())),
        },
        "finding_names": list(FINDING_NAMES),
        "image_orientation": "image left = patient right",
        "sha256": digest.hexdigest(),
        "sha256_covers": "for each study in studies.parquet order: relative path, NUL, report "
        "bytes, NUL; then images.npy and heldout.npy pixel bytes (C order) when written",
    }
    with open(os.path.join(out_dir, "corpus.json"), "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2, sort_keys=False)
        fh.write("\n")
    return meta
