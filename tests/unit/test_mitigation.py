"""Tests of the mitigation strategies, generations, diversity and summaries (tiny models)."""

from __future__ import annotations

import copy
import itertools
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from memaudit.copy_detection.reference import CopyReference, build_reference
from memaudit.diffusion import initial_noise
from memaudit.mitigation.chunks import gather_chunks, write_chunk
from memaudit.mitigation.evaluation import (
    evaluate_generations,
    mean_pairwise_rms,
    summarize_strategies,
    summary_document,
)
from memaudit.mitigation.figures import plot_mitigation_diversity, plot_mitigation_grid
from memaudit.mitigation.generation import (
    generate_chunk,
    generate_grid,
    generate_mitigations,
    plan_rows,
)
from memaudit.mitigation.spec import MitigationSpec
from memaudit.mitigation.strategies import (
    corpus_vocabulary,
    first_step_loss,
    gaussian_noise_embedding,
    mitigate_text,
    optimize_embeddings,
    tidy_text,
    token_vocabulary,
)
from memaudit.model.loading import AuditModel
from memaudit.model.training import build_demo_model
from memaudit.scoring.engine import score_prompts
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import marker_pattern, prompt_id
from tests.tiny_components import OutOfMemoryUnet, tiny_train_spec

MARKERS = ["___"]
PATTERN = marker_pattern(MARKERS)
CAPTIONS = [
    "___ chest radiograph shows no acute process.",
    "Compared to ___, the small left effusion is unchanged.",
    "Right lower lobe pneumonia, new since ___",
    "Dr. ___ was paged at ___ on ___ with these findings.",
    "Cardiomegaly without pulmonary edema.",
    "No pneumothorax.",
]
VOCAB = [f"word{i:04d}" for i in range(1000)]
TOKENS = [f"tok{i:04d}" for i in range(1000)]
# Small but complete settings: every strategy, 3 seeds, 3 DDIM steps, 2 embopt updates.
SPEC = MitigationSpec(
    n_seeds=3,
    steps=3,
    seed=5,
    batch_size=4,
    embopt_lr=0.01,
    embopt_iterations=2,
    embopt_generations=2,
)
SCORING = ScoringSpec(steps=3, guidance=7.5, generations=2, window=(0, None), seed=1)

# The promise: the same config on the same machine gives identical results; another batch size
# or chunking gives results equal to float rounding, since CPU kernels may sum in another order
# for another batch shape. The model runs in float32 (ulp 1.2e-7 relative); its reductions over
# a few hundred terms stay within ~1e-6 of the largest value, so 1e-5 of the largest value
# compared leaves a tenfold margin and still catches any real change. Images are uint8: a pixel
# whose float value lies within rounding of a level boundary may land one grey level apart.
FLOAT32_RTOL = 1e-5
GREY_LEVELS = 1


def assert_float32_close(actual, expected) -> None:
    """Equal to float32 rounding, relative to the largest magnitude compared."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * scale)


def assert_images_close(actual: np.ndarray, expected: np.ndarray) -> None:
    """uint8 images computed in other batch shapes: at most GREY_LEVELS apart."""
    assert actual.shape == expected.shape and actual.dtype == expected.dtype == np.uint8
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= GREY_LEVELS, f"{int((diff > GREY_LEVELS).sum())} pixels differ more"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and a shared CPU is not oversubscribed)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model() -> AuditModel:
    """The tiny pixel-space demo model (1x16x16) with cross-attention amplified 10x.

    A random tiny UNet barely reacts to its prompt; amplified, it does, as a trained one.
    """
    model = build_demo_model(CAPTIONS, tiny_train_spec())
    with torch.no_grad():
        for name, module in model.unet.named_modules():
            if name.endswith("attn2"):
                module.to_v.weight.mul_(10.0)
                module.to_out[0].weight.mul_(10.0)
    return model


@pytest.fixture(scope="module")
def prompts() -> pd.DataFrame:
    texts = CAPTIONS[1:3] + CAPTIONS[4:5]  # two with a marker, one without
    return pd.DataFrame(
        {
            "prompt_id": [prompt_id(t) for t in texts],
            "text": texts,
            "reason": "memorized",
            "planted": [True, False, False],
        }
    )


@pytest.fixture(scope="module")
def generated(model: AuditModel, prompts: pd.DataFrame):
    return generate_mitigations(model, prompts, SPEC, SCORING, MARKERS, VOCAB)


def _regex_around_markers(text: str, filler: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in PATTERN.split(text)]
    return re.compile(f"({filler})".join(parts))


# --------------------------------------------------------------------------------------------
# Text strategies
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", CAPTIONS[:4], ids=["start", "middle", "end", "several"])
def test_rwa_replaces_every_marker_by_a_vocabulary_word(text: str) -> None:
    result = mitigate_text(text, "p1", "rwa", SPEC, PATTERN, VOCAB, TOKENS)
    n_markers = len(PATTERN.findall(text))
    assert result.status == "generated" and result.n_edits == n_markers
    match = _regex_around_markers(text, r"word\d{4}").fullmatch(result.text)
    assert match is not None, result.text  # the rest of the text is untouched
    assert all(w in VOCAB for w in match.groups()) and "___" not in result.text


@pytest.mark.parametrize("text", CAPTIONS[:4], ids=["start", "middle", "end", "several"])
def test_rna_replaces_every_marker_by_a_number_in_range(text: str) -> None:
    spec = MitigationSpec(rna_range=(7, 9))
    result = mitigate_text(text, "p1", "rna", spec, PATTERN, VOCAB, TOKENS)
    match = _regex_around_markers(text, r"\d+").fullmatch(result.text)
    assert match is not None, result.text
    assert len(match.groups()) == len(PATTERN.findall(text))
    assert all(7 <= int(g) <= 9 for g in match.groups())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "___ chest radiograph shows no acute process.",
            "chest radiograph shows no acute process.",
        ),
        ("___, comparison with ___.", "comparison with."),
        ("Compared to ___, the effusion is unchanged.", "Compared to, the effusion is unchanged."),
        ("Right lower lobe pneumonia, new since ___", "Right lower lobe pneumonia, new since"),
        ("Dr. ___ was paged at ___ on ___.", "Dr. was paged at on."),
        ("Findings discussed with Dr. ___.", "Findings discussed with Dr."),
        ("Stable (see ___) effusion.", "Stable (see) effusion."),
        ("Stable (___) effusion; ___ ; ___.", "Stable effusion."),
    ],
)
def test_remove_deletes_markers_and_tidies_punctuation(text: str, expected: str) -> None:
    result = mitigate_text(text, "p1", "remove", SPEC, PATTERN)
    assert result.text == expected
    assert result.n_edits == len(PATTERN.findall(text))
    assert not re.search(r"\s[,.;:]|[,.;:]\s*[,.;:]|^[,.;:]|\s\s", result.text)


def test_tidy_text_keeps_clean_text_unchanged() -> None:
    for text in CAPTIONS[4:] + ["ET tube 5.5 cm above the carina at 10:30."]:
        assert tidy_text(text) == text


def test_marker_strategies_skip_prompts_without_marker() -> None:
    for strategy in ("rwa", "rna", "remove"):
        result = mitigate_text("No pneumothorax.", "p1", strategy, SPEC, PATTERN, VOCAB, TOKENS)
        assert (result.status, result.reason, result.text) == ("skipped", "no_marker", None)
    only_marker = mitigate_text("___", "p1", "remove", SPEC, PATTERN)
    assert (only_marker.status, only_marker.reason) == ("skipped", "empty_after_removal")
    for strategy in ("original", "gni", "embopt", "cwr", "rt"):
        result = mitigate_text("No pneumothorax.", "p1", strategy, SPEC, PATTERN, VOCAB, TOKENS)
        assert result.status == "generated"


@pytest.mark.parametrize("strategy", ["rwa", "rna", "cwr", "rt"])
def test_strategies_are_deterministic_under_their_seed(strategy: str) -> None:
    text = CAPTIONS[3]

    def run(seed: int, pid: str = "p1") -> str:
        spec = MitigationSpec(seed=seed, rna_range=(1, 10**6), rt_tokens=3, cwr_repeats=2)
        return mitigate_text(text, pid, strategy, spec, PATTERN, VOCAB, TOKENS).text

    assert run(0) == run(0)
    assert run(0) != run(1)  # another mitigation seed draws differently
    assert run(0) != run(0, "p2")  # and so does another prompt id


def test_cwr_repeats_a_word_of_the_caption() -> None:
    text = "Small left pleural effusion, unchanged since ___."
    spec = MitigationSpec(cwr_repeats=3)
    result = mitigate_text(text, "p1", "cwr", spec, PATTERN)
    before, after = text.split(), result.text.split()
    assert len(after) == len(before) + 3
    extra = list(after)
    for word in before:
        extra.remove(word)
    assert len(set(extra)) == 1 and extra[0] in {w.strip(",.") for w in before}
    assert extra[0] != "___"


def test_rt_inserts_tokens_keeping_the_caption_in_order() -> None:
    text = CAPTIONS[1]
    result = mitigate_text(text, "p1", "rt", MitigationSpec(rt_tokens=5), PATTERN, VOCAB, TOKENS)
    words = result.text.split()
    inserted = [w for w in words if w in TOKENS]
    assert len(inserted) == 5
    assert [w for w in words if w not in TOKENS] == text.split()


def test_corpus_vocabulary_is_sorted_words_without_markers_numbers_or_punctuation() -> None:
    vocab = corpus_vocabulary(
        ["Dr. ___ paged at 10:30, ___.", "XXXX seen; No change -- (5 cm)"], ["___", "XXXX"]
    )
    assert vocab == ["at", "change", "cm", "dr", "no", "paged", "seen"]


def test_token_vocabulary_drops_specials_markers_and_pieces(model: AuditModel) -> None:
    tokens = token_vocabulary(model.tokenizer, MARKERS)
    assert tokens == sorted(tokens) and "pneumothorax" in tokens
    assert not any(t.startswith(("[", "##")) or "_" in t for t in tokens)


def test_plan_rows_depends_on_prompt_ids_not_row_order(prompts: pd.DataFrame) -> None:
    forward = plan_rows(prompts, SPEC, MARKERS, VOCAB, TOKENS)
    backward = plan_rows(prompts.iloc[::-1], SPEC, MARKERS, VOCAB, TOKENS)
    pd.testing.assert_frame_equal(forward, backward)
    alone = plan_rows(prompts.iloc[[1]], SPEC, MARKERS, VOCAB, TOKENS)
    merged = forward.merge(alone, on=["prompt_id", "strategy"], suffixes=("", "_alone"))
    assert len(merged) == len(SPEC.strategies)
    assert (merged["mitigated_text"].fillna("") == merged["mitigated_text_alone"].fillna("")).all()


def test_spec_rejects_bad_values_naming_the_key() -> None:
    with pytest.raises(ValueError, match="mitigation.strategies"):
        MitigationSpec.from_dict({"strategies": ["original", "shuffle"]})
    with pytest.raises(ValueError, match="unknown mitigation key"):
        MitigationSpec.from_dict({"n_seed": 3})
    with pytest.raises(ValueError, match="mitigation.rna_range"):
        MitigationSpec.from_dict({"rna_range": [9, 1]})
    spec = MitigationSpec.from_dict({"chunks": 3, "bootstrap": 10, "prompts": "memorized"})
    assert spec == MitigationSpec()  # selection, chunk and evaluation keys change no image


# --------------------------------------------------------------------------------------------
# Embedding strategies
# --------------------------------------------------------------------------------------------


def test_gni_adds_noise_of_the_configured_scale() -> None:
    embedding = torch.randn(64, 96)
    for scale in (0.05, 0.5):
        noisy = gaussian_noise_embedding(embedding, scale, seed=0, prompt_id="p1")
        assert float((noisy - embedding).std()) == pytest.approx(scale, rel=0.03)
    a = gaussian_noise_embedding(embedding, 0.1, seed=0, prompt_id="p1")
    assert torch.equal(a, gaussian_noise_embedding(embedding, 0.1, seed=0, prompt_id="p1"))
    assert not torch.equal(a, gaussian_noise_embedding(embedding, 0.1, seed=0, prompt_id="p2"))
    torch.testing.assert_close(gaussian_noise_embedding(embedding, 0.0, 0, "p1"), embedding)


def test_embopt_lowers_the_first_step_loss(model: AuditModel) -> None:
    cond = model.encode(CAPTIONS[:2])
    noise = initial_noise(model.latent_shape, 2, seed=0)
    uncond = model.encode([""])
    before = first_step_loss(model, cond, noise, uncond, steps=3).detach()
    optimised, info = optimize_embeddings(model, cond, noise, uncond, steps=3, iterations=5)
    after = first_step_loss(model, optimised, noise, uncond, steps=3).detach()
    assert (after < 0.8 * before).all(), (before, after)
    np.testing.assert_allclose(info["initial_loss"], before.numpy(), rtol=1e-5)
    np.testing.assert_allclose(info["final_loss"], after.numpy(), rtol=1e-5)
    assert info["iterations"].tolist() == [5, 5]


def test_embopt_target_loss_stops_each_prompt_and_batching_changes_nothing(
    model: AuditModel,
) -> None:
    cond = model.encode(CAPTIONS[:3])
    noise = initial_noise(model.latent_shape, 2, seed=0)
    uncond = model.encode([""])
    losses = first_step_loss(model, cond, noise, uncond, steps=3).detach()
    low, mid, _ = sorted(losses.tolist())
    target = (low + mid) / 2  # the prompt below it stops at once, the others run
    together, info = optimize_embeddings(
        model, cond, noise, uncond, 3, iterations=3, target_loss=target
    )
    stopped = losses < target
    assert int(stopped.sum()) == 1
    assert (info["iterations"].to_numpy()[stopped.numpy()] == 0).all()
    assert (info["iterations"].to_numpy()[~stopped.numpy()] > 0).all()
    # A stopped prompt's embedding is restored after every update, not recomputed: exact.
    assert torch.equal(together[stopped], cond[stopped])
    for i in range(3):
        alone, alone_info = optimize_embeddings(
            model, cond[i : i + 1], noise, uncond, 3, iterations=3, target_loss=target
        )
        # Alone, the UNet runs in another batch shape: its float32 gradients agree to ~1e-6
        # relative, and AdamW's normalised steps of size lr (0.05) carry that error, so the
        # embeddings agree to ~lr * 1e-6, far inside these bounds.
        torch.testing.assert_close(alone[0], together[i], rtol=1e-4, atol=1e-5)
        assert alone_info["iterations"].iloc[0] == info["iterations"].iloc[i]


# --------------------------------------------------------------------------------------------
# Generation
# --------------------------------------------------------------------------------------------


def test_seed_index_gives_the_same_start_for_every_prompt_and_strategy(
    model: AuditModel,
) -> None:
    """With guidance 0 only the unconditional branch steers, so images depend on x_T alone."""
    cond = model.encode(CAPTIONS[:3])
    noise = initial_noise(model.latent_shape, 3, seed=5)
    images, _ = generate_grid(
        model, cond, noise, model.encode([""]), steps=3, guidance=0.0, batch_size=4
    )
    # Rows of one seed fall into different batches of 4 images, hence the rounding tolerance.
    for s in range(3):
        for r in range(1, 3):
            assert_images_close(images[r, s], images[0, s])
    assert np.abs(images[0, 0].astype(int) - images[0, 1].astype(int)).max() > 10 * GREY_LEVELS
    assert torch.equal(initial_noise(model.latent_shape, 5, seed=5)[:3], noise)
    # The same batches again on the same machine: bit for bit.
    again, _ = generate_grid(
        model, cond, noise, model.encode([""]), steps=3, guidance=0.0, batch_size=4
    )
    np.testing.assert_array_equal(again, images)


def test_generation_out_of_memory_halves_the_batch_and_keeps_the_images(
    model: AuditModel,
) -> None:
    cond = model.encode(CAPTIONS[:2])
    noise = initial_noise(model.latent_shape, 3, seed=5)
    uncond = model.encode([""])
    reference, _ = generate_grid(model, cond, noise, uncond, steps=2, guidance=3.0, batch_size=6)
    fake = copy.copy(model)
    fake.unet = OutOfMemoryUnet(model.unet, max_rows=2 * 2)  # 2 images x 2 branches per call
    images, stats = generate_grid(fake, cond, noise, uncond, steps=2, guidance=3.0, batch_size=6)
    assert stats["batch_size_final"] == 1 and stats["oom_halvings"] == 2  # 6 -> 3 -> 1
    assert fake.unet.raised == 2
    # Batches of 3 and 1 here, of 6 in the reference: float32 kernels round differently per
    # batch shape (~1e-6 of a pixel value), which can tip a pixel across a uint8 rounding
    # boundary, so images agree within one level (of 255), not bit for bit.
    assert np.abs(images.astype(np.int16) - reference.astype(np.int16)).max() <= 1
    fake.unet = OutOfMemoryUnet(model.unet, max_rows=1)
    with pytest.raises(RuntimeError, match="single image"):
        generate_grid(fake, cond, noise, uncond, steps=2, guidance=3.0, batch_size=2)


def test_generation_index_and_images(generated, prompts: pd.DataFrame) -> None:
    index, images, stats = generated
    assert len(index) == len(prompts) * len(SPEC.strategies)
    skipped = index[index["status"] == "skipped"]
    no_marker = prompt_id(CAPTIONS[4])
    assert set(zip(skipped["prompt_id"], skipped["strategy"], strict=True)) == {
        (no_marker, s) for s in ("rwa", "rna", "remove")
    }
    assert (skipped["reason"] == "no_marker").all() and (skipped["row"] == -1).all()
    done = index[index["status"] == "generated"]
    assert sorted(done["row"]) == list(range(len(done)))
    assert images.shape == (len(done), SPEC.n_seeds, 16, 16) and images.dtype == np.uint8
    assert np.isfinite(done["d_mem"]).all()
    embopt = done[done["strategy"] == "embopt"]
    assert (embopt["embopt_final_loss"] < embopt["embopt_initial_loss"]).all()
    gni = done[done["strategy"] == "gni"]
    assert np.allclose(gni["embedding_rms_change"], SPEC.gni_scale, rtol=0.1)
    assert (done.loc[done["strategy"] == "original", "embedding_rms_change"] == 0).all()
    assert stats["generation_images"] == len(done) * SPEC.n_seeds
    assert stats["generation_images_per_s"] > 0


def test_original_d_mem_is_the_scoring_engines(generated, model: AuditModel, prompts) -> None:
    index = generated[0]
    original = index[index["strategy"] == "original"].set_index("prompt_id")
    # The scoring engine batches its UNet calls differently: equal to float32 rounding.
    table, _ = score_prompts(model, prompts["prompt_id"], prompts["text"], SCORING)
    assert_float32_close(original.loc[table["prompt_id"], "d_mem"], table["d_mem"])


def test_chunks_and_batch_size_change_no_result(generated, model: AuditModel, prompts) -> None:
    index, images, _ = generated
    spec = MitigationSpec(**{**SPEC.__dict__, "batch_size": 7})
    parts = [
        generate_mitigations(model, prompts.iloc[[i]], spec, SCORING, MARKERS, VOCAB)
        for i in (2, 0, 1)
    ]
    for part_index, part_images, _ in parts:
        done = part_index[part_index["status"] == "generated"]
        ref = index.set_index(["prompt_id", "strategy"]).loc[
            list(zip(done["prompt_id"], done["strategy"], strict=True))
        ]
        # Text edits draw from hashed seeds, never from float results: exactly equal.
        assert (ref["mitigated_text"].to_numpy() == done["mitigated_text"].to_numpy()).all()
        assert_float32_close(done["d_mem"], ref["d_mem"])
        assert_images_close(part_images[done["row"]], images[ref["row"].to_numpy()])


def test_chunk_files_are_paired_and_gather_checks(
    generated, model: AuditModel, prompts: pd.DataFrame, tmp_path: Path
) -> None:
    index, images, _ = generated
    write_chunk(index, images, tmp_path / "a.npz", tmp_path / "a.parquet")
    stats = generate_chunk(
        model,
        prompts,
        0,
        3,
        SPEC,
        SCORING,
        MARKERS,
        VOCAB,
        tmp_path / "b.npz",
        tmp_path / "b.parquet",
    )
    assert stats["chunk_total"] == 3 and not list(tmp_path.glob(".*.tmp"))
    table = gather_chunks([tmp_path / "a.parquet"], [tmp_path / "a.npz"], prompts["prompt_id"])
    assert len(table) == len(index) and (table["chunk"] == str(tmp_path / "a.npz")).all()
    with pytest.raises(ValueError, match="duplicate"):
        gather_chunks(
            [tmp_path / "a.parquet", tmp_path / "b.parquet"],
            [tmp_path / "a.npz", tmp_path / "b.npz"],
        )
    with pytest.raises(ValueError, match="token mismatch"):
        gather_chunks([tmp_path / "a.parquet"], [tmp_path / "b.npz"])
    # an index that points past the saved images (read from the .npz header) is refused
    a_index = pd.read_parquet(tmp_path / "a.parquet")
    n_saved = int(a_index["row"].max()) + 1
    a_index.loc[a_index["row"] == a_index["row"].max(), "row"] = n_saved
    a_index.to_parquet(tmp_path / "a_bad.parquet", index=False)
    with pytest.raises(ValueError, match=f"points at {n_saved + 1} rows, {n_saved} saved"):
        gather_chunks([tmp_path / "a_bad.parquet"], [tmp_path / "a.npz"])
    with pytest.raises(ValueError, match="have no generations"):
        gather_chunks([tmp_path / "b.parquet"], [tmp_path / "b.npz"], prompts["prompt_id"])


# --------------------------------------------------------------------------------------------
# Diversity, evaluation, summary, figures
# --------------------------------------------------------------------------------------------


def test_mean_pairwise_rms_matches_a_double_loop() -> None:
    rng = np.random.default_rng(0)
    for images in (rng.integers(0, 256, (7, 9, 11), dtype=np.uint8), rng.random((5, 6, 6))):
        floats = images / 255.0 if images.dtype == np.uint8 else images
        pairs = [
            np.linalg.norm(floats[i] - floats[j]) / math.sqrt(floats[i].size)
            for i, j in itertools.combinations(range(len(images)), 2)
        ]
        assert mean_pairwise_rms(images) == pytest.approx(np.mean(pairs), rel=1e-9)
    same = np.repeat(rng.integers(0, 256, (1, 8, 8), dtype=np.uint8), 4, axis=0)
    assert mean_pairwise_rms(same) == pytest.approx(0.0, abs=1e-7)
    assert math.isnan(mean_pairwise_rms(same[:1]))


def _reference_with(images: np.ndarray, tmp_path: Path) -> CopyReference:
    """A copy reference whose training set is ``images`` (+ unrelated noise images)."""
    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, (30, 16, 16), dtype=np.uint8)
    train = np.concatenate([images, noise[:20]])
    demo = {
        "studies": pd.DataFrame(
            {"study_id": np.arange(len(train)), "image_index": np.arange(len(train))}
        ),
        "report_map": pd.DataFrame({"study_id": np.arange(len(train))}),
        "images": train,
        "heldout": noise[20:],
    }
    files = [tmp_path / n for n in ("e.npy", "i.parquet", "h.parquet", "r.json")]
    build_reference({"embedding": "pixels", "side": 16}, *files, demo=demo)
    return CopyReference.load(*files, percentile=95)


def test_evaluate_summarize_and_plot(generated, prompts: pd.DataFrame, tmp_path: Path) -> None:
    index, images, stats = generated
    write_chunk(index, images, tmp_path / "c.npz", tmp_path / "c.parquet")
    table = gather_chunks([tmp_path / "c.parquet"], [tmp_path / "c.npz"])
    copied_row = int(index.loc[index["strategy"] == "original", "row"].iloc[0])
    reference = _reference_with(images[copied_row], tmp_path)
    truth = pd.DataFrame({"prompt_id": [prompts["prompt_id"].iloc[0]], "image_index": [0]})
    evaluation = evaluate_generations(table, reference, truth)
    done = evaluation[evaluation["status"] == "generated"]
    for row in done.itertuples():
        assert row.diversity == pytest.approx(mean_pairwise_rms(images[row.row]))
        assert len(row.nearest_train_ids) == SPEC.n_seeds
    copied = done[done["row"] == copied_row].iloc[0]
    assert copied["copy_rate"] == 1.0 and copied["max_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert copied["planted"] and copied["planted_copy_rate"] == pytest.approx(1 / SPEC.n_seeds)
    assert copied["planted_nearest_rate"] >= copied["planted_copy_rate"]
    not_planted = done[~done["planted"]]
    assert not_planted["planted_nearest_rate"].isna().all()
    summary = summarize_strategies(
        evaluation, SPEC.strategies, n_bootstrap=200, seed=0, memorization_threshold=0.1
    )
    overall = summary[summary["group"] == "all"].set_index("strategy")
    assert overall.at["rwa", "n_skipped"] == 1 and overall.at["original", "n_prompts"] == 3
    assert overall.at["original", "diversity_change_mean"] == pytest.approx(0.0)
    orig = overall.loc["original"]
    assert orig["diversity_ci_low"] <= orig["diversity_mean"] <= orig["diversity_ci_high"]
    assert {"planted", "other"} <= set(summary["group"])
    doc = summary_document(summary, evaluation, prompts, [stats], reference, None, 0.1, 200)
    assert doc["skipped"] == {s: {"no_marker": 1} for s in ("remove", "rna", "rwa")}
    assert doc["copy_detection"]["threshold"] == reference.threshold
    json.dumps(doc, allow_nan=False)
    plot_mitigation_grid(
        evaluation,
        tmp_path / "grid.png",
        SPEC.strategies,
        n_prompts=2,
        n_seeds=3,
        training_image=lambda tid: np.zeros((16, 16)),
        copy_threshold=reference.threshold,
    )
    plot_mitigation_diversity(evaluation, summary, tmp_path / "div.png", SPEC.strategies, 0.1)
    for name in ("grid", "div"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0 and (tmp_path / f"{name}.pdf").exists()


def test_empty_prompt_table_gives_empty_outputs_and_says_so(
    model: AuditModel, tmp_path: Path
) -> None:
    empty = pd.DataFrame(
        {"prompt_id": pd.Series([], dtype=object), "text": pd.Series([], dtype=object)}
    )
    index, images, stats = generate_mitigations(model, empty, SPEC, SCORING, MARKERS, VOCAB)
    assert len(index) == 0 and images.shape[0] == 0 and stats["generation_images"] == 0
    write_chunk(index, images, tmp_path / "e.npz", tmp_path / "e.parquet")
    table = gather_chunks([tmp_path / "e.parquet"], [tmp_path / "e.npz"], expected_ids=[])
    evaluation = evaluate_generations(table)
    summary = summarize_strategies(evaluation, SPEC.strategies)
    assert (summary["n_prompts"] == 0).all()
    doc = summary_document(
        summary, evaluation, empty.assign(reason=[]), [stats], None, None, None, 10
    )
    assert "no prompt was selected" in doc["note"] and "skipped" in doc["copy_detection"]
    json.dumps(doc, allow_nan=False)
    plot_mitigation_grid(evaluation, tmp_path / "g.png", SPEC.strategies)
    plot_mitigation_diversity(evaluation, summary, tmp_path / "d.png", SPEC.strategies)
    assert (tmp_path / "g.png").exists() and (tmp_path / "d.png").exists()


def test_generation_rejects_a_prompt_table_without_text(model: AuditModel) -> None:
    with pytest.raises(ValueError, match="'text'"):
        generate_mitigations(
            model, pd.DataFrame({"prompt_id": ["a"]}), SPEC, SCORING, MARKERS, VOCAB
        )
