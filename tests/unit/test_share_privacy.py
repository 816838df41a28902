"""Attacks on the shareable bundle: hashing candidate texts recovers no prompt (issue 15).

The attacker holds ``results/share/`` and a list of candidate report texts, at worst every
prompt of the corpus, and hashes them to learn which ones the bundle stands for.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from memaudit.share import LeakCheck, build_share_bundle, words
from memaudit.text import normalize_whitespace, prompt_id

SECRET = bytes(range(100, 132))
HEX_RUN = re.compile(rb"[0-9a-fA-F]{8,}")

# The attacker's dictionary: 14 everyday chest X-ray impressions.
DICTIONARY = [
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "Dr. ___ paged.",
    "No acute cardiopulmonary abnormality.",
    "No evidence of pneumonia.",
    "Stable chest radiograph.",
    "No acute findings.",
    "Clear lungs.",
    "Normal chest radiograph.",
    "No pneumothorax.",
    "Mild cardiomegaly.",
    "Low lung volumes.",
    "Unchanged appearance of the chest.",
    "No significant interval change.",
]
# The crafted audit: four memorized prompts, three of them in the dictionary.
MEMORIZED = [
    "No acute cardiopulmonary process.",
    "Dr. ___ paged.",
    "No acute intrathoracic process.",
    "Left basilar opacity, seen by Dr. Zhahoudrick.",
]
REST = [
    "Mild cardiomegaly.",
    "Clear lungs.",
    "No pneumothorax.",
    "Small left pleural effusion.",
    "Low lung volumes with bibasilar atelectasis.",
    "Right lower lobe pneumonia.",
]


def bundle_strings(share: Path) -> set[str]:
    """Every string an attacker can read out of the bundle: cells, columns, JSON keys and
    values, and every run of 8+ hex digits of any file (figures and README included)."""
    found: set[str] = set()
    for path in share.rglob("*"):
        if not path.is_file():
            continue
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
            found.update(str(c) for c in frame.columns)
            for value in frame.to_numpy().ravel():
                items = value if isinstance(value, (list, tuple, np.ndarray)) else [value]
                found.update(str(v) for v in items)
        elif path.suffix == ".json":
            found.update(_json_strings(json.loads(path.read_text())))
        found.update(run.decode() for run in HEX_RUN.findall(path.read_bytes()))
    return found


def _json_strings(value) -> Iterable[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from _json_strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _json_strings(item)
    else:
        yield str(value)


def recovered(strings: set[str], candidates: Iterable[str], algorithms: Iterable[str]) -> set[str]:
    """Candidates whose hash (or text) the bundle holds: a digest equal to a hex string of
    the bundle or beginning with it (truncated ids), of the text as given, whitespace-
    normalised, or lower-cased, or the text itself."""
    hexes = {s.lower() for s in strings if len(s) >= 8 and re.fullmatch(r"[0-9a-fA-F]+", s)}
    found = set()
    for text in candidates:
        forms = {text, normalize_whitespace(text), normalize_whitespace(text).lower()}
        if forms & strings:
            found.add(text)
        for form in forms:
            for name in algorithms:
                digest = hashlib.new(name, form.encode("utf-8")).hexdigest()
                if any(digest.startswith(h) for h in hexes):
                    found.add(text)
    return found


def _crafted_bundle(out: Path) -> Path:
    texts = MEMORIZED + REST
    ids = [prompt_id(t) for t in texts]
    ranked = pd.DataFrame(
        {
            "prompt_id": ids,
            "text": texts,
            "n_reports": [120, 1, 35, 1, 60, 80, 90, 40, 20, 30],
            "marker_count": [0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            "has_marker": [False, True, False, False, False, False, False, False, False, False],
            "n_words": [len(t.split()) for t in texts],
            "d_mem": np.linspace(1.0, 0.1, len(texts)),
            "rank": np.arange(1, len(texts) + 1),
            "memorized": [True] * 4 + [False] * len(REST),
        }
    )
    report_map = pd.DataFrame(
        {"prompt_id": ids, "study_id": np.arange(50_000_000, 50_000_000 + len(texts))}
    )
    build_share_bundle(
        out,
        prompts=ranked[["prompt_id", "text"]],
        ranked=ranked,
        report_map=report_map,
        stage_summaries={"threshold": {"n_memorized": 4, "threshold": 0.65}},
        secret=SECRET,
    )
    return out


def test_the_attack_recovers_prompts_from_unkeyed_hashes() -> None:
    # the bundle as it was: SHA-1 prompt ids and SHA-256 text hashes beside each row
    old = {prompt_id(t) for t in MEMORIZED} | {
        hashlib.sha256(t.encode()).hexdigest() for t in MEMORIZED
    }
    assert recovered(old, DICTIONARY, ("sha256", "sha1")) == set(MEMORIZED[:3])


def test_dictionary_attack_recovers_nothing(tmp_path: Path) -> None:
    share = _crafted_bundle(tmp_path / "share")
    strings = bundle_strings(share)
    assert recovered(strings, DICTIONARY, ("sha256", "sha1")) == set()
    # nor do the quasi-identifiers an attacker computes from a candidate text survive
    columns = set(pd.read_parquet(share / "memorized_prompts.parquet").columns)
    assert not {"n_words", "marker_count", "n_reports", "study_ids"} & columns, columns


def _demo_like_audit(tmp_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, dict, list[str]]:
    from memaudit.corpus.spec import CorpusSpec
    from memaudit.corpus.writer import generate_corpus
    from memaudit.prompts.extract import extract_prompts

    corpus = tmp_path / "corpus"
    spec = CorpusSpec(
        n_studies=400,
        n_planted=4,
        n_keyed=2,
        planted_copies=(20, 30),
        n_heldout=0,
        write_images=False,
    )
    generate_corpus(spec, corpus)
    prompts, report_map, summary = extract_prompts(corpus / "files")
    reports = [p.read_text() for p in sorted((corpus / "files").rglob("*.txt"))]
    planted = set(pd.read_parquet(corpus / "truth.parquet")["text"])
    return prompts, report_map, summary, [*prompts["text"], *reports, *planted]


def test_worst_case_attacker_knowing_every_text_matches_nothing(tmp_path: Path) -> None:
    prompts, report_map, summary, candidates = _demo_like_audit(tmp_path)
    # memorized: the most repeated prompts (the planted captions among them)
    ranked = prompts.assign(
        d_mem=prompts["n_reports"].astype(float) / prompts["n_reports"].max(),
        rank=np.arange(1, len(prompts) + 1),
        memorized=np.arange(len(prompts)) < 8,
    )
    vocabulary = sorted({w for t in ranked.loc[ranked["memorized"], "text"] for w in words(t)})
    word_types = pd.DataFrame(
        {"word_type": vocabulary, "is_marker": [w == "___" for w in vocabulary], "n_prompts": 3}
    )
    share = tmp_path / "results/share"
    build_share_bundle(
        share,
        prompts=prompts,
        ranked=ranked,
        report_map=report_map,
        stage_summaries={"prompts": summary, "threshold": {"n_memorized": 8}},
        secret=SECRET,
        word_types=word_types,
        study_ids=True,  # the most the bundle can hold
    )
    strings = bundle_strings(share)
    assert len(strings) > 100  # the attack reads a real bundle
    assert recovered(strings, candidates, ("md5", "sha1", "sha256")) == set()
    assert LeakCheck(prompts["text"], min_words=3, min_word_prompts=20).find(strings) == []
