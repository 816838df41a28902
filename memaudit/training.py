"""Train the demo model organism: a small text-to-image diffusion model that memorizes.

The demo stands in for RadEdit so the whole audit runs on a laptop. A word-level tokenizer
(``___`` is one token), a small bidirectional BERT text encoder and a small pixel-space
``UNet2DConditionModel`` (1 channel, 32x32, cross-attention at the 8x8 level) are trained
jointly with the epsilon (noise-prediction) loss. Captions repeated many times with one fixed
image (the planted studies of the demo corpus) are memorized: their generations copy the
training image and their first-step d_mem is large.

Text is encoded exactly as :meth:`memaudit.models.AuditModel.encode` does at audit time
(padding to ``max_length``, no attention mask), because training goes through the same object.
The result is written in a diffusers-like folder (safetensors only) that
:func:`memaudit.models.load_model` reads with ``kind: demo``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, TextIO

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from tokenizers.trainers import WordLevelTrainer
from tqdm import tqdm
from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

from memaudit.figures import MEMORIZED_COLOR, ORDINARY_COLOR, save_figure, use_style
from memaudit.models import AuditModel, radedit_scheduler

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# Runs of underscores (the de-identification marker), words without underscores, and single
# punctuation characters are the pieces; whitespace only separates.
WORD_PATTERN = r"_+|[^\W_]+|[^\w\s]"


@dataclass
class TrainSpec:
    """Architecture and optimisation settings of the demo model (all plain values).

    Defaults train in about 4-5 minutes on 2 CPU cores and memorize captions planted 30-50
    times among 2,000 pairs.
    """

    seed: int = 0
    steps: int = 1500
    batch_size: int = 32
    learning_rate: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    uncond_probability: float = 0.1
    max_length: int = 32
    text_hidden_size: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_intermediate_size: int = 256
    unet_block_out_channels: tuple[int, ...] = (16, 32, 64)
    unet_layers_per_block: int = 1
    unet_attention_head_dim: int = 8
    unet_norm_num_groups: int = 8
    image_size: int = 32

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> TrainSpec:
        """Build from a config block; unknown keys are an error that names them."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown training setting(s) {unknown}; known settings: {sorted(known)}"
            )
        if "unet_block_out_channels" in values:
            values["unet_block_out_channels"] = tuple(values["unet_block_out_channels"])
        spec = cls(**values)
        spec.validate()
        return spec

    def validate(self) -> None:
        """Reject settings that cannot build or train a model, naming the setting."""
        if self.steps < 1 or self.batch_size < 1 or self.max_length < 3:
            raise ValueError("steps and batch_size must be >= 1 and max_length >= 3")
        if self.text_hidden_size % self.text_heads:
            raise ValueError(
                f"text_hidden_size {self.text_hidden_size} is not divisible by "
                f"text_heads {self.text_heads}"
            )
        if any(c % self.unet_norm_num_groups for c in self.unet_block_out_channels):
            raise ValueError(
                f"every unet_block_out_channels {self.unet_block_out_channels} must be "
                f"divisible by unet_norm_num_groups {self.unet_norm_num_groups}"
            )
        if self.image_size % 2 ** (len(self.unet_block_out_channels) - 1):
            raise ValueError(
                f"image_size {self.image_size} must be divisible by "
                f"2**{len(self.unet_block_out_channels) - 1} (one halving per extra UNet block)"
            )
        if not 0.0 <= self.uncond_probability < 1.0:
            raise ValueError("uncond_probability must be in [0, 1)")


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
    np.savetxt(out / "losses.tsv", np.asarray(losses), fmt="%.6f", header="loss", comments="")
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
            "text_encoder": _count(model.text_encoder),
            "unet": _count(model.unet),
        },
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    (out / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


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
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{name} table lacks column(s) {missing}")
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


def grid_examples(
    truth: pd.DataFrame,
    captions: list[str],
    images: np.ndarray,
    n_planted: int = 4,
    n_ordinary: int = 3,
) -> tuple[list[str], np.ndarray, list[str]]:
    """Captions for the generation grid: the first planted captions and frequent ordinary ones.

    Planted captions come in ``planted_id`` order; ordinary captions are the most frequent
    non-planted training captions (ties by text). Each comes with its (first) training image
    and a label ``planted`` / ``ordinary``.
    """
    planted = [t for t in truth.sort_values("planted_id")["text"] if t in set(captions)]
    planted = planted[:n_planted]
    counts = pd.Series(captions).value_counts()
    ordinary_pool = sorted(
        (c for c in counts.index if c not in set(truth["text"])),
        key=lambda c: (-int(counts[c]), c),
    )
    ordinary = ordinary_pool[:n_ordinary]
    texts = planted + ordinary
    first = {c: i for i, c in reversed(list(enumerate(captions)))}
    chosen = np.stack([np.asarray(images)[first[t]] for t in texts]) if texts else images[:0]
    return texts, chosen, ["planted"] * len(planted) + ["ordinary"] * len(ordinary)


def check_memorization(
    model: AuditModel,
    truth: pd.DataFrame,
    captions: list[str],
    images: np.ndarray,
    seeds: tuple[int, ...] = (0, 1, 2, 3),
    n_ordinary: int = 20,
    steps: int = 50,
    guidance: float = 7.5,
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Does the demo model reproduce its planted images, and only those?

    Generates every planted caption and the ``n_ordinary`` most frequent ordinary captions with
    every seed and finds each generation's nearest training image (cosine similarity of the
    mean-removed pixels, i.e. correlation). Identical training images (the copies of a planted
    caption) count as one image. Per generation it records whether the nearest image is the
    prompt's own planted image; per prompt, how often two seeds land on the same training image
    (``seed_agreement``): a memorized caption sends every seed to its one image, an ordinary
    caption spreads over many. Returns (summary, per-prompt table).
    """
    from memaudit.copies import nearest_neighbours, pixel_embedding

    images = np.asarray(images)
    if len(captions) != len(images):
        raise ValueError(f"{len(captions)} captions but {len(images)} images")
    caption_set = set(captions)
    planted = [t for t in truth.sort_values("planted_id")["text"] if t in caption_set]
    counts = pd.Series(captions).value_counts()
    truth_texts = set(truth["text"])
    ordinary = sorted(
        (c for c in counts.index if c not in truth_texts), key=lambda c: (-int(counts[c]), c)
    )[:n_ordinary]
    prompts = planted + ordinary
    if not prompts:
        raise ValueError("no planted or ordinary caption to check")
    # one id per distinct training image (planted copies share theirs)
    image_ids: dict[bytes, int] = {}
    row_image = np.array([image_ids.setdefault(im.tobytes(), len(image_ids)) for im in images])
    pixels = images.astype(np.float32) / (255.0 if images.dtype == np.uint8 else 1.0)
    reference = pixel_embedding(pixels)
    generated = generate_images(model, prompts, list(seeds), steps=steps, guidance=guidance)
    similarity, nearest_row = nearest_neighbours(pixel_embedding(generated), reference)
    nearest_image = row_image[nearest_row].reshape(len(prompts), len(seeds))
    similarity = similarity.reshape(len(prompts), len(seeds))
    own_image = {c: row_image[i] for i, c in reversed(list(enumerate(captions)))}
    rows = []
    n_seeds = len(seeds)
    pairs = n_seeds * (n_seeds - 1) / 2
    for i, prompt in enumerate(prompts):
        kind = "planted" if i < len(planted) else "ordinary"
        hits = nearest_image[i]
        agreement = (
            sum(int(hits[a] == hits[b]) for a in range(n_seeds) for b in range(a + 1, n_seeds))
            / pairs
            if pairs
            else float("nan")
        )
        rows.append(
            {
                "kind": kind,
                "text": prompt,
                "own_nearest_rate": float(np.mean(hits == own_image[prompt]))
                if kind == "planted"
                else float("nan"),
                "seed_agreement": agreement,
                "mean_similarity": float(similarity[i].mean()),
            }
        )
    table = pd.DataFrame(rows)
    plant = table[table["kind"] == "planted"]
    ordin = table[table["kind"] == "ordinary"]
    summary = {
        "seeds": list(seeds),
        "steps": steps,
        "guidance": guidance,
        "n_planted": len(plant),
        "n_ordinary": len(ordin),
        "n_training_images": len(image_ids),
        "planted_own_nearest_rate": float(plant["own_nearest_rate"].mean()) if len(plant) else None,
        "planted_reproduced_fraction": float((plant["own_nearest_rate"] >= 0.5).mean())
        if len(plant)
        else None,
        "planted_seed_agreement": float(plant["seed_agreement"].mean()) if len(plant) else None,
        "ordinary_seed_agreement": float(ordin["seed_agreement"].mean()) if len(ordin) else None,
        "planted_mean_similarity": float(plant["mean_similarity"].mean()) if len(plant) else None,
        "ordinary_mean_similarity": float(ordin["mean_similarity"].mean()) if len(ordin) else None,
    }
    return summary, table


def _count(module: torch.nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def load_losses(model_dir: str | Path) -> np.ndarray:
    """The per-step training losses that :func:`train_demo_model` saved beside the model."""
    return np.loadtxt(Path(model_dir) / "losses.tsv", skiprows=1, ndmin=1)


@torch.no_grad()
def generate_images(
    model: AuditModel,
    prompts: list[str],
    seeds: list[int],
    steps: int = 50,
    guidance: float = 7.5,
    batch_size: int = 32,
) -> np.ndarray:
    """Full classifier-free guided DDIM sampling (eta 0) of every prompt with every seed.

    Returns float32 [len(prompts) * len(seeds), H, W] in [0, 1], prompt-major (all seeds of
    the first prompt first). The starting noise depends only on the seed.
    """
    jobs = [(p, s) for p in prompts for s in seeds]
    uncond = model.encode([""])
    out = []
    for lo in range(0, len(jobs), batch_size):
        chunk = jobs[lo : lo + batch_size]
        cond = model.encode([p for p, _ in chunk])
        noise = torch.stack(
            [
                torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(int(s)))
                for _, s in chunk
            ]
        )
        scheduler = copy.deepcopy(model.scheduler)
        scheduler.set_timesteps(steps)
        x = (noise * scheduler.init_noise_sigma).to(device=model.device, dtype=model.dtype)
        context = torch.cat([cond, uncond.expand(len(chunk), -1, -1)])
        for t in scheduler.timesteps:
            eps = model.unet(torch.cat([x, x]), t, encoder_hidden_states=context).sample
            eps_cond, eps_uncond = eps.chunk(2)
            eps = eps_uncond + guidance * (eps_cond - eps_uncond)
            x = scheduler.step(eps, t, x).prev_sample
        out.append(model.decode(x).cpu().numpy())
    return np.concatenate(out).astype(np.float32)


def plot_training_curve(losses: np.ndarray | list[float], png: str | Path) -> None:
    """Loss per step (light) and its 50-step moving average, log scale, PNG + PDF."""
    use_style()
    losses = np.asarray(losses, dtype=float)
    window = max(1, min(50, len(losses) // 5))
    smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(np.arange(1, len(losses) + 1), losses, color=ORDINARY_COLOR, alpha=0.25, lw=0.6)
    ax.plot(
        np.arange(window, len(losses) + 1),
        smooth,
        color=MEMORIZED_COLOR,
        lw=1.5,
        label=f"{window}-step mean",
    )
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("noise-prediction MSE")
    ax.set_title("Demo model training")
    ax.legend(frameon=False)
    save_figure(fig, png)


def plot_generation_grid(
    model: AuditModel,
    prompts: list[str],
    train_images: np.ndarray,
    png: str | Path,
    seeds: tuple[int, ...] = (0, 1, 2),
    steps: int = 50,
    guidance: float = 7.5,
    labels: list[str] | None = None,
) -> None:
    """One row per prompt: its training image, then generations from ``seeds``.

    ``train_images`` is uint8 or float [len(prompts), H, W] (the image each prompt was
    trained with); ``labels`` (e.g. "planted"/"ordinary") prefix the row titles.
    """
    use_style()
    generated = generate_images(model, prompts, list(seeds), steps, guidance)
    n, k = len(prompts), len(seeds)
    fig, axes = plt.subplots(n, k + 1, figsize=(1.4 * (k + 1), 1.5 * n), squeeze=False)
    for i, prompt in enumerate(prompts):
        train = np.asarray(train_images[i], dtype=np.float32)
        train = train / 255.0 if train.max() > 1.0 else train
        row = [train] + [generated[i * k + j] for j in range(k)]
        for j, (ax, image) in enumerate(zip(axes[i], row, strict=True)):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("training" if j == 0 else f"seed {seeds[j - 1]}", fontsize=8)
        short = prompt if len(prompt) <= 38 else prompt[:35] + "..."
        tag = f"{labels[i]}: " if labels else ""
        axes[i][0].set_ylabel(f"{tag}{short}", rotation=0, ha="right", va="center", fontsize=7)
    fig.suptitle(f"Generations ({steps} DDIM steps, guidance {guidance})", fontsize=9)
    save_figure(fig, png)
