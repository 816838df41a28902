"""Tests of token attribution: the gradient against finite differences, word merging for
WordPiece and the demo tokenizer, batching/chunking, occlusion, aggregates and bad input."""

from __future__ import annotations

import copy
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from memaudit.atomic import write_atomically
from memaudit.attribution.engine import (
    attribute_chunk,
    attribute_prompts,
    occlusion_table,
    token_significance,
)
from memaudit.attribution.figures import plot_token_attribution, plot_word_types
from memaudit.attribution.spec import AttributionSpec
from memaudit.attribution.statistics import (
    MARKER_TYPE,
    TRIGGER_TYPE,
    prompt_type_ranks,
    summarize_attribution,
    word_type_stats,
    word_type_table,
)
from memaudit.attribution.tables import gather_tables, rank_occlusion, rank_words, spearman
from memaudit.attribution.words import trigger_span, word_units
from memaudit.diffusion import fresh_scheduler, initial_noise
from memaudit.model.loading import AuditModel
from memaudit.model.training import build_demo_model, train_tokenizer
from memaudit.scoring.engine import score_prompts
from memaudit.selection import select_prompts
from memaudit.text import compile_markers, prompt_id
from tests.tiny_components import (
    OutOfMemoryUnet,
    tiny_train_spec,
)
from tests.unit.attribution_fixtures import CAPTIONS, HIDDEN, MARKERS, SCORING, _spec

# The promise: the same config on the same machine gives identical results; another batch size
# or chunking gives results equal to float rounding, since CPU kernels may sum in another order
# for another batch shape. The model runs in float32 (ulp 1.2e-7 relative); its reductions over
# a few hundred terms stay within ~1e-6 of the largest value, so 1e-5 of the largest value
# compared leaves a tenfold margin and still catches any real change.
FLOAT32_RTOL = 1e-5


def assert_float32_close(actual, expected) -> None:
    """Equal to float32 rounding, relative to the largest magnitude compared."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=FLOAT32_RTOL, atol=FLOAT32_RTOL * scale)


# --------------------------------------------------------------------------------------------
# The gradient
# --------------------------------------------------------------------------------------------


def _joint_loss(model: AuditModel, x: torch.Tensor, t, cond: torch.Tensor, uncond: torch.Tensor):
    """L_t of one prompt at fixed x_t [n, C, h, w], straight from the UNet in float64."""
    n = x.shape[0]
    with torch.no_grad():
        eps_c = model.unet(x, t, encoder_hidden_states=cond.expand(n, -1, -1)).sample
        eps_u = model.unet(x, t, encoder_hidden_states=uncond.expand(n, -1, -1)).sample
    return float(torch.linalg.vector_norm(eps_c - eps_u))


def _finite_difference(loss, base: torch.Tensor, row: int, coords, h: float = 1e-5) -> np.ndarray:
    """Central differences of ``loss`` w.r.t. base[0, row, coords]."""
    out = []
    for d in coords:
        plus, minus = base.clone(), base.clone()
        plus[0, row, d] += h
        minus[0, row, d] -= h
        out.append((loss(plus) - loss(minus)) / (2 * h))
    return np.asarray(out)


def test_gradient_matches_conditional_finite_difference_not_unconditional(model64) -> None:
    spec = _spec(window=(0, 1))
    text = CAPTIONS[0]
    ids = model64.tokenize([text])["input_ids"]
    with torch.no_grad():
        cond = model64.encode_ids(ids)
        uncond = model64.encode([""])
    noise = initial_noise(model64.latent_shape, spec.generations, spec.seed).double()
    result = token_significance(model64, cond, spec, noise.float(), uncond, keep_gradients=True)
    scheduler = fresh_scheduler(model64, spec.steps, model64.device)
    t = scheduler.timesteps[0]
    x = noise * scheduler.init_noise_sigma
    tokens = model64.tokenizer.convert_ids_to_tokens(ids[0].tolist())
    marker_row = tokens.index("_")  # the first piece of the marker
    pad_row = tokens.index("[PAD]")  # padding is attended, so it has a gradient too
    for row in (marker_row, pad_row):
        analytic = result.gradients[0, 0, row]
        coords = list(np.argsort(-np.abs(analytic))[:3]) + [0, HIDDEN - 1]
        conditional = _finite_difference(
            lambda e: _joint_loss(model64, x, t, e, uncond), cond, row, coords
        )
        np.testing.assert_allclose(analytic[coords], conditional, rtol=1e-3, atol=1e-7)
        # The whole row: the reported significance is the norm of this gradient.
        full = _finite_difference(
            lambda e: _joint_loss(model64, x, t, e, uncond), cond, row, range(HIDDEN)
        )
        assert result.significance[0, row] == pytest.approx(np.linalg.norm(full), rel=1e-3)
        # The swapped-branch bug differentiates e_∅ instead: a different vector.
        unconditional = _finite_difference(
            lambda u: _joint_loss(model64, x, t, cond, u), uncond, row, range(HIDDEN)
        )
        assert np.linalg.norm(full - unconditional) > 0.2 * np.linalg.norm(full)
        assert np.linalg.norm(full + unconditional) > 0.2 * np.linalg.norm(full)
        assert abs(np.linalg.norm(unconditional) - np.linalg.norm(full)) > 1e-3 * np.linalg.norm(
            full
        )


def test_later_step_gradient_holds_the_trajectory_fixed(model64) -> None:
    """At step 1 the derivative is taken at the guided x_1, which is not differentiated."""
    spec = _spec(window=(1, 2))
    ids = model64.tokenize([CAPTIONS[1]])["input_ids"]
    with torch.no_grad():
        cond = model64.encode_ids(ids)
        uncond = model64.encode([""])
    noise = initial_noise(model64.latent_shape, spec.generations, spec.seed)
    result = token_significance(model64, cond, spec, noise, uncond, keep_gradients=True)
    scheduler = fresh_scheduler(model64, spec.steps, model64.device)
    t0, t1 = scheduler.timesteps[0], scheduler.timesteps[1]
    n = spec.generations
    x0 = noise.double()
    with torch.no_grad():
        eps_c = model64.unet(x0, t0, encoder_hidden_states=cond.expand(n, -1, -1)).sample
        eps_u = model64.unet(x0, t0, encoder_hidden_states=uncond.expand(n, -1, -1)).sample
    x1 = scheduler.step(eps_u + spec.guidance * (eps_c - eps_u), t0, x0, eta=0.0).prev_sample
    row = 3
    analytic = result.gradients[0, 0, row]
    coords = list(np.argsort(-np.abs(analytic))[:4])
    estimate = _finite_difference(
        lambda e: _joint_loss(model64, x1, t1, e, uncond), cond, row, coords
    )
    np.testing.assert_allclose(analytic[coords], estimate, rtol=1e-3, atol=1e-7)
    assert result.losses[0, 0] == pytest.approx(
        _joint_loss(model64, x1, t1, cond, uncond), rel=1e-5
    )


def test_losses_and_window_d_mem_match_the_scoring_engine(model, selection) -> None:
    spec = _spec(window=(1, 3))
    ids = model.tokenize(CAPTIONS)["input_ids"]
    with torch.no_grad():
        cond = model.encode_ids(ids)
        uncond = model.encode([""])
    noise = initial_noise(model.latent_shape, spec.generations, spec.seed)
    result = token_significance(model, cond, spec, noise, uncond)
    # The scoring engine batches its UNet calls differently: equal to float32 rounding.
    scores, _ = score_prompts(model, selection["prompt_id"], CAPTIONS, spec)
    norms = np.stack(scores["norms"]).reshape(len(CAPTIONS), spec.generations, -1)[..., 1:3]
    assert_float32_close(result.norms, norms)
    # L_t is one norm over all generations: the root of the summed squared per-image norms.
    assert_float32_close(result.losses, np.sqrt((norms**2).sum(axis=1)))
    assert_float32_close(result.norms.mean(axis=(1, 2)), scores["d_mem"])
    # Each significance is a mean of gradient norms over the 2 window steps: positive, finite.
    assert np.isfinite(result.significance).all() and (result.significance > 0).all()
    # The same batch again on the same machine: bit for bit.
    again = token_significance(model, cond, spec, noise, uncond)
    for field in ("significance", "losses", "norms"):
        np.testing.assert_array_equal(getattr(again, field), getattr(result, field))


def test_batch_size_and_chunks_change_no_result(model, selection, tmp_path: Path) -> None:
    spec = _spec(window=(0, 2))
    reference, _ = attribute_prompts(model, selection, spec, 5, ["___"])
    one_by_one, stats = attribute_prompts(model, selection, spec, 1, ["___"])
    assert stats["gradient"]["batch_size_final"] == 1
    assert_float32_close(one_by_one.tokens["significance"], reference.tokens["significance"])
    pd.testing.assert_frame_equal(
        one_by_one.words.drop(columns=["score_sum", "score_max", "positions"]),
        reference.words.drop(columns=["score_sum", "score_max", "positions"]),
    )
    # Chunks: 3 jobs (of a shuffled table) gathered equal one job.
    paths = {}
    for index in range(3):
        kinds = ("tokens", "words", "occlusion", "methods")
        names = {k: tmp_path / f"{index}.{k}.parquet" for k in kinds}
        names.update(
            prompts=tmp_path / f"{index}.prompts.parquet", stats=tmp_path / f"{index}.json"
        )
        attribute_chunk(model, selection.iloc[::-1], index, 3, spec, 2, ["___"], names)
        for kind, path in names.items():
            paths.setdefault(kind, []).append(path)
    gathered = gather_tables(paths, selection["prompt_id"])
    whole = rank_words(reference.words, "sum")
    assert_float32_close(gathered.words["score"], whole["score"])
    # Ranks are exact here because no two words of a prompt score within 100 times the float
    # tolerance of each other, so rounding cannot reorder them.
    for _, scores in whole[whole["rank"].notna()].groupby("prompt_id")["score"]:
        gaps = np.diff(np.sort(scores.to_numpy()))
        assert gaps.min() > 100 * FLOAT32_RTOL * scores.abs().max()
    assert gathered.words["rank"].equals(whole["rank"])
    # A drop is a difference of two d_mem values: its rounding is that of d_mem, not of itself.
    original = reference.occlusion.sort_values(["prompt_id", "word_index"])
    np.testing.assert_allclose(
        gathered.occlusion["drop"],
        original["drop"],
        rtol=FLOAT32_RTOL,
        atol=FLOAT32_RTOL * original["d_mem_original"].abs().max(),
    )
    assert sorted(gathered.prompts["prompt_id"]) == sorted(selection["prompt_id"])


def test_out_of_memory_halves_the_backward_batch(model, selection) -> None:
    spec = _spec(window=(0, 1), batch_size=1)
    methods = ("gradient", "occlusion_delete")  # the others: test_attribution_methods.py
    reference, _ = attribute_prompts(model, selection, spec, 5, ["___"], methods=methods)
    fake = copy.copy(model)
    fake.unet = OutOfMemoryUnet(model.unet, max_rows=2 * spec.generations)
    tables, stats = attribute_prompts(fake, selection, spec, 5, ["___"], methods=methods)
    assert stats["gradient"]["batch_size_initial"] == 5
    assert stats["gradient"]["batch_size_final"] == 2 and stats["gradient"]["oom_halvings"] == 1
    assert_float32_close(tables.tokens["significance"], reference.tokens["significance"])
    # Parameters of the UNet keep their requires_grad flags after attribution.
    assert all(p.requires_grad for p in model.unet.parameters())


# --------------------------------------------------------------------------------------------
# Word merging
# --------------------------------------------------------------------------------------------


def _units(tokenizer, text: str, markers=MARKERS) -> list[tuple[str, bool, bool, int]]:
    offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)[
        "offset_mapping"
    ]
    return [
        (u.text, u.is_marker, u.is_punct, len(u.pieces)) for u in word_units(text, offsets, markers)
    ]


def test_word_merging_wordpiece(bert_tokenizer) -> None:
    text = "Small left pleural effusions, unchanged since ___."
    assert bert_tokenizer.tokenize(text)[-5:] == ["since", "_", "_", "_", "."]
    assert _units(bert_tokenizer, text) == [
        ("Small", False, False, 1),
        ("left", False, False, 1),
        ("pleural", False, False, 1),
        ("effusions", False, False, 2),  # effusion ##s
        (",", False, True, 1),
        ("unchanged", False, False, 1),
        ("since", False, False, 1),
        ("___", True, False, 3),  # three _ pieces, one marker unit
        (".", False, True, 1),
    ]
    units = _units(bert_tokenizer, "Discussed with Dr. ___ at 10:30 on ___.")
    assert ("Dr", False, False, 1) in units and ("10:30", False, False, 3) in units
    assert [u for u in units if u[1]] == [("___", True, False, 3)] * 2
    # Glued to a word or wrapped in punctuation, the marker is still its own unit; a name split
    # into ## pieces is one word.
    assert _units(bert_tokenizer, "Per Dr. Zorbak,(___)effusion___.") == [
        ("Per", False, False, 1),
        ("Dr", False, False, 1),
        (".", False, True, 1),
        ("Zorbak", False, False, 2),  # zor ##bak
        (",(", False, True, 2),
        ("___", True, False, 3),
        (")", False, True, 1),
        ("effusion", False, False, 1),
        ("___", True, False, 3),
        (".", False, True, 1),
    ]
    # Two markers back to back are two units; a marker of another pattern ([UNK] pieces) too.
    assert [u[0] for u in _units(bert_tokenizer, "___ ___") if u[1]] == ["___", "___"]
    iu = _units(bert_tokenizer, "Seen by XXXX today.", compile_markers(["XXXX"]))
    assert ("XXXX", True, False, 1) in iu


def test_word_merging_demo_tokenizer() -> None:
    tokenizer = train_tokenizer(CAPTIONS, 32)
    text = "Findings discussed with Dr. ___ at 10:30 on ___."
    assert "___" in tokenizer.tokenize(text)  # the demo tokenizer keeps ___ whole
    assert _units(tokenizer, text) == [
        ("Findings", False, False, 1),
        ("discussed", False, False, 1),
        ("with", False, False, 1),
        ("Dr", False, False, 1),
        (".", False, True, 1),
        ("___", True, False, 1),
        ("at", False, False, 1),
        ("10:30", False, False, 3),
        ("on", False, False, 1),
        ("___", True, False, 1),
        (".", False, True, 1),
    ]
    assert _units(tokenizer, "Per Dr. Zorbak, small effusion___.")[3:6] == [
        ("Zorbak", False, False, 1),
        (",", False, True, 1),
        ("small", False, False, 1),
    ]


def test_tables_flag_specials_padding_truncation_and_triggers() -> None:
    captions = [*CAPTIONS, "Per Dr. Zorbak, small left pleural effusion unchanged since ___ today."]
    demo = build_demo_model(captions, tiny_train_spec(max_length=12))
    memorized = pd.DataFrame(
        {
            "prompt_id": ["a", "b"],
            "text": [captions[4], captions[5]],
            "d_mem": [1.0, 2.0],
            "rank": [2, 1],
        }
    )
    truth = pd.DataFrame(
        {
            "planted_id": [0, 1],
            "prompt_id": ["a", "b"],
            "trigger_word": ["Zorbak", None],
            "trigger_word_index": [2, -1],
        }
    )
    selected, counts = select_prompts(memorized, memorized, truth)
    assert counts["by_reason"] == {"memorized": 0, "planted": 0, "memorized+planted": 2}
    tables, _ = attribute_prompts(demo, selected, _spec(), 4, ["___"])
    tokens = tables.tokens.set_index(["prompt_id", "position"])
    a = tables.tokens[tables.tokens["prompt_id"] == "a"]
    assert a["is_special"].sum() == 2 and a["is_padding"].sum() == 12 - 2 - 8
    assert a.loc[a["is_special"] | a["is_padding"], "rank"].isna().all()
    assert (a.loc[a["is_padding"], "significance"] > 0).all()  # attended, so not zero
    content = a[~a["is_special"] & ~a["is_padding"]]
    assert sorted(content["rank"]) == list(range(1, len(content) + 1))
    assert content["share"].sum() == pytest.approx(1.0)
    words = rank_words(tables.words, "sum")
    trigger = words[words["is_trigger"]]
    assert trigger["text"].tolist() == ["Zorbak"] and trigger["prompt_id"].tolist() == ["a"]
    assert tokens.loc[("a", int(trigger["positions"].iloc[0][0])), "token"] == "zorbak"
    # Prompt b has 14 pieces but 10 content positions: since ___ today . are cut and counted.
    b_words = words[words["prompt_id"] == "b"]
    b = tables.prompts.set_index("prompt_id").loc["b"]
    assert b["truncated"] and b["n_words_truncated"] == int(b_words["truncated"].sum()) == 4
    assert b["n_markers"] == 1 and b["n_markers_truncated"] == 1
    assert b_words.loc[b_words["truncated"], ["score", "rank", "share"]].isna().all().all()
    assert tables.prompts.set_index("prompt_id").loc["a", "trigger_truncated"] == False  # noqa: E712
    # Words sum their pieces; punctuation is scored but not ranked.
    punct = words[words["is_punct"] & ~words["truncated"]]
    assert punct["rank"].isna().all() and punct["rank_with_punct"].notna().all()


def test_trigger_span_uses_the_word_index_and_fails_clearly() -> None:
    text = "Per Dr. Zorbak, small Zorbak effusion."
    assert trigger_span(text, "Zorbak", 2) == (8, 14)
    assert trigger_span(text, "Zorbak", 4) == (22, 28)
    assert trigger_span("Reviewed with Dr. Quilo.", "Quilo", 99) == (18, 23)
    with pytest.raises(ValueError, match="occurs 2 times"):
        trigger_span(text, "Zorbak", 99)


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def test_occlusion_on_a_hand_made_case() -> None:
    prompts = pd.DataFrame({"prompt_id": ["p"], "text": ["Per Dr. Zorbak, small ___ effusion."]})
    offsets = [(m.start(), m.end()) for m in re.finditer(r"_+|\w+|[^\w\s]", prompts["text"][0])]
    units = word_units(prompts["text"][0], offsets, MARKERS)
    words = pd.DataFrame(
        {
            "prompt_id": "p",
            "word_index": [u.index for u in units],
            "text": [u.text for u in units],
            "start": [u.start for u in units],
            "end": [u.end for u in units],
            "is_marker": [u.is_marker for u in units],
            "is_punct": [u.is_punct for u in units],
            "is_trigger": [u.text == "Zorbak" for u in units],
            "truncated": False,
            "score_sum": [0.1, 0.2, 0.0, 0.5, 0.0, 0.3, 0.9, 0.4, 0.0],
            "score_max": 0.0,
        }
    )
    calls = []

    def score(ids, texts):  # a known d_mem: 2 per marker, 0.1 per word of letters
        calls.append(list(ids))
        return np.array(
            [2 * t.count("___") + 0.1 * len(re.findall(r"[A-Za-z]+", t)) for t in texts]
        )

    table = occlusion_table(prompts, words, score)
    assert len(calls) == 1 and calls[0][0] == "p#original"  # one engine run, original first
    assert table["text"].tolist() == ["Per", "Dr", "Zorbak", "small", "___", "effusion"]
    variants = dict(zip(table["text"], table["variant"], strict=True))
    assert variants["Zorbak"] == "Per Dr. , small ___ effusion."
    assert variants["___"] == "Per Dr. Zorbak, small effusion."
    np.testing.assert_allclose(table["d_mem_original"], 2.5)
    drops = dict(zip(table["text"], table["drop"], strict=True))
    assert drops["___"] == pytest.approx(2.0) and drops["small"] == pytest.approx(0.1)
    ranked = rank_occlusion(table, rank_words(words, "sum"))
    assert ranked.set_index("text").loc["___", "occlusion_rank"] == 1
    assert ranked.set_index("text").loc["___", "gradient_rank"] == 1
    # All other words tie on drop: the correlation is that of "marker first" with the scores.
    expected = spearman(np.array([0.1, 0.2, 0.5, 0.3, 0.9, 0.4]), np.array([1, 1, 1, 1, 2, 1]))
    assert ranked["spearman"].iloc[0] == pytest.approx(expected)


def test_spearman() -> None:
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.array([1, 2]), np.array([1, 2])))
    assert np.isnan(spearman(np.array([1, 2, 3]), np.array([1, 1, 1])))


# --------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------


def _synthetic_words() -> pd.DataFrame:
    """4 prompts; the marker ranks 1, 1, 2, 1; 'effusion' occurs in 3, 'rare' in 1."""
    rows = []
    layout = {
        "p1": [("___", 5.0), ("effusion", 3.0), ("small", 1.0)],
        "p2": [("effusion", 1.0), ("___", 4.0), ("___", 2.0), ("rare", 0.5)],
        "p3": [("___", 1.0), ("effusion", 2.0), ("small", 0.2)],
        "p4": [("___", 3.0), ("small", 1.0)],
    }
    for pid, items in layout.items():
        for index, (word, score) in enumerate(items):
            rows.append(
                {
                    "prompt_id": pid,
                    "word_index": index,
                    "text": word,
                    "word_type": word,
                    "is_marker": word == "___",
                    "is_punct": False,
                    "is_trigger": False,
                    "truncated": False,
                    "score_sum": score,
                    "score_max": score,
                }
            )
    return rank_words(pd.DataFrame(rows), "sum")


def test_aggregates_on_a_synthetic_table() -> None:
    words = _synthetic_words()
    per = prompt_type_ranks(words, pd.DataFrame(), ["p1", "p2", "p3", "p4"], "gradient")
    marker = per[per["group"] == "marker"].set_index("prompt_id")
    assert marker["best_rank"].tolist() == [1, 1, 2, 1]
    assert marker.loc["p2", "share"] == pytest.approx(6.0 / 7.5)
    assert marker.loc["p2", "chance_top1"] == pytest.approx(2 / 4)
    stats = word_type_stats(per, "memorized", "gradient", min_prompts=3, resamples=500, seed=1)
    row = stats.set_index("word_type")
    assert set(row.index) == {MARKER_TYPE, "effusion", "small"}  # 'rare' is in 1 prompt only
    assert row.loc[MARKER_TYPE, "frac_top1"] == pytest.approx(0.75)
    assert row.loc[MARKER_TYPE, "mean_rank"] == pytest.approx(1.25)
    # effusion ranks 2, 3 and 1 (p3, where the marker is second).
    assert row.loc["effusion", "n_prompts"] == 3
    assert row.loc["effusion", "frac_top1"] == pytest.approx(1 / 3)
    assert row.loc["effusion", "mean_rank"] == pytest.approx(2.0)
    lo, hi = row.loc[MARKER_TYPE, ["frac_top1_lo", "frac_top1_hi"]]
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0 and lo < hi
    # Seeded by the type's own key: the same interval whatever else is in the table.
    alone = word_type_stats(
        per[per["group"] == "marker"], "memorized", "gradient", 3, resamples=500, seed=1
    )
    assert alone.iloc[0]["frac_top1_lo"] == lo and alone.iloc[0]["frac_top1_hi"] == hi
    # Pooled rows are always there; without prompts their statistics are NaN.
    strict = word_type_stats(
        per, "memorized", "gradient", min_prompts=10, resamples=0, pooled=("marker", "trigger")
    )
    assert strict["word_type"].tolist() == [MARKER_TYPE, TRIGGER_TYPE]
    assert np.isnan(strict.iloc[0]["frac_top1_lo"]) and strict.iloc[1]["n_prompts"] == 0
    with pytest.raises(ValueError, match="method"):
        prompt_type_ranks(words, pd.DataFrame(), ["p1"], "saliency")


# --------------------------------------------------------------------------------------------
# Whole flow, empty input, bad input
# --------------------------------------------------------------------------------------------


def _run_flow(model, selected, tmp_path, chunks=2):
    spec = AttributionSpec(bootstrap=200, min_prompts=1)
    scoring = spec.scoring_spec(SCORING)
    paths: dict[str, list[Path]] = {}
    stats = []
    for index in range(chunks):
        kinds = ("tokens", "words", "occlusion", "methods")
        names = {k: tmp_path / f"{index}.{k}.parquet" for k in kinds}
        names.update(
            prompts=tmp_path / f"{index}.prompts.parquet", stats=tmp_path / f"{index}.json"
        )
        stats.append(attribute_chunk(model, selected, index, chunks, scoring, 4, ["___"], names))
        for kind, path in names.items():
            paths.setdefault(kind, []).append(path)
    tables = gather_tables(paths, selected["prompt_id"])
    types = word_type_table(tables.words, tables.occlusion, tables.prompts, spec)
    return tables, types, stats, spec


def test_flow_summary_and_figures(model, selection, tmp_path: Path) -> None:
    truth = pd.DataFrame(
        {
            "planted_id": [0],
            "prompt_id": [selection["prompt_id"].iloc[4]],
            "trigger_word": [None],
            "trigger_word_index": [-1],
        }
    )
    ranked = selection
    selected, counts = select_prompts(ranked.iloc[:3], ranked, truth)
    tables, types, stats, spec = _run_flow(model, selected, tmp_path)

    def longest_word(i: int) -> str:
        return max(re.findall(r"[A-Za-z]+", selection["text"].iloc[i]), key=len)

    keys = pd.DataFrame(
        {
            "prompt_id": [selection["prompt_id"].iloc[4], selection["prompt_id"].iloc[0]],
            "kind": ["keyed_name", "composed"],
            "key_text": [longest_word(4), longest_word(0)],
            "causal": [True, False],
        }
    )
    summary = summarize_attribution(
        tables.words,
        tables.occlusion,
        tables.prompts,
        types,
        counts,
        stats,
        spec,
        methods=tables.methods,
        keys=keys,
    )
    json.dumps(summary, allow_nan=False)
    compared = summary["methods"]
    assert compared["keys"] == {
        "checked": 2,
        "causal": 1,
        "keyed_checked": 1,
        "keyed_causal": 1,
        "not_attributed": 0,
        "key_truncated": 0,
        "scored": 1,
    }
    assert set(compared["per_method"]) == set(spec.methods)
    for name, block in compared["per_method"].items():
        assert block["n_keys"] == 1 and block["key_top1"] in (0.0, 1.0), name
        assert block["unet_rows_per_prompt"] > 0, name
    assert summary["primary_method"] == compared["best"] in spec.methods
    marker = summary["marker_controlled"]
    assert marker["method"] == summary["primary_method"]
    assert marker["counts"]["memorized"] == 3
    assert marker["all"]["n_prompts"] == 2  # the two memorized prompts with a marker
    assert summary["n_prompts"]["attributed"] == len(selected) == 3 + 1
    assert summary["marker"]["memorized"]["n_with_marker"] == 2
    gradient = summary["marker"]["memorized"]["gradient"]
    assert sum(gradient["rank_counts"].values()) == 2
    assert summary["cost"]["n_prompts"] == 4 and summary["cost"]["gradient_seconds_per_prompt"] > 0
    assert summary["cost"]["occlusion_variants_per_prompt"] == pytest.approx(
        len(tables.occlusion) / 4
    )
    assert set(types["population"]) == {"memorized", "planted"}
    assert set(types["method"]) == {"gradient", "occlusion"}
    plot_token_attribution(
        tables.methods, tables.prompts, summary["primary_method"], tmp_path / "fig3.png"
    )
    plot_word_types(types, tmp_path / "types.png")
    for name in ("fig3.png", "fig3.pdf", "types.png", "types.pdf"):
        assert (tmp_path / name).stat().st_size > 1000


def test_empty_memorized_table_gives_empty_outputs(model, tmp_path: Path) -> None:
    empty = pd.DataFrame({"prompt_id": [], "text": [], "d_mem": [], "rank": []})
    selected, counts = select_prompts(empty, empty, None)
    assert len(selected) == 0 and counts["selected"] == 0
    tables, types, stats, spec = _run_flow(model, selected, tmp_path)
    assert len(tables.words) == len(tables.tokens) == len(tables.occlusion) == 0
    assert types["word_type"].tolist() == [MARKER_TYPE, MARKER_TYPE]  # gradient, occlusion
    assert (types["n_prompts"] == 0).all()
    summary = summarize_attribution(
        tables.words, tables.occlusion, tables.prompts, types, counts, stats, spec
    )
    assert summary["empty"] is True and "memorized table is empty" in summary["note"]
    assert len(tables.methods) == 0
    plot_token_attribution(tables.methods, tables.prompts, "gradient", tmp_path / "fig3.png")
    plot_word_types(types, tmp_path / "types.png")
    assert (tmp_path / "fig3.pdf").exists() and (tmp_path / "types.pdf").exists()


def test_punctuation_marker_only_and_truncated_prompts_are_named_or_counted(
    model, tmp_path: Path
) -> None:
    long_text = " ".join(CAPTIONS)  # ~45 pieces: beyond the tiny tokenizer's 24
    texts = [long_text, ". , ( )", "___ ___"]
    memorized = pd.DataFrame(
        {
            "prompt_id": [prompt_id(t) for t in texts],
            "text": texts,
            "d_mem": [3.0, 2.0, 1.0],
            "rank": [1, 2, 3],
        }
    )
    selected, counts = select_prompts(memorized)
    tables, types, stats, spec = _run_flow(model, selected, tmp_path, chunks=1)
    summary = summarize_attribution(
        tables.words,
        tables.occlusion,
        tables.prompts,
        types,
        counts,
        stats,
        spec,
        methods=tables.methods,
    )
    json.dumps(summary, allow_nan=False)
    cut = summary["truncation"]["truncated_words"]
    assert [c["prompt_id"] for c in cut] == [prompt_id(long_text)]
    assert cut[0]["words"][-1] == "cardiomegaly"  # the last word of the long prompt, named
    assert not tables.methods["text"].isin(cut[0]["words"][-1:]).any()  # and never ranked
    assert summary["no_ranked_words"]["n_prompts"] == 1  # the punctuation-only prompt
    marker = summary["marker_controlled"]["counts"]
    assert marker == {"memorized": 3, "without_marker": 1, "without_control": 1}
    # no ground truth: the primary method falls back, the methods block says why
    assert summary["primary_method"] == "integrated_gradients"
    assert "no ground truth" in summary["methods"]["note"]


def test_chunk_outputs_are_written_all_or_nothing(tmp_path: Path, monkeypatch) -> None:
    table = pd.DataFrame({"a": [1, 2]})
    targets = {
        tmp_path / "x.parquet": table,
        tmp_path / "y.parquet": table,
        tmp_path / "s.json": {},
    }
    original = pd.DataFrame.to_parquet
    calls = {"n": 0}

    def flaky(self, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        return original(self, path, *args, **kwargs)

    monkeypatch.setattr(pd.DataFrame, "to_parquet", flaky)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(targets)
    assert list(tmp_path.iterdir()) == []  # no final file and no temporary file left
    monkeypatch.setattr(pd.DataFrame, "to_parquet", original)
    write_atomically(targets)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.json", "x.parquet", "y.parquet"]


def test_unknown_or_bad_settings_fail_clearly() -> None:
    with pytest.raises(ValueError, match="windw"):
        AttributionSpec.from_dict({"windw": [0, 1]})
    assert AttributionSpec.from_dict({"chunks": 3, "window": [0, None]}).window == (0, None)
    with pytest.raises(ValueError, match="word_score"):
        AttributionSpec(word_score="mean")
    with pytest.raises(ValueError, match="attribution.window"):
        AttributionSpec(window=(2, 2))
    with pytest.raises(ValueError, match="attribution.batch_size"):
        AttributionSpec(batch_size=0)
    with pytest.raises(ValueError, match=r"scoring.steps is 4"):
        AttributionSpec(window=(0, 5)).scoring_spec(SCORING)
    with pytest.raises(ValueError, match="guidence"):
        AttributionSpec().scoring_spec({**SCORING, "guidence": 2.0})
    with pytest.raises(ValueError, match="word_score"):
        gather_tables({}, [], word_score="median")


def test_bad_tables_fail_clearly(model, selection, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"memorized prompts table lacks column\(s\) \['d_mem'\]"):
        select_prompts(pd.DataFrame({"prompt_id": [], "text": [], "rank": []}))
    with pytest.raises(ValueError, match="selected prompts table lacks"):
        attribute_prompts(model, selection.drop(columns=["reason"]), _spec(), 2, ["___"])
    with pytest.raises(ValueError, match="duplicate prompt_id"):
        attribute_prompts(model, pd.concat([selection, selection.iloc[:1]]), _spec(), 2, ["___"])
    with pytest.raises(ValueError, match="does not compile"):
        attribute_prompts(model, selection, _spec(), 2, ["(unclosed"])
    slow = copy.copy(model)
    slow.tokenizer = type("SlowTokenizer", (), {"is_fast": False})()
    with pytest.raises(ValueError, match="fast tokenizer"):
        attribute_prompts(slow, selection, _spec(), 2, ["___"])
    # Gathering checks that every selected prompt is there exactly once.
    names = {
        k: tmp_path / f"0.{k}.parquet"
        for k in ("tokens", "words", "occlusion", "prompts", "methods")
    }
    names["stats"] = tmp_path / "0.json"
    attribute_chunk(model, selection, 0, 2, _spec(), 2, ["___"], names)
    paths = {k: [v] for k, v in names.items() if k != "stats"}
    with pytest.raises(ValueError, match="missing"):
        gather_tables(paths, selection["prompt_id"])
    doubled = {k: v * 2 for k, v in paths.items()}
    with pytest.raises(ValueError, match="more than one chunk"):
        gather_tables(doubled, selection["prompt_id"])
    with pytest.raises(FileNotFoundError, match="nowhere"):
        gather_tables({**paths, "words": [tmp_path / "nowhere.parquet"]}, [])


def test_progress_bar_and_cost(model, selection) -> None:
    stream = io.StringIO()
    _, stats = attribute_prompts(model, selection, _spec(), 2, ["___"], progress=stream)
    assert (
        "gradient" in stream.getvalue()
        and f"{len(selection)}/{len(selection)}" in stream.getvalue()
    )
    assert stats["gradient"]["unet_rows"] > 0 and stats["occlusion"]["n_variants"] > 0
    assert stats["window"] == [0, 1] and stats["generations"] == SCORING["generations"]
