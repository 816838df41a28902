"""Token attribution: which tokens of a memorized prompt drive its memorization score.

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

**Word level.** Sub-tokens are merged into word units with the tokenizer's offset mapping: a
unit is a maximal run of pieces whose character spans touch (BERT WordPiece splits ``___`` into
three ``_`` pieces and words into ``##`` pieces), with two refinements: every match of a
configured marker regex is one unit of its own (also when split into pieces or glued to
punctuation or a word), and punctuation-only pieces at the start or end of a run are split off
as punctuation units (kept and flagged, not ranked), so ``Dr.`` is the word ``Dr`` plus ``.``
while ``10:30`` and ``x-ray`` stay one word. A word's score is the sum (or max) of its pieces.

**Occlusion.** Each ranked word is deleted from the prompt text and the variants are re-scored
with the scoring engine over the same step window; drop = d_mem(original) − d_mem(variant).

**Aggregates.** Per word type (and pooled over all markers, and on the demo over all planted
trigger words): the best rank of the type in each prompt, the fraction of prompts where it
ranks first, its share of the prompt's significance, with bootstrap confidence intervals over
prompts (seeded by the type's name, not by row order).

Every function is pure and snakemake-free; :mod:`memaudit.scoring` (hence diffusers and
transformers) is imported only by the functions that run the model, so the table, statistics
and figure functions also work in the light CPU environment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import re
import textwrap
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memaudit.atomic import finite_or_none, json_safe, write_atomically
from memaudit.text import compile_markers, normalize_whitespace

if TYPE_CHECKING:
    from memaudit.models import AuditModel
    from memaudit.scoring import ScoringSpec

WORD_SCORES = ("sum", "max")
# Keys of the config ``attribution`` block that belong to the workflow, not to the results.
WORKFLOW_KEYS = frozenset({"chunks"})
REASONS = ("memorized", "planted", "both")
MARKER_TYPE = "<marker>"
TRIGGER_TYPE = "<trigger>"
METHODS = ("gradient", "occlusion")
TRIGGER_COLOR = "#8e44ad"


# --------------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AttributionSpec:
    """How attribution is computed and summarised (the config ``attribution`` block).

    ``window`` is a half-open range [start, stop) of sampling steps whose gradients are
    averaged (``stop=None``: all scoring steps); ``batch_size`` counts prompts per backward
    pass; ``word_score`` merges piece scores into word scores; ``bootstrap`` resamples (0: no
    confidence intervals) and ``seed`` drive the confidence intervals; word types need
    ``min_prompts`` prompts to be listed.
    """

    window: tuple[int, int | None] = (0, 1)
    batch_size: int = 8
    word_score: str = "sum"
    include_planted: bool = True
    bootstrap: int = 1000
    min_prompts: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        window = self.window
        if not isinstance(window, (list, tuple)) or len(window) != 2:
            raise ValueError(f"attribution.window must be [start, stop], got {window!r}")
        window = tuple(window)
        object.__setattr__(self, "window", window)
        start, stop = window
        if not _is_int(start) or not (stop is None or _is_int(stop)):
            raise ValueError(f"attribution.window bounds must be integers, got {list(window)}")
        if start < 0 or (stop is not None and stop <= start):
            raise ValueError(f"attribution.window {list(window)} must satisfy 0 <= start < stop")
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(
                f"attribution.batch_size must be a positive integer, got {self.batch_size!r}"
            )
        if self.word_score not in WORD_SCORES:
            raise ValueError(
                f"attribution.word_score must be one of {', '.join(WORD_SCORES)}, "
                f"got {self.word_score!r}"
            )
        if not isinstance(self.include_planted, bool):
            raise ValueError(
                f"attribution.include_planted must be true or false, got {self.include_planted!r}"
            )
        if not _is_int(self.bootstrap) or self.bootstrap < 0:
            raise ValueError(
                f"attribution.bootstrap must be a non-negative integer, got {self.bootstrap!r}"
            )
        if not _is_int(self.min_prompts) or self.min_prompts < 1:
            raise ValueError(
                f"attribution.min_prompts must be a positive integer, got {self.min_prompts!r}"
            )
        if not _is_int(self.seed):
            raise ValueError(f"attribution.seed must be an integer, got {self.seed!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> AttributionSpec:
        """Build from a config ``attribution`` block; unknown keys are an error naming them.

        The workflow-level key ``chunks`` is accepted and ignored.
        """
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known - WORKFLOW_KEYS)
        if unknown:
            raise ValueError(
                f"unknown attribution key(s) {unknown}; expected some of {sorted(known)}"
            )
        return cls(**{k: v for k, v in values.items() if k in known})

    def scoring_spec(self, scoring: Mapping[str, Any]) -> ScoringSpec:
        """The scoring engine's settings (steps, guidance, generations, seed, batch size) with
        this attribution window instead of the scoring window."""
        from memaudit.scoring import ScoringSpec

        start, stop = self.window
        steps = scoring.get("steps", ScoringSpec.steps)
        if _is_int(steps) and stop is not None and stop > steps:
            raise ValueError(
                f"attribution.window {list(self.window)} ends after the last sampling step "
                f"(scoring.steps is {steps})"
            )
        values = {k: v for k, v in scoring.items() if k != "window"}
        return ScoringSpec.from_dict({**values, "window": [start, stop]})


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------
# Which prompts
# --------------------------------------------------------------------------------------------

SELECTION_COLUMNS = {
    "prompt_id": object,
    "text": object,
    "reason": object,
    "memorized": bool,
    "planted": bool,
    "d_mem": np.float64,
    "score_rank": "Int64",
    "planted_id": np.int64,
    "trigger_word": object,
    "trigger_word_index": np.int64,
}


def select_prompts(
    memorized: pd.DataFrame,
    ranked: pd.DataFrame | None = None,
    truth: pd.DataFrame | None = None,
    include_planted: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The prompts to attribute, with why each is included; returns (table, counts).

    ``memorized`` is the threshold stage's memorized table (prompt_id, text, d_mem, rank).
    With ``truth`` (the demo's planted captions) and ``include_planted``, every planted prompt
    is added too, with its text, d_mem and rank from ``ranked`` (all scored prompts), so the
    trigger-word ground truth can be evaluated; ``reason`` is memorized, planted or both.
    Planted prompts missing from ``ranked`` are skipped and counted. Sorted by prompt_id.
    """
    _require_columns(memorized, ("prompt_id", "text", "d_mem", "rank"), "memorized prompts table")
    rows = {
        str(r.prompt_id): {
            "prompt_id": str(r.prompt_id),
            "text": str(r.text),
            "memorized": True,
            "planted": False,
            "d_mem": float(r.d_mem),
            "score_rank": int(r.rank),
            "planted_id": -1,
            "trigger_word": None,
            "trigger_word_index": -1,
        }
        for r in memorized.itertuples(index=False)
    }
    counts: dict[str, Any] = {"memorized": len(rows), "planted": 0, "planted_missing": 0}
    use_truth = truth is not None and include_planted
    if use_truth:
        _require_columns(
            truth,
            ("planted_id", "prompt_id", "trigger_word", "trigger_word_index"),
            "truth table",
        )
        if ranked is None:
            raise ValueError("planted prompts need the ranked prompts table (text, d_mem, rank)")
        _require_columns(ranked, ("prompt_id", "text", "d_mem", "rank"), "ranked prompts table")
        scored = ranked.set_index("prompt_id")
        missing = []
        for r in truth.itertuples(index=False):
            pid = str(r.prompt_id)
            if pid not in scored.index:
                missing.append(pid)
                continue
            trigger = r.trigger_word if isinstance(r.trigger_word, str) else None
            row = rows.get(pid)
            if row is None:
                source = scored.loc[pid]
                row = rows[pid] = {
                    "prompt_id": pid,
                    "text": str(source["text"]),
                    "memorized": False,
                    "d_mem": float(source["d_mem"]),
                    "score_rank": int(source["rank"]),
                }
            row.update(
                planted=True,
                planted_id=int(r.planted_id),
                trigger_word=trigger,
                trigger_word_index=int(r.trigger_word_index) if trigger else -1,
            )
        counts["planted"] = int(len(truth) - len(missing))
        counts["planted_missing"] = len(missing)
        counts["planted_missing_ids"] = sorted(missing)[:20]
    for row in rows.values():
        row["reason"] = (
            "both"
            if row["memorized"] and row["planted"]
            else ("memorized" if row["memorized"] else "planted")
        )
    table = _frame(list(rows.values()), SELECTION_COLUMNS)
    table = table.sort_values("prompt_id", kind="mergesort").reset_index(drop=True)
    counts.update(
        attributed=len(table),
        by_reason={r: int((table["reason"] == r).sum()) for r in REASONS},
        planted_included=bool(use_truth),
        planted_with_trigger=int(table["trigger_word"].notna().sum()),
    )
    return table, counts


def trigger_span(text: str, trigger: str, word_index: int) -> tuple[int, int]:
    """Character span of the trigger word in ``text``.

    ``word_index`` counts whitespace-separated words (as the demo truth table does); when it
    does not point at the trigger, the trigger's only whole-word occurrence is used. Raises a
    ValueError when the trigger cannot be located unambiguously.
    """
    words = list(re.finditer(r"\S+", text))
    if 0 <= word_index < len(words):
        match = words[word_index]
        offset = match.group().find(trigger)
        if offset >= 0:
            return match.start() + offset, match.start() + offset + len(trigger)
    hits = list(re.finditer(rf"(?<!\w){re.escape(trigger)}(?!\w)", text))
    if len(hits) != 1:
        raise ValueError(
            f"trigger word {trigger!r} (word index {word_index}) occurs {len(hits)} times in "
            f"the prompt {text[:80]!r}; cannot locate it"
        )
    return hits[0].start(), hits[0].end()


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


@contextmanager
def _frozen_parameters(module: torch.nn.Module):
    """Switch parameter gradients off (only the embedding needs one), restoring them after."""
    flags = [(p, p.requires_grad) for p in module.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


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
    x_T [generations, C, h, w] from :func:`memaudit.scoring.initial_noise` and ``uncond`` the
    empty prompt's embedding [1, L, D]. The trajectory is the scoring engine's (guided DDIM,
    eta 0, one shared unconditional prediction per generation at the first step). At a window
    step, the conditional prediction is recomputed from a fresh leaf copy of ``cond`` with
    gradient; x_t and the unconditional prediction carry none. ``keep_gradients`` also returns
    the gradients themselves ([P, W, L, D], for checks and studies; memory grows with W).
    """
    from memaudit.scoring import fresh_scheduler, unet_eps

    counters = counters if counters is not None else {"unet_calls": 0, "unet_rows": 0}
    cond = cond.detach().to(device=model.device, dtype=model.dtype)
    uncond = uncond.detach().to(device=model.device, dtype=model.dtype)
    n_prompts, n_positions = cond.shape[0], cond.shape[1]
    n_gen = spec.generations
    rows = n_prompts * n_gen
    cond_rows = cond.repeat_interleave(n_gen, dim=0)  # steps before the window need no gradient
    uncond_rows = uncond.expand(rows, -1, -1)
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

    with _frozen_parameters(model.unet):
        for k in range(stop):
            t = scheduler.timesteps[k]
            model_input = scheduler.scale_model_input(latents, t).detach()
            with torch.no_grad():
                if k == 0:  # every prompt starts from the same x_T^j: share e_∅'s prediction
                    eps_uncond = unet_eps(
                        model, model_input[:n_gen], t, uncond.expand(n_gen, -1, -1)
                    )
                    eps_uncond = eps_uncond.repeat(n_prompts, 1, 1, 1)
                    count(n_gen)
                else:
                    eps_uncond = unet_eps(model, model_input, t, uncond_rows)
                    count(rows)
            if k >= start:
                leaf = cond.clone().requires_grad_(True)
                with torch.enable_grad():
                    eps_cond = unet_eps(model, model_input, t, leaf.repeat_interleave(n_gen, dim=0))
                    diff = eps_cond - eps_uncond
                    loss = diff.reshape(n_prompts, -1).norm(dim=1)  # one norm over all generations
                    (grad,) = torch.autograd.grad(loss.sum(), leaf)
                count(rows)
                significance += grad.detach().double().norm(dim=-1).cpu()
                if keep_gradients:
                    gradients.append(grad.detach().double().cpu())
                losses[:, k - start] = loss.detach().double().cpu()
                per_gen = diff.detach().flatten(1).norm(dim=1).double().cpu()
                norms[:, :, k - start] = per_gen.reshape(n_prompts, n_gen)
                eps_cond = eps_cond.detach()
            else:
                with torch.no_grad():
                    eps_cond = unet_eps(model, model_input, t, cond_rows)
                count(rows)
            if k + 1 < stop:
                with torch.no_grad():
                    guided = eps_uncond + spec.guidance * (eps_cond - eps_uncond)
                    latents = scheduler.step(guided, t, latents, eta=0.0, return_dict=False)[0]
    significance /= stop - start
    kept = torch.stack(gradients, dim=1).numpy() if keep_gradients else None
    return Significance(significance.numpy(), losses.numpy(), norms.numpy(), kept)


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
    from memaudit.scoring import initial_noise, run_halving_batches

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
        "peak_gpu_mb": torch.cuda.max_memory_allocated(device) / 2**20 if on_gpu else None,
    }
    return result, stats


# --------------------------------------------------------------------------------------------
# Word units from the tokenizer's offsets
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WordUnit:
    """One word of a prompt: character span [start, end) and the pieces (indices into the
    prompt's untruncated piece list) that make it up."""

    index: int
    start: int
    end: int
    text: str
    pieces: tuple[int, ...]
    is_marker: bool
    is_punct: bool


def marker_spans(text: str, markers: Sequence[re.Pattern[str]]) -> list[tuple[int, int]]:
    """Character spans of every marker match (all patterns), overlapping matches merged."""
    spans = sorted(
        (m.start(), m.end()) for p in markers for m in p.finditer(text) if m.end() > m.start()
    )
    merged: list[tuple[int, int]] = []
    for start, end in spans:
        if merged and start < merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def word_units(
    text: str, offsets: Sequence[tuple[int, int]], markers: Sequence[re.Pattern[str]] = ()
) -> list[WordUnit]:
    """Merge a prompt's pieces (``offsets``: character span per piece, special tokens left
    out) into word units; see the module docstring for the rules.

    Pieces with an empty span belong to no unit.
    """
    spans = marker_spans(text, markers)

    def marker_of(start: int, end: int) -> int | None:
        for m, (m_start, m_end) in enumerate(spans):
            if start < m_end and m_start < end:
                return m
        return None

    # Runs: consecutive pieces that touch (or overlap) and belong to the same marker (or none).
    runs: list[tuple[int | None, list[int]]] = []
    run_end = -1
    for i, (start, end) in enumerate(offsets):
        start, end = int(start), int(end)
        if end <= start:
            continue
        marker = marker_of(start, end)
        if runs and start <= run_end and runs[-1][0] == marker:
            runs[-1][1].append(i)
            run_end = max(run_end, end)
        else:
            runs.append((marker, [i]))
            run_end = end

    units: list[WordUnit] = []

    def add(pieces: list[int], is_marker: bool) -> None:
        start = min(int(offsets[i][0]) for i in pieces)
        end = max(int(offsets[i][1]) for i in pieces)
        piece_text = text[start:end]
        is_punct = not is_marker and not any(ch.isalnum() for ch in piece_text)
        units.append(
            WordUnit(len(units), start, end, piece_text, tuple(pieces), is_marker, is_punct)
        )

    for marker, pieces in runs:
        if marker is not None:
            add(pieces, is_marker=True)
            continue
        wordy = [any(ch.isalnum() for ch in text[offsets[i][0] : offsets[i][1]]) for i in pieces]
        if not any(wordy):
            add(pieces, is_marker=False)
            continue
        first = wordy.index(True)
        last = len(wordy) - 1 - wordy[::-1].index(True)
        for part in (pieces[:first], pieces[first : last + 1], pieces[last + 1 :]):
            if part:
                add(part, is_marker=False)
    return units


def delete_span(text: str, start: int, end: int) -> str:
    """The prompt with the characters [start, end) (one word unit) deleted, whitespace tidied."""
    return normalize_whitespace(text[:start] + " " + text[end:])


# --------------------------------------------------------------------------------------------
# Tables for a set of prompts
# --------------------------------------------------------------------------------------------

TOKEN_COLUMNS = {
    "prompt_id": object,
    "position": np.int64,
    "token_id": np.int64,
    "token": object,
    "start": np.int64,
    "end": np.int64,
    "is_special": bool,
    "is_padding": bool,
    "word_index": np.int64,
    "significance": np.float64,
    "rank": np.float64,
    "share": np.float64,
}
WORD_COLUMNS = {
    "prompt_id": object,
    "word_index": np.int64,
    "text": object,
    "word_type": object,
    "start": np.int64,
    "end": np.int64,
    "n_pieces": np.int64,
    "n_pieces_seen": np.int64,
    "positions": object,
    "is_marker": bool,
    "is_punct": bool,
    "is_trigger": bool,
    "truncated": bool,
    "score_sum": np.float64,
    "score_max": np.float64,
}
OCCLUSION_COLUMNS = {
    "prompt_id": object,
    "word_index": np.int64,
    "text": object,
    "is_marker": bool,
    "is_trigger": bool,
    "variant": object,
    "d_mem_original": np.float64,
    "d_mem_variant": np.float64,
    "drop": np.float64,
}
PROMPT_COLUMNS = {
    "prompt_id": object,
    "text": object,
    "reason": object,
    "memorized": bool,
    "planted": bool,
    "d_mem": np.float64,
    "d_mem_window": np.float64,
    "losses": object,
    "n_positions": np.int64,
    "n_content_tokens": np.int64,
    "n_special": np.int64,
    "n_padding": np.int64,
    "n_pieces_total": np.int64,
    "n_words": np.int64,
    "n_words_truncated": np.int64,
    "truncated": bool,
    "n_markers": np.int64,
    "n_markers_truncated": np.int64,
    "trigger_word": object,
    "trigger_truncated": bool,
    "special_share": np.float64,
}


@dataclass
class AttributionTables:
    """The four tables of one set of prompts (see :func:`attribute_prompts`)."""

    tokens: pd.DataFrame
    words: pd.DataFrame
    occlusion: pd.DataFrame
    prompts: pd.DataFrame


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


def build_tables(
    prompts: pd.DataFrame,
    encoded: Mapping[str, Any],
    significance: Significance,
    tokens_of: Callable[[list[int]], list[str]],
    markers: Sequence[re.Pattern[str]],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Token, word and per-prompt tables from the tokenization and the significance.

    ``prompts`` is the selection (prompt_id, text, reason, ... , trigger_word,
    trigger_word_index), in the row order of ``encoded`` and ``significance``;
    ``tokens_of`` maps ids to token strings. Returns (tokens, words, per prompt).
    """
    token_rows: list[dict[str, Any]] = []
    word_rows: list[dict[str, Any]] = []
    prompt_rows: list[dict[str, Any]] = []
    for i, row in enumerate(prompts.itertuples(index=False)):
        pid, text = str(row.prompt_id), str(row.text)
        ids = encoded["input_ids"][i].tolist()
        offsets = encoded["offsets"][i]
        padding = [not a for a in encoded["attention"][i]]
        special = [s and not p for s, p in zip(encoded["special"][i], padding, strict=True)]
        content = [k for k in range(len(ids)) if not special[k] and not padding[k]]
        full = encoded["full_offsets"][i]
        if len(content) > len(full) or any(
            tuple(offsets[k]) != tuple(full[j]) for j, k in enumerate(content)
        ):
            raise ValueError(
                f"prompt {pid}: the truncated and untruncated tokenizations disagree (the "
                "tokenizer's pieces are not a prefix of each other); cannot locate words"
            )
        position_of = dict(enumerate(content))  # untruncated piece index -> position seen
        units = word_units(text, full, markers)
        word_of_piece = {p: u.index for u in units for p in u.pieces}
        sig = significance.significance[i]
        content_total = float(sig[content].sum()) if content else 0.0
        content_rank = pd.Series(sig[content]).rank(ascending=False, method="min").tolist()
        rank_of = dict(zip(content, content_rank, strict=True))
        token_strings = tokens_of(ids)
        piece_of_position = {k: j for j, k in position_of.items()}
        for k, token_id in enumerate(ids):
            piece = piece_of_position.get(k)
            token_rows.append(
                {
                    "prompt_id": pid,
                    "position": k,
                    "token_id": int(token_id),
                    "token": token_strings[k],
                    "start": int(offsets[k][0]),
                    "end": int(offsets[k][1]),
                    "is_special": special[k],
                    "is_padding": padding[k],
                    "word_index": word_of_piece.get(piece, -1) if piece is not None else -1,
                    "significance": float(sig[k]),
                    "rank": rank_of.get(k, math.nan),
                    "share": float(sig[k]) / content_total
                    if k in rank_of and content_total
                    else math.nan,
                }
            )
        trigger = row.trigger_word if isinstance(row.trigger_word, str) else None
        trigger_at = trigger_span(text, trigger, int(row.trigger_word_index)) if trigger else None
        trigger_seen = False
        for unit in units:
            seen_positions = [position_of[p] for p in unit.pieces if p in position_of]
            scores = sig[seen_positions] if seen_positions else np.zeros(0)
            is_trigger = bool(
                trigger_at and unit.start < trigger_at[1] and trigger_at[0] < unit.end
            )
            trigger_seen |= is_trigger and bool(seen_positions)
            word_rows.append(
                {
                    "prompt_id": pid,
                    "word_index": unit.index,
                    "text": unit.text,
                    "word_type": unit.text.casefold(),
                    "start": unit.start,
                    "end": unit.end,
                    "n_pieces": len(unit.pieces),
                    "n_pieces_seen": len(seen_positions),
                    "positions": np.asarray(seen_positions, dtype=np.int64),
                    "is_marker": unit.is_marker,
                    "is_punct": unit.is_punct,
                    "is_trigger": is_trigger,
                    "truncated": not seen_positions,
                    "score_sum": float(scores.sum()) if seen_positions else math.nan,
                    "score_max": float(scores.max()) if seen_positions else math.nan,
                }
            )
        total = float(sig.sum())
        n_truncated = sum(1 for u in units if not any(p in position_of for p in u.pieces))
        prompt_rows.append(
            {
                "prompt_id": pid,
                "text": text,
                "reason": row.reason,
                "memorized": bool(row.memorized),
                "planted": bool(row.planted),
                "d_mem": float(row.d_mem),
                "d_mem_window": float(significance.norms[i].mean()),
                "losses": significance.losses[i].astype(np.float64),
                "n_positions": len(ids),
                "n_content_tokens": len(content),
                "n_special": int(sum(special)),
                "n_padding": int(sum(padding)),
                "n_pieces_total": len(full),
                "n_words": len(units),
                "n_words_truncated": n_truncated,
                "truncated": len(full) > len(content),
                "n_markers": sum(u.is_marker for u in units),
                "n_markers_truncated": sum(
                    u.is_marker and not any(p in position_of for p in u.pieces) for u in units
                ),
                "trigger_word": trigger,
                "trigger_truncated": bool(trigger) and not trigger_seen,
                "special_share": (total - content_total) / total if total > 0 else math.nan,
            }
        )
    return (
        _frame(token_rows, TOKEN_COLUMNS),
        _frame(word_rows, WORD_COLUMNS),
        _frame(prompt_rows, PROMPT_COLUMNS),
    )


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
        return _frame([], OCCLUSION_COLUMNS)
    values = np.asarray(score(ids, texts), dtype=np.float64)
    if values.shape != (len(texts),):
        raise ValueError(f"the occlusion scorer returned {values.shape} values for {len(texts)}")
    original = dict(zip(prompts["prompt_id"].astype(str), values[: len(prompts)], strict=True))
    for row, value in zip(rows, values[len(prompts) :], strict=True):
        row["d_mem_original"] = float(original[row["prompt_id"]])
        row["d_mem_variant"] = float(value)
        row["drop"] = row["d_mem_original"] - row["d_mem_variant"]
    return _frame(rows, OCCLUSION_COLUMNS)


def attribute_prompts(
    model: AuditModel,
    prompts: pd.DataFrame,
    spec: ScoringSpec,
    batch_size: int,
    markers: Sequence[str],
    progress: TextIO | None = None,
) -> tuple[AttributionTables, dict[str, Any]]:
    """Gradient attribution, word merging and occlusion for a selection of prompts.

    ``spec`` is the scoring engine's trajectory with the *attribution* window
    (:meth:`AttributionSpec.scoring_spec`); ``batch_size`` counts prompts per backward pass;
    ``markers`` are the configured marker regexes. Returns the tables (token, word,
    occlusion, per prompt) and run statistics with the cost of each method.
    """
    from memaudit.scoring import score_prompts

    _require_columns(prompts, tuple(SELECTION_COLUMNS), "selected prompts table")
    prompts = prompts.reset_index(drop=True)
    if prompts["prompt_id"].duplicated().any():
        raise ValueError(
            f"duplicate prompt_id in the selected prompts, e.g. "
            f"{prompts.loc[prompts['prompt_id'].duplicated(), 'prompt_id'].iloc[0]!r}"
        )
    patterns = compile_markers(list(markers))
    texts = prompts["text"].astype(str).tolist()
    encoded = encode_with_offsets(model, texts)
    significance, gradient_stats = gradient_pass(
        model, encoded["input_ids"], spec, batch_size, progress
    )
    if not texts:
        empty = AttributionTables(
            _frame([], TOKEN_COLUMNS),
            _frame([], WORD_COLUMNS),
            _frame([], OCCLUSION_COLUMNS),
            _frame([], PROMPT_COLUMNS),
        )
        occlusion_stats = {"n_prompts": 0, "n_variants": 0, "seconds": 0.0}
        return empty, _run_stats(model, spec, batch_size, gradient_stats, occlusion_stats)
    tokens, words, per_prompt = build_tables(
        prompts, encoded, significance, model.tokenizer.convert_ids_to_tokens, patterns
    )
    occlusion_stats: dict[str, Any] = {}

    def score(ids: list[str], variant_texts: list[str]) -> np.ndarray:
        table, stats = score_prompts(model, ids, variant_texts, spec, progress)
        occlusion_stats.update(stats)
        return table["d_mem"].to_numpy()

    start = time.perf_counter()
    occlusion = occlusion_table(prompts, words, score)
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
    return (
        AttributionTables(tokens, words, occlusion, per_prompt),
        _run_stats(model, spec, batch_size, gradient_stats, occlusion_stats),
    )


def _run_stats(
    model: AuditModel,
    spec: ScoringSpec,
    batch_size: int,
    gradient: dict[str, Any],
    occlusion: dict[str, Any],
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
) -> dict[str, Any]:
    """Attribute chunk ``index`` of ``total`` of the selected prompts and write its tables.

    ``paths`` maps tokens, words, occlusion, prompts and stats to files; all are written to
    temporary files first and renamed together at the end, so a job that dies leaves none of
    them. Returns the run statistics (with the chunk position).
    """
    from memaudit.scores import select_chunk

    missing = {"tokens", "words", "occlusion", "prompts", "stats"} - set(paths)
    if missing:
        raise ValueError(f"attribute_chunk needs output paths for {sorted(missing)}")
    chunk = select_chunk(prompts, index, total)
    tables, stats = attribute_prompts(model, chunk, spec, batch_size, markers, progress)
    stats.update(chunk_index=index, chunk_total=total)
    write_atomically(
        {
            paths["tokens"]: tables.tokens,
            paths["words"]: tables.words,
            paths["occlusion"]: tables.occlusion,
            paths["prompts"]: tables.prompts,
            paths["stats"]: stats,
        }
    )
    return stats


# --------------------------------------------------------------------------------------------
# Gathering the chunks: word scores, ranks, occlusion agreement
# --------------------------------------------------------------------------------------------


def gather_tables(
    chunks: Mapping[str, Sequence[str | Path]],
    expected_ids: Iterable[str],
    word_score: str = "sum",
) -> AttributionTables:
    """Concatenate chunk tables (``chunks`` maps tokens, words, occlusion, prompts to the
    chunk files), check every expected prompt is there exactly once, and rank.

    Words get ``score`` (the configured ``word_score`` of their pieces), ``rank`` among the
    prompt's ranked words (not punctuation, not truncated; 1 = most significant, ties share
    the best rank), ``rank_with_punct`` (punctuation units ranked too), ``n_ranked``,
    ``relative_rank`` ((rank − 1)/(n_ranked − 1), 0 = first, 1 = last) and ``share`` (of the
    prompt's ranked total). Occlusion rows get ``occlusion_rank`` (by drop),
    ``gradient_rank`` and the prompt's Spearman correlation between the two rankings.
    """
    if word_score not in WORD_SCORES:
        raise ValueError(
            f"attribution.word_score must be one of {', '.join(WORD_SCORES)}, got {word_score!r}"
        )
    schemas = {
        "tokens": TOKEN_COLUMNS,
        "words": WORD_COLUMNS,
        "occlusion": OCCLUSION_COLUMNS,
        "prompts": PROMPT_COLUMNS,
    }
    frames: dict[str, pd.DataFrame] = {}
    for kind, schema in schemas.items():
        paths = [Path(p) for p in chunks.get(kind, ())]
        if not paths:
            raise ValueError(f"no attribution chunk files given for the {kind} table")
        parts = []
        for path in paths:
            if not path.exists():
                raise FileNotFoundError(f"attribution chunk {path} does not exist")
            part = pd.read_parquet(path)
            _require_columns(part, tuple(schema), f"attribution chunk {path}")
            parts.append(part)
        non_empty = [p for p in parts if len(p)]
        frames[kind] = pd.concat(non_empty, ignore_index=True) if non_empty else _frame([], schema)
    per_prompt = frames["prompts"]
    duplicated = per_prompt.loc[per_prompt["prompt_id"].duplicated(), "prompt_id"]
    if len(duplicated):
        raise ValueError(
            f"{duplicated.nunique()} prompt(s) attributed in more than one chunk, e.g. "
            f"{duplicated.iloc[0]!r}"
        )
    expected, got = set(map(str, expected_ids)), set(per_prompt["prompt_id"])
    if expected != got:
        missing, extra = sorted(expected - got), sorted(got - expected)
        raise ValueError(
            f"attribution chunks do not match the selected prompts: {len(missing)} missing "
            f"(e.g. {missing[:3]}), {len(extra)} unexpected (e.g. {extra[:3]})"
        )
    words = rank_words(frames["words"], word_score)
    occlusion = rank_occlusion(frames["occlusion"], words)
    spearman = occlusion.groupby("prompt_id")["spearman"].first()
    per_prompt = per_prompt.sort_values("prompt_id", kind="mergesort").reset_index(drop=True)
    per_prompt["spearman"] = per_prompt["prompt_id"].map(spearman).astype(np.float64)
    top = words[words["rank"] == 1].drop_duplicates("prompt_id").set_index("prompt_id")["text"]
    per_prompt["top_word"] = per_prompt["prompt_id"].map(top).astype(object)
    order = ["prompt_id", "position"]
    tokens = frames["tokens"].sort_values(order, kind="mergesort").reset_index(drop=True)
    return AttributionTables(tokens, words, occlusion, per_prompt)


def rank_words(words: pd.DataFrame, word_score: str) -> pd.DataFrame:
    """Add score, rank, rank_with_punct, n_ranked, relative_rank and share (see
    :func:`gather_tables`), sorted by prompt and word index."""
    words = words.sort_values(["prompt_id", "word_index"], kind="mergesort").reset_index(drop=True)
    words["score"] = words[f"score_{word_score}"].astype(np.float64)
    ranked = ~words["is_punct"] & ~words["truncated"]
    seen = ~words["truncated"]
    words["rank"] = _group_rank(words["score"].where(ranked), words["prompt_id"])
    words["rank_with_punct"] = _group_rank(words["score"].where(seen), words["prompt_id"])
    words["n_ranked"] = ranked.groupby(words["prompt_id"]).transform("sum").astype(np.int64)
    denominator = (words["n_ranked"] - 1).where(words["n_ranked"] > 1)
    words["relative_rank"] = (
        ((words["rank"] - 1) / denominator).where(words["n_ranked"] > 1, 0.0).where(ranked)
    )
    total = words["score"].where(ranked).groupby(words["prompt_id"]).transform("sum")
    words["share"] = (words["score"] / total.where(total > 0)).where(ranked)
    return words


def rank_occlusion(occlusion: pd.DataFrame, words: pd.DataFrame) -> pd.DataFrame:
    """Add occlusion_rank (largest drop first), gradient_rank and per-prompt Spearman."""
    occlusion = occlusion.sort_values(["prompt_id", "word_index"], kind="mergesort").reset_index(
        drop=True
    )
    occlusion["occlusion_rank"] = _group_rank(occlusion["drop"], occlusion["prompt_id"])
    ranks = words.set_index(["prompt_id", "word_index"])["rank"]
    scores = words.set_index(["prompt_id", "word_index"])["score"]
    keys = pd.MultiIndex.from_frame(occlusion[["prompt_id", "word_index"]])
    occlusion["gradient_rank"] = ranks.reindex(keys).to_numpy(dtype=np.float64)
    occlusion["gradient_score"] = scores.reindex(keys).to_numpy(dtype=np.float64)
    rho = {
        pid: spearman(group["gradient_score"].to_numpy(), group["drop"].to_numpy())
        for pid, group in occlusion.groupby("prompt_id", sort=False)
    }
    occlusion["spearman"] = occlusion["prompt_id"].map(rho).astype(np.float64)
    return occlusion


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN below 3 values or when one
    side is constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 3:
        return math.nan
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _group_rank(values: pd.Series, groups: pd.Series) -> pd.Series:
    """Descending rank within groups (1 = largest, ties share the best rank; NaN stays NaN)."""
    if values.empty:
        return pd.Series(np.zeros(0), index=values.index, dtype=np.float64)
    return values.groupby(groups).rank(ascending=False, method="min").astype(np.float64)


# --------------------------------------------------------------------------------------------
# Aggregates
# --------------------------------------------------------------------------------------------

TYPE_STAT_COLUMNS = (
    "population",
    "method",
    "group",
    "word_type",
    "is_marker",
    "is_trigger",
    "n_prompts",
    "n_occurrences",
    "mean_rank",
    "mean_rank_lo",
    "mean_rank_hi",
    "mean_relative_rank",
    "mean_relative_rank_lo",
    "mean_relative_rank_hi",
    "frac_top1",
    "frac_top1_lo",
    "frac_top1_hi",
    "chance_top1",
    "mean_share",
    "mean_share_lo",
    "mean_share_hi",
)


def prompt_type_ranks(
    words: pd.DataFrame, occlusion: pd.DataFrame, prompt_ids: Iterable[str], method: str
) -> pd.DataFrame:
    """One row per (prompt, word type) among ``prompt_ids``: the type's best rank in the
    prompt, whether it is first, its summed share and its chance of ranking first.

    ``method`` gradient ranks words by significance (share = of the prompt's significance);
    occlusion ranks them by d_mem drop (share = drop / d_mem of the original prompt). Marker
    units are pooled as ``<marker>`` (group marker) and trigger units as ``<trigger>`` (group
    trigger); every other ranked word counts under its lower-case text (group word). The
    chance of ranking first is occurrences / ranked words (a random order's top-1 rate).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    ids = set(map(str, prompt_ids))
    if method == "gradient":
        table = words[words["rank"].notna() & words["prompt_id"].isin(ids)]
        table = table.assign(value=table["share"])
        rank_column = "rank"
        n_ranked = table.groupby("prompt_id")["word_index"].transform("size")
        types = table["word_type"]
    else:
        table = occlusion[occlusion["prompt_id"].isin(ids)]
        original = table["d_mem_original"].where(table["d_mem_original"] > 0)
        table = table.assign(value=table["drop"] / original)
        rank_column = "occlusion_rank"
        n_ranked = table.groupby("prompt_id")["word_index"].transform("size")
        types = table["text"].astype(str).str.casefold()
    group = np.where(table["is_marker"], "marker", np.where(table["is_trigger"], "trigger", "word"))
    word_type = np.where(
        table["is_marker"], MARKER_TYPE, np.where(table["is_trigger"], TRIGGER_TYPE, types)
    )
    frame = pd.DataFrame(
        {
            "prompt_id": table["prompt_id"].to_numpy(),
            "group": group,
            "word_type": word_type,
            "rank": table[rank_column].to_numpy(dtype=np.float64),
            "value": table["value"].to_numpy(dtype=np.float64),
            "n_ranked": n_ranked.to_numpy(dtype=np.int64),
        }
    )
    per = frame.groupby(["prompt_id", "group", "word_type"], sort=True).agg(
        best_rank=("rank", "min"),
        share=("value", "sum"),
        count=("rank", "size"),
        n_ranked=("n_ranked", "first"),
    )
    per = per.reset_index()
    per["top1"] = per["best_rank"] == 1
    per["relative_rank"] = np.where(
        per["n_ranked"] > 1, (per["best_rank"] - 1) / (per["n_ranked"] - 1).clip(lower=1), 0.0
    )
    per["chance_top1"] = per["count"] / per["n_ranked"]
    return per


def bootstrap_ci(
    columns: Mapping[str, np.ndarray], resamples: int, key: str, seed: int
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of the means of several paired columns, resampling rows.

    The generator is seeded by (``seed``, ``key``), so an interval depends only on its own
    rows, not on which other types exist or in what order they are computed.
    """
    lengths = {len(v) for v in columns.values()}
    if len(lengths) > 1:
        raise ValueError(f"bootstrap columns differ in length: {sorted(lengths)}")
    m = lengths.pop() if lengths else 0
    if m == 0 or resamples == 0:
        return {name: (math.nan, math.nan) for name in columns}
    digest = hashlib.sha256(f"memaudit-bootstrap:{seed}:{key}".encode()).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    draws = rng.integers(0, m, size=(resamples, m))
    out = {}
    for name, values in columns.items():
        means = np.asarray(values, dtype=np.float64)[draws].mean(axis=1)
        lo, hi = (
            np.nanpercentile(means, [2.5, 97.5]) if np.isfinite(means).any() else (math.nan,) * 2
        )
        out[name] = (float(lo), float(hi))
    return out


def word_type_stats(
    per_prompt: pd.DataFrame,
    population: str,
    method: str,
    min_prompts: int = 3,
    resamples: int = 1000,
    seed: int = 0,
    pooled: Sequence[str] = ("marker",),
) -> pd.DataFrame:
    """Aggregate :func:`prompt_type_ranks` rows per word type, with bootstrap intervals.

    Word types need ``min_prompts`` prompts; pooled groups (marker, trigger) are listed
    whenever they occur, and those in ``pooled`` always get a row, with NaN statistics when no
    prompt has one.
    """
    rows = []
    groups = dict(tuple(per_prompt.groupby(["group", "word_type"], sort=True)))
    for name in pooled:
        label = {"marker": MARKER_TYPE, "trigger": TRIGGER_TYPE}[name]
        groups.setdefault((name, label), per_prompt.iloc[0:0])
    for (group, word_type), sub in sorted(groups.items()):
        if group == "word" and len(sub) < min_prompts:
            continue
        values = {
            "mean_rank": sub["best_rank"].to_numpy(dtype=np.float64),
            "mean_relative_rank": sub["relative_rank"].to_numpy(dtype=np.float64),
            "frac_top1": sub["top1"].to_numpy(dtype=np.float64),
            "mean_share": sub["share"].to_numpy(dtype=np.float64),
        }
        ci = bootstrap_ci(values, resamples, f"{population}|{method}|{group}|{word_type}", seed)
        row: dict[str, Any] = {
            "population": population,
            "method": method,
            "group": group,
            "word_type": word_type,
            "is_marker": group == "marker",
            "is_trigger": group == "trigger",
            "n_prompts": len(sub),
            "n_occurrences": int(sub["count"].sum()) if len(sub) else 0,
            "chance_top1": float(sub["chance_top1"].mean()) if len(sub) else math.nan,
        }
        for name, array in values.items():
            row[name] = (
                float(np.nanmean(array)) if len(array) and np.isfinite(array).any() else math.nan
            )
            row[f"{name}_lo"], row[f"{name}_hi"] = ci[name]
        rows.append(row)
    return pd.DataFrame(rows, columns=list(TYPE_STAT_COLUMNS))


def populations(per_prompt: pd.DataFrame) -> dict[str, list[str]]:
    """Prompt ids of each population: memorized (finding 3) and, when any, planted (demo)."""
    out = {"memorized": per_prompt.loc[per_prompt["memorized"], "prompt_id"].tolist()}
    if per_prompt["planted"].any():
        out["planted"] = per_prompt.loc[per_prompt["planted"], "prompt_id"].tolist()
    return out


def word_type_table(
    words: pd.DataFrame,
    occlusion: pd.DataFrame,
    per_prompt: pd.DataFrame,
    spec: AttributionSpec,
) -> pd.DataFrame:
    """Word-type statistics for every population and both methods (the shareable table)."""
    frames = []
    with_trigger = bool(per_prompt["trigger_word"].notna().any())
    for population, ids in populations(per_prompt).items():
        pooled = ("marker", "trigger") if with_trigger and population == "planted" else ("marker",)
        for method in METHODS:
            per = prompt_type_ranks(words, occlusion, ids, method)
            frames.append(
                word_type_stats(
                    per, population, method, spec.min_prompts, spec.bootstrap, spec.seed, pooled
                )
            )
    table = (
        pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=TYPE_STAT_COLUMNS)
    )
    return table.sort_values(
        ["population", "method", "group", "frac_top1", "mean_rank", "word_type"],
        ascending=[True, True, True, False, True, True],
        kind="mergesort",
    ).reset_index(drop=True)


def _method_block(per: pd.DataFrame, stats_row: pd.Series | None) -> dict[str, Any]:
    """JSON block of one pooled group under one method: stats, intervals, rank histogram."""
    block: dict[str, Any] = {"n_prompts": int(len(per))}
    if stats_row is not None:
        for name in ("frac_top1", "mean_rank", "mean_relative_rank", "mean_share"):
            block[name] = finite_or_none(stats_row[name])
            block[f"{name}_ci95"] = [
                finite_or_none(stats_row[f"{name}_lo"]),
                finite_or_none(stats_row[f"{name}_hi"]),
            ]
        block["chance_top1"] = finite_or_none(stats_row["chance_top1"])
    counts = per["best_rank"].astype(int).value_counts().sort_index()
    block["rank_counts"] = {str(k): int(v) for k, v in counts.items()}
    return block


def summarize(
    words: pd.DataFrame,
    occlusion: pd.DataFrame,
    per_prompt: pd.DataFrame,
    word_types: pd.DataFrame,
    selection: Mapping[str, Any],
    chunk_stats: Sequence[Mapping[str, Any]],
    spec: AttributionSpec,
) -> dict[str, Any]:
    """Finding 3 in numbers: marker statistics in memorized prompts (both methods), trigger
    statistics on the demo (both methods, per prompt too), agreement between the methods,
    truncation counts, position bias and the cost per prompt."""
    summary: dict[str, Any] = {
        "settings": {**dataclasses.asdict(spec), "window": list(spec.window)},
        "selection": dict(selection),
        "n_prompts": {
            "attributed": int(len(per_prompt)),
            **{r: int((per_prompt["reason"] == r).sum()) for r in REASONS},
        },
    }
    if len(per_prompt) == 0:
        summary["empty"] = True
        summary["note"] = "no prompts to attribute: the memorized table is empty" + (
            "" if selection.get("planted_included") else " and no planted prompts were added"
        )
        summary["cost"] = _cost(chunk_stats)
        return json_safe(summary)
    summary["empty"] = False
    summary["truncation"] = {
        "prompts_truncated": int(per_prompt["truncated"].sum()),
        "words_truncated": int(per_prompt["n_words_truncated"].sum()),
        "markers_truncated": int(per_prompt["n_markers_truncated"].sum()),
        "triggers_truncated": int(per_prompt["trigger_truncated"].sum()),
    }
    summary["special_positions_share"] = {
        "mean": finite_or_none(per_prompt["special_share"].mean()),
        "note": "share of the summed token significance on special and padding positions "
        "(excluded from ranks; padding is attended by the text encoder)",
    }
    markers: dict[str, Any] = {}
    triggers: dict[str, Any] = {}
    for population, ids in populations(per_prompt).items():
        with_marker = per_prompt[
            per_prompt["prompt_id"].isin(ids)
            & (per_prompt["n_markers"] > per_prompt["n_markers_truncated"])
        ]
        entry: dict[str, Any] = {
            "n_prompts": len(ids),
            "n_with_marker": int(len(with_marker)),
        }
        for method in METHODS:
            per = prompt_type_ranks(words, occlusion, ids, method)
            stats = _stats_row(word_types, population, method, MARKER_TYPE)
            entry[method] = _method_block(per[per["group"] == "marker"], stats)
            listed = word_types[
                (word_types["population"] == population) & (word_types["method"] == method)
            ]
            listed = listed[listed["n_prompts"] > 0].sort_values(
                ["frac_top1", "mean_rank"], ascending=[False, True], kind="mergesort"
            )
            types = listed["word_type"].tolist()
            entry[method]["position_among_types_by_top1"] = (
                types.index(MARKER_TYPE) + 1 if MARKER_TYPE in types else None
            )
            entry[method]["n_types_listed"] = len(types)
            if population == "planted" and per_prompt["trigger_word"].notna().any():
                stats = _stats_row(word_types, population, method, TRIGGER_TYPE)
                triggers[method] = _method_block(per[per["group"] == "trigger"], stats)
        markers[population] = entry
    summary["marker"] = markers
    if triggers:
        summary["trigger"] = {**triggers, "per_prompt": _trigger_rows(words, occlusion, per_prompt)}
    rho = per_prompt["spearman"].dropna()
    summary["agreement"] = {
        "n_prompts": int(len(rho)),
        "spearman_median": finite_or_none(rho.median()) if len(rho) else None,
        "spearman_mean": finite_or_none(rho.mean()) if len(rho) else None,
        "note": "Spearman correlation per prompt between gradient significance and occlusion "
        "drop over its ranked words",
    }
    summary["position_bias"] = _position_bias(words)
    summary["top_word_types"] = (
        word_types[
            (word_types["population"] == "memorized")
            & (word_types["method"] == "gradient")
            & (word_types["n_prompts"] > 0)
        ]
        .head(10)[["word_type", "n_prompts", "frac_top1", "mean_rank", "mean_share"]]
        .to_dict(orient="records")
    )
    summary["cost"] = _cost(chunk_stats)
    return json_safe(summary)


def _stats_row(
    table: pd.DataFrame, population: str, method: str, word_type: str
) -> pd.Series | None:
    hit = table[
        (table["population"] == population)
        & (table["method"] == method)
        & (table["word_type"] == word_type)
    ]
    return hit.iloc[0] if len(hit) else None


def _trigger_rows(
    words: pd.DataFrame, occlusion: pd.DataFrame, per_prompt: pd.DataFrame
) -> list[dict[str, Any]]:
    """Per planted prompt with a trigger: its ranks under both methods and where it sits."""
    rows = []
    planted = per_prompt[per_prompt["trigger_word"].notna()]
    for r in planted.itertuples(index=False):
        unit = words[(words["prompt_id"] == r.prompt_id) & words["is_trigger"]]
        occl = occlusion[(occlusion["prompt_id"] == r.prompt_id) & occlusion["is_trigger"]]
        ranked = words[(words["prompt_id"] == r.prompt_id) & words["rank"].notna()]
        order = ranked["word_index"].tolist()
        index = int(unit["word_index"].iloc[0]) if len(unit) else None
        top = ranked.sort_values("rank", kind="mergesort").head(1)
        rows.append(
            {
                "prompt_id": r.prompt_id,
                "memorized": bool(r.memorized),
                "trigger_truncated": bool(r.trigger_truncated),
                "n_ranked_words": len(order),
                "trigger_word_position": order.index(index) if index in order else None,
                "gradient_rank": finite_or_none(unit["rank"].min()) if len(unit) else None,
                "occlusion_rank": finite_or_none(occl["occlusion_rank"].min())
                if len(occl)
                else None,
                "gradient_share": finite_or_none(unit["share"].sum()) if len(unit) else None,
                "top_word_type": "<marker>"
                if len(top) and bool(top["is_marker"].iloc[0])
                else (str(top["word_type"].iloc[0]) if len(top) else None),
                "spearman": finite_or_none(r.spearman),
            }
        )
    return rows


def _position_bias(words: pd.DataFrame) -> dict[str, Any]:
    """Does significance follow the word's position? Per prompt, Spearman between position
    (order among ranked words) and score; and where the top word sits (relative position)."""
    ranked = words[words["rank"].notna()]
    rhos, top_positions = [], []
    for _pid, group in ranked.groupby("prompt_id", sort=True):
        position = np.arange(len(group), dtype=np.float64)
        rhos.append(spearman(position, group["score"].to_numpy()))
        if len(group) > 1:
            top = int(np.argmin(group["rank"].to_numpy()))
            top_positions.append(top / (len(group) - 1))
    rhos_arr = np.asarray([r for r in rhos if np.isfinite(r)])
    return {
        "n_prompts": int(len(rhos_arr)),
        "spearman_position_vs_score_mean": finite_or_none(rhos_arr.mean())
        if len(rhos_arr)
        else None,
        "top_word_relative_position_mean": finite_or_none(np.mean(top_positions))
        if top_positions
        else None,
        "top_word_relative_position_hist": np.histogram(top_positions, bins=5, range=(0, 1))[
            0
        ].tolist()
        if top_positions
        else [],
        "note": "position = order among the prompt's ranked words (0 = first, 1 = last); "
        "a negative Spearman means earlier words score higher",
    }


def _cost(chunk_stats: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Seconds and UNet rows per prompt for both methods, summed over chunks."""
    n = sum(int(s.get("gradient", {}).get("n_prompts", 0)) for s in chunk_stats)

    def total(method: str, key: str) -> float:
        return float(sum(float(s.get(method, {}).get(key, 0) or 0) for s in chunk_stats))

    devices = sorted({str(s.get("device")) for s in chunk_stats if s.get("device")})
    variants = total("occlusion", "n_variants")
    return {
        "devices": devices,
        "dtypes": sorted({str(s.get("dtype")) for s in chunk_stats if s.get("dtype")}),
        "n_chunks": len(chunk_stats),
        "n_prompts": n,
        "gradient_seconds_per_prompt": total("gradient", "seconds") / n if n else None,
        "gradient_unet_rows_per_prompt": total("gradient", "unet_rows") / n if n else None,
        "occlusion_seconds_per_prompt": total("occlusion", "seconds") / n if n else None,
        "occlusion_unet_rows_per_prompt": total("occlusion", "unet_rows") / n if n else None,
        "occlusion_variants_per_prompt": variants / n if n else None,
        "gradient_seconds_total": total("gradient", "seconds"),
        "occlusion_seconds_total": total("occlusion", "seconds"),
        "oom_halvings": int(total("gradient", "oom_halvings")),
    }


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


def plot_token_attribution(
    words: pd.DataFrame,
    per_prompt: pd.DataFrame,
    png_path: str | Path,
    n_prompts: int = 6,
    top_n: int = 25,
) -> None:
    """Fig. 3: for the ``n_prompts`` memorized prompts with the highest d_mem, bars of their
    ``top_n`` most significant words, the marker (and on the demo the trigger) highlighted."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from memaudit.figures import MARKER_COLOR, ORDINARY_COLOR, save_figure, use_style

    use_style()
    chosen = (
        per_prompt[per_prompt["memorized"]]
        .sort_values(["d_mem", "prompt_id"], ascending=[False, True], kind="mergesort")
        .head(n_prompts)
    )
    if chosen.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no memorized prompts to attribute", ha="center", va="center")
        save_figure(fig, png_path)
        return
    cols = 2 if len(chosen) > 1 else 1
    rows = math.ceil(len(chosen) / cols)
    height = max(2.5, 0.22 * min(top_n, int(words.groupby("prompt_id").size().max())) + 1)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, height * rows), squeeze=False)
    for ax, prompt in zip(axes.flat, chosen.itertuples(index=False), strict=False):
        mine = words[(words["prompt_id"] == prompt.prompt_id) & words["rank"].notna()]
        mine = mine.sort_values(["rank", "word_index"], kind="mergesort").head(top_n)
        labels = [textwrap.shorten(t, 24, placeholder="…") for t in mine["text"]]
        colors = [
            MARKER_COLOR if m else (TRIGGER_COLOR if t else ORDINARY_COLOR)
            for m, t in zip(mine["is_marker"], mine["is_trigger"], strict=True)
        ]
        y = np.arange(len(mine))
        ax.barh(y, mine["score"].to_numpy(), color=colors)
        ax.set_yticks(y, labels=labels, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("significance ‖∂L/∂e‖ (word)")
        ax.set_title(
            f"{prompt.prompt_id[:10]} · d_mem {prompt.d_mem:.3g} · {prompt.reason}", fontsize=9
        )
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    handles = [Patch(color=MARKER_COLOR, label="de-identification marker")]
    if bool(words["is_trigger"].any()):
        handles.append(Patch(color=TRIGGER_COLOR, label="planted trigger word"))
    handles.append(Patch(color=ORDINARY_COLOR, label="other word"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(f"Most significant words of the top {len(chosen)} memorized prompts")
    fig.tight_layout(rect=(0, 0.03, 1, 0.98))
    save_figure(fig, png_path)


def plot_word_types(word_types: pd.DataFrame, png_path: str | Path, n_types: int = 20) -> None:
    """Word types of memorized prompts by how often they rank first and their mean rank
    (gradient method, 95 % bootstrap intervals), the pooled marker always shown; dots give
    the occlusion method's top-1 rate and grey ticks the top-1 rate of a random order."""
    import matplotlib.pyplot as plt

    from memaudit.figures import MARKER_COLOR, ORDINARY_COLOR, save_figure, use_style

    use_style()
    table = word_types[(word_types["population"] == "memorized") & (word_types["n_prompts"] > 0)]
    gradient = table[table["method"] == "gradient"].sort_values(
        ["frac_top1", "mean_rank", "word_type"], ascending=[False, True, True], kind="mergesort"
    )
    shown = gradient[gradient["group"] == "word"].head(n_types)
    pooled = gradient[gradient["group"] != "word"]
    shown = pd.concat([pooled, shown]).sort_values(
        ["frac_top1", "mean_rank"], ascending=[False, True], kind="mergesort"
    )
    if shown.empty:
        fig, ax = plt.subplots(figsize=(6, 2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no word types to show (no memorized prompts)", ha="center", va="center")
        save_figure(fig, png_path)
        return
    occlusion = table[table["method"] == "occlusion"].set_index("word_type")["frac_top1"]
    y = np.arange(len(shown))
    colors = [
        MARKER_COLOR if m else (TRIGGER_COLOR if t else ORDINARY_COLOR)
        for m, t in zip(shown["is_marker"], shown["is_trigger"], strict=True)
    ]
    labels = [f"{w} (n={n})" for w, n in zip(shown["word_type"], shown["n_prompts"], strict=True)]
    fig, (ax_top, ax_rank) = plt.subplots(1, 2, figsize=(10, 0.3 * len(shown) + 1.5), sharey=True)
    top = shown["frac_top1"].to_numpy()
    err = _error_bars(top, shown["frac_top1_lo"], shown["frac_top1_hi"])
    ax_top.barh(y, top, xerr=err, color=colors, ecolor="black", capsize=2)
    ax_top.scatter(shown["chance_top1"], y, marker="|", color="grey", s=80, label="random order")
    occl = shown["word_type"].map(occlusion).to_numpy(dtype=np.float64)
    ax_top.scatter(occl, y, color="black", s=12, zorder=3, label="occlusion")
    ax_top.set_yticks(y, labels=labels, fontsize=8)
    ax_top.invert_yaxis()
    ax_top.set(xlabel="fraction of prompts where it ranks first", xlim=(0, 1.05))
    ax_top.legend(loc="lower right", fontsize=8)
    rank = shown["mean_rank"].to_numpy()
    ax_rank.barh(
        y,
        rank,
        xerr=_error_bars(rank, shown["mean_rank_lo"], shown["mean_rank_hi"]),
        color=colors,
        ecolor="black",
        capsize=2,
    )
    ax_rank.set(xlabel="mean rank in the prompt (1 = most significant)")
    fig.suptitle("Word types in memorized prompts (gradient significance)")
    fig.tight_layout()
    save_figure(fig, png_path)


def _error_bars(values: np.ndarray, lo: pd.Series, hi: pd.Series) -> np.ndarray:
    lo_arr, hi_arr = lo.to_numpy(dtype=np.float64), hi.to_numpy(dtype=np.float64)
    below = np.where(np.isfinite(lo_arr), values - lo_arr, 0.0)
    above = np.where(np.isfinite(hi_arr), hi_arr - values, 0.0)
    return np.vstack([np.clip(below, 0, None), np.clip(above, 0, None)])


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _require_columns(table: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise ValueError(f"the {what} lacks column(s) {missing}")


def _frame(rows: list[dict[str, Any]], schema: Mapping[str, Any]) -> pd.DataFrame:
    """A table with exactly the schema's columns and dtypes (also when ``rows`` is empty)."""
    data = {}
    for column, dtype in schema.items():
        values = [row[column] for row in rows]
        data[column] = pd.Series(values, dtype=dtype) if values else pd.Series([], dtype=dtype)
    return pd.DataFrame(data, columns=list(schema))
