"""Tests of the memorization detectors side by side, on tiny random components: shapes,
determinism across chunkings and batch sizes, one property from each detector's paper, the
cross-attention reading, and the config-time refusals."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import UNet2DConditionModel

from memaudit.diffusion import fresh_scheduler, initial_noise
from memaudit.scoring.attention import (
    AttentionCapture,
    CrossAttentionUnavailable,
    attention_probabilities,
    cross_attention_layers,
    end_token_positions,
)
from memaudit.scoring.catalog import (
    CATALOG,
    DetectorConfigError,
    check_detector_names,
    check_model_support,
)
from memaudit.scoring.detectors import anisotropy, bright_ending, sharpness
from memaudit.scoring.detectors.base import PromptBatch, run_trajectory
from memaudit.scoring.detectors.registry import DETECTORS
from memaudit.scoring.engine import detect_prompts, score_chunk, score_prompts
from memaudit.scoring.gather import d_mem_from_norms, gather_scores
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id
from tests.tiny_components import TINY_CAPTIONS, float64_twin, tiny_audit_model

ALL = tuple(DETECTORS)
SCORE_COLUMNS = [f"score_{name}" for name in ALL]
IDS = [prompt_id(t) for t in TINY_CAPTIONS]
# Across batch shapes CPU kernels accumulate in another order: float32 rounding, no more.
ACROSS_BATCHES = {"rtol": 2e-5, "atol": 1e-6}


def _spec(**values) -> ScoringSpec:
    return ScoringSpec.from_dict({"steps": 3, "generations": 2, "seed": 4, **values})


@pytest.fixture(scope="module")
def demo_model():
    """The tiny demo-kind model (BERT-style tokenizer, cross-attention at 8x8), float32 CPU."""
    return tiny_audit_model("demo")


@pytest.fixture(scope="module")
def demo_model64(demo_model):
    return float64_twin(demo_model)


@pytest.fixture(scope="module")
def full(demo_model):
    """All detectors on all captions in one batch."""
    return detect_prompts(demo_model, IDS, TINY_CAPTIONS, _spec(batch_size=len(IDS)))


def _batch(model, texts, spec, steps=None, attention=None, squares=False) -> PromptBatch:
    ids = model.tokenize(texts)["input_ids"]
    with torch.no_grad():
        cond = model.encode_ids(ids)
        uncond = model.encode([""])
    noise = initial_noise(model.latent_shape, spec.generations, spec.seed)
    batch = PromptBatch(model, ids, cond, noise, uncond, spec)
    if steps is not None:
        batch.trajectory = run_trajectory(batch, steps, attention or {}, squares)
    return batch


# --------------------------------------------------------------------------------------------
# Every detector: shape, determinism, chunking and batch size
# --------------------------------------------------------------------------------------------


def test_every_detector_gives_one_finite_score_per_prompt_and_its_cost(full):
    table, stats = full
    assert list(table["prompt_id"]) == IDS
    for column in SCORE_COLUMNS:
        values = table[column].to_numpy()
        assert values.dtype == np.float64 and np.isfinite(values).all(), column
        assert values.std() > 0, f"{column} does not tell the prompts apart"
    np.testing.assert_array_equal(table["score"], table["score_wen"])  # the primary
    for name in ALL:
        cost = stats["detectors"][name]
        assert cost["unet_rows"] > 0 and cost["seconds"] > 0, name
    assert stats["detectors"]["sharpness"]["backward_rows"] > 0
    assert stats["detectors"]["wen"]["backward_rows"] == 0
    # the full trajectory (Wen over all 3 steps) costs more rows than the first-step detectors
    rows = {n: stats["detectors"][n]["unet_rows"] for n in ALL}
    assert rows["wen"] == rows["bright_ending"] > rows["attention_entropy"]


def test_the_same_config_gives_identical_scores(demo_model, full):
    again, _ = detect_prompts(demo_model, IDS, TINY_CAPTIONS, _spec(batch_size=len(IDS)))
    for column in SCORE_COLUMNS:
        np.testing.assert_array_equal(again[column], full[0][column])


@pytest.mark.parametrize("batch_size", [1, 4])
def test_scores_do_not_depend_on_the_batch_size_or_order(demo_model, full, batch_size):
    order = [3, 0, 5, 1, 4, 2]
    table, _ = detect_prompts(
        demo_model,
        [IDS[i] for i in order],
        [TINY_CAPTIONS[i] for i in order],
        _spec(batch_size=batch_size),
    )
    table = table.set_index("prompt_id").loc[IDS]
    for column in SCORE_COLUMNS:
        np.testing.assert_allclose(table[column], full[0][column], **ACROSS_BATCHES)


def test_chunked_scores_gather_to_the_whole(demo_model, full, tmp_path: Path):
    prompts = pd.DataFrame({"prompt_id": IDS, "text": TINY_CAPTIONS})
    paths = []
    for index in range(3):
        path = tmp_path / f"{index}.parquet"
        stats = score_chunk(demo_model, prompts, index, 3, _spec(batch_size=2), path)
        assert set(stats["detectors"]) == set(ALL)
        paths.append(path)
    gathered = gather_scores(paths, expected_ids=IDS).set_index("prompt_id").loc[IDS]
    for column in SCORE_COLUMNS:
        np.testing.assert_allclose(gathered[column], full[0][column], **ACROSS_BATCHES)


def test_a_primary_other_than_wen_is_the_score_column(demo_model, full):
    table, stats = detect_prompts(
        demo_model, IDS, TINY_CAPTIONS, _spec(batch_size=len(IDS), primary="anisotropy")
    )
    np.testing.assert_array_equal(table["score"], full[0]["score_anisotropy"])
    np.testing.assert_array_equal(table["d_mem"], full[0]["d_mem"])  # d_mem stays Wen's
    assert stats["primary"] == "anisotropy"


def test_a_subset_of_detectors_changes_none_of_their_scores(demo_model, full):
    table, stats = detect_prompts(
        demo_model,
        IDS,
        TINY_CAPTIONS,
        _spec(batch_size=len(IDS), detectors=["wen", "anisotropy"], window=[0, 2]),
    )
    assert set(stats["detectors"]) == {"wen", "anisotropy"}
    assert "score_sharpness" not in table.columns
    np.testing.assert_array_equal(table["score_anisotropy"], full[0]["score_anisotropy"])
    # without the full-trajectory detectors the trajectory stops at Wen's window
    assert int(table["n_steps"].iloc[0]) == 2
    np.testing.assert_allclose(
        table["score_wen"], d_mem_from_norms(_norms(full[0]), (0, 2)), rtol=1e-12
    )


def _norms(table: pd.DataFrame) -> np.ndarray:
    gens, steps = int(table["n_generations"].iloc[0]), int(table["n_steps"].iloc[0])
    return np.stack([np.asarray(v, dtype=np.float64) for v in table["norms"]]).reshape(
        len(table), gens, steps
    )


# --------------------------------------------------------------------------------------------
# One property from each paper
# --------------------------------------------------------------------------------------------


def test_wen_is_the_d_mem_of_the_scoring_engine(demo_model, full):
    reference, _ = score_prompts(demo_model, IDS, TINY_CAPTIONS, _spec(batch_size=len(IDS)))
    np.testing.assert_array_equal(full[0]["score_wen"], reference["d_mem"])
    np.testing.assert_array_equal(full[0]["d_mem"], reference["d_mem"])


def test_sharpness_equals_a_finite_difference_hessian_vector_product(demo_model64):
    """‖(J_c − J_u) Δε‖ / σ_T² by central differences of Δε(x) along Δε, in float64."""
    spec = _spec(generations=2)
    batch = _batch(demo_model64, TINY_CAPTIONS[:3], spec)
    batch.noise = batch.noise.double()
    out = sharpness.score(batch)
    f, x, _, sigma = sharpness.score_difference(batch)
    with torch.no_grad():
        direction = f(x)
        h = 1e-4
        product = (f(x + h * direction) - f(x - h * direction)) / (2 * h)
    expected = (product.flatten(1).norm(dim=1) / sigma**2).reshape(3, 2).mean(dim=1)
    np.testing.assert_allclose(out.scores, expected.numpy(), rtol=1e-6)
    # σ_T is the first sampling step's √(1 − ᾱ_T)
    scheduler = fresh_scheduler(demo_model64, spec.steps, torch.device("cpu"))
    alpha_bar = float(scheduler.alphas_cumprod[int(scheduler.timesteps[0])])
    assert sigma == pytest.approx((1 - alpha_bar) ** 0.5)


def test_anisotropy_norm_term_is_wens_first_step_and_its_cosine_is_bounded(demo_model, full):
    batch = _batch(demo_model, TINY_CAPTIONS, _spec())
    norm, cosine, _ = anisotropy.components(batch)
    assert ((cosine >= -1 - 1e-9) & (cosine <= 1 + 1e-9)).all()
    first_step = d_mem_from_norms(_norms(full[0]), (0, 1))
    np.testing.assert_allclose(
        norm.reshape(len(IDS), -1).mean(dim=1).numpy(), first_step, rtol=1e-5
    )
    combined = (anisotropy.GAMMA_NORM * norm + anisotropy.GAMMA_ANISOTROPY * cosine).reshape(
        len(IDS), -1
    )
    np.testing.assert_allclose(full[0]["score_anisotropy"], combined.mean(dim=1), rtol=1e-5)


def test_anisotropy_cosine_is_per_position_over_channels_when_there_are_several():
    a = torch.tensor([[[[1.0, 0.0]], [[0.0, 1.0]]]])  # [1, C=2, 1, 2]
    b = torch.tensor([[[[1.0, 0.0]], [[0.0, -1.0]]]])
    # position 1: (1, 0)·(1, 0) -> 1; position 2: (0, 1)·(0, -1) -> -1; mean 0
    assert float(anisotropy._cosine(a, b)) == pytest.approx(0.0)
    one = torch.tensor([[[[1.0, 2.0]]]])  # one channel: cosine over the whole latent
    assert float(anisotropy._cosine(one, 2 * one)) == pytest.approx(1.0)


def test_bright_ending_with_a_uniform_mask_is_wens_full_trajectory_norm(demo_model, full):
    spec = _spec()
    batch = _batch(
        demo_model,
        TINY_CAPTIONS,
        spec,
        steps=spec.steps,
        attention={
            "bright_ending": bright_ending.NEEDS.attention(_batch(demo_model, TINY_CAPTIONS, spec))
        },
        squares=True,
    )
    maps = batch.trajectory.attention["bright_ending"][spec.steps - 1]
    batch.trajectory.attention["bright_ending"][spec.steps - 1] = [
        (name, torch.full_like(m, 0.3)) for name, m in maps
    ]
    uniform = bright_ending.score(batch).scores
    np.testing.assert_allclose(uniform, d_mem_from_norms(_norms(full[0]), (0, None)), rtol=1e-5)


def test_bright_ending_mask_is_the_end_tokens_attention_at_the_last_step(demo_model, full):
    spec = _spec()
    probe = _batch(demo_model, TINY_CAPTIONS, spec)
    batch = _batch(
        demo_model,
        TINY_CAPTIONS,
        spec,
        steps=spec.steps,
        attention={"bright_ending": bright_ending.NEEDS.attention(probe)},
        squares=True,
    )
    mask = bright_ending.end_token_mask(batch)
    assert mask.shape == (len(IDS) * spec.generations, *demo_model.latent_shape[1:])
    assert ((mask >= 0) & (mask <= 1)).all()
    np.testing.assert_allclose(bright_ending.score(batch).scores, full[0]["score_bright_ending"])


def test_end_token_is_sep_for_bert_tokenizers(demo_model):
    ids = demo_model.tokenize(["no acute process", ""])["input_ids"]
    positions = end_token_positions(demo_model.tokenizer, ids)
    sep = demo_model.tokenizer.sep_token_id
    assert [int(ids[i, p]) for i, p in enumerate(positions)] == [sep, sep]
    assert int(positions[1]) == 1  # [CLS] [SEP] for the empty prompt


def test_attention_entropy_of_uniform_attention_is_log_of_the_length(demo_model):
    flat = copy.copy(demo_model)
    flat.unet = copy.deepcopy(demo_model.unet)
    for module in cross_attention_layers(flat.unet).values():
        torch.nn.init.zeros_(module.to_q.weight)  # Q = 0: every token gets 1/L
    table, _ = detect_prompts(
        flat,
        IDS,
        TINY_CAPTIONS,
        _spec(batch_size=len(IDS), detectors=["wen", "attention_entropy"]),
    )
    np.testing.assert_allclose(table["score_attention_entropy"], np.log(flat.max_length))


def test_captured_probabilities_reproduce_the_layers_output(demo_model):
    """softmax(QKᵀ)·V through to_out equals what the cross-attention layer returned."""
    name, module = next(iter(cross_attention_layers(demo_model.unet).items()))
    seen = {}

    def keep(mod, args, kwargs, output):
        seen["in"] = (args[0] if args else kwargs["hidden_states"], kwargs["encoder_hidden_states"])
        seen["out"] = output

    handle = module.register_forward_hook(keep, with_kwargs=True)
    batch = _batch(demo_model, TINY_CAPTIONS[:2], _spec())
    try:
        run_trajectory(batch, 1, {})
    finally:
        handle.remove()
    hidden, context = seen["in"]
    probs = attention_probabilities(module, hidden, context)
    value = module.to_v(context)
    rows, tokens, inner = value.shape
    value = value.reshape(rows, tokens, module.heads, -1).transpose(1, 2)
    mixed = torch.matmul(probs, value).transpose(1, 2).reshape(rows, -1, inner)
    rebuilt = module.to_out[1](module.to_out[0](mixed))
    np.testing.assert_allclose(rebuilt.detach(), seen["out"].detach(), atol=1e-5)
    # the probabilities are distributions over the tokens
    np.testing.assert_allclose(probs.detach().sum(-1), 1.0, atol=1e-6)


def test_capture_reads_only_the_requested_calls_and_leaves_the_unet_untouched(demo_model):
    batch = _batch(demo_model, TINY_CAPTIONS[:2], _spec())
    plain = run_trajectory(batch, 3, {})
    reader = (frozenset({1}), lambda layer, probs: probs.mean(dim=(1, 2)))
    seen = run_trajectory(batch, 3, {"x": reader})
    assert set(seen.attention["x"]) == {1}
    torch.testing.assert_close(seen.norms, plain.norms, rtol=0, atol=0)
    assert not demo_model.unet._forward_pre_hooks  # the hooks are removed afterwards


# --------------------------------------------------------------------------------------------
# What a detector needs: config-time refusals
# --------------------------------------------------------------------------------------------


def test_the_catalogue_agrees_with_the_implementations():
    assert set(CATALOG) == set(DETECTORS)
    for name, module in DETECTORS.items():
        assert name == module.NAME
        assert CATALOG[name].gradients == module.NEEDS.gradients, name
        assert CATALOG[name].cross_attention == module.NEEDS.cross_attention, name


@pytest.mark.parametrize(
    ("names", "primary", "message"),
    [
        (["wen", "sharpnes"], "wen", "unknown detector"),
        (["sharpness"], "sharpness", "must include 'wen'"),
        (["wen", "wen"], "wen", "more than once"),
        (["wen"], "anisotropy", "not among scoring.detectors"),
    ],
)
def test_bad_detector_lists_fail_with_the_key(names, primary, message):
    with pytest.raises(DetectorConfigError, match=message):
        check_detector_names(names, primary)
    with pytest.raises(ValueError, match=message):
        ScoringSpec.from_dict({"detectors": names, "primary": primary})


def test_sharpness_refuses_float16_naming_itself():
    with pytest.raises(DetectorConfigError, match="'sharpness' differentiates the UNet"):
        check_model_support(["wen", "sharpness"], {"kind": "demo", "dtype": "float16"})
    check_model_support(["wen", "sharpness"], {"kind": "demo", "dtype": "bfloat16"})
    check_model_support(["wen", "anisotropy"], {"kind": "demo", "dtype": "float16"})


def test_attention_detectors_refuse_a_unet_without_cross_attention(tmp_path: Path):
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text(
        json.dumps({"down_block_types": ["DownBlock2D"], "up_block_types": ["UpBlock2D"]})
    )
    cfg = {"kind": "diffusers", "path": str(tmp_path), "dtype": "float32"}
    with pytest.raises(DetectorConfigError, match="bright_ending.*no cross-attention blocks"):
        check_model_support(["wen", "bright_ending"], cfg)
    check_model_support(["wen", "sharpness", "anisotropy"], cfg)


def test_a_unet_without_cross_attention_fails_before_scoring(demo_model):
    plain = copy.copy(demo_model)
    plain.unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=demo_model.latent_shape[0],
        out_channels=demo_model.latent_shape[0],
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        mid_block_type=None,
        layers_per_block=1,
        norm_num_groups=4,
        cross_attention_dim=16,
    )
    with pytest.raises(CrossAttentionUnavailable, match="no cross-attention layers"):
        detect_prompts(plain, IDS, TINY_CAPTIONS, _spec(detectors=["wen", "attention_entropy"]))


def test_attention_capture_needs_cross_attention_layers(demo_model):
    assert cross_attention_layers(demo_model.unet)
    with pytest.raises(CrossAttentionUnavailable):
        AttentionCapture(torch.nn.Linear(2, 2), {}, rows=1)
