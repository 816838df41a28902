"""Inference-time mitigations of memorized prompts: strategies, generations, diversity, Fig. 4.

The paper's three mitigations act on the de-identification marker (config
``reports.markers``): ``rwa`` replaces each marker by a random word of the corpus vocabulary,
``rna`` by a random number, ``remove`` deletes it (whitespace and punctuation tidied). From the
literature: ``gni`` adds Gaussian noise of scale λ to the conditional embedding, ``cwr`` repeats
a random word of the caption at random positions, ``rt`` inserts random tokens of the
tokenizer's vocabulary at random positions (Somepalli et al.), and ``embopt`` minimises the
first-step memorization loss L over the conditional embedding with AdamW (Wen et al.).
``original`` is the unchanged prompt. Marker strategies on a prompt without a marker are
skipped, with the reason recorded.

Reproducibility choices:

- every strategy's randomness comes from a generator seeded by hashing (mitigation seed,
  prompt id, strategy), never from a row position, so chunking and batch size change nothing;
- x_T of seed index s depends only on (mitigation seed, s) (:func:`memaudit.scoring.
  initial_noise`), the same for every prompt and strategy (common random numbers): differences
  between strategies come from the strategy alone;
- images are stored as uint8 [rows, seeds, H, W] per chunk (``.npz``) with a parquet index,
  both written atomically and tied by a content token, so a killed job leaves nothing a re-run
  would trust.

Diversity of one prompt's generations is the mean over all pairs of the RMS distance
‖a − b‖₂ / √(pixels) of grayscale images in [0, 1] at the model's output size (PAPER.md;
computed from the stored uint8 images, whose rounding adds at most ~0.001).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memaudit.atomic import atomic_parquet, atomic_write, json_safe
from memaudit.copies import CopyReference, Embedder, nearest_neighbours
from memaudit.figures import MARKER_COLOR, MEMORIZED_COLOR, ORDINARY_COLOR, save_figure, use_style
from memaudit.models import AuditModel
from memaudit.scores import d_mem_from_norms, select_chunk
from memaudit.scoring import (
    ScoringSpec,
    fresh_scheduler,
    initial_noise,
    run_halving_batches,
    score_embeddings,
    unet_eps,
)
from memaudit.scoring import (
    auto_batch as scoring_auto_batch,
)
from memaudit.text import compile_markers, normalize_whitespace

STRATEGIES = ("original", "rwa", "rna", "remove", "gni", "cwr", "rt", "embopt")
MARKER_STRATEGIES = frozenset({"rwa", "rna", "remove"})
SELECTION_MODES = ("marker_memorized", "memorized")
# Keys of the config ``mitigation`` block that change no image: which prompts are generated is
# decided by the selection rule (its output is an input of generation), the chunk count and
# the bootstrap only split work or summarise it.
SELECTION_KEYS = frozenset({"prompts", "sample_size", "include_planted"})
NON_GENERATION_KEYS = SELECTION_KEYS | frozenset({"chunks", "bootstrap"})
# CPU "auto" batch: latent elements per UNet call (images × 2 × C × h × w).
_GPU_MEMORY_SHARE = 0.7
_MAX_AUTO_IMAGES = 1024
_VAE_DECODE_BATCH = 8
_ENCODE_BATCH = 64
_PUNCTUATION = ".,;:!?()[]{}\"'`"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MitigationSpec:
    """What changes the generated images (the config ``mitigation`` block without selection,
    chunk and evaluation keys).

    ``batch_size`` counts images (one prompt-strategy row × one seed) per UNet call, or is
    ``"auto"``; ``embopt_generations`` is how many of the first seeds' x_T the embedding
    optimisation minimises L on (None: all ``n_seeds``).
    """

    strategies: tuple[str, ...] = STRATEGIES
    n_seeds: int = 50
    steps: int = 50
    guidance: float = 7.5
    seed: int = 0
    batch_size: int | str = "auto"
    rna_range: tuple[int, int] = (1, 100)
    gni_scale: float = 0.1
    cwr_repeats: int = 1
    rt_tokens: int = 4
    embopt_lr: float = 0.05
    embopt_iterations: int = 10
    embopt_target_loss: float | None = None
    embopt_generations: int | None = 4

    def __post_init__(self) -> None:
        strategies = tuple(self.strategies)
        unknown = [s for s in strategies if s not in STRATEGIES]
        if unknown or not strategies or len(set(strategies)) != len(strategies):
            raise ValueError(
                f"mitigation.strategies must be distinct names from {list(STRATEGIES)}, "
                f"got {list(self.strategies)}"
            )
        object.__setattr__(self, "strategies", strategies)
        for name in ("n_seeds", "steps", "embopt_iterations"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"mitigation.{name} must be a positive integer, got {value!r}")
        for name in ("cwr_repeats", "rt_tokens"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"mitigation.{name} must be a positive integer, got {value!r}")
        low, high = (int(v) for v in self.rna_range)
        if low > high:
            raise ValueError(f"mitigation.rna_range must be [low, high], got {self.rna_range!r}")
        object.__setattr__(self, "rna_range", (low, high))
        if not math.isfinite(self.guidance):
            raise ValueError(f"mitigation.guidance must be finite, got {self.guidance!r}")
        if not self.gni_scale >= 0 or not math.isfinite(self.gni_scale):
            raise ValueError(f"mitigation.gni_scale must be >= 0, got {self.gni_scale!r}")
        if not self.embopt_lr > 0:
            raise ValueError(f"mitigation.embopt_lr must be > 0, got {self.embopt_lr!r}")
        gens = self.embopt_generations
        if gens is not None and (not isinstance(gens, int) or gens < 1):
            raise ValueError(f"mitigation.embopt_generations must be >= 1 or null, got {gens!r}")
        batch = self.batch_size
        if batch != "auto" and (not isinstance(batch, int) or isinstance(batch, bool) or batch < 1):
            raise ValueError(
                f"mitigation.batch_size must be 'auto' or a positive integer, got {batch!r}"
            )

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> MitigationSpec:
        """From a config ``mitigation`` block; selection/chunk/evaluation keys are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - NON_GENERATION_KEYS)
        if unknown:
            raise ValueError(
                f"unknown mitigation key(s) {unknown}; expected some of {sorted(known)}"
            )
        kwargs = {k: v for k, v in values.items() if k in known}
        for key in ("strategies", "rna_range"):
            if key in kwargs:
                kwargs[key] = tuple(kwargs[key])
        return cls(**kwargs)

    @property
    def embopt_seeds(self) -> int:
        return min(self.n_seeds, self.embopt_generations or self.n_seeds)


def derived_seed(*parts: object) -> int:
    """A 63-bit seed from a hash of ``parts`` (e.g. seed, prompt id, strategy)."""
    text = ":".join(str(p) for p in ("memaudit-mitigation", *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def strategy_rng(seed: int, prompt_id: str, strategy: str) -> np.random.Generator:
    """The random generator of one (prompt, strategy): independent of every row position."""
    return np.random.default_rng(derived_seed(seed, prompt_id, strategy))


# --------------------------------------------------------------------------------------------
# Which prompts
# --------------------------------------------------------------------------------------------

SELECTION_COLUMNS = (
    "prompt_id",
    "text",
    "marker_count",
    "has_marker",
    "memorized",
    "planted",
    "reason",
    "d_mem",
    "rank",
)


def select_prompts(
    memorized: pd.DataFrame,
    markers: Sequence[str],
    mode: str = "marker_memorized",
    sample_size: int | None = None,
    seed: int = 0,
    truth: pd.DataFrame | None = None,
    include_planted: bool = True,
    ranked: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """The prompts to mitigate, sorted by prompt_id, with why each is included.

    ``mode`` ``marker_memorized`` keeps the memorized prompts with at least one marker match,
    ``memorized`` all memorized prompts. With ``truth`` (the demo's planted captions) and
    ``include_planted``, planted captions passing the same marker filter are added, since the
    demo's top 1 % holds only a handful of prompts. ``reason`` is ``memorized``, ``planted`` or
    ``memorized+planted``. ``sample_size`` keeps a seeded sample ordered by a hash of
    (seed, prompt_id), so it does not depend on row order. ``d_mem``/``rank`` come from
    ``memorized`` or, for planted prompts not memorized, from ``ranked`` (NaN without it).
    """
    if mode not in SELECTION_MODES:
        raise ValueError(f"mitigation.prompts must be one of {list(SELECTION_MODES)}, got {mode!r}")
    if sample_size is not None and (not isinstance(sample_size, int) or sample_size < 0):
        raise ValueError(f"mitigation.sample_size must be null or >= 0, got {sample_size!r}")
    pattern = marker_pattern(markers)
    for name, table in (("memorized prompts", memorized), ("truth", truth), ("ranked", ranked)):
        if table is None:
            continue
        missing = {"prompt_id", "text"} - set(table.columns)
        if missing:
            raise ValueError(f"the {name} table lacks column(s) {sorted(missing)}")
    scores: dict[str, tuple[float, float]] = {}
    for table in (ranked, memorized):
        if table is not None and {"d_mem", "rank"} <= set(table.columns):
            for pid, d, r in zip(table["prompt_id"], table["d_mem"], table["rank"], strict=True):
                scores[pid] = (float(d), float(r))
    rows: dict[str, dict[str, Any]] = {}

    def add(pid: str, text: str, memorized_flag: bool, planted_flag: bool) -> None:
        count = len(pattern.findall(text)) if pattern is not None else 0
        if mode == "marker_memorized" and count == 0:
            return
        row = rows.setdefault(
            pid,
            {
                "prompt_id": pid,
                "text": text,
                "marker_count": count,
                "has_marker": count > 0,
                "memorized": False,
                "planted": False,
            },
        )
        row["memorized"] |= memorized_flag
        row["planted"] |= planted_flag

    for pid, text in zip(memorized["prompt_id"], memorized["text"], strict=True):
        add(str(pid), str(text), True, False)
    if truth is not None and include_planted:
        for pid, text in zip(truth["prompt_id"], truth["text"], strict=True):
            add(str(pid), str(text), False, True)
    ids = sorted(rows)
    if sample_size is not None:
        order = sorted(ids, key=lambda p: derived_seed(seed, "sample", p))
        ids = sorted(order[:sample_size])
    table = pd.DataFrame([rows[p] for p in ids], columns=list(SELECTION_COLUMNS[:6]))
    table["reason"] = [
        "memorized+planted" if m and p else "memorized" if m else "planted"
        for m, p in zip(table["memorized"], table["planted"], strict=True)
    ]
    table["d_mem"] = [scores.get(p, (math.nan, math.nan))[0] for p in table["prompt_id"]]
    table["rank"] = [scores.get(p, (math.nan, math.nan))[1] for p in table["prompt_id"]]
    return table.astype(
        {"marker_count": "int64", "has_marker": bool, "memorized": bool, "planted": bool}
    ).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Text strategies
# --------------------------------------------------------------------------------------------


def marker_pattern(markers: Sequence[str]) -> re.Pattern[str] | None:
    """One regex matching any configured marker (left to right, one pass); None if none."""
    compiled = compile_markers(list(markers))
    if not compiled:
        return None
    return re.compile("|".join(f"(?:{p.pattern})" for p in compiled))


def corpus_vocabulary(texts: Iterable[str], markers: Sequence[str]) -> list[str]:
    """Sorted distinct lower-case words of the corpus prompts, for ``rwa``.

    A word is a whitespace-separated piece stripped of surrounding punctuation; pieces with a
    marker match, an underscore or no letter (numbers, punctuation) are left out.
    """
    pattern = marker_pattern(markers)
    words: set[str] = set()
    for text in texts:
        for piece in str(text).split():
            word = piece.strip(_PUNCTUATION)
            if not word or "_" in word or not any(c.isalpha() for c in word):
                continue
            if pattern is not None and pattern.search(word):
                continue
            words.add(word.lower())
    return sorted(words)


def token_vocabulary(tokenizer: Any, markers: Sequence[str]) -> list[str]:
    """Sorted whole-word tokens of the tokenizer's vocabulary, for ``rt``.

    Special tokens, ``[...]`` placeholders, ``##`` continuation pieces, tokens without a letter
    and marker matches are left out.
    """
    pattern = marker_pattern(markers)
    specials = set(getattr(tokenizer, "all_special_tokens", []))
    tokens = []
    for token in tokenizer.get_vocab():
        if token in specials or token.startswith("##") or token.startswith("["):
            continue
        if not any(c.isalpha() for c in token) or not all(c.isalnum() or c in "-'" for c in token):
            continue
        if pattern is not None and pattern.search(token):
            continue
        tokens.append(token)
    return sorted(tokens)


_EMPTY_BRACKETS = re.compile(r"\(\s*\)|\[\s*\]")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([,.;:!?)\]])")
_PUNCT_RUN = re.compile(r"[,.;:!?](?:\s*[,.;:!?])+")
_LEADING_PUNCT = re.compile(r"^[\s,.;:!?)\]]+")


def tidy_text(text: str) -> str:
    """Whitespace and punctuation left clean after words were deleted.

    Empty brackets go, whitespace collapses, no space before , . ; : ! ? ) ], a run of
    punctuation keeps one mark (the last sentence end . ! ? if any, else the last mark), and
    the text starts with no punctuation.
    """
    text = normalize_whitespace(_EMPTY_BRACKETS.sub(" ", text))
    text = _SPACE_BEFORE_PUNCT.sub(r"\1", text)

    def strongest(match: re.Match[str]) -> str:
        marks = [c for c in match.group(0) if not c.isspace()]
        ends = [c for c in marks if c in ".!?"]
        return ends[-1] if ends else marks[-1]

    text = _PUNCT_RUN.sub(strongest, text)
    return normalize_whitespace(_LEADING_PUNCT.sub("", text))


def replace_markers(
    text: str, pattern: re.Pattern[str] | None, draw: Callable[[], str]
) -> tuple[str, int]:
    """Each marker match replaced by ``draw()`` (called once per match, left to right)."""
    if pattern is None:
        return text, 0
    count = 0

    def substitute(_match: re.Match[str]) -> str:
        nonlocal count
        count += 1
        return draw()

    return pattern.sub(substitute, text), count


def remove_markers(text: str, pattern: re.Pattern[str] | None) -> tuple[str, int]:
    """Markers deleted, then whitespace and punctuation tidied (:func:`tidy_text`)."""
    if pattern is None:
        return text, 0
    stripped, count = pattern.subn(" ", text)
    return (tidy_text(stripped) if count else text), count


def insert_words(text: str, words: Sequence[str], rng: np.random.Generator) -> str:
    """``words`` inserted one by one, each at a uniformly drawn gap between existing words."""
    pieces = text.split()
    for word in words:
        pieces.insert(int(rng.integers(len(pieces) + 1)), word)
    return " ".join(pieces)


@dataclass(frozen=True)
class TextMitigation:
    """A strategy applied to one prompt's text: the result or why it was skipped."""

    text: str | None
    status: str  # "generated" | "skipped"
    reason: str = ""
    n_edits: int = 0


def mitigate_text(
    text: str,
    prompt_id: str,
    strategy: str,
    spec: MitigationSpec,
    pattern: re.Pattern[str] | None,
    vocabulary: Sequence[str] = (),
    tokens: Sequence[str] = (),
) -> TextMitigation:
    """The text a strategy conditions on (``gni``/``embopt``/``original``: the prompt itself).

    Skips (with a reason): marker strategies on a prompt without a marker (``no_marker``),
    ``remove`` leaving nothing (``empty_after_removal``), ``rwa``/``rt`` with an empty
    vocabulary (``empty_vocabulary``), ``cwr`` without a word to repeat (``no_word``).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mitigation strategy {strategy!r}")
    if strategy in ("original", "gni", "embopt"):
        return TextMitigation(text, "generated")
    rng = strategy_rng(spec.seed, prompt_id, strategy)
    if strategy in MARKER_STRATEGIES:
        if pattern is None or not pattern.search(text):
            return TextMitigation(None, "skipped", "no_marker")
        if strategy == "rwa":
            if not vocabulary:
                return TextMitigation(None, "skipped", "empty_vocabulary")
            new, n = replace_markers(
                text, pattern, lambda: vocabulary[int(rng.integers(len(vocabulary)))]
            )
        elif strategy == "rna":
            low, high = spec.rna_range
            new, n = replace_markers(text, pattern, lambda: str(int(rng.integers(low, high + 1))))
        else:
            new, n = remove_markers(text, pattern)
            if not new.strip(_PUNCTUATION + " "):
                return TextMitigation(None, "skipped", "empty_after_removal", n)
        return TextMitigation(new, "generated", "", n)
    if strategy == "cwr":
        candidates = [
            piece.strip(_PUNCTUATION)
            for piece in text.split()
            if any(c.isalpha() for c in piece)
            and "_" not in piece
            and not (pattern is not None and pattern.search(piece))
        ]
        candidates = [c for c in candidates if c]
        if not candidates:
            return TextMitigation(None, "skipped", "no_word")
        word = candidates[int(rng.integers(len(candidates)))]
        return TextMitigation(
            insert_words(text, [word] * spec.cwr_repeats, rng), "generated", "", spec.cwr_repeats
        )
    # rt
    if not tokens:
        return TextMitigation(None, "skipped", "empty_vocabulary")
    drawn = [tokens[int(rng.integers(len(tokens)))] for _ in range(spec.rt_tokens)]
    return TextMitigation(insert_words(text, drawn, rng), "generated", "", spec.rt_tokens)


# --------------------------------------------------------------------------------------------
# Embedding strategies
# --------------------------------------------------------------------------------------------


def gaussian_noise_embedding(
    embedding: torch.Tensor, scale: float, seed: int, prompt_id: str
) -> torch.Tensor:
    """``embedding`` [L, D] + scale · N(0, I), the noise seeded by (seed, prompt id, "gni")."""
    generator = torch.Generator(device="cpu").manual_seed(derived_seed(seed, prompt_id, "gni"))
    noise = torch.randn(tuple(embedding.shape), generator=generator, dtype=torch.float32)
    return (embedding.float().cpu() + scale * noise).to(embedding.device, embedding.dtype)


def first_step_loss(
    model: AuditModel, cond: torch.Tensor, noise: torch.Tensor, uncond: torch.Tensor, steps: int
) -> torch.Tensor:
    """Wen et al.'s L at the first sampling step, per prompt: [P].

    L(e) = mean over the k starting noises of ‖ε(x_T^j, e) − ε(x_T^j, e_∅)‖₂ (the first-step
    d_mem of those generations). Differentiable in ``cond`` [P, L, D]; ``noise`` is [k, C, h, w].
    """
    scheduler = fresh_scheduler(model, steps, model.device)
    t = scheduler.timesteps[0]
    n_prompts, k = cond.shape[0], noise.shape[0]
    x = scheduler.scale_model_input(noise.to(model.device) * scheduler.init_noise_sigma, t)
    with torch.no_grad():
        eps_uncond = unet_eps(model, x, t, uncond.expand(k, -1, -1))
    rows = cond.repeat_interleave(k, dim=0).to(model.dtype)
    eps_cond = unet_eps(model, x.repeat(n_prompts, 1, 1, 1), t, rows)
    diff = eps_cond - eps_uncond.repeat(n_prompts, 1, 1, 1)
    return diff.flatten(1).norm(dim=1).view(n_prompts, k).mean(dim=1)


def optimize_embeddings(
    model: AuditModel,
    cond: torch.Tensor,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    steps: int,
    lr: float = 0.05,
    iterations: int = 10,
    target_loss: float | None = None,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Wen et al.'s inference-time mitigation: minimise L over the conditional embeddings.

    AdamW (learning rate ``lr``, torch's default weight decay) on a float32 copy of ``cond``
    [P, L, D], at most ``iterations`` updates; a prompt stops as soon as its L is below
    ``target_loss``. Prompts are optimised together but independently: each L depends only on
    its own embedding, and a stopped prompt's embedding is restored after every later update,
    so the result does not depend on which prompts share a batch. Returns the optimised
    embeddings (model dtype) and, per prompt, the initial and final L and the updates made.
    """
    if cond.shape[0] == 0:
        empty = pd.DataFrame(
            {"initial_loss": [], "final_loss": [], "iterations": pd.Series([], dtype="int64")}
        )
        return cond, empty
    embedding = cond.detach().float().clone().requires_grad_(True)
    optimizer = torch.optim.AdamW([embedding], lr=lr)
    n = cond.shape[0]
    active = torch.ones(n, dtype=torch.bool, device=embedding.device)
    updates = torch.zeros(n, dtype=torch.int64)
    initial = None
    target = -math.inf if target_loss is None else float(target_loss)
    for _ in range(iterations):
        loss = first_step_loss(model, embedding, noise, uncond, steps)
        if initial is None:
            initial = loss.detach().cpu().numpy().astype(np.float64)
        active &= loss.detach() >= target
        if not bool(active.any()):
            break
        (grad,) = torch.autograd.grad((loss * active).sum(), embedding)
        frozen = embedding.detach().clone()
        embedding.grad = grad
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            embedding[~active] = frozen[~active]
        updates += active.cpu().long()
    with torch.no_grad():
        final = first_step_loss(model, embedding, noise, uncond, steps)
    info = pd.DataFrame(
        {
            "initial_loss": initial,
            "final_loss": final.cpu().numpy().astype(np.float64),
            "iterations": updates.numpy(),
        }
    )
    return embedding.detach().to(model.dtype), info


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def sample_images(
    model: AuditModel,
    cond: torch.Tensor,
    x_t: torch.Tensor,
    uncond: torch.Tensor,
    steps: int,
    guidance: float,
) -> torch.Tensor:
    """Full classifier-free guided DDIM sampling (eta 0) of one batch, decoded.

    Row i starts from ``x_t[i]`` (x_T, [B, C, h, w]) and is conditioned on ``cond[i]``
    ([B, L, D]); ``uncond`` is the empty prompt's embedding [1, L, D]. Returns grayscale
    float32 images [B, H, W] in [0, 1] at the model's output size. Latents stay float32
    between steps (the UNet runs in the model dtype), as in the scoring engine.
    """
    scheduler = fresh_scheduler(model, steps, model.device)
    latents = x_t.to(device=model.device, dtype=torch.float32) * scheduler.init_noise_sigma
    cond = cond.to(device=model.device, dtype=model.dtype)
    context = torch.cat([cond, uncond.to(model.device, model.dtype).expand(len(cond), -1, -1)])
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        eps = unet_eps(model, torch.cat([model_input, model_input]), t, context)
        eps_cond, eps_uncond = eps.chunk(2)
        guided = eps_uncond + guidance * (eps_cond - eps_uncond)
        latents = scheduler.step(guided, t, latents, eta=0.0, return_dict=False)[0]
    step = _VAE_DECODE_BATCH if model.vae is not None else max(1, len(latents))
    images = [model.decode(latents[i : i + step]) for i in range(0, len(latents), step)]
    return torch.cat(images).float().cpu()


def to_uint8(images: torch.Tensor | np.ndarray) -> np.ndarray:
    """Images in [0, 1] as uint8 (rounded to the nearest level)."""
    array = images.numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    return np.clip(np.rint(array.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)


def auto_batch(model: AuditModel) -> int:
    """Images per UNet call: a fixed latent-element budget on CPU, probed memory on a GPU."""

    def probe() -> None:
        uncond = model.encode([""])
        latent = torch.zeros((1, *model.latent_shape), device=model.device)
        sample_images(model, uncond, latent, uncond, 1, 1.0)

    elements = 2 * math.prod(model.latent_shape)
    return scoring_auto_batch(model, elements, _MAX_AUTO_IMAGES, probe, _GPU_MEMORY_SHARE)


def generate_grid(
    model: AuditModel,
    cond: torch.Tensor,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    steps: int,
    guidance: float,
    batch_size: int | str = "auto",
    progress: TextIO | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Every row of ``cond`` [R, L, D] with every x_T of ``noise`` [S, C, h, w]: uint8 [R, S, H, W].

    Images are batched across rows and seeds (``batch_size`` images per call, or ``auto``);
    on a GPU a batch that runs out of memory is retried with half as many images. Image
    (r, s) depends only on cond[r] and noise[s], never on the batch it was computed in.
    """
    n_rows, n_seeds = int(cond.shape[0]), int(noise.shape[0])
    side = int(model.image_size)
    out = np.zeros((n_rows, n_seeds, side, side), dtype=np.uint8)
    batch = auto_batch(model) if batch_size == "auto" else int(batch_size)
    total = n_rows * n_seeds
    bar = tqdm(total=total, unit="img", desc="generate", file=progress, disable=progress is None)
    start = time.perf_counter()

    def step(position: int, size: int) -> None:
        jobs = np.arange(position, position + size)
        rows, seeds = jobs // n_seeds, jobs % n_seeds
        images = sample_images(model, cond[rows], noise[seeds], uncond, steps, guidance)
        if images.shape[-2:] != (side, side):
            raise ValueError(
                f"decoded images are {tuple(images.shape[-2:])}, expected the model's "
                f"image_size {side}"
            )
        out[rows, seeds] = to_uint8(images)

    _, batch, halvings = run_halving_batches(
        total,
        batch,
        step,
        "images per batch",
        "out of GPU memory generating a single image",
        progress,
        bar,
    )
    bar.close()
    seconds = time.perf_counter() - start
    stats = {
        "images": total,
        "seconds": seconds,
        "images_per_s": total / seconds if seconds > 0 and total else None,
        "batch_size_final": batch,
        "oom_halvings": halvings,
    }
    return out, stats


def encode_texts(model: AuditModel, texts: Sequence[str]) -> torch.Tensor:
    """Conditional embeddings [N, L, D] of texts, encoded in batches."""
    if not texts:
        return torch.zeros((0, model.max_length, 1), dtype=model.dtype, device=model.device)
    parts = [
        model.encode(list(texts[i : i + _ENCODE_BATCH]))
        for i in range(0, len(texts), _ENCODE_BATCH)
    ]
    return torch.cat(parts)


# --------------------------------------------------------------------------------------------
# One chunk: plan, embeddings, images, d_mem
# --------------------------------------------------------------------------------------------

INDEX_COLUMNS = (
    "prompt_id",
    "strategy",
    "selection_reason",
    "planted",
    "text",
    "mitigated_text",
    "status",
    "reason",
    "n_edits",
    "row",
    "n_seeds",
    "d_mem",
    "embedding_rms_change",
    "embopt_initial_loss",
    "embopt_final_loss",
    "embopt_iterations",
)


def plan_rows(
    prompts: pd.DataFrame,
    spec: MitigationSpec,
    markers: Sequence[str],
    vocabulary: Sequence[str],
    tokens: Sequence[str],
) -> pd.DataFrame:
    """One row per (prompt, strategy), prompts by id then strategies in config order, with
    the mitigated text or the skip reason."""
    pattern = marker_pattern(markers)
    records = []
    ordered = prompts.sort_values("prompt_id", kind="mergesort")
    for prompt in ordered.itertuples(index=False):
        for strategy in spec.strategies:
            result = mitigate_text(
                prompt.text, prompt.prompt_id, strategy, spec, pattern, vocabulary, tokens
            )
            records.append(
                {
                    "prompt_id": prompt.prompt_id,
                    "strategy": strategy,
                    "selection_reason": getattr(prompt, "reason", ""),
                    "planted": bool(getattr(prompt, "planted", False)),
                    "text": prompt.text,
                    "mitigated_text": result.text,
                    "status": result.status,
                    "reason": result.reason,
                    "n_edits": result.n_edits,
                }
            )
    return pd.DataFrame(records, columns=list(INDEX_COLUMNS[:9]))


def mitigated_embeddings(
    model: AuditModel,
    plan: pd.DataFrame,
    spec: MitigationSpec,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    batch_images: int,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """Conditioning embeddings of the generated rows of ``plan`` and per-row embedding facts.

    Text strategies encode their mitigated text; ``gni`` and ``embopt`` start from the
    prompt's own embedding. The facts are the RMS change from the prompt's embedding and, for
    ``embopt``, the initial/final first-step loss and the number of updates.
    """
    rows = plan[plan["status"] == "generated"].reset_index(drop=True)
    embeddings = encode_texts(model, rows["mitigated_text"].tolist())
    originals = encode_texts(model, rows["text"].tolist())
    facts = pd.DataFrame(
        {
            "embedding_rms_change": np.zeros(len(rows)),
            "embopt_initial_loss": np.full(len(rows), np.nan),
            "embopt_final_loss": np.full(len(rows), np.nan),
            "embopt_iterations": np.zeros(len(rows), dtype=np.int64),
        }
    )
    gni = np.flatnonzero(rows["strategy"].to_numpy() == "gni")
    for i in gni:
        embeddings[i] = gaussian_noise_embedding(
            originals[i], spec.gni_scale, spec.seed, rows.at[i, "prompt_id"]
        )
    opt = np.flatnonzero(rows["strategy"].to_numpy() == "embopt")
    if len(opt):
        k = spec.embopt_seeds
        per_call = max(1, batch_images // k)
        for lo in range(0, len(opt), per_call):
            idx = opt[lo : lo + per_call]
            optimised, info = optimize_embeddings(
                model,
                originals[idx],
                noise[:k],
                uncond,
                spec.steps,
                spec.embopt_lr,
                spec.embopt_iterations,
                spec.embopt_target_loss,
            )
            embeddings[idx] = optimised
            facts.loc[idx, "embopt_initial_loss"] = info["initial_loss"].to_numpy()
            facts.loc[idx, "embopt_final_loss"] = info["final_loss"].to_numpy()
            facts.loc[idx, "embopt_iterations"] = info["iterations"].to_numpy()
    if len(rows):
        change = (embeddings.float() - originals.float()).pow(2).flatten(1).mean(dim=1).sqrt()
        facts["embedding_rms_change"] = change.cpu().numpy().astype(np.float64)
    return embeddings, facts


def score_rows(
    model: AuditModel, embeddings: torch.Tensor, scoring: ScoringSpec, batch_images: int
) -> np.ndarray:
    """d_mem of each conditioning embedding with the scoring engine and scoring settings."""
    if len(embeddings) == 0:
        return np.zeros(0)
    noise = initial_noise(model.latent_shape, scoring.generations, scoring.seed, model.device)
    uncond = model.encode([""])
    per_call = max(1, batch_images // scoring.generations)
    values = []
    for lo in range(0, len(embeddings), per_call):
        norms = score_embeddings(model, embeddings[lo : lo + per_call], scoring, noise, uncond)
        values.append(np.atleast_1d(d_mem_from_norms(norms, scoring.window_bounds())))
    return np.concatenate(values).astype(np.float64)


def generate_mitigations(
    model: AuditModel,
    prompts: pd.DataFrame,
    spec: MitigationSpec,
    scoring: ScoringSpec,
    markers: Sequence[str],
    vocabulary: Sequence[str],
    progress: TextIO | None = None,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Mitigated generations of ``prompts``: (index table, uint8 images, run statistics).

    The index has one row per (prompt, strategy) (:data:`INDEX_COLUMNS`); ``row`` points into
    the images [generated rows, n_seeds, H, W] (-1 for skipped rows); ``d_mem`` is the
    mitigated prompt's (or embedding's) score with the scoring settings.
    """
    for column in ("prompt_id", "text"):
        if column not in prompts.columns:
            raise ValueError(f"the mitigation prompts table has no {column!r} column")
    start = time.perf_counter()
    tokens = token_vocabulary(model.tokenizer, markers) if "rt" in spec.strategies else []
    plan = plan_rows(prompts, spec, markers, vocabulary, tokens)
    noise = initial_noise(model.latent_shape, spec.n_seeds, spec.seed, model.device)
    with torch.no_grad():
        uncond = model.encode([""])
    batch = auto_batch(model) if spec.batch_size == "auto" else int(spec.batch_size)
    t0 = time.perf_counter()
    embeddings, facts = mitigated_embeddings(model, plan, spec, noise, uncond, batch)
    embed_seconds = time.perf_counter() - t0
    images, gen_stats = generate_grid(
        model, embeddings, noise, uncond, spec.steps, spec.guidance, batch, progress
    )
    t0 = time.perf_counter()
    d_mem = score_rows(model, embeddings, scoring, batch)
    score_seconds = time.perf_counter() - t0
    generated = (plan["status"] == "generated").to_numpy()
    index = plan.copy()
    index["row"] = -1
    index.loc[generated, "row"] = np.arange(int(generated.sum()))
    index["n_seeds"] = np.where(generated, spec.n_seeds, 0)
    index["d_mem"] = np.nan
    index.loc[generated, "d_mem"] = d_mem
    for column in facts.columns:
        index[column] = np.nan if column != "embopt_iterations" else 0
        index.loc[generated, column] = facts[column].to_numpy()
    index = index.astype({"row": "int64", "n_seeds": "int64", "embopt_iterations": "int64"})
    stats = {
        "n_prompts": int(prompts["prompt_id"].nunique()),
        "n_rows": len(index),
        "n_generated_rows": int(generated.sum()),
        "n_skipped_rows": int((~generated).sum()),
        "n_seeds": spec.n_seeds,
        "steps": spec.steps,
        "guidance": spec.guidance,
        "image_size": int(model.image_size),
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "batch_size": batch,
        "embedding_seconds": embed_seconds,
        "scoring_seconds": score_seconds,
        "total_seconds": time.perf_counter() - start,
        **{f"generation_{k}": v for k, v in gen_stats.items()},
    }
    return index, images, stats


def generate_chunk(
    model: AuditModel,
    prompts: pd.DataFrame,
    index: int,
    total: int,
    spec: MitigationSpec,
    scoring: ScoringSpec,
    markers: Sequence[str],
    vocabulary: Sequence[str],
    images_path: str | Path,
    index_path: str | Path,
    progress: TextIO | None = None,
) -> dict[str, Any]:
    """Generate chunk ``index`` of ``total`` (prompts split by id) and write it atomically."""
    chunk = select_chunk(prompts, index, total)
    table, images, stats = generate_mitigations(
        model, chunk, spec, scoring, markers, vocabulary, progress
    )
    write_chunk(table, images, images_path, index_path)
    stats.update({"chunk_index": index, "chunk_total": total})
    return stats


def write_chunk(
    index: pd.DataFrame, images: np.ndarray, images_path: str | Path, index_path: str | Path
) -> str:
    """Write the images (``.npz``: ``images`` uint8, ``token``) and the index parquet.

    Each file is written to a temporary name and renamed; both carry ``token`` (SHA-256 of the
    images and of the index's prompt/strategy/row columns), which :func:`gather_chunks`
    checks, so a job killed between the two writes never yields a pair a re-run would trust.
    """
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(str(images.shape).encode())
    for key in zip(index["prompt_id"], index["strategy"], index["row"], strict=True):
        digest.update(repr(key).encode())
    token = digest.hexdigest()
    atomic_write(
        images_path,
        lambda handle: np.savez_compressed(handle, images=images, token=np.array(token)),
    )
    atomic_parquet(index.assign(token=token), index_path)
    return token


def gather_chunks(
    index_paths: Sequence[str | Path],
    images_paths: Sequence[str | Path],
    expected_ids: Iterable[str] | None = None,
) -> pd.DataFrame:
    """One generations table from the chunk indexes, each row naming its ``chunk`` file.

    Checks that every index matches its ``.npz`` (same token), that no (prompt, strategy)
    appears twice and (with ``expected_ids``) that every selected prompt was generated.
    """
    if len(index_paths) != len(images_paths):
        raise ValueError(f"{len(index_paths)} chunk indexes but {len(images_paths)} image files")
    frames = []
    for index_path, images_path in zip(index_paths, images_paths, strict=True):
        frame = pd.read_parquet(index_path)
        with np.load(images_path, allow_pickle=False) as archive:
            token = str(archive["token"])
            n_rows = _npz_shape(archive, "images")[0] if len(frame) else 0
        tokens = set(frame["token"]) if len(frame) else {token}
        if tokens != {token}:
            raise ValueError(f"{index_path} does not belong to {images_path} (token mismatch)")
        if len(frame) and int(frame["row"].max()) + 1 != n_rows:
            raise ValueError(
                f"{index_path} points at {frame['row'].max() + 1} rows, {n_rows} saved"
            )
        frames.append(frame.assign(chunk=str(images_path)))
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if len(table):
        dup = table.duplicated(["prompt_id", "strategy"], keep=False)
        if dup.any():
            first = table.loc[dup, ["prompt_id", "strategy"]].iloc[0].tolist()
            raise ValueError(f"{int(dup.sum())} duplicate (prompt, strategy) rows, e.g. {first}")
    if expected_ids is not None:
        got = set(table["prompt_id"]) if len(table) else set()
        missing = sorted(set(expected_ids) - got)
        if missing:
            raise ValueError(
                f"{len(missing)} selected prompt(s) have no generations: {missing[:3]}"
            )
    if not len(table):
        return pd.DataFrame(columns=[*INDEX_COLUMNS, "token", "chunk"])
    return table.sort_values(["prompt_id", "strategy"], kind="mergesort").reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def mean_pairwise_rms(images: np.ndarray) -> float:
    """Mean over all pairs i < j of ‖a_i − a_j‖₂ / √(pixels); uint8 images are /255 first.

    Computed from the Gram matrix in float64 (squared distances clipped at 0). NaN for fewer
    than two images.
    """
    array = np.asarray(images)
    scale = 255.0 if array.dtype == np.uint8 else 1.0
    flat = array.reshape(len(array), -1).astype(np.float64) / scale
    n, pixels = flat.shape
    if n < 2:
        return math.nan
    gram = flat @ flat.T
    sq = np.diag(gram)
    d2 = np.clip(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0, None)
    upper = np.triu_indices(n, k=1)
    return float(np.sqrt(d2[upper] / pixels).mean())


def _npz_shape(archive: Any, name: str) -> tuple[int, ...]:
    """Shape of array ``name`` of an open ``.npz``, read from its header alone (the images of a
    chunk can be gigabytes; they need not be decompressed to be counted)."""
    with archive.zip.open(f"{name}.npy") as member:
        version = np.lib.format.read_magic(member)
        if version == (1, 0):
            shape, _, _ = np.lib.format.read_array_header_1_0(member)
        else:
            shape, _, _ = np.lib.format.read_array_header_2_0(member)
    return tuple(int(n) for n in shape)


def evaluate_generations(
    generations: pd.DataFrame,
    reference: CopyReference | None = None,
    truth: pd.DataFrame | None = None,
    progress: TextIO | None = None,
) -> pd.DataFrame:
    """Per (prompt, strategy): diversity and, with ``reference``, copy detection.

    ``generations`` is the gathered index (``chunk`` names each row's ``.npz``). Copy
    columns: per seed the nearest training image id and similarity, the share of seeds above
    the threshold (``copy_rate``), the most frequent nearest image, and on the demo
    (``truth``) the share of seeds that copy the prompt's own planted image
    (``planted_copy_rate``) and whose nearest training image is that planted image whatever
    the similarity (``planted_nearest_rate``); both NaN for prompts that are not planted.
    Skipped rows keep NaNs.
    """
    table = generations.copy()
    n = len(table)
    table["diversity"] = np.full(n, np.nan)
    for column in ("copy_rate", "max_similarity", "mean_similarity", "top_train_share"):
        table[column] = np.full(n, np.nan)
    table["planted_copy_rate"] = np.full(n, np.nan)
    table["planted_nearest_rate"] = np.full(n, np.nan)
    table["n_copies"] = np.zeros(n, dtype=np.int64)
    table["top_train_id"] = pd.Series([None] * n, dtype=object)
    table["nearest_train_ids"] = pd.Series([None] * n, dtype=object)
    table["nearest_similarities"] = pd.Series([None] * n, dtype=object)
    if n == 0:
        return table
    planted_rows: dict[str, set[int]] = {}
    if truth is not None and reference is not None and "image_index" in truth.columns:
        planted_rows = {
            pid: {int(i)} for pid, i in zip(truth["prompt_id"], truth["image_index"], strict=True)
        }
    embedder = Embedder(reference.spec) if reference is not None else None
    train_ids = reference.index["train_id"].to_numpy() if reference is not None else None
    members = (
        [set(np.asarray(m).tolist()) for m in reference.index["image_indices"]]
        if reference is not None
        else None
    )
    generated = table.index[table["status"] == "generated"]
    bar = tqdm(
        total=len(generated), unit="row", desc="evaluate", file=progress, disable=not progress
    )
    for chunk, rows in table.loc[generated].groupby("chunk", sort=True):
        with np.load(chunk, allow_pickle=False) as archive:
            images = archive["images"]
        for i in rows.index:
            seeds = images[int(table.at[i, "row"])]
            table.at[i, "diversity"] = mean_pairwise_rms(seeds)
            bar.update(1)
            if reference is None:
                continue
            sims, nearest = _nearest(embedder, seeds, reference)
            copies = sims > reference.threshold
            ids = train_ids[nearest]
            values, counts = np.unique(ids, return_counts=True)
            top = int(np.argmax(counts))
            table.at[i, "copy_rate"] = float(copies.mean())
            table.at[i, "n_copies"] = int(copies.sum())
            table.at[i, "max_similarity"] = float(sims.max())
            table.at[i, "mean_similarity"] = float(sims.mean())
            table.at[i, "top_train_id"] = str(values[top])
            table.at[i, "top_train_share"] = float(counts[top] / len(ids))
            table.at[i, "nearest_train_ids"] = [str(x) for x in ids]
            table.at[i, "nearest_similarities"] = sims.astype(np.float64).tolist()
            own = planted_rows.get(table.at[i, "prompt_id"])
            if own is not None:
                hits = [bool(own & members[r]) for r in nearest]
                table.at[i, "planted_copy_rate"] = float(np.mean(np.asarray(hits) & copies))
                table.at[i, "planted_nearest_rate"] = float(np.mean(hits))
    bar.close()
    return table


def _nearest(
    embedder: Embedder, images: np.ndarray, reference: CopyReference
) -> tuple[np.ndarray, np.ndarray]:
    return nearest_neighbours(embedder(list(images)), reference.embeddings, embedder.device)


def bootstrap_ci(
    values: np.ndarray, n_resamples: int, seed: int, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (resampling the values); NaNs when empty."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1 or n_resamples < 1:
        return float(values.mean()), float(values.mean())
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_resamples, values.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1.0 - alpha))


def summarize(
    evaluation: pd.DataFrame,
    strategies: Sequence[str],
    n_bootstrap: int = 1000,
    seed: int = 0,
    memorization_threshold: float | None = None,
) -> pd.DataFrame:
    """Strategy × group table: mean diversity with a bootstrap 95 % CI, paired change vs
    ``original``, mean d_mem, share still above the memorization threshold, copy rate.

    Groups: ``all`` and, when some but not all prompts are planted (the demo), ``planted``
    and ``other``.
    Bootstraps resample prompts, seeded by (seed, strategy, group, quantity).
    """
    groups = {"all": evaluation}
    if len(evaluation) and evaluation["planted"].any() and not evaluation["planted"].all():
        groups["planted"] = evaluation[evaluation["planted"]]
        groups["other"] = evaluation[~evaluation["planted"]]
    records = []
    for group, frame in groups.items():
        base = frame[(frame["strategy"] == "original") & (frame["status"] == "generated")]
        base_div = dict(zip(base["prompt_id"], base["diversity"], strict=True))
        for strategy in strategies:
            rows = frame[frame["strategy"] == strategy]
            done = rows[rows["status"] == "generated"]
            div = done["diversity"].to_numpy(dtype=np.float64)
            delta = np.array(
                [
                    d - base_div[p]
                    for p, d in zip(done["prompt_id"], div, strict=True)
                    if p in base_div
                ]
            )
            lo, hi = bootstrap_ci(div, n_bootstrap, derived_seed(seed, strategy, group, "div"))
            dlo, dhi = bootstrap_ci(delta, n_bootstrap, derived_seed(seed, strategy, group, "d"))
            copy = done["copy_rate"].to_numpy(dtype=np.float64)
            clo, chi = bootstrap_ci(copy, n_bootstrap, derived_seed(seed, strategy, group, "c"))
            d_mem = done["d_mem"].to_numpy(dtype=np.float64)
            still = (
                float(np.mean(d_mem > memorization_threshold))
                if memorization_threshold is not None and d_mem.size
                else math.nan
            )
            records.append(
                {
                    "strategy": strategy,
                    "group": group,
                    "n_prompts": int(len(done)),
                    "n_skipped": int(len(rows) - len(done)),
                    "diversity_mean": _mean(div),
                    "diversity_ci_low": lo,
                    "diversity_ci_high": hi,
                    "diversity_change_mean": _mean(delta),
                    "diversity_change_ci_low": dlo,
                    "diversity_change_ci_high": dhi,
                    "d_mem_mean": _mean(d_mem),
                    "still_memorized_rate": still,
                    "copy_rate": _mean(copy),
                    "copy_rate_ci_low": clo,
                    "copy_rate_ci_high": chi,
                    "planted_copy_rate": _mean(done["planted_copy_rate"].to_numpy(np.float64)),
                    "planted_nearest_rate": _mean(
                        done["planted_nearest_rate"].to_numpy(np.float64)
                    ),
                    "max_similarity_mean": _mean(done["max_similarity"].to_numpy(np.float64)),
                }
            )
    return pd.DataFrame(records)


def _mean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else math.nan


def summary_document(
    summary: pd.DataFrame,
    evaluation: pd.DataFrame,
    selection: pd.DataFrame,
    generation_stats: Sequence[Mapping[str, Any]],
    reference: CopyReference | None,
    copy_skip_reason: str | None,
    memorization_threshold: float | None,
    n_bootstrap: int,
) -> dict[str, Any]:
    """``summary.json``: the table in nested form plus counts, skips, copy and speed facts."""
    skipped = evaluation[evaluation["status"] == "skipped"] if len(evaluation) else evaluation
    skips: dict[str, dict[str, int]] = {}
    for (strategy, reason), n in (
        skipped.groupby(["strategy", "reason"]).size().items() if len(skipped) else []
    ):
        skips.setdefault(strategy, {})[reason] = int(n)
    images = sum(int(s.get("generation_images") or 0) for s in generation_stats)
    seconds = sum(float(s.get("generation_seconds") or 0.0) for s in generation_stats)
    table = {
        group: {
            row["strategy"]: {
                k: json_safe(v) for k, v in row.items() if k not in ("strategy", "group")
            }
            for row in frame.to_dict("records")
        }
        for group, frame in summary.groupby("group", sort=False)
    }
    doc: dict[str, Any] = {
        "n_prompts": int(len(selection)),
        "selection": {k: int(v) for k, v in selection["reason"].value_counts().items()}
        if len(selection)
        else {},
        "n_rows": int(len(evaluation)),
        "n_generated_rows": int((evaluation["status"] == "generated").sum())
        if len(evaluation)
        else 0,
        "skipped": skips,
        "diversity": "mean over pairs of ||a - b||_2 / sqrt(pixels), grayscale in [0, 1]",
        "bootstrap_resamples": n_bootstrap,
        "memorization_threshold": memorization_threshold,
        "strategies": table,
        "generation": {
            "images": images,
            "seconds": seconds,
            "images_per_s": images / seconds if seconds > 0 else None,
            "devices": sorted({str(s.get("device")) for s in generation_stats}),
            "chunks": len(generation_stats),
        },
    }
    if not len(selection):
        doc["note"] = (
            "no prompt was selected for mitigation (no memorized prompt passed the filter)"
        )
    if reference is not None:
        doc["copy_detection"] = {
            "embedding": dataclasses.asdict(reference.spec),
            "n_train": int(len(reference.embeddings)),
            "n_heldout": int(len(reference.heldout_similarity)),
            "percentile": reference.percentile,
            "threshold": reference.threshold,
        }
    else:
        doc["copy_detection"] = {"skipped": copy_skip_reason or "no training images configured"}
    return doc


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def figure_prompts(evaluation: pd.DataFrame, n_prompts: int) -> list[str]:
    """Prompts shown in Fig. 4: most strategies generated first, then highest original d_mem."""
    if not len(evaluation) or n_prompts < 1:
        return []
    done = evaluation[evaluation["status"] == "generated"]
    original = done[done["strategy"] == "original"].set_index("prompt_id")["d_mem"]
    counts = done.groupby("prompt_id").size()
    keys = sorted(
        counts.index,
        key=lambda p: (-int(counts[p]), -float(original.get(p, -math.inf)), p),
    )
    return keys[:n_prompts]


def plot_mitigation_grid(
    evaluation: pd.DataFrame,
    png: str | Path,
    strategies: Sequence[str],
    n_prompts: int = 2,
    n_seeds: int = 6,
    training_image: Callable[[str], np.ndarray] | None = None,
    copy_threshold: float | None = None,
) -> None:
    """Fig. 4: per shown prompt, one row per strategy and a row of nearest training images.

    Columns are the first ``n_seeds`` seeds (the same x_T in every row). The last row shows,
    for each seed, the training image nearest to the *original* prompt's generation (with its
    similarity; red frame = copy), when copy detection ran (``training_image`` maps a
    train_id to pixels).
    """
    use_style()
    shown = figure_prompts(evaluation, n_prompts)
    if not shown:
        fig, ax = plt.subplots(figsize=(6, 1.5))
        ax.axis("off")
        ax.text(0.5, 0.5, "no mitigated prompt to show", ha="center", va="center")
        save_figure(fig, png)
        return
    blocks = []
    for pid in shown:
        rows = evaluation[(evaluation["prompt_id"] == pid) & (evaluation["status"] == "generated")]
        rows = rows.set_index("strategy").reindex(
            [s for s in strategies if s in set(rows["strategy"])]
        )
        blocks.append((pid, rows))
    k = max(1, min(n_seeds, int(max(r["n_seeds"].max() for _, r in blocks))))
    with_nearest = training_image is not None
    heights = [len(r) + int(with_nearest) for _, r in blocks]
    fig = plt.figure(
        figsize=(1.05 * k + 2.6, 1.05 * sum(heights) + 0.45 * len(blocks)), layout="constrained"
    )
    subfigs = np.atleast_1d(fig.subfigures(len(blocks), 1, height_ratios=heights))
    cache: dict[str, np.ndarray] = {}
    for sub, (pid, rows) in zip(subfigs, blocks, strict=True):
        axes = np.atleast_2d(sub.subplots(len(rows) + int(with_nearest), k, squeeze=False))
        text = str(rows["text"].iloc[0])
        short = text if len(text) <= 110 else text[:107] + "..."
        sub.suptitle(f"{short}\n({rows['selection_reason'].iloc[0]}, prompt {pid})", fontsize=7)
        for r, (strategy, row) in enumerate(rows.iterrows()):
            chunk = row["chunk"]
            if chunk not in cache:
                with np.load(chunk, allow_pickle=False) as archive:
                    cache[chunk] = archive["images"]
            images = cache[chunk][int(row["row"])]
            for c in range(k):
                ax = axes[r, c]
                ax.imshow(images[c], cmap="gray", vmin=0, vmax=255)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"seed {c}", fontsize=7)
            label = f"{strategy}\ndiv {row['diversity']:.3f}"
            if np.isfinite(row.get("copy_rate", np.nan)):
                label += f"\ncopy {100 * row['copy_rate']:.0f} %"
            axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=7)
        if with_nearest:
            r = len(rows)
            original = rows.loc["original"] if "original" in rows.index else rows.iloc[0]
            ids = original.get("nearest_train_ids")
            sims = original.get("nearest_similarities")
            for c in range(k):
                ax = axes[r, c]
                ax.set_xticks([])
                ax.set_yticks([])
                if ids is None or c >= len(ids):
                    ax.axis("off")
                    continue
                ax.imshow(training_image(str(ids[c])), cmap="gray", vmin=0, vmax=1)
                copied = copy_threshold is not None and float(sims[c]) > copy_threshold
                ax.set_xlabel(f"sim {float(sims[c]):.3f}", fontsize=6)
                if copied:
                    for spine in ax.spines.values():
                        spine.set_edgecolor(MEMORIZED_COLOR)
                        spine.set_linewidth(2)
            axes[r, 0].set_ylabel(
                "nearest training\n(to original)", rotation=0, ha="right", va="center", fontsize=7
            )
    save_figure(fig, png)


def plot_mitigation_diversity(
    evaluation: pd.DataFrame,
    summary: pd.DataFrame,
    png: str | Path,
    strategies: Sequence[str],
    memorization_threshold: float | None = None,
) -> None:
    """Diversity (per prompt and mean with 95 % CI), mitigated d_mem and copy rate per strategy."""
    use_style()
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), constrained_layout=True)
    present = [s for s in strategies if s in set(summary.get("strategy", pd.Series([])))]
    x = {s: i for i, s in enumerate(present)}
    done = evaluation[evaluation["status"] == "generated"] if len(evaluation) else evaluation
    overall = summary[summary["group"] == "all"].set_index("strategy") if len(summary) else None
    for ax, column, title in (
        (axes[0], "diversity", "diversity (mean pairwise RMS L2)"),
        (axes[1], "d_mem", "d_mem of the mitigated prompt"),
    ):
        for planted, color, name in (
            (True, MARKER_COLOR, "planted"),
            (False, ORDINARY_COLOR, "other"),
        ):
            part = done[done["planted"] == planted] if len(done) else done
            if not len(part):
                continue
            xs = np.array([x[s] for s in part["strategy"]], dtype=float)
            jitter = (
                np.array([derived_seed(p) % 1000 for p in part["prompt_id"]]) / 1000 - 0.5
            ) * 0.3
            ax.scatter(xs + jitter, part[column], s=9, color=color, alpha=0.6, label=name)
            # Thin lines join one prompt's strategies: the comparison is paired.
            for _, one in part.assign(_x=xs + jitter).groupby("prompt_id"):
                one = one.sort_values("_x")
                ax.plot(one["_x"], one[column], color=color, alpha=0.2, lw=0.6)
        if overall is not None and column == "diversity":
            means = overall.loc[present, "diversity_mean"].to_numpy()
            low = overall.loc[present, "diversity_ci_low"].to_numpy()
            high = overall.loc[present, "diversity_ci_high"].to_numpy()
            ax.errorbar(
                range(len(present)),
                means,
                yerr=[means - low, high - means],
                fmt="_",
                color="black",
                ms=14,
                capsize=3,
                label="mean, 95 % CI",
            )
        if column == "d_mem" and memorization_threshold is not None:
            ax.axhline(
                memorization_threshold,
                color=MEMORIZED_COLOR,
                ls="--",
                lw=1,
                label="memorization threshold",
            )
        ax.set_xticks(range(len(present)), present, rotation=30)
        ax.set_title(title)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best")
    ax = axes[2]
    if overall is not None and np.isfinite(overall["copy_rate"]).any():
        rates = 100 * overall.loc[present, "copy_rate"].to_numpy()
        low = 100 * overall.loc[present, "copy_rate_ci_low"].to_numpy()
        high = 100 * overall.loc[present, "copy_rate_ci_high"].to_numpy()
        nearest = 100 * overall.loc[present, "planted_nearest_rate"].to_numpy(np.float64)
        xs = np.arange(len(present), dtype=float)
        width = 0.4 if np.isfinite(nearest).any() else 0.8
        shift = width / 2 if np.isfinite(nearest).any() else 0.0
        ax.bar(xs - shift, rates, width, color=MEMORIZED_COLOR, alpha=0.8, label="copy")
        ax.errorbar(
            xs - shift,
            rates,
            yerr=[rates - low, high - rates],
            fmt="none",
            color="black",
            capsize=3,
        )
        top = float(np.nanmax(high))
        if np.isfinite(nearest).any():  # the demo: does the nearest image match the planted one?
            ax.bar(
                xs + shift,
                nearest,
                width,
                color=MARKER_COLOR,
                alpha=0.8,
                label="planted prompts: nearest is\ntheir own planted image",
            )
            top = max(top, float(np.nanmax(nearest)))
            ax.legend(fontsize=7, loc="upper left")
        ax.set_ylim(0, max(5.0, 1.15 * top))
        ax.set_ylabel("generations (%)")
        ax.set_xticks(range(len(present)), present, rotation=30)
        ax.set_title("copy rate (95 % CI over prompts)")
    else:
        ax.axis("off")
        ax.text(
            0.5,
            0.5,
            "copy detection skipped\n(no training images configured)",
            ha="center",
            va="center",
        )
    save_figure(fig, png)
