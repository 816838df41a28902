"""Tiny random model components, written in each model kind's real on-disk layout.

Tests of every stage build their models here so that they run in seconds on a CPU and never
touch the network. Every builder seeds torch itself, so two calls give identical weights.

- :func:`make_tiny_demo_model_dir` - the folder ``train_demo_model`` writes (``kind: demo``).
- :func:`make_tiny_radedit_dirs` - RadEdit's three repositories (UNet repo with ``unet/``, a
  separate VAE, a CXR-BERT-style text encoder without ``model_type`` whose weights carry the
  ``bert.`` prefix and masked-LM / projection heads); returns a ready ``model:`` config block.
- :func:`make_tiny_diffusers_dir` - a Stable-Diffusion-style folder with ``model_index.json``.
- :func:`tiny_audit_model` - an :class:`~memaudit.model.loading.AuditModel` in memory, fast.

Import as ``from tests.tiny_components import ...`` (run pytest as ``python -m pytest`` from
the repository root).
"""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, PNDMScheduler, UNet2DConditionModel
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, BertModel

from memaudit.model.loading import AuditModel, load_model
from memaudit.model.spec import TrainSpec
from memaudit.model.training import build_demo_model, save_demo_model

# A few report-like captions, two with the de-identification marker.
TINY_CAPTIONS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion, unchanged since ___.",
    "Right lower lobe pneumonia.",
    "Cardiomegaly without pulmonary edema.",
    "Findings discussed with Dr. ___ at 10:30 on ___.",
    "No pneumothorax.",
]

TINY_TEXT_HIDDEN = 32  # hidden size of the tiny BERT encoders (radedit and diffusers kinds)
TINY_VAE_SCALING = 0.13025  # the SDXL VAE's scaling factor, stored in the tiny VAE config
_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_train_spec(**overrides: Any) -> TrainSpec:
    """A demo :class:`TrainSpec` small enough to build and train for a few steps in seconds.

    16x16 images, UNet channels (8, 16) (cross-attention at 8x8), a 1-layer BERT of width 16.
    """
    values: dict[str, Any] = dict(
        seed=0,
        steps=20,
        batch_size=8,
        warmup_steps=2,
        max_length=16,
        text_hidden_size=16,
        text_layers=1,
        text_heads=2,
        text_intermediate_size=32,
        unet_block_out_channels=(8, 16),
        unet_attention_head_dim=4,
        unet_norm_num_groups=4,
        image_size=16,
    )
    values.update(overrides)
    return TrainSpec.from_dict(values)


def make_tiny_demo_model_dir(
    path: str | Path, captions: list[str] | None = None, spec: TrainSpec | None = None
) -> Path:
    """Write an untrained tiny demo model folder (``kind: demo`` layout) and return it."""
    model = build_demo_model(list(captions or TINY_CAPTIONS), spec or tiny_train_spec())
    return save_demo_model(model, path)


def tiny_audit_model(kind: str = "demo") -> AuditModel:
    """A tiny random :class:`AuditModel` on CPU, float32.

    ``demo`` is built in memory (no VAE, 1x16x16 pixels); ``radedit`` and ``diffusers`` are
    written to a temporary folder and loaded back through ``load_model`` (4x8x8 latents, a
    VAE decoding to 16x16).
    """
    if kind == "demo":
        return build_demo_model(list(TINY_CAPTIONS), tiny_train_spec())
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "radedit":
            cfg = make_tiny_radedit_dirs(tmp)
        elif kind == "diffusers":
            cfg = {"kind": "diffusers", "path": str(make_tiny_diffusers_dir(tmp))}
        else:
            raise ValueError(f"unknown tiny model kind {kind!r}")
        return load_model(cfg, device="cpu")


def float64_twin(model: AuditModel) -> AuditModel:
    """The same model with its UNet and text encoder in float64 (copies), for finite
    differences far above rounding."""
    twin = copy.copy(model)
    twin.unet = copy.deepcopy(model.unet).double()
    twin.text_encoder = copy.deepcopy(model.text_encoder).double()
    twin.dtype = torch.float64
    return twin


def tiny_vocab(captions: list[str] | None = None) -> list[str]:
    """A BERT WordPiece vocabulary (specials first) covering the tiny captions word by word."""
    words: list[str] = []
    for caption in captions or TINY_CAPTIONS:
        for raw in caption.lower().replace("___", " _ ").split():
            for piece in _split_punct(raw):
                if piece not in words:
                    words.append(piece)
    return _SPECIALS + sorted(words) + ["##s", "##ed"]


def _split_punct(word: str) -> list[str]:
    pieces, current = [], ""
    for ch in word:
        if ch.isalnum():
            current += ch
        else:
            if current:
                pieces.append(current)
            pieces.append(ch)
            current = ""
    if current:
        pieces.append(current)
    return pieces


def write_bert_tokenizer_files(folder: Path, model_max_length: int | None = None) -> Path:
    """``vocab.txt`` (+ a tokenizer_config.json when a max length is given) for BertTokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(tiny_vocab()) + "\n")
    if model_max_length is not None:
        config = {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": True,
            "model_max_length": model_max_length,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder


def tiny_bert_encoder(
    vocab_size: int, hidden_size: int, add_pooling_layer: bool = True
) -> BertModel:
    """A one-layer BERT text encoder (2 heads, 32 positions) in eval mode; seed before calling."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
    )
    return BertModel(config, add_pooling_layer=add_pooling_layer).eval()


def tiny_bert_config(max_position_embeddings: int = 128) -> BertConfig:
    """Config of the tiny BERT text encoders (width 32, 2 layers, vocabulary of tiny_vocab)."""
    return BertConfig(
        vocab_size=len(tiny_vocab()),
        hidden_size=TINY_TEXT_HIDDEN,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=max_position_embeddings,
    )


def tiny_latent_unet(
    cross_attention_dim: int = TINY_TEXT_HIDDEN, attention_head_dim: int = 4
) -> UNet2DConditionModel:
    """A latent-space UNet (4 channels, 8x8) with cross-attention at the 4x4 level."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=attention_head_dim,
        norm_num_groups=4,
        cross_attention_dim=cross_attention_dim,
    )


def prompt_sensitive_latent_unet(cross_attention_dim: int) -> UNet2DConditionModel:
    """:func:`tiny_latent_unet` with its cross-attention amplified 10x, in eval mode.

    At random init the prompt barely moves the prediction (cond - uncond is ~1e-4 of |eps| after
    the first step), so float32 rounding of two nearly equal predictions would dominate
    comparisons of scores, gradients and finite differences; a trained model is prompt-sensitive
    at every step, and so is this one.
    """
    unet = tiny_latent_unet(cross_attention_dim, attention_head_dim=2)
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_v.weight.mul_(10.0)
                module.to_out[0].weight.mul_(10.0)
    return unet.eval()


def tiny_vae() -> AutoencoderKL:
    """An RGB VAE with 4 latent channels and one halving (16 px images <-> 8x8 latents)."""
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
        scaling_factor=TINY_VAE_SCALING,
    )


def make_cxr_bert_dir(folder: Path, max_position_embeddings: int = 128) -> Path:
    """A CXR-BERT / BioViL-T-style folder: config without ``model_type``, prefixed weights.

    ``model.safetensors`` holds a ``BertForMaskedLM`` state dict (``bert.*`` plus
    ``cls.predictions.*``) and a projection head (``cls_projection_head.*``), as the hub model
    does; the folder also holds ``vocab.txt`` (the tokenizer lives beside the encoder).
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_bert_config(max_position_embeddings)
    torch.manual_seed(0)
    mlm = BertForMaskedLM(config)
    state = {k: v.detach().clone().contiguous() for k, v in mlm.state_dict().items()}
    state["cls_projection_head.dense_to_hidden.weight"] = torch.randn(16, TINY_TEXT_HIDDEN)
    state["cls_projection_head.dense_to_output.weight"] = torch.randn(8, 16)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    fields = config.to_dict()
    fields.pop("model_type", None)
    fields["architectures"] = ["CXRBertModel"]
    fields["auto_map"] = {
        "AutoConfig": "configuration_cxrbert.CXRBertConfig",
        "AutoModel": "modeling_cxrbert.CXRBertModel",
    }
    fields["projection_size"] = 8
    (folder / "config.json").write_text(json.dumps(fields, indent=2))
    write_bert_tokenizer_files(folder)
    return folder


def make_tiny_radedit_dirs(path: str | Path, max_position_embeddings: int = 128) -> dict:
    """RadEdit's layout in ``path``; returns the ``model:`` config block that loads it.

    ``radedit/unet/`` (UNet repo and subfolder), ``sdxl-vae/`` (separate VAE repo) and
    ``biovil-t/`` (text encoder + vocab). ``max_length`` is left to the default (128).
    """
    root = Path(path)
    tiny_latent_unet().save_pretrained(root / "radedit" / "unet", safe_serialization=True)
    tiny_vae().save_pretrained(root / "sdxl-vae", safe_serialization=True)
    make_cxr_bert_dir(root / "biovil-t", max_position_embeddings)
    return {
        "kind": "radedit",
        "unet": str(root / "radedit"),
        "unet_subfolder": "unet",
        "vae": str(root / "sdxl-vae"),
        "text_encoder": str(root / "biovil-t"),
        "tokenizer": str(root / "biovil-t"),
    }


def make_tiny_diffusers_dir(path: str | Path, model_max_length: int = 24) -> Path:
    """A Stable-Diffusion-style folder (model_index.json) with a tiny BERT text encoder."""
    root = Path(path)
    root.mkdir(parents=True, exist_ok=True)
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": "0.42.1",
        "feature_extractor": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
        "scheduler": ["diffusers", "PNDMScheduler"],
        "text_encoder": ["transformers", "BertModel"],
        "tokenizer": ["transformers", "BertTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"],
        "vae": ["diffusers", "AutoencoderKL"],
    }
    (root / "model_index.json").write_text(json.dumps(index, indent=2))
    torch.manual_seed(0)
    BertModel(tiny_bert_config(64)).save_pretrained(root / "text_encoder")
    write_bert_tokenizer_files(root / "tokenizer", model_max_length=model_max_length)
    tiny_latent_unet().save_pretrained(root / "unet", safe_serialization=True)
    tiny_vae().save_pretrained(root / "vae", safe_serialization=True)
    PNDMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True
    ).save_pretrained(root / "scheduler")
    return root


class OutOfMemoryUnet(torch.nn.Module):
    """Wraps a UNet and raises a CUDA out-of-memory error for calls with more than ``max_rows``
    rows, counting them in ``raised``: the out-of-memory fallback tested without a GPU."""

    def __init__(self, unet: torch.nn.Module, max_rows: int) -> None:
        super().__init__()
        self.unet, self.max_rows, self.raised = unet, max_rows, 0

    def forward(self, sample, timestep, encoder_hidden_states, return_dict=True):
        if sample.shape[0] > self.max_rows:
            self.raised += 1
            raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
        return self.unet(
            sample, timestep, encoder_hidden_states=encoder_hidden_states, return_dict=return_dict
        )
