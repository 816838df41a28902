"""The shareable bundle: audit results that carry no report text.

Reports of credentialed data sets (MIMIC-CXR) may not be redistributed, and their text can hold
leaked protected health information. Every table under ``results/`` that has a ``text`` column
therefore stays with the credentialed group. This module builds ``results/share/``, which can
be published with a paper:

- ``memorized_prompts.parquet``: memorized prompts as ``prompt_id``, the SHA-256 of the
  normalised text (anyone holding the reports can recompute and match it), the study ids of the
  reports that use the prompt, score, rank, marker flags and counts; no text;
- ``word_types.parquet``: token-attribution statistics per word type, restricted to word types
  that occur in at least ``min_word_prompts`` distinct prompts (rare words, such as a leaked
  name, never leave), the marker always kept;
- ``summary.json``: numbers only from every stage (prompt counts per skip reason, threshold and
  marker enrichment, detection against the demo's ground truth, attribution and mitigation
  aggregates);
- figures that draw no report text (prompt frequency, Fig. 2, per-step AUC, mitigation
  diversity), copied as they are;
- ``README.md`` saying what is inside and what must not be shared.

Before anything is written, :func:`find_text_leaks` checks every table and JSON of the bundle
for any run of ``min_words`` consecutive words of any prompt (default 3) and for rare words in
the word-type table; a leak is an error, never a silent drop.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

_WORD = re.compile(r"[^\W_]+|_+", re.UNICODE)

README = """# Shareable audit results (no report text)

This folder was written by the `make_share_bundle` rule of memaudit. It holds only numbers,
identifiers and hashes, and figures that draw no report text:

- `memorized_prompts.parquet`: memorized prompts as `prompt_id`, `text_sha256` (SHA-256 of
  the whitespace-normalised prompt text), `study_ids` of the reports that use it, `d_mem`,
  `rank`, marker flags and counts;
- `word_types.parquet`: token attribution per word type, only for word types found in at least
  {min_word_prompts} distinct prompts (the de-identification marker always);
- `summary.json`: numbers of every stage: prompts (reports read, skipped per reason), threshold
  and marker enrichment (finding 2), detection against ground truth (demo), attribution
  (finding 3) and mitigation (finding 4) aggregates;
- `figures/`: {figures}.

Every table and JSON file here was checked, before it was written, for any run of {min_words}
consecutive words of any audited prompt.

**Do not publish anything else from `results/`.** The full tables (`results/prompts/`,
`results/threshold/`, `results/attribution/`, `results/mitigation/`, ...) and the figures that
show prompts (Fig. 3, Fig. 4, the generation grid) contain report text; for MIMIC-CXR that text
is credentialed data under the PhysioNet data use agreement and may contain leaked protected
health information. Generated images of memorized prompts may reproduce training images: treat
them as patient images.
"""


class ShareLeakError(ValueError):
    """A file of the shareable bundle would contain report text."""


def text_sha256(text: str) -> str:
    """SHA-256 (hex) of a prompt's normalised text, as stored in ``prompts.parquet``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def words(text: str) -> list[str]:
    """Lower-cased word units of a text (runs of letters/digits, or of underscores)."""
    return [w.lower() for w in _WORD.findall(text)]


def numbers_only(value: Any) -> Any:
    """A copy of a JSON-like value with every string removed (dict keys are kept).

    Dicts keep the entries whose value survives; lists keep their surviving items; strings
    become None and are then dropped. Non-finite floats become None (JSON has no NaN).
    """
    if isinstance(value, Mapping):
        out = {str(k): numbers_only(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not None and v != {} and v != []}
    if isinstance(value, (list, tuple)):
        out_list = [numbers_only(v) for v in value]
        return [v for v in out_list if v is not None and v != {} and v != []]
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(float(value)) else None
    return None


def memorized_table(ranked: pd.DataFrame, report_map: pd.DataFrame) -> pd.DataFrame:
    """Memorized prompts without text: ids, text hash, study ids, score, rank, flags."""
    for name, table, columns in (
        ("ranked prompts", ranked, ("prompt_id", "text", "d_mem", "rank", "memorized")),
        ("report map", report_map, ("prompt_id", "study_id")),
    ):
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{name} table lacks column(s) {missing}")
    memorized = ranked[ranked["memorized"].astype(bool)].sort_values("rank", kind="mergesort")
    studies = (
        report_map.dropna(subset=["study_id"])
        .groupby("prompt_id")["study_id"]
        .agg(lambda s: sorted(int(v) for v in s))
    )
    keep = [
        c for c in ("n_reports", "marker_count", "has_marker", "n_words") if c in memorized.columns
    ]
    out = pd.DataFrame(
        {
            "prompt_id": memorized["prompt_id"].astype(str).to_numpy(),
            "text_sha256": [text_sha256(t) for t in memorized["text"]],
            "d_mem": memorized["d_mem"].astype("float64").to_numpy(),
            "rank": memorized["rank"].astype("int64").to_numpy(),
        }
    )
    for column in keep:
        out[column] = memorized[column].to_numpy()
    out["study_ids"] = [studies.get(p, []) for p in out["prompt_id"]]
    return out


def shareable_word_types(
    word_types: pd.DataFrame,
    prompt_texts: Iterable[str],
    min_word_prompts: int,
    marker_column: str = "is_marker",
    word_column: str = "word_type",
) -> tuple[pd.DataFrame, int]:
    """Word-type rows whose words all occur in >= ``min_word_prompts`` distinct prompts.

    Counts are taken over *all* unique prompts of the audit (not only the attributed ones), so
    a word is shareable only when it is common in the corpus. Marker rows are always kept.
    Returns the kept rows and how many rows were withheld.
    """
    if word_column not in word_types.columns:
        raise ValueError(f"word-type table lacks column {word_column!r}")
    frequency = prompt_word_frequency(prompt_texts)
    is_marker = (
        word_types[marker_column].astype(bool)
        if marker_column in word_types.columns
        else pd.Series(False, index=word_types.index)
    )
    common = word_types[word_column].map(
        lambda w: (
            bool(words(str(w)))
            and all(frequency.get(u, 0) >= min_word_prompts for u in words(str(w)))
        )
    )
    keep = is_marker | common
    return word_types[keep].reset_index(drop=True), int((~keep).sum())


def prompt_word_frequency(prompt_texts: Iterable[str]) -> dict[str, int]:
    """Number of distinct prompts each lower-cased word unit occurs in."""
    counts: dict[str, int] = {}
    for text in prompt_texts:
        for word in set(words(text)):
            counts[word] = counts.get(word, 0) + 1
    return counts


def _ngrams(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _table_strings(frame: pd.DataFrame) -> list[str]:
    strings = [str(c) for c in frame.columns]
    for column in frame.columns:
        for value in frame[column].tolist():
            if isinstance(value, str):
                strings.append(value)
            elif isinstance(value, (list, tuple, np.ndarray)):
                strings.extend(v for v in value if isinstance(v, str))
    return strings


def _json_strings(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in [str(k), *_json_strings(v)]]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _json_strings(v)]
    return [value] if isinstance(value, str) else []


def find_text_leaks(
    strings: Iterable[str], prompt_texts: Iterable[str], min_words: int = 3
) -> list[str]:
    """Strings that contain a run of ``min_words`` consecutive words of any prompt.

    Prompts shorter than ``min_words`` words cannot be told apart from ordinary labels and are
    not searched for.
    """
    grams: set[tuple[str, ...]] = set()
    for text in prompt_texts:
        grams |= _ngrams(words(text), min_words)
    return [s for s in strings if _ngrams(words(s), min_words) & grams]


# Summary entries never shared: attribution's per-word rows live in word_types.parquet,
# filtered to common words; without their words (strings are dropped) they would be anonymous
# numbers, and with them they could name a rare word of one report.
WITHHELD_SUMMARY_KEYS = {"attribution": ("top_word_types",)}


def build_share_bundle(
    out_dir: str | Path,
    *,
    prompts: pd.DataFrame,
    ranked: pd.DataFrame,
    report_map: pd.DataFrame,
    stage_summaries: Mapping[str, Any],
    word_types: pd.DataFrame | None = None,
    figures: Sequence[str | Path] = (),
    min_word_prompts: int = 20,
    min_words: int = 3,
) -> dict[str, Any]:
    """Write the shareable bundle to ``out_dir`` and return what was written.

    ``stage_summaries`` maps a stage name to its summary (JSON-like); only numbers are kept,
    and the entries of :data:`WITHHELD_SUMMARY_KEYS` are dropped.
    ``figures`` are copied into ``out_dir/figures`` (PNG and the PDF beside each, if present).
    Raises :class:`ShareLeakError` naming the file and the offending string when any table or
    JSON would contain ``min_words`` consecutive words of a prompt.
    """
    if min_word_prompts < 1 or min_words < 1:
        raise ValueError("min_word_prompts and min_words must be >= 1")
    out = Path(out_dir)
    texts = prompts["text"].astype(str).tolist()
    memorized = memorized_table(ranked, report_map)
    summary = {}
    for stage, value in stage_summaries.items():
        if isinstance(value, Mapping):
            value = {
                k: v for k, v in value.items() if k not in WITHHELD_SUMMARY_KEYS.get(stage, ())
            }
        summary[stage] = numbers_only(value)
    withheld = 0
    shared_types = None
    if word_types is not None:
        shared_types, withheld = shareable_word_types(word_types, texts, min_word_prompts)
    summary["share"] = {
        "memorized_prompts": len(memorized),
        "word_types_shared": 0 if shared_types is None else len(shared_types),
        "word_types_withheld": withheld,
        "min_word_prompts": min_word_prompts,
        "leak_check_min_words": min_words,
    }

    candidates: dict[str, list[str]] = {
        "memorized_prompts.parquet": _table_strings(memorized),
        "summary.json": _json_strings(summary),
    }
    if shared_types is not None:
        candidates["word_types.parquet"] = _table_strings(shared_types)
    for name, strings in candidates.items():
        leaks = find_text_leaks(strings, texts, min_words)
        if leaks:
            raise ShareLeakError(
                f"share bundle file {name} would contain report text, e.g. {leaks[0][:80]!r}; "
                "nothing was written"
            )

    out.mkdir(parents=True, exist_ok=True)
    memorized.to_parquet(out / "memorized_prompts.parquet", index=False)
    if shared_types is not None:
        shared_types.to_parquet(out / "word_types.parquet", index=False)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    figure_dir = out / "figures"
    figure_dir.mkdir(exist_ok=True)
    copied = []
    for figure in map(Path, figures):
        if not figure.is_file():
            raise FileNotFoundError(f"figure for the share bundle not found: {figure}")
        for path in (figure, figure.with_suffix(".pdf")):
            if path.is_file():
                shutil.copyfile(path, figure_dir / path.name)
                copied.append(path.name)
    (out / "README.md").write_text(
        README.format(
            min_word_prompts=min_word_prompts,
            min_words=min_words,
            figures=", ".join(f"`{name}`" for name in copied) or "none",
        )
    )
    return {"files": sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())}
