"""The shareable bundle: audit results that carry no report text and no reversible id.

Reports of credentialed data sets (MIMIC-CXR) may not be redistributed, and their text can hold
leaked protected health information. Every table under ``results/`` that has a ``text`` column
therefore stays with the credentialed group. This module builds ``results/share/``, which can
be published with a paper. The threat it is built against: someone who holds the bundle and a
list of candidate report texts (at worst every prompt of the corpus) tries to learn which of
them are in it, e.g. which prompts are memorized.

- ``memorized_prompts.parquet``: memorized prompts as keyed ids (HMAC-SHA256 under the audit
  secret, so hashing candidate texts matches nothing), score, rank, the marker flag and a
  coarse report count; study ids only when asked for; no text, no word or marker counts;
- ``word_types.parquet``: token-attribution statistics per word type, restricted to word types
  that occur in at least ``min_word_prompts`` distinct prompts (rare words, such as a leaked
  name, never leave), the marker always kept;
- ``summary.json``: numbers only from every stage;
- figures that draw no report text, copied as they are;
- ``README.md`` saying what is inside and what must not be shared.

The audit secret is created once per audit (:func:`ensure_secret`) or supplied by the user; it
never enters the bundle. Before anything is written, :class:`LeakCheck` checks every string of
every table and of the JSON (keys included): runs of ``min_words`` consecutive words of a
prompt, whole shorter prompts, words found in fewer than ``min_word_prompts`` prompts, and
unkeyed hashes of prompts. A leak is an error, never a silent drop.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import math
import os
import re
import secrets
import stat
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from memaudit.atomic import atomic_write, write_atomically
from memaudit.frames import require_columns
from memaudit.text import normalize_whitespace

_WORD = re.compile(r"[^\W_]+|_+", re.UNICODE)
_HEX = re.compile(r"[0-9a-fA-F]+")

#: Length of the audit secret the workflow creates, and the least it accepts.
SECRET_BYTES = 32
#: Hex digits of a keyed prompt id (64 bits: no collision among millions of prompts).
PROMPT_HMAC_DIGITS = 16
#: Hex runs at least this long are compared with unkeyed hashes of every prompt.
MIN_HASH_DIGITS = 12
#: Unkeyed digests that a bundle must never hold (of the text, normalised or lower-cased).
UNKEYED_HASHES = ("md5", "sha1", "sha256", "sha512")
#: Lower bounds of the report-count bins: below 5 a count singles out a handful of reports.
_COUNT_BOUNDS = (1, 5, *(m * 10**e for e in range(1, 13) for m in (1, 2, 5)))

README = """# Shareable audit results (no report text)

This folder was written by the `make_share_bundle` rule of memaudit. It holds only numbers,
keyed identifiers and figures that draw no report text:

- `memorized_prompts.parquet`: one row per memorized prompt: `prompt_hmac`, `text_hmac`,
  `d_mem`, `rank`, `has_marker`, `n_reports_at_least` (the report count rounded down to 1, 5,
  10, 20, 50, 100, 200, 500, ...){study_ids};
- `word_types.parquet`: token attribution per word type, only for word types found in at least
  {min_word_prompts} distinct prompts (the de-identification marker always);
- `summary.json`: numbers of every stage: prompts (reports read, skipped per reason), threshold
  and marker enrichment (finding 2), detection against ground truth (demo), attribution
  (finding 3) and mitigation (finding 4) aggregates;
- `figures/`: {figures}.

**Keyed ids.** `text_hmac` is HMAC-SHA256 of the whitespace-normalised prompt text and
`prompt_hmac` the first {digits} hex digits of HMAC-SHA256 of the prompt's id in `results/`,
both keyed with the audit secret (`results/share_secret/audit.key` unless `share.secret_file`
names another). Without the secret, hashing candidate texts matches nothing; with it, anyone
holding the reports can recompute both, e.g.
`hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()`. The ids are stable for as
long as the secret is kept: a new secret gives new ids. Give the secret only to people allowed
to read the reports; it is not in this folder and must never be published.

Every table and JSON file here was checked, before it was written, for {min_words} consecutive
words of any audited prompt, for any whole shorter prompt, for words found in fewer than
{min_word_prompts} prompts and for unkeyed hashes of prompts.

**Do not publish anything else from `results/`.** The full tables (`results/prompts/`,
`results/threshold/`, `results/attribution/`, `results/mitigation/`, ...) and the figures that
show prompts (Fig. 3, Fig. 4, the generation grid) contain report text; for MIMIC-CXR that text
is credentialed data under the PhysioNet data use agreement and may contain leaked protected
health information. Generated images of memorized prompts may reproduce training images: treat
them as patient images.
"""

_STUDY_IDS_LINE = (
    ",\n  `study_ids` of the reports that use it (whoever holds the corpus can read them)"
)


class ShareLeakError(ValueError):
    """A file of the shareable bundle would contain report text or a reversible id."""


# ---------------------------------------------------------------- audit secret and keyed ids


def ensure_secret(path: str | Path) -> bool:
    """Create the audit secret at ``path`` (32 random bytes, mode 0600) unless one is there.

    An existing secret is validated and kept, so ids stay stable across re-runs. Returns True
    when a new secret was written.
    """
    path = Path(path)
    if path.exists():
        read_secret(path)
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp creates the file with mode 0600 whatever the umask: the secret is never readable
    # by others, not even for the moment before a chmod.
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(secrets.token_bytes(SECRET_BYTES))
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(name, 0o600)
        os.replace(name, path)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise
    return True


def read_secret(path: str | Path) -> bytes:
    """The audit secret in ``path``; an error saying what to do when it is unfit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"share secret {path} does not exist (see share.secret_file)")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise PermissionError(
            f"share secret {path} is accessible by group or others (mode {mode:04o}); "
            f"run `chmod 600 {path}`"
        )
    secret = path.read_bytes()
    if len(secret) < SECRET_BYTES:
        raise ValueError(
            f"share secret {path} holds {len(secret)} bytes, at least {SECRET_BYTES} are needed; "
            "delete it to let the workflow create one, or write random bytes with "
            "`python -c 'import secrets, sys; sys.stdout.buffer.write(secrets.token_bytes(32))'`"
        )
    return secret


def keyed_text_hash(text: str, secret: bytes) -> str:
    """HMAC-SHA256 (hex) of a prompt's whitespace-normalised text under the audit secret."""
    normalized = normalize_whitespace(text).encode("utf-8")
    return hmac.new(secret, normalized, hashlib.sha256).hexdigest()


def keyed_prompt_id(prompt_id: str, secret: bytes) -> str:
    """The bundle's id of a prompt: HMAC-SHA256 of its ``results/`` prompt id, truncated."""
    digest = hmac.new(secret, str(prompt_id).encode("utf-8"), hashlib.sha256).hexdigest()
    return digest[:PROMPT_HMAC_DIGITS]


def coarse_count(n: int) -> int:
    """The largest of 1, 5, 10, 20, 50, 100, 200, 500, ... not above ``n`` (0 below 1)."""
    return max((b for b in _COUNT_BOUNDS if b <= n), default=0)


# ---------------------------------------------------------------- tables of the bundle


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


def memorized_table(
    ranked: pd.DataFrame, report_map: pd.DataFrame, secret: bytes, study_ids: bool = False
) -> pd.DataFrame:
    """Memorized prompts without text: keyed ids, score, rank, marker flag, coarse count.

    Word and marker counts are left out and the report count is binned: with a list of
    candidate texts they would single out the prompt a row stands for. Study ids (of the
    reports using each prompt) are added only when ``study_ids`` is true.
    """
    for name, table, columns in (
        ("ranked prompts", ranked, ("prompt_id", "text", "d_mem", "rank", "memorized")),
        ("report map", report_map, ("prompt_id", "study_id")),
    ):
        require_columns(table, columns, f"{name} table")
    memorized = ranked[ranked["memorized"].astype(bool)].sort_values("rank", kind="mergesort")
    out = pd.DataFrame(
        {
            "prompt_hmac": [keyed_prompt_id(p, secret) for p in memorized["prompt_id"]],
            "text_hmac": [keyed_text_hash(t, secret) for t in memorized["text"]],
            "d_mem": memorized["d_mem"].astype("float64").to_numpy(),
            "rank": memorized["rank"].astype("int64").to_numpy(),
        }
    )
    if "has_marker" in memorized.columns:
        out["has_marker"] = memorized["has_marker"].astype(bool).to_numpy()
    if "n_reports" in memorized.columns:
        out["n_reports_at_least"] = [coarse_count(int(n)) for n in memorized["n_reports"]]
    if study_ids:
        studies = (
            report_map.dropna(subset=["study_id"])
            .groupby("prompt_id")["study_id"]
            .agg(lambda s: sorted(int(v) for v in s))
        )
        out["study_ids"] = [studies.get(p, []) for p in memorized["prompt_id"]]
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


# ---------------------------------------------------------------- the leak check


@cache
def package_vocabulary() -> frozenset[str]:
    """Words of the audit code's own identifiers and string literals: labels, not report text.

    These are what the stages' summaries use as keys (``position_bias``, ``side``, ``per``), and
    a small corpus may hold such a word in only a few prompts. Docstrings are left out, and so
    is the demo corpus generator, whose literals are report text.
    """
    found: set[str] = set()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        if "corpus" in path.relative_to(package).parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
            and node.body
            and isinstance(node.body[0], ast.Expr)
            and isinstance(node.body[0].value, ast.Constant)
        }
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if id(node) not in docstrings:
                    found.update(words(node.value))
            elif isinstance(node, ast.Name):
                found.update(words(node.id))
            elif isinstance(node, ast.Attribute):
                found.update(words(node.attr))
            elif isinstance(node, (ast.arg, ast.keyword)) and node.arg:
                found.update(words(node.arg))
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found.update(words(node.name))
    return frozenset(found)


def _gram_key(tokens: Sequence[str]) -> str:
    return "\x1f".join(tokens)


def _gram_keys(tokens: Sequence[str], n: int) -> set[str]:
    return {_gram_key(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class Leak:
    """One string of the bundle that would leak, and why."""

    string: str
    reason: str


class LeakCheck:
    """Everything a bundle string is checked against, built once from the audit's prompts.

    A string leaks when it holds (1) ``min_words`` consecutive words of a prompt, (2) all words
    of a prompt shorter than that, in order, (3) with ``min_word_prompts`` set, a word found in
    at least one but fewer than ``min_word_prompts`` prompts (such as a leaked name; numbers
    and the package's own vocabulary excepted), or (4) a run of at least
    :data:`MIN_HASH_DIGITS` hex digits that begins an unkeyed hash of a prompt. A one-word
    prompt is covered by (3): a word common in the corpus names no prompt.
    """

    def __init__(
        self, prompt_texts: Iterable[str], min_words: int = 3, min_word_prompts: int | None = None
    ) -> None:
        if min_words < 1:
            raise ValueError(f"min_words must be >= 1, got {min_words}")
        self.min_words = min_words
        self.min_word_prompts = min_word_prompts
        self.texts = list(dict.fromkeys(str(t) for t in prompt_texts))
        self.grams: set[str] = set()
        self.short: dict[int, set[str]] = {}
        for text in self.texts:
            tokens = words(text)
            if len(tokens) >= min_words:
                self.grams |= _gram_keys(tokens, min_words)
            elif len(tokens) >= 2:
                self.short.setdefault(len(tokens), set()).add(_gram_key(tokens))
        self.frequency = prompt_word_frequency(self.texts) if min_word_prompts else {}
        self.allowed = package_vocabulary() if min_word_prompts else frozenset()

    def find(self, strings: Iterable[str]) -> list[Leak]:
        """The leaking strings among ``strings``, each with its first reason, in order."""
        strings = list(strings)
        leaks = {i: r for i, s in enumerate(strings) if (r := self._text_reason(s)) is not None}
        for i, reason in self._hash_reasons(strings).items():
            leaks.setdefault(i, reason)
        return [Leak(strings[i], leaks[i]) for i in sorted(leaks)]

    def _text_reason(self, string: str) -> str | None:
        tokens = words(string)
        if self.grams & _gram_keys(tokens, self.min_words):
            return f"{self.min_words} consecutive words of a prompt"
        for n, whole in self.short.items():
            if whole & _gram_keys(tokens, n):
                return f"a whole {n}-word prompt"
        if self.min_word_prompts:
            for word in tokens:
                count = self.frequency.get(word, 0)
                rare = 0 < count < self.min_word_prompts
                if rare and not word.isdigit() and word not in self.allowed:
                    return f"the word {word!r}, found in only {count} prompt(s)"
        return None

    def _hash_reasons(self, strings: Sequence[str]) -> dict[int, str]:
        # Hex runs of the bundle are few: hash every prompt once and look its digests up,
        # rather than keep millions of digests in memory.
        runs: dict[int, dict[str, list[int]]] = {}
        for i, string in enumerate(strings):
            for run in _HEX.findall(string):
                if len(run) >= MIN_HASH_DIGITS:
                    runs.setdefault(len(run), {}).setdefault(run.lower(), []).append(i)
        found: dict[int, str] = {}
        if not runs:
            return found
        for text in self.texts:
            normalized = normalize_whitespace(text)
            for form in {text, normalized, normalized.lower()}:
                data = form.encode("utf-8")
                for name in UNKEYED_HASHES:
                    digest = hashlib.new(name, data).hexdigest()
                    for length, by_run in runs.items():
                        for i in by_run.get(digest[:length], ()):
                            found.setdefault(i, f"an unkeyed {name} hash of a prompt")
        return found


def find_text_leaks(
    strings: Iterable[str],
    prompt_texts: Iterable[str],
    min_words: int = 3,
    min_word_prompts: int | None = None,
) -> list[str]:
    """Strings that would leak a prompt (see :class:`LeakCheck` for the rules)."""
    check = LeakCheck(prompt_texts, min_words, min_word_prompts)
    return [leak.string for leak in check.find(strings)]


def _table_strings(frame: pd.DataFrame) -> list[str]:
    """Column names and every text cell, inside list cells too (numbers hold no text)."""
    strings = [str(c) for c in frame.columns]
    for column in frame.columns:
        for value in frame[column].tolist():
            strings.extend(_cell_strings(value))
    return strings


def _cell_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bytes):
        return [value.decode("utf-8", errors="replace")]
    if isinstance(value, (list, tuple, np.ndarray)):
        return [s for item in value for s in _cell_strings(item)]
    return []


def _json_strings(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in [str(k), *_json_strings(v)]]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _json_strings(v)]
    return [value] if isinstance(value, str) else []


# ---------------------------------------------------------------- the bundle

# Summary entries never shared: attribution's per-word rows live in word_types.parquet,
# filtered to common words; without their words (strings are dropped) they would be anonymous
# numbers, and with them they could name a rare word of one report.
WITHHELD_SUMMARY_KEYS = {"attribution": ("top_word_types",)}


def shared_summaries(stage_summaries: Mapping[str, Any]) -> dict[str, Any]:
    """Every stage's summary with its withheld entries dropped and only numbers kept."""
    summary = {}
    for stage, value in stage_summaries.items():
        if isinstance(value, Mapping):
            value = {
                k: v for k, v in value.items() if k not in WITHHELD_SUMMARY_KEYS.get(stage, ())
            }
        summary[stage] = numbers_only(value)
    return summary


def check_bundle(files: Mapping[str, pd.DataFrame | dict], check: LeakCheck) -> None:
    """Raise :class:`ShareLeakError` naming the file, the string and the reason of a leak."""
    for name, content in files.items():
        strings = _table_strings(content) if isinstance(content, pd.DataFrame) else None
        leaks = check.find(strings if strings is not None else _json_strings(content))
        if leaks:
            raise ShareLeakError(
                f"share bundle file {name} would contain {leaks[0].reason}: "
                f"{leaks[0].string[:80]!r} ({len(leaks)} string(s) in all); nothing was written"
            )


def build_share_bundle(
    out_dir: str | Path,
    *,
    prompts: pd.DataFrame,
    ranked: pd.DataFrame,
    report_map: pd.DataFrame,
    stage_summaries: Mapping[str, Any],
    secret: bytes,
    word_types: pd.DataFrame | None = None,
    figures: Sequence[str | Path] = (),
    min_word_prompts: int = 20,
    min_words: int = 3,
    study_ids: bool = False,
) -> dict[str, Any]:
    """Write the shareable bundle to ``out_dir`` and return what was written.

    ``secret`` keys every id (:func:`read_secret`). ``stage_summaries`` maps a stage name to
    its summary (JSON-like); only numbers are kept, and the entries of
    :data:`WITHHELD_SUMMARY_KEYS` are dropped. ``figures`` are copied into ``out_dir/figures``
    (PNG and the PDF beside each, if present). Raises :class:`ShareLeakError` naming the file
    and the offending string when any table or JSON would leak (see :class:`LeakCheck`).
    """
    # 1. Check inputs
    if min_word_prompts < 1 or min_words < 1:
        raise ValueError("min_word_prompts and min_words must be >= 1")
    if len(secret) < SECRET_BYTES:
        raise ValueError(f"the share secret must hold at least {SECRET_BYTES} bytes")
    out = Path(out_dir)
    texts = prompts["text"].astype(str).tolist()

    # 2. Build the tables and the summary
    memorized = memorized_table(ranked, report_map, secret, study_ids=study_ids)
    summary = shared_summaries(stage_summaries)
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
        "study_ids_shared": study_ids,
    }

    # 3. Refuse any leak before writing anything
    files: dict[str, pd.DataFrame | dict] = {
        "memorized_prompts.parquet": memorized,
        "summary.json": summary,
    }
    if shared_types is not None:
        files["word_types.parquet"] = shared_types
    check_bundle(files, LeakCheck(texts, min_words, min_word_prompts))

    # 4. Write tables and summary (all or none), then figures and the README
    out.mkdir(parents=True, exist_ok=True)
    write_atomically({out / name: content for name, content in files.items()})
    copied = _copy_figures(figures, out / "figures")
    readme = README.format(
        min_word_prompts=min_word_prompts,
        min_words=min_words,
        digits=PROMPT_HMAC_DIGITS,
        study_ids=_STUDY_IDS_LINE if study_ids else "",
        figures=", ".join(f"`{name}`" for name in copied) or "none",
    ).encode("utf-8")
    # the README is the rule's declared output: written last, atomically
    atomic_write(out / "README.md", lambda handle: handle.write(readme))
    return {"files": sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())}


def _copy_figures(figures: Sequence[str | Path], figure_dir: Path) -> list[str]:
    figure_dir.mkdir(exist_ok=True)
    copied = []
    for figure in map(Path, figures):
        if not figure.is_file():
            raise FileNotFoundError(f"figure for the share bundle not found: {figure}")
        for path in (figure, figure.with_suffix(".pdf")):
            if path.is_file():
                atomic_write(figure_dir / path.name, lambda h, src=path: h.write(src.read_bytes()))
                copied.append(path.name)
    return copied
