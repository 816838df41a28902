"""Token attribution engine: which tokens of a memorized prompt drive its memorization score.

**Gradient significance (Wen et al.).** For prompt p with conditional embedding e_p (the text
encoder output, [L, D]) and sampling step t of the guided DDIM trajectory x_t^j (the same
trajectories and x_T as the scoring stage)::

    L_t(e_p) = ‖ (ε(x_t^j, e_p) − ε(x_t^j, e_∅))_{j=1..n} ‖₂     (one norm over all n generations)
    significance(k) = 1/|W| · Σ_{t∈W} ‖∂L_t/∂e_p[k]‖₂             (k = token position)

The gradient is taken explicitly with respect to the *conditional* embedding: e_p is a leaf
tensor that enters only the conditional UNet call; the unconditional prediction is computed
without gradient, and x_t is detached (it comes from the guided trajectory, so the derivative
holds the trajectory fixed). Wen et al.'s public code indexes the wrong half of the guidance
batch and so differentiates the unconditional branch; the tests compare our gradient with a
finite difference of the conditional embedding and show that the unconditional one differs.
Several prompts share one backward pass: each prompt's L depends only on its own embedding, so
the gradient of the sum of the L's is every prompt's own gradient.

**Words.** The model's own tokenization, with character offsets (:func:`encode_with_offsets`),
locates every piece; pieces are merged into words (:mod:`memaudit.attribution.words`) and the
token, word and per-prompt tables are built (:func:`memaudit.attribution.tables.build_tables`).

**Occlusion.** Each ranked word is deleted from the prompt text and the variants are re-scored
with the scoring engine over the same step window; drop = d_mem(original) − d_mem(variant).

The functions here are snakemake-free and run the model; the tables, statistics and figures
live in modules that need no model, for the CPU rules.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memaudit.atomic import write_atomically
from memaudit.attribution.methods import (
    extra_method_scores,
    frozen_parameters,
    method_requirements,
)
from memaudit.attribution.spec import METHODS
from memaudit.attribution.tables import (
    METHOD_WORD_COLUMNS,
    OCCLUSION_COLUMNS,
    PROMPT_COLUMNS,
    TOKEN_COLUMNS,
    WORD_COLUMNS,
    AttributionTables,
    build_tables,
)
from memaudit.attribution.words import delete_span
from memaudit.batching import run_halving_batches
from memaudit.diffusion import fresh_scheduler, initial_noise, unet_eps
from memaudit.frames import require_columns, typed_frame
from memaudit.model.loading import AuditModel
from memaudit.scoring.engine import score_prompts
from memaudit.scoring.gather import select_chunk
from memaudit.scoring.spec import ScoringSpec
from memaudit.selection import SELECTION_COLUMNS
from memaudit.text import compile_markers

# --------------------------------------------------------------------------------------------
# Gradient significance
# --------------------------------------------------------------------------------------------


@dataclass
class Significance:
    """Gradient attribution of a batch of P prompts over a window of W steps.

    ``significance`` [P, L]: mean over the window of ‖∂L_t/∂e_p[k]‖₂ per position k;
    ``losses`` [P, W]: L_t, the norm over all generations jointly; ``norms`` [P, n, W]: the
    per-generation norms (their mean is d_mem over the window, as the scoring engine computes);
    ``gradients`` [P, W, L, D]: the gradients themselves, only when asked for (tests, studies).
    """

    significance: np.ndarray
    losses: np.ndarray
    norms: np.ndarray
    gradients: np.ndarray | None = None


def token_significance(
    model: AuditModel,
    cond: torch.Tensor,
    spec: ScoringSpec,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    counters: dict[str, int] | None = None,
    keep_gradients: bool = False,
) -> Significance:
    """Gradient significance of every position of P conditional embeddings ``cond`` [P, L, D].

    ``spec`` gives the trajectory (steps, guidance, generations) and the window; ``noise`` is
    x_T [generations, C, h, w] from :func:`memaudit.diffusion.initial_noise` and ``uncond`` the
    empty prompt's embedding [1, L, D]. The trajectory is the scoring engine's (guided DDIM,
    eta 0, one shared unconditional prediction per generation at the first step). At a window
    step, the conditional prediction is recomputed from a fresh leaf copy of ``cond`` with
    gradient; x_t and the unconditional prediction carry none. ``keep_gradients`` also returns
    the gradients themselves ([P, W, L, D], for checks and studies; memory grows with W).
    """
    # 1. Rows are (prompt, generation) pairs; every prompt starts from the same x_T
    counters = counters if counters is not None else {"unet_calls": 0, "unet_rows": 0}
    cond = cond.detach().to(device=model.device, dtype=model.dtype)
    uncond = uncond.detach().to(device=model.device, dtype=model.dtype)
    n_prompts, n_positions = cond.shape[0], cond.shape[1]
    n_gen = spec.generations
    rows = n_prompts * n_gen
    cond_rows = cond.repeat_interleave(n_gen, dim=0)  # steps before the window need no gradient
    start, stop = spec.window_bounds()
    scheduler = fresh_scheduler(model, spec.steps, model.device)
    latents = noise.to(model.device).repeat(n_prompts, 1, 1, 1) * scheduler.init_noise_sigma
    significance = torch.zeros(n_prompts, n_positions, dtype=torch.float64)
    losses = torch.zeros(n_prompts, stop - start, dtype=torch.float64)
    norms = torch.zeros(n_prompts, n_gen, stop - start, dtype=torch.float64)
    gradients = []

    def count(sample_rows: int) -> None:
        counters["unet_calls"] += 1
        counters["unet_rows"] += sample_rows

    # 2. Walk the guided trajectory up to the window's end, differentiating inside the window
    with frozen_parameters(model.unet):
        for k in range(stop):
            t = scheduler.timesteps[k]
            model_input = scheduler.scale_model_input(latents, t).detach()
            eps_uncond, uncond_rows = _unconditional_eps(
                model, model_input, t, uncond, n_prompts, n_gen, first_step=k == 0
            )
            count(uncond_rows)
            if k >= start:
                eps_cond, grad, loss, per_gen = _conditional_gradient(
                    model, model_input, t, cond, eps_uncond, n_gen
                )
                count(rows)
                counters["backward_rows"] = counters.get("backward_rows", 0) + rows
                significance += grad.double().norm(dim=-1).cpu()
                if keep_gradients:
                    gradients.append(grad.double().cpu())
                losses[:, k - start] = loss.double().cpu()
                norms[:, :, k - start] = per_gen.double().cpu()
            else:
                with torch.no_grad():
                    eps_cond = unet_eps(model, model_input, t, cond_rows)
                count(rows)
            if k + 1 < stop:
                with torch.no_grad():
                    guided = eps_uncond + spec.guidance * (eps_cond - eps_uncond)
                    latents = scheduler.step(guided, t, latents, eta=0.0, return_dict=False)[0]
    # 3. The mean over the window
    significance /= stop - start
    kept = torch.stack(gradients, dim=1).numpy() if keep_gradients else None
    return Significance(significance.numpy(), losses.numpy(), norms.numpy(), kept)


def _unconditional_eps(
    model: AuditModel,
    model_input: torch.Tensor,
    t: torch.Tensor,
    uncond: torch.Tensor,
    n_prompts: int,
    n_gen: int,
    first_step: bool,
) -> tuple[torch.Tensor, int]:
    """ε(x_t, e_∅) of every row, without gradient, and the UNet rows it took.

    At the first step every prompt's x_T^j is the same, so one prediction per generation
    serves all prompts.
    """
    with torch.no_grad():
        if first_step:
            eps = unet_eps(model, model_input[:n_gen], t, uncond.expand(n_gen, -1, -1))
            return eps.repeat(n_prompts, 1, 1, 1), n_gen
        rows = n_prompts * n_gen
        return unet_eps(model, model_input, t, uncond.expand(rows, -1, -1)), rows


def _conditional_gradient(
    model: AuditModel,
    model_input: torch.Tensor,
    t: torch.Tensor,
    cond: torch.Tensor,
    eps_uncond: torch.Tensor,
    n_gen: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ε(x_t, e_p) and ∂L_t/∂e_p at one step, from a fresh leaf copy of ``cond`` [P, L, D].

    Returns (ε of every row [P·n, C, h, w], the gradient [P, L, D], L_t [P], the per-generation
    norms [P, n]), all detached.
    """
    n_prompts = cond.shape[0]
    leaf = cond.clone().requires_grad_(True)
    with torch.enable_grad():
        eps_cond = unet_eps(model, model_input, t, leaf.repeat_interleave(n_gen, dim=0))
        diff = eps_cond - eps_uncond
        loss = diff.reshape(n_prompts, -1).norm(dim=1)  # one norm over all generations
        (grad,) = torch.autograd.grad(loss.sum(), leaf)
    per_gen = diff.detach().flatten(1).norm(dim=1).reshape(n_prompts, n_gen)
    return eps_cond.detach(), grad.detach(), loss.detach(), per_gen


def gradient_pass(
    model: AuditModel,
    input_ids: torch.Tensor,
    spec: ScoringSpec,
    batch_size: int,
    progress: TextIO | None = None,
) -> tuple[Significance, dict[str, Any]]:
    """Significance of every tokenized prompt (``input_ids`` [N, L]), ``batch_size`` prompts
    per backward pass; returns the stacked :class:`Significance` and run statistics.

    On a GPU a batch that runs out of memory is re-run with half as many prompts (kept for the
    rest of the pass); the statistics say how often.
    """
    n = int(input_ids.shape[0])
    start_time = time.perf_counter()
    device = torch.device(model.device)
    on_gpu = device.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
    noise = initial_noise(model.latent_shape, spec.generations, spec.seed, device)
    with torch.no_grad():
        uncond = model.encode([""])
    counters = {"unet_calls": 0, "unet_rows": 0}
    batch = max(1, min(int(batch_size), n)) if n else int(batch_size)
    initial_batch = batch
    bar = tqdm(total=n, unit="prompt", desc="gradient", file=progress, disable=progress is None)

    def step(position: int, size: int) -> Significance:
        with torch.no_grad():
            cond = model.encode_ids(input_ids[position : position + size])
        return token_significance(model, cond, spec, noise, uncond, counters)

    parts, batch, halvings = run_halving_batches(
        n,
        batch,
        step,
        "prompts per backward pass",
        "out of GPU memory attributing a single prompt; use a smaller model dtype, fewer "
        "generations or a shorter attribution.window",
        progress,
        bar,
    )
    bar.close()
    start, stop = spec.window_bounds()
    if parts:
        result = Significance(
            *(
                np.concatenate([getattr(p, f) for p in parts])
                for f in ("significance", "losses", "norms")
            )
        )
    else:
        length = int(input_ids.shape[1]) if input_ids.ndim == 2 else 0
        result = Significance(
            np.zeros((0, length)),
            np.zeros((0, stop - start)),
            np.zeros((0, spec.generations, stop - start)),
        )
    seconds = time.perf_counter() - start_time
    stats = {
        "n_prompts": n,
        "seconds": seconds,
        "seconds_per_prompt": seconds / n if n else None,
        "batch_size_initial": initial_batch,
        "batch_size_final": batch,
        "oom_halvings": halvings,
        "unet_calls": counters["unet_calls"],
        "unet_rows": counters["unet_rows"],
        "backward_rows": counters.get("backward_rows", 0),
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None,
    }
    return result, stats


# --------------------------------------------------------------------------------------------
# Tokenization with offsets
# --------------------------------------------------------------------------------------------


def encode_with_offsets(model: AuditModel, texts: Sequence[str]) -> dict[str, Any]:
    """The model's own tokenization (padded/truncated to ``max_length``) with offsets and
    special-token masks, plus every prompt's untruncated pieces (special tokens left out).

    Needs a fast (Rust ``tokenizers``) tokenizer: only those report character offsets.
    """
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"token attribution needs a fast tokenizer with an offset mapping; the model's "
            f"tokenizer {type(tokenizer).__name__} is not one (load it as a "
            "PreTrainedTokenizerFast)"
        )
    texts = list(texts)
    if not texts:
        return {"input_ids": torch.zeros((0, model.max_length), dtype=torch.long)}
    seen = model.tokenize(texts, return_offsets_mapping=True, return_special_tokens_mask=True)
    full = tokenizer(
        texts,
        add_special_tokens=False,
        return_offsets_mapping=True,
        truncation=False,
        verbose=False,
    )
    attention = seen.get("attention_mask")
    return {
        "input_ids": seen["input_ids"],
        "offsets": seen["offset_mapping"].tolist(),
        "special": seen["special_tokens_mask"].bool().tolist(),
        "attention": (
            attention.bool().tolist()
            if attention is not None
            else [[True] * seen["input_ids"].shape[1]] * len(texts)
        ),
        "full_offsets": [list(map(tuple, o)) for o in full["offset_mapping"]],
    }


# --------------------------------------------------------------------------------------------
# Occlusion
# --------------------------------------------------------------------------------------------


def occlusion_table(
    prompts: pd.DataFrame,
    words: pd.DataFrame,
    score: Callable[[list[str], list[str]], np.ndarray],
) -> pd.DataFrame:
    """Drop in d_mem when each ranked word (not punctuation, not truncated) is deleted.

    ``score(ids, texts)`` returns d_mem for each text (the scoring engine over the attribution
    window, in batches); it is called once with every prompt's original text and all its
    variants, so originals and variants come from one engine run.
    """
    text_of = dict(zip(prompts["prompt_id"].astype(str), prompts["text"].astype(str), strict=True))
    candidates = words[~words["is_punct"] & ~words["truncated"]]
    ids, texts, rows = [], [], []
    for pid in prompts["prompt_id"].astype(str):
        ids.append(f"{pid}#original")
        texts.append(text_of[pid])
    for r in candidates.itertuples(index=False):
        text = text_of[r.prompt_id]
        variant = delete_span(text, int(r.start), int(r.end))
        ids.append(f"{r.prompt_id}#{int(r.word_index)}")
        texts.append(variant)
        rows.append(
            {
                "prompt_id": r.prompt_id,
                "word_index": int(r.word_index),
                "text": r.text,
                "is_marker": bool(r.is_marker),
                "is_trigger": bool(r.is_trigger),
                "variant": variant,
            }
        )
    if not rows:
        return typed_frame([], OCCLUSION_COLUMNS)
    values = np.asarray(score(ids, texts), dtype=np.float64)
    if values.shape != (len(texts),):
        raise ValueError(f"the occlusion scorer returned {values.shape} values for {len(texts)}")
    original = dict(zip(prompts["prompt_id"].astype(str), values[: len(prompts)], strict=True))
    for row, value in zip(rows, values[len(prompts) :], strict=True):
        row["d_mem_original"] = float(original[row["prompt_id"]])
        row["d_mem_variant"] = float(value)
        row["drop"] = row["d_mem_original"] - row["d_mem_variant"]
    return typed_frame(rows, OCCLUSION_COLUMNS)


def attribute_prompts(
    model: AuditModel,
    prompts: pd.DataFrame,
    spec: ScoringSpec,
    batch_size: int,
    markers: Sequence[str],
    progress: TextIO | None = None,
    methods: Sequence[str] = METHODS,
    ig_steps: int = 16,
    neutral_token: str | None = None,
) -> tuple[AttributionTables, dict[str, Any]]:
    """Gradient attribution, word merging, occlusion and the other ``methods`` for a selection
    of prompts.

    ``spec`` is the scoring engine's trajectory with the *attribution* window
    (:meth:`AttributionSpec.scoring_spec`); ``batch_size`` counts prompts per backward pass;
    ``markers`` are the configured marker regexes; ``methods``, ``ig_steps`` and
    ``neutral_token`` as in :mod:`.methods` (gradient always runs: it builds the word tables).
    Returns the tables (token, word, occlusion, per prompt, method scores) and run statistics
    with the cost of each method.
    """
    require_columns(prompts, tuple(SELECTION_COLUMNS), "selected prompts table")
    prompts = prompts.reset_index(drop=True)
    if prompts["prompt_id"].duplicated().any():
        raise ValueError(
            f"duplicate prompt_id in the selected prompts, e.g. "
            f"{prompts.loc[prompts['prompt_id'].duplicated(), 'prompt_id'].iloc[0]!r}"
        )
    patterns = compile_markers(list(markers))
    texts = prompts["text"].astype(str).tolist()
    encoded = encode_with_offsets(model, texts)
    problems = method_requirements(model, methods)
    if problems:
        raise ValueError("attribution: " + "; ".join(problems))
    significance, gradient_stats = gradient_pass(
        model, encoded["input_ids"], spec, batch_size, progress
    )
    if not texts:
        empty = AttributionTables(
            typed_frame([], TOKEN_COLUMNS),
            typed_frame([], WORD_COLUMNS),
            typed_frame([], OCCLUSION_COLUMNS),
            typed_frame([], PROMPT_COLUMNS),
            typed_frame([], METHOD_WORD_COLUMNS),
        )
        occlusion_stats = {"n_prompts": 0, "n_variants": 0, "seconds": 0.0}
        return empty, _run_stats(model, spec, batch_size, gradient_stats, occlusion_stats, {})
    tokens, words, per_prompt = build_tables(
        prompts,
        encoded,
        significance.significance,
        significance.losses,
        significance.norms,
        model.tokenizer.convert_ids_to_tokens,
        patterns,
    )
    occlusion_stats: dict[str, Any] = {}

    def score(ids: list[str], variant_texts: list[str]) -> np.ndarray:
        table, stats = score_prompts(model, ids, variant_texts, spec, progress)
        occlusion_stats.update(stats)
        return table["d_mem"].to_numpy()

    start = time.perf_counter()
    if "occlusion_delete" in methods:
        occlusion = occlusion_table(prompts, words, score)
    else:
        occlusion = typed_frame([], OCCLUSION_COLUMNS)
    seconds = time.perf_counter() - start
    n_variants = len(occlusion)
    occlusion_stats = {
        "n_prompts": len(prompts),
        "n_variants": n_variants,
        "seconds": seconds,
        "seconds_per_prompt": seconds / len(prompts),
        "unet_calls": occlusion_stats.get("unet_calls", 0),
        "unet_rows": occlusion_stats.get("unet_rows", 0),
        "batch_size_final": occlusion_stats.get("batch_size_final"),
    }
    method_words, method_stats = extra_method_scores(
        model,
        encoded["input_ids"],
        prompts["prompt_id"].astype(str).tolist(),
        words,
        tokens,
        spec,
        methods,
        batch_size,
        ig_steps,
        neutral_token,
        progress,
    )
    return (
        AttributionTables(tokens, words, occlusion, per_prompt, method_words),
        _run_stats(model, spec, batch_size, gradient_stats, occlusion_stats, method_stats),
    )


def _run_stats(
    model: AuditModel,
    spec: ScoringSpec,
    batch_size: int,
    gradient: dict[str, Any],
    occlusion: dict[str, Any],
    methods: dict[str, Any],
) -> dict[str, Any]:
    start, stop = spec.window_bounds()
    return {
        "device": str(model.device),
        "dtype": str(model.dtype).replace("torch.", ""),
        "window": [start, stop],
        "scheduler_steps": spec.steps,
        "generations": spec.generations,
        "guidance": float(spec.guidance),
        "seed": spec.seed,
        "batch_size": batch_size,
        "gradient": gradient,
        "occlusion": occlusion,
        "methods": methods,
    }


def attribute_chunk(
    model: AuditModel,
    prompts: pd.DataFrame,
    index: int,
    total: int,
    spec: ScoringSpec,
    batch_size: int,
    markers: Sequence[str],
    paths: Mapping[str, str | Path],
    progress: TextIO | None = None,
    methods: Sequence[str] = METHODS,
    ig_steps: int = 16,
    neutral_token: str | None = None,
) -> dict[str, Any]:
    """Attribute chunk ``index`` of ``total`` of the selected prompts and write its tables.

    ``paths`` maps tokens, words, occlusion, prompts, methods and stats to files; all are written to
    temporary files first and renamed together at the end, so a job that dies leaves none of
    them. Returns the run statistics (with the chunk position).
    """
    missing = {"tokens", "words", "occlusion", "prompts", "methods", "stats"} - set(paths)
    if missing:
        raise ValueError(f"attribute_chunk needs output paths for {sorted(missing)}")
    chunk = select_chunk(prompts, index, total)
    tables, stats = attribute_prompts(
        model, chunk, spec, batch_size, markers, progress, methods, ig_steps, neutral_token
    )
    stats.update(chunk_index=index, chunk_total=total)
    write_atomically(
        {
            paths["tokens"]: tables.tokens,
            paths["words"]: tables.words,
            paths["occlusion"]: tables.occlusion,
            paths["prompts"]: tables.prompts,
            paths["methods"]: tables.methods,
            paths["stats"]: stats,
        }
    )
    return stats
