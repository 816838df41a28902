"""The shareable bundle carries no report text and no reversible id (memaudit.share)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from memaudit.share import (
    SECRET_BYTES,
    LeakCheck,
    ShareLeakError,
    build_share_bundle,
    coarse_count,
    ensure_secret,
    find_text_leaks,
    keyed_prompt_id,
    keyed_text_hash,
    memorized_table,
    numbers_only,
    read_secret,
    shareable_word_types,
)
from memaudit.text import prompt_id

TEXTS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion, unchanged since ___.",
    "Reviewed with Dr. Zhahoudrick who agrees. Mild cardiomegaly.",
    "Mild cardiomegaly. No pleural effusion.",
]
SECRET = bytes(range(SECRET_BYTES))


def _tables() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    prompts = pd.DataFrame(
        {
            "prompt_id": [prompt_id(t) for t in TEXTS],
            "text": TEXTS,
            "n_reports": [40, 3, 30, 5],
            "marker_count": [0, 1, 0, 0],
            "has_marker": [False, True, False, False],
            "n_words": [len(t.split()) for t in TEXTS],
        }
    )
    ranked = prompts.assign(
        d_mem=[0.1, 0.9, 0.8, 0.2], rank=[4, 1, 2, 3], memorized=[False, True, True, False]
    )
    report_map = pd.DataFrame(
        {
            "report_id": [f"s{i}" for i in range(6)],
            "study_id": pd.array([50, 51, 52, 53, 54, None], dtype="Int64"),
            "prompt_id": [prompt_id(TEXTS[i]) for i in (1, 1, 2, 0, 3, 2)],
        }
    )
    return prompts, ranked, report_map


def _bundle(out: Path, stage_summaries: dict | None = None, **kwargs) -> dict:
    prompts, ranked, report_map = _tables()
    return build_share_bundle(
        out,
        prompts=kwargs.pop("prompts", prompts),
        ranked=ranked,
        report_map=report_map,
        stage_summaries=stage_summaries or {},
        secret=kwargs.pop("secret", SECRET),
        **kwargs,
    )


# ---------------------------------------------------------------- keyed ids and the table


def test_memorized_table_has_keyed_ids_coarse_counts_and_no_quasi_identifiers() -> None:
    _, ranked, report_map = _tables()
    table = memorized_table(ranked, report_map, SECRET)
    assert list(table.columns) == [
        "prompt_hmac",
        "text_hmac",
        "d_mem",
        "rank",
        "has_marker",
        "n_reports_at_least",
    ]
    assert list(table["prompt_hmac"]) == [keyed_prompt_id(prompt_id(t), SECRET) for t in TEXTS[1:3]]
    # the recipe the bundle's README gives to those who hold the reports and the secret
    recipe = [hmac.new(SECRET, t.encode(), hashlib.sha256).hexdigest() for t in TEXTS[1:3]]
    assert list(table["text_hmac"]) == recipe
    assert list(table["n_reports_at_least"]) == [1, 20]  # 3 and 30 reports


def test_study_ids_only_when_asked_for() -> None:
    _, ranked, report_map = _tables()
    table = memorized_table(ranked, report_map, SECRET, study_ids=True)
    assert [list(s) for s in table["study_ids"]] == [[50, 51], [52]]  # missing study id dropped


def test_keyed_ids_are_stable_per_secret_and_change_with_it() -> None:
    other = bytes(reversed(SECRET))
    assert keyed_text_hash(TEXTS[0], SECRET) == keyed_text_hash(" " + TEXTS[0] + "\n", SECRET)
    assert keyed_text_hash(TEXTS[0], SECRET) != keyed_text_hash(TEXTS[0], other)
    assert keyed_prompt_id("abc", SECRET) != keyed_prompt_id("abc", other)
    assert len(keyed_prompt_id("abc", SECRET)) == 16


@pytest.mark.parametrize(
    ("n", "bound"), [(0, 0), (1, 1), (4, 1), (5, 5), (9, 5), (10, 10), (35, 20), (120, 100)]
)
def test_report_counts_are_rounded_down_to_coarse_bins(n: int, bound: int) -> None:
    assert coarse_count(n) == bound


# ---------------------------------------------------------------- the audit secret


def test_secret_is_created_private_reused_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "share_secret" / "audit.key"
    assert ensure_secret(path) is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    first = read_secret(path)
    assert len(first) == SECRET_BYTES
    assert ensure_secret(path) is False  # a re-run keeps it
    assert read_secret(path) == first
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match=r"chmod 600"):
        read_secret(path)
    short = tmp_path / "short.key"
    short.write_bytes(b"x" * 8)
    short.chmod(0o600)
    with pytest.raises(ValueError, match=r"short\.key holds 8 bytes, at least 32"):
        read_secret(short)
    with pytest.raises(FileNotFoundError, match="share.secret_file"):
        read_secret(tmp_path / "none.key")


def test_secret_never_enters_the_bundle(tmp_path: Path) -> None:
    path = tmp_path / "results/share_secret/audit.key"
    ensure_secret(path)
    secret = read_secret(path)
    written = _bundle(tmp_path / "results/share", secret=secret)
    assert "audit.key" not in " ".join(written["files"])
    for file in (tmp_path / "results/share").rglob("*"):
        if file.is_file():
            data = file.read_bytes()
            assert secret not in data and secret.hex().encode() not in data, file


# ---------------------------------------------------------------- summaries and word types


def test_numbers_only_drops_every_string() -> None:
    value = {
        "source": "/data/mimic",
        "skipped": {"empty": 2, "not_utf8": 1},
        "examples": ["files/p10/p1/s1.txt"],
        "most_repeated": [{"text": TEXTS[0], "n_reports": 40}],
        "auc": float("nan"),
        "ok": True,
    }
    assert numbers_only(value) == {
        "skipped": {"empty": 2, "not_utf8": 1},
        "most_repeated": [{"n_reports": 40}],
        "ok": True,
    }


def test_rare_word_types_are_withheld_and_the_marker_kept() -> None:
    word_types = pd.DataFrame(
        {
            "word_type": ["___", "zhahoudrick", "cardiomegaly", "effusion"],
            "is_marker": [True, False, False, False],
            "mean_rank": [1.0, 1.0, 2.0, 3.0],
        }
    )
    kept, withheld = shareable_word_types(word_types, TEXTS, min_word_prompts=2)
    assert list(kept["word_type"]) == ["___", "cardiomegaly", "effusion"]
    assert withheld == 1


# ---------------------------------------------------------------- the leak check


def test_leak_check_finds_three_consecutive_prompt_words() -> None:
    strings = ["d_mem", "left pleural effusion is common", "effusion left pleural", "percentile"]
    assert find_text_leaks(strings, TEXTS, min_words=3) == ["left pleural effusion is common"]
    assert find_text_leaks(["since ___ and"], TEXTS, min_words=2) == ["since ___ and"]


def test_leak_check_finds_whole_short_prompts() -> None:
    texts = [*TEXTS, "Mr Smith.", "Clear lungs."]
    assert find_text_leaks(["Mr Smith", "seen: clear lungs", "mr", "lungs clear"], texts) == [
        "Mr Smith",
        "seen: clear lungs",
    ]
    # an identifier's underscores separate its words: no prompt is spelt by a key
    assert find_text_leaks(["clear_lungs_rate"], texts) == []


def test_leak_check_finds_rare_words_but_not_common_words_numbers_or_package_labels() -> None:
    texts = [
        *(f"small effusion number {i}" for i in range(5)),
        "Position unchanged, Dr Zhahoudrick.",
    ]
    check = LeakCheck(texts, min_words=3, min_word_prompts=2)
    leaks = check.find(["zhahoudrick", "n_zhahoudrick", "effusion", "3", "position_bias"])
    assert [(leak.string, leak.reason) for leak in leaks] == [
        ("zhahoudrick", "the word 'zhahoudrick', found in only 1 prompt(s)"),
        ("n_zhahoudrick", "the word 'zhahoudrick', found in only 1 prompt(s)"),
    ]
    # without min_word_prompts the rare-word rule is off (the 3-word rule alone)
    assert find_text_leaks(["zhahoudrick"], texts) == []


def test_leak_check_finds_unkeyed_hashes_of_prompts() -> None:
    text = TEXTS[2]
    strings = [
        prompt_id(text),  # the results/ id: SHA-1, 16 digits
        hashlib.sha256(text.encode()).hexdigest(),
        "id " + hashlib.md5(text.lower().encode()).hexdigest()[:12],
        keyed_text_hash(text, SECRET),
        hashlib.sha256(b"not a prompt").hexdigest(),
    ]
    leaks = LeakCheck(TEXTS).find(strings)
    assert [leak.string for leak in leaks] == strings[:3]
    assert [leak.reason for leak in leaks] == [
        "an unkeyed sha1 hash of a prompt",
        "an unkeyed sha256 hash of a prompt",
        "an unkeyed md5 hash of a prompt",
    ]


# ---------------------------------------------------------------- the bundle


def test_bundle_is_written_and_leaks_are_refused(tmp_path: Path) -> None:
    figure = tmp_path / "fig2.png"
    figure.write_bytes(b"\x89PNG fake")
    figure.with_suffix(".pdf").write_bytes(b"%PDF fake")
    summaries = {
        "prompts": {"reports_read": 6, "most_repeated": [{"text": TEXTS[2]}]},
        # per-word rows: withheld by the bundle itself, whoever calls it
        "attribution": {
            "n_prompts": 2,
            "top_word_types": [{"word_type": "zhahoudrick", "n_prompts": 1, "mean_rank": 1.0}],
        },
    }
    written = _bundle(
        tmp_path / "share",
        summaries,
        word_types=pd.DataFrame({"word_type": ["zhahoudrick", "mild"], "is_marker": [0, 0]}),
        figures=[figure],
        min_word_prompts=2,
    )
    assert set(written["files"]) == {
        "README.md",
        "memorized_prompts.parquet",
        "summary.json",
        "word_types.parquet",
        "figures/fig2.png",
        "figures/fig2.pdf",
    }
    summary = json.loads((tmp_path / "share/summary.json").read_text())
    assert summary["prompts"] == {"reports_read": 6}
    assert summary["attribution"] == {"n_prompts": 2}
    assert summary["share"]["word_types_withheld"] == 1
    assert summary["share"]["study_ids_shared"] is False
    assert "study_ids" not in pd.read_parquet(tmp_path / "share/memorized_prompts.parquet")
    for path in (tmp_path / "share").rglob("*.parquet"):
        frame = pd.read_parquet(path)
        assert not find_text_leaks(frame.astype(str).to_numpy().ravel().tolist(), TEXTS, 3)
    # a key that quotes a prompt is a leak: nothing is written
    with pytest.raises(ShareLeakError, match="summary.json"):
        _bundle(tmp_path / "bad", {"words": {"reviewed with dr": 1}})
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize(
    ("summary", "reason"),
    [
        ({"prompts": {"examples": {"Mr Smith": 1}}}, "a whole 2-word prompt"),
        ({"attribution": {"by_word": {"zhahoudrick": 2}}}, "the word 'zhahoudrick'"),
        ({"mitigation": {prompt_id(TEXTS[3]): {"auc": 0.5}}}, "an unkeyed sha1 hash"),
    ],
    ids=["short-prompt", "rare-name-key", "unkeyed-id-key"],
)
def test_leaking_json_keys_are_refused(tmp_path: Path, summary: dict, reason: str) -> None:
    prompts, _, _ = _tables()
    prompts = pd.concat([prompts, pd.DataFrame({"prompt_id": ["x"], "text": ["Mr Smith."]})])
    with pytest.raises(ShareLeakError, match=f"summary.json would contain {reason}"):
        _bundle(tmp_path / "share", summary, prompts=prompts, min_word_prompts=2)
    assert not (tmp_path / "share").exists()


def test_a_leaking_cell_of_a_table_is_refused_even_inside_a_list(tmp_path: Path) -> None:
    prompts, _, _ = _tables()
    prompts = pd.concat([prompts, pd.DataFrame({"prompt_id": ["x"], "text": ["Mr Smith."]})])
    word_types = pd.DataFrame(
        {"word_type": ["mild"], "is_marker": [False], "examples": [["mild", "seen: Mr Smith"]]}
    )
    with pytest.raises(ShareLeakError, match="word_types.parquet would contain a whole 2-word"):
        _bundle(tmp_path / "share", prompts=prompts, word_types=word_types, min_word_prompts=2)
