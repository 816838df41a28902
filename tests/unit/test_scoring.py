"""Tests of the batched d_mem engine against naive per-prompt references, and of the shared
guided DDIM sampler and batch sizing it runs on."""

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
from diffusers import DDIMScheduler, StableDiffusionPipeline
from transformers import BertTokenizer

from memaudit.atomic import atomic_parquet
from memaudit.batching import auto_batch_size
from memaudit.diffusion import GuidedStep, guided_ddim, initial_noise, noise_seed, sample_images
from memaudit.model.loading import AuditModel, radedit_scheduler
from memaudit.scoring.engine import score_embeddings, score_prompts
from memaudit.scoring.gather import d_mem_from_norms, gather_scores, norms_matrix, select_chunk
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id
from tests.tiny_components import (
    TINY_CAPTIONS,
    OutOfMemoryUnet,
    prompt_sensitive_latent_unet,
    tiny_audit_model,
    tiny_bert_encoder,
    tiny_vae,
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

# The promise: the same config on the same machine gives bit-identical scores; other batch
# sizes and chunkings give equal scores to float32 rounding. CPU kernels (convolutions,
# matmuls) accumulate in an order that depends on the batch shape, which moves each float32
# prediction by a few units in the last place (float32 resolves ~1e-7; through the UNet and
# the DDIM steps that grows to ~1e-6). A norm of the difference of two predictions inherits
# that *absolute* error (late-step norms are small differences of large predictions), so norms
# get an absolute floor; d_mem, a mean over many norms, is compared relative to itself.
NORMS_ACROSS_BATCHES = {"rtol": 1e-5, "atol": 1e-5}
D_MEM_ACROSS_BATCHES = {"rtol": 1e-5}


def _vocab() -> list[str]:
    words = sorted({w for c in CAPTIONS for w in c.split()})
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> AuditModel:
    """A tiny random latent model (4x8x8 latents, BERT width 16, tiny VAE), float32 CPU."""
    folder = tmp_path_factory.mktemp("tokenizer")
    (folder / "vocab.txt").write_text("\n".join(_vocab()) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = MAX_LENGTH
    torch.manual_seed(0)
    encoder = tiny_bert_encoder(len(_vocab()), HIDDEN)
    return AuditModel(
        kind="diffusers",
        tokenizer=tokenizer,
        text_encoder=encoder,
        unet=prompt_sensitive_latent_unet(HIDDEN),
        scheduler=radedit_scheduler(),
        vae=tiny_vae().eval(),
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
        np.testing.assert_allclose(merged["d_mem"], engine_scores["d_mem"], **D_MEM_ACROSS_BATCHES)
        np.testing.assert_allclose(
            np.stack(merged["norms"]), np.stack(engine_scores["norms"]), **NORMS_ACROSS_BATCHES
        )


def test_same_config_rerun_is_bit_identical(
    tiny_model: AuditModel, prompts: pd.DataFrame, engine_scores: pd.DataFrame
) -> None:
    """Same config, same batches, same machine: the same computation, so exactly equal."""
    table, _ = score_prompts(tiny_model, prompts["prompt_id"], prompts["text"], SPEC)
    table = table.set_index("prompt_id")
    assert np.array_equal(table["d_mem"], engine_scores["d_mem"])
    assert np.array_equal(np.stack(table["norms"]), np.stack(engine_scores["norms"]))


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
    # batches of 4 here, of 3 in engine_scores: equal to float32 rounding
    d_mem = d_mem_from_norms(full, (0, 1))
    np.testing.assert_allclose(table["d_mem"], d_mem, **D_MEM_ACROSS_BATCHES)
    # A window inside the trajectory stores the steps before it too.
    spec = dataclasses.replace(SPEC, window=(1, 3))
    table, stats = score_prompts(tiny_model, prompts["prompt_id"], prompts["text"], spec)
    assert stats["n_steps"] == 3
    np.testing.assert_allclose(table["d_mem"], d_mem_from_norms(full, (1, 3)), rtol=1e-12)


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
    np.testing.assert_allclose(  # batches of 1 after the halvings, of 3 in engine_scores
        table.set_index("prompt_id")["d_mem"],
        engine_scores["d_mem"].loc[table["prompt_id"]],
        **D_MEM_ACROSS_BATCHES,
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


# --------------------------------------------------------------------------------------------
# The shared sampler and batch sizing
# --------------------------------------------------------------------------------------------


def test_engine_norms_are_the_shared_sampler_steps(tiny_model: AuditModel) -> None:
    """score_embeddings is guided_ddim with the norms taken at each step, nothing else."""
    noise = initial_noise(tiny_model.latent_shape, SPEC.generations, SPEC.seed)
    cond, uncond = tiny_model.encode(CAPTIONS[:3]), tiny_model.encode([""])
    got = score_embeddings(tiny_model, cond, SPEC, noise, uncond)
    steps: list[GuidedStep] = []
    guided_ddim(
        tiny_model,
        cond.repeat_interleave(SPEC.generations, dim=0),
        noise.repeat(3, 1, 1, 1),
        uncond,
        SPEC.steps,
        SPEC.guidance,
        noise_period=SPEC.generations,
        on_step=steps.append,
    )
    want = torch.stack(
        [(s.eps_cond - s.eps_uncond).flatten(1).norm(dim=1) for s in steps], dim=1
    ).reshape(3, SPEC.generations, SPEC.steps)
    np.testing.assert_array_equal(got, want.numpy())  # the same computation, bit for bit
    assert [s.index for s in steps] == list(range(SPEC.steps))
    # the first step shares the unconditional rows: 3 x 2 conditional + 2 unconditional
    assert [s.unet_rows for s in steps] == [3 * 2 + 2] + [2 * 3 * 2] * (SPEC.steps - 1)


def test_shared_first_step_equals_unshared_and_is_checked(tiny_model: AuditModel) -> None:
    noise = initial_noise(tiny_model.latent_shape, 2, seed=3)
    x_t = noise.repeat(3, 1, 1, 1)
    cond, uncond = (
        tiny_model.encode(CAPTIONS[:3]).repeat_interleave(2, dim=0),
        tiny_model.encode([""]),
    )
    shared = guided_ddim(tiny_model, cond, x_t, uncond, 4, 7.5, noise_period=2)
    unshared = guided_ddim(tiny_model, cond, x_t, uncond, 4, 7.5)
    # the unconditional rows are computed in another batch shape: equal to float32 rounding
    torch.testing.assert_close(shared, unshared, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="period 4"):  # 6 rows do not repeat every 4
        guided_ddim(tiny_model, cond, x_t, uncond, 4, 7.5, noise_period=4)
    with pytest.raises(ValueError, match="period 3"):  # rows 0-2 are not rows 3-5
        guided_ddim(tiny_model, cond, x_t, uncond, 4, 7.5, noise_period=3)


def test_stop_ends_the_trajectory_early(tiny_model: AuditModel) -> None:
    x_t = initial_noise(tiny_model.latent_shape, 2, seed=3)
    cond, uncond = tiny_model.encode(CAPTIONS[:2]), tiny_model.encode([""])
    seen: list[int] = []
    part = guided_ddim(
        tiny_model, cond, x_t, uncond, 4, 7.5, stop=2, on_step=lambda s: seen.append(s.index)
    )
    assert seen == [0, 1]
    seen.clear()
    full = guided_ddim(
        tiny_model, cond, x_t, uncond, 4, 7.5, on_step=lambda s: seen.append(s.index)
    )
    assert seen == [0, 1, 2, 3] and not torch.allclose(part, full)
    with pytest.raises(ValueError, match="stop"):
        guided_ddim(tiny_model, cond, x_t, uncond, 4, 7.5, stop=5)
    # sample_images decodes exactly what the sampler returns
    images = sample_images(tiny_model, cond, x_t, uncond, 4, 7.5)
    torch.testing.assert_close(images, tiny_model.decode(full), rtol=0, atol=0)


def test_auto_batch_size_on_cpu_is_an_element_budget(tiny_model: AuditModel) -> None:
    # 2**18 latent elements per call; a prompt of 2 generations brings 2 x 2 rows of 4x8x8
    assert auto_batch_size(tiny_model, 4, cap=10_000, share=0.8) == 2**18 // (4 * 256)
    assert auto_batch_size(tiny_model, 4, cap=10, share=0.8) == 10
    assert auto_batch_size(tiny_model, 2**20, cap=10, share=0.8) == 1  # never below one


def test_frozen_unet_gives_the_eager_numbers_bit_for_bit_and_steps_aside() -> None:
    """unet_eps's frozen TorchScript path: identical predictions at every batch size it was
    not traced at, a new trace after an in-place weight update, and the eager module wherever
    a trace would be wrong (gradients, hooks, training mode)."""
    from memaudit.diffusion import frozen_unet, unet_eps
    from tests.tiny_components import tiny_audit_model

    model = tiny_audit_model("demo")
    unet = model.unet.eval()
    context = model.encode(["no acute process", "small effusion", ""])
    t = torch.tensor(999)
    x = torch.randn(3, *model.latent_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        eager = unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
        assert frozen_unet(unet, x, t, context) is not None
        assert torch.equal(unet_eps(model, x, t, context), eager)
        # another batch size and timestep through the same trace
        eager_two = unet(x[:2], torch.tensor(500), encoder_hidden_states=context[:2]).sample
        assert torch.equal(unet_eps(model, x[:2], torch.tensor(500), context[:2]), eager_two)
        # an in-place weight update is seen (no stale constants)
        first = next(unet.parameters())
        first.mul_(1.5)
        updated = unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
        assert not torch.equal(updated, eager)
        assert torch.equal(unet_eps(model, x, t, context), updated)
        # hooks must see the call: the eager module runs
        handle = unet.register_forward_pre_hook(lambda module, args: None)
        assert frozen_unet(unet, x, t, context) is None
        handle.remove()
        assert frozen_unet(unet, x, t, context) is not None
    # gradients (attribution) and training mode go through the eager module
    assert frozen_unet(unet, x, t, context) is None
    unet.train()
    with torch.no_grad():
        assert frozen_unet(unet, x, t, context) is None
    unet.eval()
