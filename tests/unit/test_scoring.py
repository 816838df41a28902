"""Tests of the batched d_mem engine against naive per-prompt references."""

from __future__ import annotations

import copy
import dataclasses
import io
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline
from transformers import BertConfig, BertModel, BertTokenizer

from memaudit.atomic import atomic_parquet
from memaudit.diffusion import initial_noise, noise_seed
from memaudit.model.loading import AuditModel
from memaudit.scoring.engine import score_prompts
from memaudit.scoring.gather import d_mem_from_norms, gather_scores, norms_matrix, select_chunk
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id
from tests.tiny_components import (
    TINY_CAPTIONS,
    OutOfMemoryUnet,
    prompt_sensitive_latent_unet,
    tiny_audit_model,
)

CAPTIONS = [
    "no acute cardiopulmonary process .",
    "small left pleural effusion , unchanged since _ _ _ .",
    "right lower lobe pneumonia .",
    "cardiomegaly without pulmonary edema .",
    "findings discussed with dr . _ _ _ at _ _ _ .",
    "no pneumothorax .",
    "stable cardiomegaly .",
]
MAX_LENGTH = 16
HIDDEN = 16


def _vocab() -> list[str]:
    words = sorted({w for c in CAPTIONS for w in c.split()})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


def _scheduler() -> DDIMScheduler:
    """DDIM as RadEdit configures it (PAPER.md)."""
    return DDIMScheduler(
        num_train_timesteps=1000,
        beta_start=1e-4,
        beta_end=0.02,
        beta_schedule="linear",
        clip_sample=False,
        prediction_type="epsilon",
        timestep_spacing="trailing",
        steps_offset=1,
    )


def _vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=16,
    )


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> AuditModel:
    """A tiny random latent model (4x8x8 latents, BERT width 16, tiny VAE), float32 CPU."""
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = MAX_LENGTH
    torch.manual_seed(0)
    encoder = BertModel(
        BertConfig(
            vocab_size=len(_vocab()),
            hidden_size=HIDDEN,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        )
    ).eval()
    return AuditModel(
        kind="diffusers",
        tokenizer=tokenizer,
        text_encoder=encoder,
        unet=prompt_sensitive_latent_unet(HIDDEN),
        scheduler=_scheduler(),
        vae=_vae().eval(),
        vae_scaling_factor=0.18215,
        image_size=16,
        latent_shape=(4, 8, 8),
        max_length=MAX_LENGTH,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


@pytest.fixture(scope="module")
def prompts() -> pd.DataFrame:
    return pd.DataFrame({"prompt_id": [prompt_id(c) for c in CAPTIONS], "text": CAPTIONS})


SPEC = ScoringSpec(steps=4, guidance=7.5, generations=2, window=(0, None), batch_size=3, seed=1)


@pytest.fixture(scope="module")
def engine_scores(tiny_model: AuditModel, prompts: pd.DataFrame) -> pd.DataFrame:
    table, _ = score_prompts(tiny_model, prompts["prompt_id"], prompts["text"], SPEC)
    return table.set_index("prompt_id")


def _naive_norms(model: AuditModel, text: str, spec: ScoringSpec) -> np.ndarray:
    """One prompt, one generation at a time, unbatched guided DDIM: [generations, steps]."""
    cond = model.encode([text])
    uncond = model.encode([""])
    out = np.zeros((spec.generations, spec.steps))
    for j in range(spec.generations):
        scheduler = copy.deepcopy(model.scheduler)
        scheduler.set_timesteps(spec.steps)
        generator = torch.Generator().manual_seed(noise_seed(spec.seed, j))
        x = torch.randn((1, *model.latent_shape), generator=generator)
        for k, t in enumerate(scheduler.timesteps):
            with torch.no_grad():
                eps_c = model.unet(x, t, encoder_hidden_states=cond).sample
                eps_u = model.unet(x, t, encoder_hidden_states=uncond).sample
            out[j, k] = float(torch.linalg.vector_norm(eps_c - eps_u))
            x = scheduler.step(eps_u + spec.guidance * (eps_c - eps_u), t, x).prev_sample
    return out


def _pipeline_norms(model: AuditModel, text: str, spec: ScoringSpec) -> np.ndarray:
    """The reference way: StableDiffusionPipeline per prompt, norms from a step callback."""
    pipe = StableDiffusionPipeline(
        vae=model.vae,
        text_encoder=model.text_encoder,
        tokenizer=model.tokenizer,
        unet=model.unet,
        scheduler=copy.deepcopy(model.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # The pipeline's constructor silently turns clip_sample off (a deprecation shim); the
    # reference must sample with the model's own scheduler, the demo's clipped one included.
    pipe.scheduler = copy.deepcopy(model.scheduler)
    assert pipe.scheduler.config.clip_sample == model.scheduler.config.clip_sample
    pipe.set_progress_bar_config(disable=True)
    cond = model.encode([text]).repeat(spec.generations, 1, 1)
    uncond = model.encode([""]).repeat(spec.generations, 1, 1)
    x_T = initial_noise(model.latent_shape, spec.generations, spec.seed)
    state = {"latents": x_T, "norms": []}

    def on_step_end(pipeline, step, timestep, kwargs):
        x = state["latents"]  # the latents this step started from
        with torch.no_grad():
            eps_c = model.unet(x, timestep, encoder_hidden_states=cond).sample
            eps_u = model.unet(x, timestep, encoder_hidden_states=uncond).sample
        state["norms"].append(torch.linalg.vector_norm((eps_c - eps_u).flatten(1), dim=1))
        state["latents"] = kwargs["latents"]
        return kwargs

    pipe(
        text,
        height=16,
        width=16,
        num_inference_steps=spec.steps,
        guidance_scale=spec.guidance,
        num_images_per_prompt=spec.generations,
        latents=x_T.clone(),
        output_type="latent",
        callback_on_step_end=on_step_end,
    )
    return torch.stack(state["norms"], dim=1).numpy()


def _norms_of(table: pd.DataFrame, pid: str, spec: ScoringSpec) -> np.ndarray:
    return np.asarray(table.loc[pid, "norms"]).reshape(spec.generations, -1)


def test_spec_from_dict_names_unknown_keys() -> None:
    spec = ScoringSpec.from_dict({"steps": 10, "window": [0, 1], "chunks": 4, "batch_size": 8})
    assert spec.window == (0, 1) and spec.computed_steps == 1 and spec.batch_size == 8
    with pytest.raises(ValueError, match="guidence"):
        ScoringSpec.from_dict({"guidence": 3.0})
    with pytest.raises(ValueError, match="window"):
        ScoringSpec(steps=5, window=(0, 6))
    with pytest.raises(ValueError, match="batch_size"):
        ScoringSpec(batch_size="big")


def test_engine_matches_naive_reference(
    tiny_model: AuditModel, prompts: pd.DataFrame, engine_scores: pd.DataFrame
) -> None:
    for pid, text in zip(prompts["prompt_id"][:3], prompts["text"][:3], strict=True):
        reference = _naive_norms(tiny_model, text, SPEC)
        got = _norms_of(engine_scores, pid, SPEC)
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
        assert engine_scores.loc[pid, "d_mem"] == pytest.approx(reference.mean(), rel=1e-5)
    # The score must actually depend on the prompt.
    assert engine_scores["d_mem"].nunique() == len(prompts)


@pytest.mark.parametrize("clip_sample", [False, True], ids=["radedit-ddim", "demo-clipped-ddim"])
def test_engine_matches_stable_diffusion_pipeline(
    tiny_model: AuditModel, prompts: pd.DataFrame, engine_scores: pd.DataFrame, clip_sample: bool
) -> None:
    pid, text = prompts["prompt_id"][1], prompts["text"][1]
    model = tiny_model
    if clip_sample:  # the demo model's sampler clips the predicted x0 (training.py)
        model = copy.copy(tiny_model)
        model.scheduler = DDIMScheduler.from_config(tiny_model.scheduler.config, clip_sample=True)
        unclipped = _norms_of(engine_scores, pid, SPEC)
        table, _ = score_prompts(model, [pid], [text], SPEC)
        engine_scores = table.set_index("prompt_id")
        # clipping must really change the trajectory, or this case would test nothing new
        assert not np.allclose(_norms_of(engine_scores, pid, SPEC)[:, 1:], unclipped[:, 1:])
    reference = _pipeline_norms(model, text, SPEC)
    # The score itself to 1e-5 relative. Late-step norms of a random tiny UNet are ~1e-4 of
    # |eps| (cond and uncond predictions nearly cancel), so float32 rounding of the two
    # predictions bounds their agreement in absolute terms, not relative ones.
    assert engine_scores.loc[pid, "d_mem"] == pytest.approx(reference.mean(), rel=1e-5)
    np.testing.assert_allclose(_norms_of(engine_scores, pid, SPEC), reference, rtol=1e-5, atol=1e-6)


def test_scores_independent_of_chunks_batch_size_and_order(
    tiny_model: AuditModel, prompts: pd.DataFrame, engine_scores: pd.DataFrame
) -> None:
    for batch in (1, "auto"):
        spec = dataclasses.replace(SPEC, batch_size=batch)
        shuffled = prompts.sample(frac=1.0, random_state=batch if batch != "auto" else 3)
        parts = []
        for index in range(3):
            chunk = select_chunk(shuffled, index, 3)
            table, stats = score_prompts(tiny_model, chunk["prompt_id"], chunk["text"], spec)
            parts.append(table)
        merged = pd.concat(parts).set_index("prompt_id").loc[engine_scores.index]
        np.testing.assert_allclose(merged["d_mem"], engine_scores["d_mem"], rtol=1e-5)
        np.testing.assert_allclose(
            np.stack(merged["norms"]), np.stack(engine_scores["norms"]), rtol=1e-5
        )


def test_shared_first_step_unconditional_equals_unshared(tiny_model: AuditModel) -> None:
    noise = initial_noise(tiny_model.latent_shape, 2, seed=5)
    cond = tiny_model.encode(CAPTIONS[:3]).repeat_interleave(2, dim=0)
    uncond = tiny_model.encode([""])
    t = torch.tensor(999)
    x = noise.repeat(3, 1, 1, 1)
    with torch.no_grad():
        shared = tiny_model.unet(
            torch.cat([x, noise]),
            t,
            encoder_hidden_states=torch.cat([cond, uncond.expand(2, -1, -1)]),
        ).sample[6:]
        unshared = tiny_model.unet(x, t, encoder_hidden_states=uncond.expand(6, -1, -1)).sample
    torch.testing.assert_close(shared.repeat(3, 1, 1, 1), unshared, rtol=1e-5, atol=1e-6)
    # And the engine's stored first-step norms are the unshared ones.
    table, stats = score_prompts(
        tiny_model,
        ["a", "b", "c"],
        CAPTIONS[:3],
        ScoringSpec(steps=4, generations=2, seed=5, window=(0, 1)),
    )
    with torch.no_grad():
        eps_c = tiny_model.unet(x, t, encoder_hidden_states=cond).sample
    expected = torch.linalg.vector_norm((eps_c - unshared).flatten(1), dim=1).reshape(3, 2)
    np.testing.assert_allclose(np.stack(table["norms"]), expected.numpy(), rtol=1e-5)
    assert stats["unet_rows"] == 3 * 2 + 2  # prompts x gens conditional + gens unconditional


def test_first_step_window_stops_early_and_matches_full_norms(
    tiny_model: AuditModel, prompts: pd.DataFrame, engine_scores: pd.DataFrame
) -> None:
    spec = dataclasses.replace(SPEC, window=(0, 1), batch_size=4)
    table, stats = score_prompts(tiny_model, prompts["prompt_id"], prompts["text"], spec)
    assert stats["n_steps"] == 1 and (table["n_steps"] == 1).all()
    assert stats["unet_calls"] == 2  # two batches, one call each, no later steps
    table = table.set_index("prompt_id")
    full = norms_matrix(engine_scores.reset_index())
    np.testing.assert_allclose(table["d_mem"], d_mem_from_norms(full, (0, 1)), rtol=1e-5)
    # A window inside the trajectory stores the steps before it too.
    spec = dataclasses.replace(SPEC, window=(1, 3))
    table, stats = score_prompts(tiny_model, prompts["prompt_id"], prompts["text"], spec)
    assert stats["n_steps"] == 3
    np.testing.assert_allclose(table["d_mem"], d_mem_from_norms(full, (1, 3)), rtol=1e-5)


def test_d_mem_from_norms_windows() -> None:
    norms = np.array([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    assert d_mem_from_norms(norms, (0, None)) == pytest.approx(3.0)
    assert d_mem_from_norms(norms, (0, 1)) == pytest.approx(2.0)
    assert d_mem_from_norms(norms, (1, 3)) == pytest.approx(3.5)
    assert d_mem_from_norms(norms.reshape(-1), (2, 3), n_generations=2) == pytest.approx(4.0)
    many = np.stack([norms, 2 * norms])
    np.testing.assert_allclose(d_mem_from_norms(many, (0, 1)), [2.0, 4.0])
    with pytest.raises(ValueError, match="only 3 step"):
        d_mem_from_norms(norms, (0, 4))
    with pytest.raises(ValueError, match="n_generations"):
        d_mem_from_norms(norms.reshape(-1), (0, 1))


def test_out_of_memory_halves_the_batch(
    tiny_model: AuditModel, prompts: pd.DataFrame, engine_scores: pd.DataFrame
) -> None:
    fake = copy.copy(tiny_model)
    # at most 2 prompts x 2 generations x 2 branches per call
    fake.unet = OutOfMemoryUnet(tiny_model.unet, max_rows=2 * 2 * 2)
    spec = dataclasses.replace(SPEC, batch_size=7)
    table, stats = score_prompts(fake, prompts["prompt_id"], prompts["text"], spec)
    assert stats["batch_size_initial"] == 7
    assert stats["batch_size_final"] == 1  # 7 -> 3 -> 1 (3 prompts need 12 rows at step 1)
    assert stats["oom_halvings"] == 2 and fake.unet.raised == 2
    np.testing.assert_allclose(
        table.set_index("prompt_id")["d_mem"],
        engine_scores["d_mem"].loc[table["prompt_id"]],
        rtol=1e-5,
    )
    fake.unet = OutOfMemoryUnet(tiny_model.unet, max_rows=1)
    with pytest.raises(RuntimeError, match="single prompt"):
        score_prompts(fake, ["a"], ["no pneumothorax ."], spec)


def test_progress_bar_and_stats(tiny_model: AuditModel) -> None:
    stream = io.StringIO()
    _, stats = score_prompts(
        tiny_model, ["a", "b"], CAPTIONS[:2], ScoringSpec(steps=2, generations=1), progress=stream
    )
    assert "prompt" in stream.getvalue() and "2/2" in stream.getvalue()
    assert stats["peak_cpu_rss_mb"] > 0 and stats["peak_gpu_mb"] is None
    assert stats["unet_rows"] == (2 + 1) + 2 * 2


def test_duplicate_ids_rejected(tiny_model: AuditModel) -> None:
    with pytest.raises(ValueError, match="duplicate"):
        score_prompts(tiny_model, ["a", "a"], CAPTIONS[:2], SPEC)


def test_select_chunk_is_a_partition_independent_of_row_order(prompts: pd.DataFrame) -> None:
    chunks = [select_chunk(prompts, i, 3)["prompt_id"].tolist() for i in range(3)]
    flat = [p for c in chunks for p in c]
    assert flat == sorted(prompts["prompt_id"]) and [len(c) for c in chunks] == [2, 3, 2]
    reversed_chunks = [
        select_chunk(prompts.iloc[::-1], i, 3)["prompt_id"].tolist() for i in range(3)
    ]
    assert reversed_chunks == chunks
    with pytest.raises(ValueError, match="chunk index"):
        select_chunk(prompts, 3, 3)


def test_write_is_atomic_and_gather_checks(
    tmp_path: Path, engine_scores: pd.DataFrame, monkeypatch
) -> None:
    table = engine_scores.reset_index()
    first, second = tmp_path / "0.parquet", tmp_path / "1.parquet"
    atomic_parquet(table.iloc[:3], first)
    atomic_parquet(table.iloc[3:], second)
    gathered = gather_scores([second, first], expected_ids=table["prompt_id"])
    assert gathered["prompt_id"].tolist() == sorted(table["prompt_id"])
    np.testing.assert_allclose(
        np.stack(gathered["norms"]),
        np.stack(table.set_index("prompt_id").loc[gathered["prompt_id"], "norms"]),
    )
    assert gathered["d_mem"].dtype == np.float64 and gathered["n_steps"].dtype == np.int64
    with pytest.raises(ValueError, match="more than once"):
        gather_scores([first, first])
    with pytest.raises(ValueError, match="1 missing"):
        gather_scores([first, second], expected_ids=[*table["prompt_id"], "ffff"])

    # A write that dies half-way leaves neither the target nor a temporary file behind.
    def dying_to_parquet(self, handle, **kwargs):
        handle.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", dying_to_parquet)
    target = tmp_path / "dead" / "2.parquet"
    with pytest.raises(KeyboardInterrupt):
        atomic_parquet(table, target)
    assert os.listdir(target.parent) == []


def test_pixel_space_demo_model_matches_naive_reference() -> None:
    """The shared tiny demo model (no VAE, 1x16x16 pixels, word-level tokenizer)."""
    model = tiny_audit_model("demo")
    captions = TINY_CAPTIONS[:3]
    spec = ScoringSpec(steps=3, guidance=5.0, generations=2, batch_size=2, seed=7)
    table, _ = score_prompts(model, [prompt_id(c) for c in captions], captions, spec)
    for text, norms in zip(captions, table["norms"], strict=True):
        reference = _naive_norms(model, text, spec)
        np.testing.assert_allclose(np.reshape(norms, (2, 3)), reference, rtol=1e-5, atol=1e-6)
