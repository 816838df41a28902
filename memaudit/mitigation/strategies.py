"""Mitigation strategies: text edits of a prompt and edits of its conditional embedding.

The paper's three mitigations act on the de-identification marker (config
``reports.markers``): ``rwa`` replaces each marker by a random word of the corpus vocabulary,
``rna`` by a random number, ``remove`` deletes it (whitespace and punctuation tidied). From the
literature: ``gni`` adds Gaussian noise of scale λ to the conditional embedding, ``cwr`` repeats
a random word of the caption at random positions, ``rt`` inserts random tokens of the
tokenizer's vocabulary at random positions (Somepalli et al.), and ``embopt`` minimises the
first-step memorization loss L over the conditional embedding with AdamW (Wen et al.).
``original`` is the unchanged prompt. Marker strategies on a prompt without a marker are
skipped, with the reason recorded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from memaudit.diffusion import fresh_scheduler, unet_eps
from memaudit.mitigation.spec import (
    MARKER_STRATEGIES,
    STRATEGIES,
    MitigationSpec,
    derived_seed,
    strategy_rng,
)
from memaudit.model.loading import AuditModel
from memaudit.text import marker_pattern, normalize_whitespace

_PUNCTUATION = ".,;:!?()[]{}\"'`"


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
    # Only rt is left (the strategy name was checked on entry).
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
