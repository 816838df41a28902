"""Train the demo model organism: a small text-to-image diffusion model that memorizes.

The demo stands in for RadEdit so the whole audit runs on a laptop. A word-level tokenizer
(``___`` is one token), a small bidirectional BERT text encoder and a small pixel-space
``UNet2DConditionModel`` (1 channel, 16x16 in the default demo, cross-attention at the 8x8
level) are trained jointly with the epsilon (noise-prediction) loss. Captions repeated many
times with one fixed image (the planted studies of the demo corpus) are memorized: their
generations copy the training image and their first-step d_mem is large.

Text is encoded exactly as :meth:`memaudit.model.loading.AuditModel.encode` does at audit
time (padding to ``max_length``, no attention mask), because training goes through the same
object. The result is written in a diffusers-like folder (safetensors only) that
:func:`memaudit.model.loading.load_model` reads with ``kind: demo``. With the default demo's
settings (config.yaml) training takes about 6 minutes on 2 CPU cores (the quick demo's about 1).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import WordLevelTrainer
from tqdm import tqdm
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from memaudit.frames import require_columns
from memaudit.model.artifacts import write_losses
from memaudit.model.loading import AuditModel, radedit_scheduler
from memaudit.model.spec import TrainSpec

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Runs of underscores (the de-identification marker), words without underscores, and single
# punctuation characters are the pieces; whitespace only separates.
WORD_PATTERN = r"_+|[^\W_]+|[^\w\s]"


def train_tokenizer(captions: list[str], max_length: int) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the captions: lower case, ``___`` one token, [CLS] .. [SEP]."""
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated")
    # Split keeps the whitespace between matches as pieces of its own; drop them with a
    # whitespace split first so only words, marker runs and punctuation remain.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), tok.pre_tokenizer]
    )
    trainer = WordLevelTrainer(special_tokens=list(SPECIAL_TOKENS), min_frequency=1)
    tok.train_from_iterator(list(captions), trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return wrap_tokenizer(tok, max_length)


def wrap_tokenizer(tok: Tokenizer, max_length: int) -> PreTrainedTokenizerFast:
    """A transformers tokenizer around a ``tokenizers`` object, with the demo's special tokens."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


def build_text_encoder(spec: TrainSpec, vocab_size: int) -> BertModel:
    """A small bidirectional BERT (no pooler, no dropout) sized by ``spec``."""
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=spec.text_hidden_size,
        num_hidden_layers=spec.text_layers,
        num_attention_heads=spec.text_heads,
        intermediate_size=spec.text_intermediate_size,
        max_position_embeddings=spec.max_length,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        pad_token_id=0,
    )
    return BertModel(config, add_pooling_layer=False)


def build_unet(spec: TrainSpec, cross_attention_dim: int) -> UNet2DConditionModel:
    """A pixel-space UNet (1 channel) with cross-attention only at the lowest resolution."""
    n = len(spec.unet_block_out_channels)
    down = ("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",)
    up = ("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=spec.image_size,
        in_channels=1,
        out_channels=1,
        block_out_channels=tuple(spec.unet_block_out_channels),
        down_block_types=down,
        up_block_types=up,
        layers_per_block=spec.unet_layers_per_block,
        attention_head_dim=spec.unet_attention_head_dim,
        norm_num_groups=spec.unet_norm_num_groups,
        cross_attention_dim=cross_attention_dim,
    )


def make_scheduler() -> DDIMScheduler:
    """RadEdit's DDIM settings (linear betas 1e-4 -> 0.02, trailing spacing), x0 clipped.

    The demo works in pixel space, where the clean image is known to lie in [-1, 1], so its
    sampler clips the predicted x0 (``clip_sample=True``; RadEdit's latent sampler does not).
    Without clipping, the first trailing step (t = 999, alpha_bar ~ 4e-5) turns a small
    noise-prediction error into an x0 guess far outside [-1, 1] that later steps keep, and
    generations saturate. Noise predictions, hence d_mem at the first step, are unaffected.
    """
    return DDIMScheduler.from_config(radedit_scheduler().config, clip_sample=True)


def build_demo_model(
    captions: list[str], spec: TrainSpec, device: str | torch.device = "cpu"
) -> AuditModel:
    """Untrained demo components (seeded by ``spec.seed``) wrapped as an :class:`AuditModel`."""
    tokenizer = train_tokenizer(captions, spec.max_length)
    torch.manual_seed(spec.seed)
    text_encoder = build_text_encoder(spec, len(tokenizer))
    unet = build_unet(spec, spec.text_hidden_size)
    device = torch.device(device)
    return AuditModel(
        kind="demo",
        tokenizer=tokenizer,
        text_encoder=text_encoder.to(device),
        unet=unet.to(device),
        scheduler=make_scheduler(),
        vae=None,
        vae_scaling_factor=1.0,
        image_size=spec.image_size,
        latent_shape=(1, spec.image_size, spec.image_size),
        max_length=spec.max_length,
        dtype=torch.float32,
        device=device,
    )


def save_demo_model(model: AuditModel, out_dir: str | Path) -> Path:
    """Write the demo folder layout (safetensors only) that ``load_model(kind=demo)`` reads."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.unet.save_pretrained(out / "unet", safe_serialization=True)
    model.text_encoder.save_pretrained(out / "text_encoder")
    model.tokenizer.save_pretrained(out / "tokenizer")
    model.scheduler.save_pretrained(out / "scheduler")
    return out


def train_demo_model(
    captions: list[str],
    images: np.ndarray,
    spec: TrainSpec,
    out_dir: str | Path,
    corpus_hash: str = "",
    log: TextIO | None = None,
) -> dict[str, Any]:
    """Train the demo model on (caption, image) pairs, save it and return its model card.

    ``images`` are uint8 [N, S, S] grayscale with S = ``spec.image_size``, paired row by row
    with ``captions``. Training is seeded by ``spec.seed`` and deterministic on CPU (the caller
    fixes the thread count). Writes the demo folder layout, ``model_card.json`` and
    ``losses.tsv`` (loss per step) under ``out_dir``; progress goes to ``log`` (stderr if None).
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (spec.image_size, spec.image_size):
        raise ValueError(
            f"images must be [N, {spec.image_size}, {spec.image_size}]; got {images.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 (0-255); got {images.dtype}")
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions but {len(images)} images: they must pair up")
    if len(captions) == 0:
        raise ValueError("no training pairs")
    log = log or sys.stderr
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        model, losses, seconds = fit_demo_model(list(captions), images, spec, log)
    finally:
        torch.use_deterministic_algorithms(deterministic)
    out = save_demo_model(model, out_dir)
    write_losses(out, losses)
    card = {
        "kind": "demo",
        "corpus_sha256": corpus_hash,
        "spec": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(spec).items()},
        "n_pairs": len(captions),
        "n_unique_captions": len(set(captions)),
        "vocab_size": len(model.tokenizer),
        "steps": spec.steps,
        "final_loss": float(np.mean(losses[-50:])),
        "training_seconds": round(seconds, 2),
        "parameters": {
            "text_encoder": _parameter_count(model.text_encoder),
            "unet": _parameter_count(model.unet),
        },
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def _parameter_count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def fit_demo_model(
    captions: list[str], images: np.ndarray, spec: TrainSpec, log: TextIO | None = None
) -> tuple[AuditModel, list[float], float]:
    """The training loop, in memory: returns (model, loss per step, seconds).

    Text encoder and UNet are trained jointly with the epsilon MSE loss and AdamW (linear
    warmup, then constant learning rate); a fraction ``spec.uncond_probability`` of captions is
    replaced by the empty prompt. Text goes through :meth:`AuditModel.encode_ids`, exactly as
    at audit time. :func:`train_demo_model` wraps this with input checks, determinism and
    saving.
    """
    model = build_demo_model(captions, spec)
    ids = model.tokenize(captions)["input_ids"]
    empty_ids = model.tokenize([""])["input_ids"][0]
    pixels = torch.from_numpy(images.astype(np.float32) / 127.5 - 1.0).unsqueeze(1)
    scheduler = model.scheduler
    params = list(model.text_encoder.parameters()) + list(model.unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=spec.learning_rate, weight_decay=spec.weight_decay)
    warmup = max(1, spec.warmup_steps)
    lr_schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min(1.0, (step + 1) / warmup)
    )
    generator = torch.Generator().manual_seed(spec.seed)
    n_train = scheduler.config.num_train_timesteps
    model.text_encoder.train()
    model.unet.train()
    losses: list[float] = []
    start = time.perf_counter()
    bar = tqdm(range(spec.steps), desc="train demo model", file=log or sys.stderr, mininterval=5.0)
    for _ in bar:
        batch = torch.randint(len(captions), (spec.batch_size,), generator=generator)
        drop = torch.rand(spec.batch_size, generator=generator) < spec.uncond_probability
        input_ids = torch.where(drop[:, None], empty_ids[None, :], ids[batch])
        noise = torch.randn(pixels[batch].shape, generator=generator)
        t = torch.randint(n_train, (spec.batch_size,), generator=generator)
        noisy = scheduler.add_noise(pixels[batch], noise, t)
        embeddings = model.encode_ids(input_ids)
        predicted = model.unet(noisy, t, encoder_hidden_states=embeddings).sample
        loss = torch.nn.functional.mse_loss(predicted, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, spec.grad_clip)
        optimizer.step()
        lr_schedule.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", refresh=False)
    bar.close()
    seconds = time.perf_counter() - start
    model.text_encoder.eval()
    model.unet.eval()
    return model, losses, seconds


def demo_training_pairs(
    studies: pd.DataFrame, report_map: pd.DataFrame, prompts: pd.DataFrame, images: np.ndarray
) -> tuple[list[str], np.ndarray]:
    """(caption, image) training pairs of the demo corpus, one per study whose report was used.

    The caption is the study's prompt exactly as the prompts stage wrote it (normalised text),
    so the model is trained on the very strings that are later scored. Studies whose report
    the prompts stage skipped have no caption and are left out; the images are
    ``images[studies.image_index]``. Pairs come in the studies table's order.
    """
    for name, table, columns in (
        ("studies", studies, ("study_id", "image_index")),
        ("report_map", report_map, ("study_id", "prompt_id")),
        ("prompts", prompts, ("prompt_id", "text")),
    ):
        require_columns(table, columns, f"{name} table")
    text_of = dict(zip(prompts["prompt_id"], prompts["text"], strict=True))
    prompt_of = dict(
        zip(report_map["study_id"].astype("int64"), report_map["prompt_id"], strict=True)
    )
    unknown = sorted({p for p in prompt_of.values() if p not in text_of})
    if unknown:
        raise ValueError(f"report_map names {len(unknown)} prompt(s) not in prompts: {unknown[:3]}")
    rows = [
        (text_of[prompt_of[sid]], int(idx))
        for sid, idx in zip(studies["study_id"], studies["image_index"], strict=True)
        if int(sid) in prompt_of
    ]
    if not rows:
        raise ValueError("no study of the corpus has a prompt: nothing to train on")
    index = np.array([i for _, i in rows], dtype=np.int64)
    if index.min() < 0 or index.max() >= len(images):
        raise ValueError(f"image_index out of range for {len(images)} images")
    return [c for c, _ in rows], np.asarray(images)[index]
