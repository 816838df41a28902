"""memaudit.model.loading: each model kind loads from tiny random parts in its on-disk layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler
from safetensors.torch import load_file, save_file
from transformers import BertForMaskedLM, BertModel

from memaudit.model.loading import ModelLoadError, load_model
from tests.tiny_components import (
    TINY_CAPTIONS,
    TINY_VAE_SCALING,
    make_tiny_demo_model_dir,
    make_tiny_diffusers_dir,
    make_tiny_radedit_dirs,
    tiny_bert_config,
    tiny_train_spec,
)

PROMPTS = ["Small left pleural effusion, unchanged since ___.", "No pneumothorax.", ""]


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _one_step(model) -> torch.Tensor:
    """One guided-free DDIM step from seeded noise, then decode."""
    scheduler = model.scheduler
    scheduler.set_timesteps(5)
    t = scheduler.timesteps[0]
    x = torch.randn((2, *model.latent_shape), generator=torch.Generator().manual_seed(0))
    x = x.to(model.dtype)
    with torch.no_grad():
        eps = model.unet(x, t, encoder_hidden_states=model.encode(PROMPTS[:2])).sample
    assert eps.shape == x.shape
    x = scheduler.step(eps, t, x).prev_sample
    assert torch.isfinite(x.float()).all()
    return model.decode(x)


def test_radedit_text_embeddings_equal_a_plain_bert_on_the_same_weights(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path)
    torch.manual_seed(123)  # the loader's fresh init must not matter: weights are loaded
    model = load_model(cfg, device="cpu")
    torch.manual_seed(0)  # the same draw make_cxr_bert_dir used
    reference = BertForMaskedLM(tiny_bert_config()).bert.eval()
    ids = model.tokenize(PROMPTS)["input_ids"]
    assert ids.shape == (3, 128)
    with torch.no_grad():
        expected = reference(ids).last_hidden_state
    torch.testing.assert_close(model.encode(PROMPTS), expected, rtol=0, atol=1e-6)
    assert model.encode(PROMPTS).shape == (3, 128, 32)
    assert model.tokenizer.model_max_length == 128
    # BertTokenizer lower-cases and splits the marker into three "_" pieces.
    tokens = model.tokenizer.tokenize("Dr. ___ Effusion")
    assert tokens == ["dr", ".", "_", "_", "_", "effusion"]


def test_radedit_parts_scheduler_and_one_denoising_step(tmp_path: Path) -> None:
    model = load_model(make_tiny_radedit_dirs(tmp_path), device="cpu")
    assert model.kind == "radedit"
    assert model.latent_shape == (4, 8, 8)
    assert model.image_size == 16
    assert model.vae_scaling_factor == pytest.approx(TINY_VAE_SCALING)
    assert not model.text_encoder.training and not model.unet.training
    cfg = model.scheduler.config
    assert isinstance(model.scheduler, DDIMScheduler)
    assert (cfg.beta_schedule, cfg.beta_start, cfg.beta_end) == ("linear", 1e-4, 0.02)
    assert (cfg.timestep_spacing, cfg.steps_offset, cfg.clip_sample) == ("trailing", 1, False)
    assert cfg.prediction_type == "epsilon" and cfg.num_train_timesteps == 1000
    images = _one_step(model)
    assert images.shape == (2, 16, 16) and images.dtype == torch.float32
    assert images.min() >= 0 and images.max() <= 1


def test_radedit_bfloat16_keeps_the_vae_in_float32(tmp_path: Path) -> None:
    model = load_model(make_tiny_radedit_dirs(tmp_path), device="cpu", dtype="bfloat16")
    assert model.unet.dtype == torch.bfloat16
    assert next(model.text_encoder.parameters()).dtype == torch.bfloat16
    assert next(model.vae.parameters()).dtype == torch.float32
    # No bfloat16 forward here: on CPUs that list AMX without the kernel enabling it, oneDNN's
    # bfloat16 kernels die with "Illegal instruction" (ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16
    # avoids it); decoding from bfloat16 latents still goes through the float32 VAE.
    images = model.decode(torch.zeros((1, *model.latent_shape), dtype=torch.bfloat16))
    assert images.dtype == torch.float32 and images.shape == (1, 16, 16)


def test_float16_on_cpu_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="float16 is not supported on CPU"):
        load_model(make_tiny_radedit_dirs(tmp_path), device="cpu", dtype="float16")


def test_diffusers_folder_loads_with_its_scheduler_converted_to_ddim(tmp_path: Path) -> None:
    root = make_tiny_diffusers_dir(tmp_path / "sd")
    model = load_model({"kind": "diffusers", "path": str(root)}, device="cpu")
    assert isinstance(model.scheduler, DDIMScheduler)
    assert model.scheduler.config.beta_schedule == "scaled_linear"  # kept from the PNDM config
    assert model.max_length == 24 and model.latent_shape == (4, 8, 8)
    reference = BertModel.from_pretrained(str(root / "text_encoder")).eval()
    ids = model.tokenize(PROMPTS)["input_ids"]
    with torch.no_grad():
        expected = reference(ids).last_hidden_state
    torch.testing.assert_close(model.encode(PROMPTS), expected, rtol=0, atol=1e-6)
    images = _one_step(model)
    assert images.shape == (2, 16, 16) and images.min() >= 0 and images.max() <= 1


def test_demo_folder_loads_with_marker_as_one_token(tmp_path: Path) -> None:
    root = make_tiny_demo_model_dir(tmp_path / "demo")
    model = load_model({"kind": "demo", "path": str(root)}, device="cpu")
    assert model.vae is None and model.latent_shape == (1, 16, 16) and model.image_size == 16
    assert model.max_length == 16
    ids = model.tokenize(["Dr. ___ called"])["input_ids"][0].tolist()
    tokens = model.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[:5] == ["[CLS]", "dr", ".", "___", "[UNK]"]  # "called" is not in the captions
    assert tokens[5] == "[SEP]" and set(tokens[6:]) == {"[PAD]"}
    images = _one_step(model)
    assert images.shape == (2, 16, 16) and images.min() >= 0 and images.max() <= 1


def test_no_part_is_ever_unpickled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called")

    monkeypatch.setattr(torch, "load", refuse)
    load_model(make_tiny_radedit_dirs(tmp_path / "r"), device="cpu")
    load_model({"kind": "diffusers", "path": str(make_tiny_diffusers_dir(tmp_path / "d"))})
    load_model({"kind": "demo", "path": str(make_tiny_demo_model_dir(tmp_path / "m"))})


# ---------------------------------------------------------------------------- error cases


def test_wrong_kind_lists_the_kinds() -> None:
    with pytest.raises(ModelLoadError, match="demo, radedit, diffusers"):
        load_model({"kind": "stable"})


def test_missing_unet_weights_say_which_part_and_how_to_download(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path)
    (Path(cfg["unet"]) / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(ModelLoadError) as err:
        load_model(cfg, device="cpu")
    message = str(err.value)
    assert "no unet weights" in message and str(Path(cfg["unet"]) / "unet") in message
    assert "HF_HUB_OFFLINE is set" in message and "huggingface-cli download" in message


def test_missing_hub_id_offline_is_one_clear_error(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path)
    cfg["vae"] = "nobody-here/no-such-vae"
    with pytest.raises(ModelLoadError) as err:
        load_model(cfg, device="cpu")
    message = str(err.value)
    assert "VAE 'nobody-here/no-such-vae'" in message and "model.vae" in message
    assert "huggingface-cli download nobody-here/no-such-vae" in message


def test_missing_local_folder_is_named(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model({"kind": "demo", "path": str(tmp_path / "nowhere")})


def test_pickle_only_weights_are_refused(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path)
    weights = Path(cfg["text_encoder"]) / "model.safetensors"
    weights.rename(weights.with_name("pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match="only safetensors") as err:
        load_model(cfg, device="cpu")
    assert "pytorch_model.bin" in str(err.value) and "text encoder" in str(err.value)


def test_corrupt_safetensors_file_is_named(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path)
    weights = Path(cfg["vae"]) / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all")
    with pytest.raises(ModelLoadError, match="corrupt") as err:
        load_model(cfg, device="cpu")
    assert str(weights) in str(err.value)


def test_truncated_safetensors_file_is_named(tmp_path: Path) -> None:
    root = make_tiny_demo_model_dir(tmp_path / "demo")
    weights = root / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError) as err:
        load_model({"kind": "demo", "path": str(root)})
    assert str(weights) in str(err.value)


def test_tokenizer_longer_than_positions_is_refused(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path, max_position_embeddings=64)
    with pytest.raises(ModelLoadError, match="max_length 128 exceeds .* 64"):
        load_model(cfg, device="cpu")
    cfg["max_length"] = 64  # a shorter max length is accepted
    assert load_model(cfg, device="cpu").tokenize(["x"])["input_ids"].shape == (1, 64)


def test_text_encoder_missing_bert_parameters_are_listed(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path)
    weights = Path(cfg["text_encoder"]) / "model.safetensors"
    state = load_file(str(weights))
    del state["bert.encoder.layer.1.output.dense.weight"]
    save_file(state, str(weights))
    with pytest.raises(ModelLoadError, match=r"lack 1 BertModel parameter\(s\)") as err:
        load_model(cfg, device="cpu")
    assert "encoder.layer.1.output.dense.weight" in str(err.value)


def test_demo_folder_without_subfolder_is_refused(tmp_path: Path) -> None:
    root = make_tiny_demo_model_dir(tmp_path / "demo", captions=TINY_CAPTIONS)
    (root / "scheduler" / "scheduler_config.json").unlink()
    (root / "scheduler").rmdir()
    with pytest.raises(ModelLoadError, match="lacks the subfolder scheduler/"):
        load_model({"kind": "demo", "path": str(root)})


def test_validated_demo_config_block_loads_a_demo_folder(tmp_path: Path) -> None:
    """The schema's defaults for model: must suit every kind (a radedit-only default broke it)."""
    import yaml

    from memaudit.config import load_schema, validate_config

    repo = Path(__file__).resolve().parents[2]
    config = validate_config(
        yaml.safe_load((repo / "config.yaml").read_text()),
        load_schema(repo / "workflow/schemas/config.schema.yaml"),
    )
    folder = make_tiny_demo_model_dir(tmp_path / "demo")
    model = load_model({**config["model"], "path": str(folder)}, device="cpu")
    assert model.max_length == tiny_train_spec().max_length
