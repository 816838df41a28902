"""Tests of the synthetic MIMIC-CXR-format demo corpus (memaudit.corpus)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest

from memaudit.corpus.findings import FINDING_NAMES
from memaudit.corpus.grammar import TITLE_LINE
from memaudit.corpus.phantoms import render_phantoms
from memaudit.corpus.spec import CorpusSpec
from memaudit.corpus.vocabulary import grammar_words
from memaudit.corpus.writer import generate_corpus, report_path
from memaudit.prompts.sections import choose_section, split_sections
from memaudit.text import normalize_whitespace, prompt_id

SMALL = CorpusSpec(
    n_studies=300,
    image_size=16,
    n_planted=6,
    n_keyed=4,
    keyed_bases=2,
    planted_copies=(5, 12),
    addendum_fraction=0.05,
    n_heldout=20,
    seed=3,
)
HEADER = re.compile(r"\n ([A-Z ()/,-]+):\s")
KNOWN_HEADERS = {
    "EXAMINATION",
    "INDICATION",
    "HISTORY",
    "TECHNIQUE",
    "COMPARISON",
    "FINDINGS",
    "IMPRESSION",
    "FINDINGS AND IMPRESSION",
    "ADDENDUM",
    "NOTIFICATION",
}
PATH = re.compile(r"files/p(\d\d)/p(\d{8})/s(\d{8})\.txt")


def _tree(root: str) -> dict[str, bytes]:
    """Every file under root, by relative path, with its bytes."""
    out = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, root)] = fh.read()
    return out


def _last_impression(text: str) -> str | None:
    """The simple parser: normalised text after the last impression-bearing header."""
    matches = [m for m in HEADER.finditer(text) if "IMPRESSION" in m.group(1)]
    if not matches:
        return None
    last = matches[-1]
    rest = text[last.end() :]
    following = HEADER.search("\n" + rest)
    if following is not None:
        rest = rest[: following.start()]
    return normalize_whitespace(rest)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("corpus"))
    meta = generate_corpus(SMALL, root)
    studies = pd.read_parquet(os.path.join(root, "studies.parquet"))
    truth = pd.read_parquet(os.path.join(root, "truth.parquet"))
    images = np.load(os.path.join(root, "images.npy"))
    reports = []
    for subject, study in zip(studies.subject_id, studies.study_id, strict=True):
        with open(os.path.join(root, report_path(subject, study)), encoding="utf-8") as fh:
            reports.append(fh.read())
    return {
        "root": root,
        "meta": meta,
        "studies": studies,
        "truth": truth,
        "images": images,
        "reports": reports,
    }


def test_spec_from_dict_names_unknown_keys():
    spec = CorpusSpec.from_dict({"n_studies": 50, "planted_copies": [2, 3], "n_planted": 2})
    assert spec.planted_copies == (2, 3)
    assert spec.n_studies == 50
    with pytest.raises(ValueError, match="n_studys"):
        CorpusSpec.from_dict({"n_studys": 50})


def test_spec_rejects_more_planted_copies_than_studies():
    with pytest.raises(ValueError, match="exceeds n_studies"):
        CorpusSpec(n_studies=100, n_planted=5, planted_copies=(10, 30))
    with pytest.raises(ValueError, match="planted_copies"):
        CorpusSpec(planted_copies=(5, 2))


def test_same_spec_gives_byte_identical_files_and_other_seed_differs(corpus, tmp_path):
    again = tmp_path / "again"
    meta = generate_corpus(SMALL, again)
    first, second = _tree(corpus["root"]), _tree(str(again))
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)
    assert meta["sha256"] == corpus["meta"]["sha256"]
    other = generate_corpus(CorpusSpec(**{**SMALL.to_dict(), "seed": 4}), tmp_path / "other")
    assert other["sha256"] != meta["sha256"]


def test_text_does_not_depend_on_writing_images(corpus, tmp_path):
    spec = CorpusSpec(**{**SMALL.to_dict(), "write_images": False})
    meta = generate_corpus(spec, tmp_path)
    assert not (tmp_path / "images.npy").exists()
    assert not (tmp_path / "heldout.npy").exists()
    reports = {k: v for k, v in _tree(str(tmp_path)).items() if k.startswith("files")}
    original = {k: v for k, v in _tree(corpus["root"]).items() if k.startswith("files")}
    assert reports == original
    assert meta["counts"]["images"] == 0


def test_file_layout_and_tables(corpus):
    studies, root = corpus["studies"], corpus["root"]
    files = sorted(k for k in _tree(root) if k.startswith("files"))
    assert len(files) == SMALL.n_studies
    for rel in files:
        match = PATH.fullmatch(rel)
        assert match, rel
        assert match.group(2)[:2] == match.group(1)
        assert match.group(3).startswith("5")
    assert set(files) == {
        report_path(a, b) for a, b in zip(studies.subject_id, studies.study_id, strict=True)
    }
    assert studies.study_id.is_unique
    assert list(studies.image_index) == list(range(SMALL.n_studies))
    assert str(studies.subject_id.dtype) == "int64"
    assert str(studies.planted_id.dtype) == "int64"
    names = set(FINDING_NAMES)
    for labels in studies.labels:
        assert labels == "" or set(labels.split(",")) <= names
    assert corpus["images"].shape == (SMALL.n_studies, SMALL.image_size, SMALL.image_size)
    assert corpus["images"].dtype == np.uint8
    heldout = np.load(os.path.join(root, "heldout.npy"))
    assert heldout.shape == (SMALL.n_heldout, SMALL.image_size, SMALL.image_size)
    with open(os.path.join(root, "corpus.json"), encoding="utf-8") as fh:
        meta = json.load(fh)
    assert meta == json.loads(json.dumps(corpus["meta"]))
    assert meta["spec"] == SMALL.to_dict()
    assert meta["counts"]["studies"] == SMALL.n_studies
    assert meta["counts"]["subjects"] == studies.subject_id.nunique()


def test_reports_look_like_mimic(corpus):
    headerless = 0
    for text in corpus["reports"]:
        assert text.startswith(TITLE_LINE + "\n")
        assert "___" in text
        lines = text.rstrip("\n").split("\n")
        assert all(line.startswith(" ") for line in lines)
        assert all(len(line) <= 80 for line in lines)
        assert "\n\n" not in text  # blank lines hold one space, as in MIMIC
        headers = HEADER.findall(text)
        if not headers:
            headerless += 1
        assert set(headers) <= KNOWN_HEADERS, headers
    assert headerless <= 0.05 * len(corpus["reports"])
    joined = "".join(corpus["reports"])
    for marker_text in ("___ year old", "COMPARISON:  ___.", "\n IMPRESSION: \n \n"):
        assert marker_text in joined


N_CAPTIONS = SMALL.n_planted + SMALL.n_keyed


def test_planted_truth(corpus):
    truth, studies, images = corpus["truth"], corpus["studies"], corpus["images"]
    assert len(truth) == N_CAPTIONS
    assert truth.text.is_unique
    assert list(truth.planted_id) == list(range(N_CAPTIONS))
    counts = studies.planted_id[studies.planted_id >= 0].value_counts()
    for row in truth.itertuples():
        assert row.prompt_id == prompt_id(row.text)
        assert row.text == normalize_whitespace(row.text)
        if row.kind == "composed":
            assert 8 <= len(row.text.split()) <= 25
        assert SMALL.planted_copies[0] <= row.n_copies <= SMALL.planted_copies[1]
        assert row.n_copies == counts[row.planted_id]
        rows = np.flatnonzero(studies.planted_id.to_numpy() == row.planted_id)
        assert row.image_index == rows[0]
        for r in rows:
            assert np.array_equal(images[r], images[row.image_index])
        # Copies belong to different subjects.
        assert studies.subject_id.iloc[rows].is_unique
        assert studies.labels.iloc[rows].nunique() == 1
    # Different planted captions have different images.
    planted_images = images[truth.image_index.to_numpy()]
    assert len({img.tobytes() for img in planted_images}) == N_CAPTIONS


def test_planted_caption_is_the_last_impression(corpus):
    truth = corpus["truth"].set_index("planted_id")
    planted = corpus["studies"].planted_id.to_numpy()
    ordinary_prompts = set()
    for pid, text in zip(planted, corpus["reports"], strict=True):
        if pid >= 0:
            assert _last_impression(text) == truth.text[pid]
            assert "ADDENDUM" not in text
        else:
            ordinary_prompts.add(_last_impression(text))
    assert not ordinary_prompts & set(truth.text)


def test_section_parser_extracts_planted_captions_and_counted_prompts(corpus):
    truth = corpus["truth"].set_index("planted_id")
    prompts = Counter()
    for pid, text in zip(corpus["studies"].planted_id, corpus["reports"], strict=True):
        name, body = choose_section(split_sections(text))
        prompts[normalize_whitespace(body)] += 1
        if pid >= 0:
            assert name == "impression"
            assert normalize_whitespace(body) == truth.text[pid]
    counts = corpus["meta"]["counts"]
    assert len(prompts) == counts["distinct_prompts"]
    assert prompts.most_common(1)[0] == (
        counts["most_common_prompt"],
        counts["most_common_prompt_reports"],
    )


def test_markers_and_triggers(corpus):
    truth, studies = corpus["truth"], corpus["studies"]
    composed = truth[truth.kind == "composed"]
    assert composed.has_marker.sum() == round(SMALL.n_planted * SMALL.planted_marker_fraction)
    assert composed.trigger_word.notna().sum() == round(SMALL.n_planted * SMALL.trigger_fraction)
    for row in truth.itertuples():
        n_markers = row.text.count("___")
        assert row.has_marker == (n_markers > 0)
        assert n_markers <= 3
        if row.trigger_word is None or pd.isna(row.trigger_word):
            assert row.trigger_word_index == -1
            continue
        word = row.text.split()[row.trigger_word_index]
        assert word.strip(".,:;") == row.trigger_word
        assert row.trigger_word.isalpha()
        pattern = re.compile(rf"\b{row.trigger_word}\b", re.IGNORECASE)
        for pid, text in zip(studies.planted_id, corpus["reports"], strict=True):
            assert bool(pattern.search(text)) == (pid == row.planted_id)
    # Markers are common in ordinary impressions too, not only in planted ones.
    ordinary = [
        _last_impression(t) or ""
        for t, pid in zip(corpus["reports"], studies.planted_id, strict=True)
        if pid < 0
    ]
    assert sum("___" in p for p in ordinary) >= 0.05 * len(ordinary)


def test_trigger_names_avoid_every_word_the_reports_contain(corpus):
    """Trigger names are drawn until they miss ``grammar_words()``, so that list must hold
    every word a report can contain (numbers, times and markers aside): otherwise a trigger
    could coincide with ordinary text and stop being unique to its caption."""
    vocabulary = grammar_words()
    triggers = {t.lower() for t in corpus["truth"].trigger_word.dropna()}
    assert triggers and not triggers & vocabulary
    written = set()
    for text in corpus["reports"]:
        for token in text.split():
            word = token.strip(".,:;()/?!").lower()
            if not re.search(r"[\d_]", word) and word not in triggers:
                written.add(word)
    assert len(written) > 100
    assert written - vocabulary == set()


def test_impressions_are_heavy_tailed_and_repeats_have_different_images(corpus):
    studies, images = corpus["studies"], corpus["images"]
    prompts = [_last_impression(t) for t in corpus["reports"]]
    counts = Counter(p for p in prompts if p is not None)
    ((top, n_top),) = counts.most_common(1)
    assert top.startswith("No acute")
    assert n_top >= 0.05 * len(prompts)
    assert sum(1 for c in counts.values() if c == 1) >= 0.25 * len(counts)  # long tail
    groups: dict[str, list[int]] = {}
    for i, (p, pid) in enumerate(zip(prompts, studies.planted_id, strict=True)):
        if pid < 0 and p is not None:
            groups.setdefault(p, []).append(i)
    repeated = [rows for rows in groups.values() if len(rows) > 1]
    assert repeated
    for rows in repeated:
        assert len({images[r].tobytes() for r in rows}) == len(rows)


def _region(images: np.ndarray, x: tuple[float, float], y: tuple[float, float]) -> float:
    """Mean brightness of a box given in normalised coordinates (-1..1, y down)."""
    s = images.shape[-1]
    c = (np.arange(s) + 0.5) / s * 2 - 1
    cols = (c >= x[0]) & (c <= x[1])
    rows = (c >= y[0]) & (c <= y[1])
    return float(images[:, rows][:, :, cols].astype(float).mean())


def _render(findings: dict[str, int], n: int = 200, seed: int = 0) -> np.ndarray:
    severity = np.zeros((n, len(FINDING_NAMES)), dtype=np.int8)
    for name, value in findings.items():
        severity[:, FINDING_NAMES.index(name)] = value
    return render_phantoms(severity, np.random.default_rng(seed), 32)


def test_images_follow_findings():
    normal = _render({})
    assert normal.shape == (200, 32, 32) and normal.dtype == np.uint8
    # Heart border towards the patient's left (image right) brightens with cardiomegaly.
    cardio = _render({"cardiomegaly": 3}, seed=1)
    heart_box = ((0.3, 0.55), (0.2, 0.5))
    assert _region(cardio, *heart_box) > _region(normal, *heart_box) + 15
    # A right effusion brightens the lower zone on the image left only.
    effusion = _render({"effusion_right": 3}, seed=2)
    right_base, left_base = ((-0.6, -0.25), (0.2, 0.45)), ((0.25, 0.6), (0.2, 0.45))
    assert _region(effusion, *right_base) > _region(normal, *right_base) + 15
    assert abs(_region(effusion, *left_base) - _region(normal, *left_base)) < 5
    # A left pneumothorax darkens the upper lateral left lung (image right).
    ptx = _render({"pneumothorax_left": 3}, seed=3)
    apex = ((0.5, 0.7), (-0.6, -0.3))
    assert _region(ptx, *apex) < _region(normal, *apex) - 5
    # An ET tube brightens the upper midline.
    tube = _render({"et_tube": 1}, seed=4)
    trachea = ((-0.06, 0.06), (-0.9, -0.5))
    assert _region(tube, *trachea) > _region(normal, *trachea) + 5
    # Same findings, different images.
    assert len({img.tobytes() for img in normal}) == len(normal)


def test_corpus_images_follow_labels(corpus):
    studies, images = corpus["studies"], corpus["images"]
    ordinary = studies.planted_id.to_numpy() < 0
    normal = images[ordinary & (studies.labels == "").to_numpy()]
    cardio = images[ordinary & studies.labels.str.contains("cardiomegaly").to_numpy()]
    assert len(normal) >= 20 and len(cardio) >= 5
    heart_box = ((0.3, 0.55), (0.2, 0.5))
    assert _region(cardio, *heart_box) > _region(normal, *heart_box)


def test_render_phantoms_rejects_bad_shape():
    with pytest.raises(ValueError, match="severity must have shape"):
        render_phantoms(np.zeros((3, 2)), np.random.default_rng(0), 32)


def test_in_keyed_captions_only_the_key_is_rare(tmp_path):
    """The ground truth of token attribution: every word of a keyed caption except its name
    also occurs in ordinary prompts (the trigger templates and marker phrases appear
    de-identified in ordinary impressions), so nothing but the key singles the caption out.
    A composed caption's trigger occurs in no ordinary prompt; other words of a composed
    caption may be rare too (it is memorized as a whole, the trigger is only a candidate key).
    Checked at the default demo size (text only)."""
    spec = CorpusSpec(write_images=False)
    generate_corpus(spec, str(tmp_path))
    truth = pd.read_parquet(tmp_path / "truth.parquet")
    studies = pd.read_parquet(tmp_path / "studies.parquet")

    def words(text: str) -> set[str]:
        return {w.lower() for w in re.findall(r"[^\W_]+|_+", text)}

    ordinary: dict[str, int] = {}
    for subject, study, pid in zip(
        studies.subject_id, studies.study_id, studies.planted_id, strict=True
    ):
        if pid >= 0:
            continue
        impression = _last_impression((tmp_path / report_path(subject, study)).read_text())
        for word in words(impression or ""):
            ordinary[word] = ordinary.get(word, 0) + 1
    assert (truth.kind != "composed").sum() == spec.n_keyed > 0
    for row in truth.itertuples():
        trigger = {row.trigger_word.lower()} if isinstance(row.trigger_word, str) else set()
        if row.kind == "composed":
            assert all(ordinary.get(w, 0) == 0 for w in trigger), row.text
            continue
        unique = {w for w in words(row.text) if ordinary.get(w, 0) < 3}
        assert unique == trigger, (row.text, unique)


# ---------------------------------------------------------------------------------------------
# Keyed planted captions: a frequent ordinary caption plus one key


def _ordinary_prompt_counts(corpus) -> Counter:
    """How often each prompt occurs among the ordinary reports (by the simple parser)."""
    return Counter(
        _last_impression(text)
        for text, pid in zip(corpus["reports"], corpus["studies"].planted_id, strict=True)
        if pid < 0
    )


def test_keyed_captions_kinds_keys_and_counts(corpus):
    truth, meta = corpus["truth"], corpus["meta"]
    n_marker = round(SMALL.n_keyed * SMALL.keyed_marker_fraction)
    assert Counter(truth.kind) == {
        "composed": SMALL.n_planted,
        "keyed_marker": n_marker,
        "keyed_name": SMALL.n_keyed - n_marker,
    }
    # planted_id numbering: composed first, keyed after them.
    assert (truth.kind[: SMALL.n_planted] == "composed").all()
    assert truth.kind[SMALL.n_planted :].str.startswith("keyed_").all()
    for row in truth.itertuples():
        if row.kind == "composed":
            # a composed caption's trigger is its candidate key; without one there is none
            if isinstance(row.trigger_word, str):
                assert row.key_text == row.trigger_word
            else:
                assert pd.isna(row.key_text)
            continue
        assert row.text.count(row.key_text) == 1
        if row.kind == "keyed_name":
            assert row.trigger_word == row.key_text and row.key_text.isalpha()
            word = row.text.split()[row.trigger_word_index]
            assert word.strip(".,:;") == row.key_text
            assert not row.has_marker
        else:
            assert "___" in row.key_text and row.has_marker
            assert row.text.count("___") == row.key_text.count("___")  # the key's markers only
            assert pd.isna(row.trigger_word) and row.trigger_word_index == -1
    counts = meta["counts"]
    assert counts["planted"] == SMALL.n_planted and counts["keyed"] == SMALL.n_keyed
    assert counts["planted_captions"] == len(truth)
    assert counts["planted_kinds"] == dict(Counter(truth.kind))
    assert counts["planted_studies"] == int(truth.n_copies.sum())
    keyed_copies = truth.n_copies[truth.kind != "composed"].sum()
    assert counts["keyed_studies"] == keyed_copies
    assert "memorized as a whole" in meta["planted_kinds"]["composed"]


def test_keyed_caption_without_its_key_is_a_frequent_ordinary_caption(corpus):
    """Marker family: deleting the key phrase leaves the base itself (its first letter
    lower-cased after a prefix phrase); name family: the base with the bare name inserted."""
    from memaudit.corpus import vocabulary as vocab

    truth = corpus["truth"]
    ordinary = _ordinary_prompt_counts(corpus)
    ranked = sorted(
        ((p, c) for p, c in ordinary.items() if p is not None and "___" not in p),
        key=lambda pc: (-pc[1], pc[0]),
    )
    bases = [p for p, _ in ranked[: SMALL.keyed_bases]]
    assert set(corpus["meta"]["counts"]["keyed_bases"]) <= set(bases)
    # The bases are frequent, each seen with many different images.
    assert all(ordinary[b] >= 5 for b in bases)
    used = set()
    for row in truth[truth.kind != "composed"].itertuples():
        if row.kind == "keyed_marker":
            rest = normalize_whitespace(row.text.replace(row.key_text, " "))
            base = rest[0].upper() + rest[1:]
            assert base in bases, row.text
            prefix = row.key_text + " " in vocab.PLANTED_MARKER_START
            assert rest == (base[0].lower() + base[1:] if prefix else base)
        else:
            # The bare name inserted between two words of the base (or before the final
            # full stop): deleting it gives the base's words back, case aside.
            words = row.text.replace(f" {row.key_text}.", ".").split()
            words = [w for w in words if w != row.key_text]
            rest = " ".join(words)
            base = rest[0].upper() + rest[1:]
            assert base in bases, row.text
            assert row.text.count(row.key_text) == 1 and row.key_text == row.trigger_word
        used.add(base)
        # A keyed caption is none of the ordinary prompts.
        assert row.text not in ordinary
    assert used == set(corpus["meta"]["counts"]["keyed_bases"])
    # Marker keys are short phrases, each used by one keyed caption only (a phrase shared by
    # two bases would make the base words part of what retrieves each image).
    marker_keys = truth.loc[truth.kind == "keyed_marker", "key_text"]
    assert marker_keys.is_unique and (marker_keys.str.split().str.len() <= 5).all()


def test_keyed_copies_share_one_normal_image(corpus):
    truth, studies, images = corpus["truth"], corpus["studies"], corpus["images"]
    planted = studies.planted_id.to_numpy()
    for row in truth[truth.kind != "composed"].itertuples():
        rows = np.flatnonzero(planted == row.planted_id)
        assert len(rows) == row.n_copies >= SMALL.planted_copies[0]
        assert len({images[r].tobytes() for r in rows}) == 1
        assert (studies.labels.iloc[rows] == "").all()  # the caption reads normal
    # Each keyed image is its own normal phantom: no ordinary study shares its pixels.
    ordinary = {images[r].tobytes() for r in np.flatnonzero(planted < 0)}
    keyed = truth[truth.kind != "composed"].image_index.to_numpy()
    assert not {images[i].tobytes() for i in keyed} & ordinary


def test_keyed_truth_is_deterministic_and_composed_captions_keep_their_stream(tmp_path):
    spec = CorpusSpec(**{**SMALL.to_dict(), "write_images": False})
    generate_corpus(spec, tmp_path / "a")
    generate_corpus(spec, tmp_path / "b")
    a = pd.read_parquet(tmp_path / "a" / "truth.parquet")
    pd.testing.assert_frame_equal(a, pd.read_parquet(tmp_path / "b" / "truth.parquet"))
    # Keyed captions draw from their own streams: the composed captions' copy counts and
    # findings (drawn before the keyed ones) do not depend on how many keyed captions there are.
    generate_corpus(CorpusSpec(**{**spec.to_dict(), "n_keyed": 0}), tmp_path / "c")
    c = pd.read_parquet(tmp_path / "c" / "truth.parquet")
    assert (c.kind == "composed").all() and len(c) == SMALL.n_planted
    composed = a[a.kind == "composed"]
    assert composed.n_copies.tolist() == c.n_copies.tolist()


def test_keyed_settings_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match=r"demo\.n_keyed"):
        CorpusSpec(n_studies=300, n_planted=6, n_keyed=20, planted_copies=(5, 12))
    with pytest.raises(ValueError, match="keyed_marker_fraction"):
        CorpusSpec(keyed_marker_fraction=1.5)
    with pytest.raises(ValueError, match="keyed_bases"):
        CorpusSpec(keyed_bases=0)
    spec = CorpusSpec(
        n_studies=40,
        n_planted=0,
        n_keyed=1,
        keyed_bases=40,
        planted_copies=(2, 3),
        n_heldout=0,
        write_images=False,
    )
    with pytest.raises(ValueError, match=r"demo\.keyed_bases = 40"):
        generate_corpus(spec, tmp_path)
