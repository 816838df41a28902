"""Tests of the attribution methods beyond the output gradient: input embeddings, gradient ×
input against a finite difference, integrated-gradient completeness, occlusion by a neutral
token, batch invariance and the model requirements."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from memaudit.attribution.engine import attribute_prompts, encode_with_offsets, token_significance
from memaudit.attribution.methods import (
    encode_embeddings,
    extra_method_scores,
    input_attributions,
    method_requirements,
    neutral_token_id,
    replacement_drops,
    window_loss,
    window_states,
)
from memaudit.diffusion import initial_noise
from memaudit.scoring.engine import score_embeddings, score_prompts
from tests.unit.attribution_fixtures import CAPTIONS, _spec
from tests.unit.test_attribution import assert_float32_close


def _content(model, texts):
    encoded = model.tokenize(texts, return_special_tokens_mask=True)
    special = encoded["special_tokens_mask"].bool()
    padding = ~encoded["attention_mask"].bool()
    return encoded["input_ids"], ~special & ~padding


def _states(model, input_ids, spec):
    noise = initial_noise(model.latent_shape, spec.generations, spec.seed)
    with torch.no_grad():
        cond = model.encode_ids(input_ids)
        uncond = model.encode([""])
    counters = {"unet_calls": 0, "unet_rows": 0}
    return window_states(model, cond, spec, noise, uncond, counters), noise, uncond


def test_input_embeddings_reproduce_the_encoder_output(model) -> None:
    ids, _ = _content(model, CAPTIONS)
    with torch.no_grad():
        direct = model.encode_ids(ids)
        via = encode_embeddings(model, model.text_encoder.get_input_embeddings()(ids))
    torch.testing.assert_close(via, direct)


@pytest.mark.parametrize("window", [(0, 1), (1, 3)])
def test_window_loss_is_the_engine_loss_on_the_fixed_trajectory(model, window) -> None:
    """F(E) of the prompt's own embeddings is the mean over the window of L_t as the gradient
    engine computes it (the trajectory is the prompt's own, held fixed)."""
    spec = _spec(window=window)
    ids, _ = _content(model, CAPTIONS[:3])
    states, noise, uncond = _states(model, ids, spec)
    counters = {"unet_calls": 0, "unet_rows": 0}
    with torch.no_grad():
        embeddings = model.text_encoder.get_input_embeddings()(ids)
        value = window_loss(model, embeddings, torch.arange(3), states, counters)
        cond = model.encode_ids(ids)
    reference = token_significance(model, cond, spec, noise, uncond)
    assert_float32_close(value.numpy(), reference.losses.mean(axis=1))
    assert counters["unet_rows"] == 3 * spec.generations * (window[1] - window[0])


def test_gradient_x_input_matches_a_directional_finite_difference(model64) -> None:
    """Σ_d E[k,d] ∂F/∂E[k,d] is the derivative of F along E[k] itself (float64)."""
    spec = _spec(window=(0, 2))
    ids, content = _content(model64, CAPTIONS[4:5])
    counters = {"grad_x_input": {}}
    out = input_attributions(
        model64, ids, content, spec, ["grad_x_input"], neutral_token_id(model64), 4, counters
    )
    states, _, _ = _states(model64, ids, spec)
    with torch.no_grad():
        embeddings = model64.text_encoder.get_input_embeddings()(ids).double()
    h = 1e-6
    for k in (1, 3, int(content[0].sum())):
        step = torch.zeros_like(embeddings)
        step[0, k] = embeddings[0, k]
        with torch.no_grad():
            plus = window_loss(
                model64,
                embeddings + h * step,
                torch.arange(1),
                states,
                {"unet_calls": 0, "unet_rows": 0},
            )
            minus = window_loss(
                model64,
                embeddings - h * step,
                torch.arange(1),
                states,
                {"unet_calls": 0, "unet_rows": 0},
            )
        numeric = float((plus - minus) / (2 * h))
        assert out["grad_x_input"][0, k] == pytest.approx(numeric, rel=1e-5, abs=1e-9)


def test_integrated_gradients_are_complete(model64) -> None:
    """Σ_k IG_k = F(E) − F(B) up to the midpoint rule's error, which shrinks with the points;
    special and padding positions keep the prompt's embedding, so their share is zero."""
    spec = _spec(window=(0, 1))
    ids, content = _content(model64, CAPTIONS)
    neutral = neutral_token_id(model64)
    errors = {}
    for steps in (4, 64):
        counters = {"integrated_gradients": {}}
        out = input_attributions(
            model64, ids, content, spec, ["integrated_gradients"], neutral, steps, counters
        )
        gap = out["F"] - out["F_baseline"]
        total = out["integrated_gradients"].sum(axis=1)
        errors[steps] = np.max(np.abs(total - gap) / np.abs(gap))
        assert np.all(out["integrated_gradients"][~content.numpy()] == 0)
    assert errors[64] < 2e-3
    assert errors[64] < errors[4]


def test_replacement_drops_are_direct_rescoring(model) -> None:
    spec = _spec(window=(0, 2))
    ids, _ = _content(model, CAPTIONS[:2])
    neutral = neutral_token_id(model)
    words = [[[1], [2, 3]], [[4]]]
    counter = {"unet_calls": 0, "unet_rows": 0}
    d_mem, drops = replacement_drops(model, ids, words, spec, neutral, 2, counter)
    table, _ = score_prompts(model, ["a", "b"], CAPTIONS[:2], spec)
    assert_float32_close(d_mem, table["d_mem"].to_numpy())
    variant = ids[0].clone()
    variant[[2, 3]] = neutral
    noise = initial_noise(model.latent_shape, spec.generations, spec.seed)
    with torch.no_grad():
        norms = score_embeddings(
            model, model.encode_ids(variant[None]), spec, noise, model.encode([""])
        )
    assert drops[0][1] == pytest.approx(d_mem[0] - norms[:, :, 0:2].mean(), rel=1e-5)
    assert len(drops[0]) == 2 and len(drops[1]) == 1


def _chunk_tables(model, selection):
    tables, _ = attribute_prompts(model, selection, _spec(), 2, ["___"], methods=("gradient",))
    return tables


def test_batch_size_changes_no_method_score(model, selection) -> None:
    tables = _chunk_tables(model, selection)
    ids = encode_with_offsets(model, selection["text"].tolist())["input_ids"]
    pids = selection["prompt_id"].astype(str).tolist()
    methods = ("grad_x_input", "integrated_gradients", "occlusion_replace")
    runs = [
        extra_method_scores(model, ids, pids, tables.words, tables.tokens, _spec(), methods, b, 8)
        for b in (1, 4)
    ]
    (one, stats), (four, _) = runs
    assert set(one["method"]) == set(methods)
    ranked = tables.words[~tables.words["is_punct"] & ~tables.words["truncated"]]
    assert len(one) == 3 * len(ranked)
    assert_float32_close(four["score"].to_numpy(), one["score"].to_numpy())
    assert stats["integrated_gradients"]["unet_rows"] > stats["grad_x_input"]["unet_rows"] > 0
    assert stats["integrated_gradients"]["completeness_error_median"] < 0.05


def test_methods_the_model_cannot_run_fail_clearly(model, selection) -> None:
    class NoEmbeddingsEncoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids):
            return self.inner(input_ids)

    crippled = copy.copy(model)
    crippled.text_encoder = NoEmbeddingsEncoder(model.text_encoder)
    problems = method_requirements(crippled, ["gradient", "integrated_gradients"])
    assert len(problems) == 1 and "integrated_gradients" in problems[0]
    assert "inputs_embeds" in problems[0]
    with pytest.raises(ValueError, match="grad_x_input.*inputs_embeds"):
        attribute_prompts(
            crippled, selection, _spec(), 2, ["___"], methods=("gradient", "grad_x_input")
        )
    # only the output gradient: still runs
    attribute_prompts(crippled, selection.head(1), _spec(), 2, ["___"], methods=("gradient",))
    with pytest.raises(ValueError, match="neutral_token 'zzz-not-a-token'"):
        neutral_token_id(model, "zzz-not-a-token")
    assert method_requirements(model, ["saliency"])[0].startswith("unknown attribution method")
