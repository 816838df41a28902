"""Attribution methods beyond Wen et al.'s output-embedding gradient, on the same trajectories.

Every method scores every position (then every word) of a prompt by how much it drives the
memorization loss of the attribution window W, with the trajectory held fixed (the guided DDIM
states x_t^j of the prompt itself, from the scoring stage's x_T)::

    F_p(E) = 1/|W| · Σ_{t∈W} ‖ (ε(x_t^j, enc(E)) − ε(x_t^j, e_∅))_{j=1..n} ‖₂

where E [L, D] are the *input* token embeddings of the prompt (the text encoder's word
embeddings, before position embeddings and before any attention), so a score belongs to the
token at that position and is not spread over the sequence by a bidirectional encoder.

- ``grad_x_input``: a_k = Σ_d E[k, d] · ∂F/∂E[k, d] (Shrikumar et al.), one backward pass.
- ``integrated_gradients``: a_k = Σ_d (E − B)[k, d] · 1/m Σ_{i=1..m} ∂F/∂E[k, d] at
  B + (i − ½)/m · (E − B) (Sundararajan et al., midpoint rule with m = ``ig_steps``). The
  baseline B is E with every content position replaced by the neutral token's embedding
  (special and padding positions unchanged, so their attribution is exactly zero); by
  completeness Σ_k a_k ≈ F(E) − F(B).
- ``occlusion_replace``: the word's pieces are replaced by the neutral token (positions and
  length kept) and the prompt re-scored over the window; score = d_mem(prompt) − d_mem(variant).

Word scores are the sums of their pieces' scores (signed: a negative score lowers F).
``gradient`` (:mod:`.engine`) and ``occlusion_delete`` (:func:`.engine.occlusion_table`) are
computed where they always were; :func:`method_word_table` puts all of them in one long table.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from memaudit.attribution.spec import METHODS
from memaudit.attribution.tables import METHOD_WORD_COLUMNS
from memaudit.batching import run_halving_batches
from memaudit.diffusion import fresh_scheduler, initial_noise
from memaudit.frames import typed_frame
from memaudit.model.loading import AuditModel
from memaudit.scoring.engine import score_embeddings
from memaudit.scoring.spec import ScoringSpec

INPUT_METHODS = ("grad_x_input", "integrated_gradients")


# --------------------------------------------------------------------------------------------
# What a model must offer
# --------------------------------------------------------------------------------------------


def method_requirements(model: AuditModel, methods: Sequence[str]) -> list[str]:
    """Why the model cannot run some of ``methods`` (one message per method; empty: all can).

    Input-embedding methods need a text encoder that accepts ``inputs_embeds`` and exposes its
    word embeddings; gradients need a dtype autograd supports on the device; the neutral token
    must exist in the tokenizer.
    """
    problems = []
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        problems.append(
            f"unknown attribution method(s) {unknown}; choose from {', '.join(METHODS)}"
        )
    wants_input = [m for m in methods if m in INPUT_METHODS]
    if wants_input and not _accepts_input_embeddings(model.text_encoder):
        problems.append(
            f"attribution methods {wants_input} need a text encoder that accepts inputs_embeds "
            f"and has get_input_embeddings(); {type(model.text_encoder).__name__} does not"
        )
    if "occlusion_replace" in methods or wants_input:
        try:
            neutral_token_id(model)
        except ValueError as err:
            problems.append(str(err))
    return problems


def _accepts_input_embeddings(encoder: torch.nn.Module) -> bool:
    try:
        parameters = inspect.signature(encoder.forward).parameters
    except (TypeError, ValueError):
        return False
    return "inputs_embeds" in parameters and callable(
        getattr(encoder, "get_input_embeddings", None)
    )


def neutral_token_id(model: AuditModel, token: str | None = None) -> int:
    """Id of the neutral token (``token``, or the tokenizer's pad token when None)."""
    tokenizer = model.tokenizer
    name = token if token is not None else getattr(tokenizer, "pad_token", None)
    if not name:
        raise ValueError(
            "attribution needs a neutral token (attribution.neutral_token) and the tokenizer "
            "has no pad token; name one of its tokens"
        )
    token_id = tokenizer.convert_tokens_to_ids(name)
    unk = getattr(tokenizer, "unk_token_id", None)
    if token_id is None or (token_id == unk and name != getattr(tokenizer, "unk_token", None)):
        raise ValueError(
            f"attribution.neutral_token {name!r} is not a token of the model's tokenizer"
        )
    return int(token_id)


# --------------------------------------------------------------------------------------------
# The window states and the differentiable loss F
# --------------------------------------------------------------------------------------------


@dataclass
class WindowStates:
    """The guided trajectory of P prompts at the window steps, without gradient.

    Per window step: the timestep, the scaled UNet input [P·n, C, h, w] and the unconditional
    prediction of every row; rows are prompt-major (row p·n + j = prompt p, generation j).
    """

    timesteps: list[torch.Tensor]
    inputs: list[torch.Tensor]
    eps_uncond: list[torch.Tensor]
    n_prompts: int
    n_generations: int


@torch.no_grad()
def window_states(
    model: AuditModel,
    cond: torch.Tensor,
    spec: ScoringSpec,
    noise: torch.Tensor,
    uncond: torch.Tensor,
    counters: dict[str, int],
) -> WindowStates:
    """Walk the guided DDIM trajectory of ``cond`` [P, L, D] (eta 0, x_T = ``noise`` for every
    prompt) to the window's end and keep the states of the window steps."""
    n_prompts, n_gen = int(cond.shape[0]), spec.generations
    rows = n_prompts * n_gen
    start, stop = spec.window_bounds()
    scheduler = fresh_scheduler(model, spec.steps, model.device)
    latents = noise.to(model.device).repeat(n_prompts, 1, 1, 1) * scheduler.init_noise_sigma
    cond_rows = cond.to(device=model.device, dtype=model.dtype).repeat_interleave(n_gen, dim=0)
    uncond = uncond.to(device=model.device, dtype=model.dtype)
    states = WindowStates([], [], [], n_prompts, n_gen)
    for k in range(stop):
        t = scheduler.timesteps[k]
        model_input = scheduler.scale_model_input(latents, t)
        if k == 0:  # every prompt starts from the same x_T^j: one empty-prompt row per j
            eps_uncond = _eps(model, model_input[:n_gen], t, uncond.expand(n_gen, -1, -1))
            eps_uncond = eps_uncond.repeat(n_prompts, 1, 1, 1)
            counters["unet_rows"] += n_gen
        else:
            eps_uncond = _eps(model, model_input, t, uncond.expand(rows, -1, -1))
            counters["unet_rows"] += rows
        if k >= start:
            states.timesteps.append(t)
            states.inputs.append(model_input)
            states.eps_uncond.append(eps_uncond)
        if k + 1 < stop:
            eps_cond = _eps(model, model_input, t, cond_rows)
            counters["unet_rows"] += rows
            guided = eps_uncond + spec.guidance * (eps_cond - eps_uncond)
            latents = scheduler.step(guided, t, latents, eta=0.0, return_dict=False)[0]
        counters["unet_calls"] += 1
    return states


def _eps(
    model: AuditModel, sample: torch.Tensor, timestep: torch.Tensor, embeddings: torch.Tensor
) -> torch.Tensor:
    """One UNet call; float32 out (float64 for a float64 model, so finite differences in the
    tests are not limited by float32 rounding)."""
    out = model.unet(
        sample.to(model.dtype), timestep, encoder_hidden_states=embeddings, return_dict=False
    )[0]
    return out if out.dtype == torch.float64 else out.float()


def encode_embeddings(model: AuditModel, embeddings: torch.Tensor) -> torch.Tensor:
    """Text encoder output [B, L, D_out] of input token embeddings [B, L, D_in] (no mask, as
    :meth:`AuditModel.encode_ids`)."""
    out = model.text_encoder(inputs_embeds=embeddings)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return hidden.to(model.dtype)


def window_loss(
    model: AuditModel,
    embeddings: torch.Tensor,
    owner: torch.Tensor,
    states: WindowStates,
    counters: dict[str, int],
) -> torch.Tensor:
    """F of every row of ``embeddings`` [Q, L, D] (input embeddings); row q is evaluated on the
    window states of prompt ``owner[q]``. Differentiable in ``embeddings``."""
    n_gen = states.n_generations
    cond = encode_embeddings(model, embeddings).repeat_interleave(n_gen, dim=0)
    index = (owner[:, None] * n_gen + torch.arange(n_gen, device=owner.device)[None, :]).reshape(-1)
    total = torch.zeros(int(embeddings.shape[0]), dtype=torch.float64, device=embeddings.device)
    for t, model_input, eps_uncond in zip(
        states.timesteps, states.inputs, states.eps_uncond, strict=True
    ):
        eps = _eps(model, model_input[index], t, cond)
        diff = (eps - eps_uncond[index]).reshape(int(embeddings.shape[0]), -1)
        total = total + diff.norm(dim=1).double()
        counters["unet_calls"] += 1
        counters["unet_rows"] += int(index.shape[0])
        if embeddings.requires_grad:
            counters["backward_rows"] = counters.get("backward_rows", 0) + int(index.shape[0])
    return total / len(states.timesteps)


# --------------------------------------------------------------------------------------------
# Gradient × input and integrated gradients
# --------------------------------------------------------------------------------------------


def input_attributions(
    model: AuditModel,
    input_ids: torch.Tensor,
    content: torch.Tensor,
    spec: ScoringSpec,
    methods: Sequence[str],
    neutral_id: int,
    ig_steps: int,
    counters: Mapping[str, dict[str, int]],
    noise: torch.Tensor | None = None,
    max_rows: int = 512,
) -> dict[str, Any]:
    """Per-position attributions [P, L] of the input-embedding methods for one batch.

    ``input_ids`` [P, L]; ``content`` [P, L] marks the positions that get a neutral baseline
    (neither special nor padding). Returns {method: [P, L] float64} plus ``F`` (F(E) [P]) and,
    with integrated gradients, ``F_baseline`` (F(B) [P]). ``counters`` has one UNet-row
    counter per method; the integrated-gradient points run ``max_rows`` UNet rows per call at
    most.
    """
    device = model.device
    input_ids = input_ids.to(device)
    n_prompts = int(input_ids.shape[0])
    noise = (
        noise
        if noise is not None
        else initial_noise(model.latent_shape, spec.generations, spec.seed, device)
    )
    table = model.text_encoder.get_input_embeddings()
    out: dict[str, Any] = {}
    with torch.no_grad():
        uncond = model.encode([""])
        cond = model.encode_ids(input_ids)
        embeddings = table(input_ids).detach()
        neutral = table(torch.full_like(input_ids, neutral_id)).detach()
        mask = content.to(device)[:, :, None]
        baseline = torch.where(mask, neutral, embeddings)
    owner = torch.arange(n_prompts, device=device)
    shared = {"unet_calls": 0, "unet_rows": 0}
    states = window_states(model, cond, spec, noise, uncond, shared)
    with frozen_parameters(model.text_encoder, model.unet):
        if "grad_x_input" in methods:
            counter = counters["grad_x_input"]
            _add(counter, shared)
            leaf = embeddings.clone().requires_grad_(True)
            with torch.enable_grad():
                value = window_loss(model, leaf, owner, states, counter)
                (grad,) = torch.autograd.grad(value.sum(), leaf)
            out["grad_x_input"] = (grad * embeddings).sum(-1).double().cpu().numpy()
            out["F"] = value.detach().double().cpu().numpy()
        if "integrated_gradients" in methods:
            counter = counters["integrated_gradients"]
            _add(counter, shared)
            grads, value, base_value = _integrated_gradients(
                model, embeddings, baseline, owner, states, ig_steps, counter, max_rows
            )
            out["integrated_gradients"] = (
                (grads * (embeddings - baseline)).sum(-1).double().cpu().numpy()
            )
            out["F"] = value
            out["F_baseline"] = base_value
    return out


def _integrated_gradients(
    model: AuditModel,
    embeddings: torch.Tensor,
    baseline: torch.Tensor,
    owner: torch.Tensor,
    states: WindowStates,
    steps: int,
    counter: dict[str, int],
    max_rows: int,
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Mean gradient over the midpoint path, F(E) and F(B)."""
    n_prompts = int(embeddings.shape[0])
    alphas = (torch.arange(steps, dtype=torch.float32, device=embeddings.device) + 0.5) / steps
    per_call = max(1, max_rows // max(1, n_prompts * states.n_generations))
    mean_grad = torch.zeros_like(embeddings)
    for lo in range(0, steps, per_call):
        a = alphas[lo : lo + per_call]
        points = baseline[None] + a[:, None, None, None] * (embeddings - baseline)[None]
        leaf = points.reshape(-1, *embeddings.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            value = window_loss(model, leaf, owner.repeat(len(a)), states, counter)
            (grad,) = torch.autograd.grad(value.sum(), leaf)
        mean_grad += grad.reshape(len(a), *embeddings.shape).sum(0)
    mean_grad /= steps
    with torch.no_grad():
        both = torch.cat([embeddings, baseline])
        ends = window_loss(model, both, owner.repeat(2), states, counter).double().cpu().numpy()
    return mean_grad, ends[:n_prompts], ends[n_prompts:]


def _add(counter: dict[str, int], shared: Mapping[str, int]) -> None:
    counter["unet_calls"] = counter.get("unet_calls", 0) + shared["unet_calls"]
    counter["unet_rows"] = counter.get("unet_rows", 0) + shared["unet_rows"]


@contextmanager
def frozen_parameters(*modules: torch.nn.Module):
    """Switch the parameter gradients of ``modules`` off (only embeddings need one),
    restoring them after."""
    flags = [(p, p.requires_grad) for m in modules for p in m.parameters()]
    for parameter, _ in flags:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter, flag in flags:
            parameter.requires_grad_(flag)


# --------------------------------------------------------------------------------------------
# Occlusion by a neutral token
# --------------------------------------------------------------------------------------------


def replacement_drops(
    model: AuditModel,
    input_ids: torch.Tensor,
    word_positions: Sequence[Sequence[Sequence[int]]],
    spec: ScoringSpec,
    neutral_id: int,
    batch_size: int,
    counter: dict[str, int],
    noise: torch.Tensor | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """d_mem over the window of each prompt and the drop when each word's positions hold the
    neutral token: (d_mem [P], [drops [W_p] per prompt]).

    ``word_positions[p][w]`` lists the positions of word w of prompt p. Variants are scored in
    batches of ``batch_size`` embeddings, originals first.
    """
    device = model.device
    input_ids = input_ids.to(device)
    variants = [input_ids]
    owners: list[tuple[int, int]] = []
    for p, words in enumerate(word_positions):
        for w, positions in enumerate(words):
            ids = input_ids[p].clone()
            ids[list(positions)] = neutral_id
            variants.append(ids[None])
            owners.append((p, w))
    all_ids = torch.cat(variants)
    noise = (
        noise
        if noise is not None
        else initial_noise(model.latent_shape, spec.generations, spec.seed, device)
    )
    norms = []
    with torch.no_grad():
        uncond = model.encode([""])
        for lo in range(0, int(all_ids.shape[0]), batch_size):
            cond = model.encode_ids(all_ids[lo : lo + batch_size])
            norms.append(score_embeddings(model, cond, spec, noise, uncond, counter))
    start, stop = spec.window_bounds()
    d_mem = np.concatenate(norms)[:, :, start:stop].mean(axis=(1, 2)).astype(np.float64)
    n = int(input_ids.shape[0])
    drops = [np.zeros(len(words), dtype=np.float64) for words in word_positions]
    for (p, w), value in zip(owners, d_mem[n:], strict=True):
        drops[p][w] = d_mem[p] - value
    return d_mem[:n], drops


# --------------------------------------------------------------------------------------------
# One chunk: every configured method beyond the engine's two
# --------------------------------------------------------------------------------------------


def extra_method_scores(
    model: AuditModel,
    input_ids: torch.Tensor,
    prompt_ids: Sequence[str],
    words: pd.DataFrame,
    tokens: pd.DataFrame,
    spec: ScoringSpec,
    methods: Sequence[str],
    batch_size: int,
    ig_steps: int,
    neutral_token: str | None = None,
    progress: TextIO | None = None,
    score_batch: int = 64,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Word scores of ``methods`` ∩ {grad_x_input, integrated_gradients, occlusion_replace}
    for the prompts of one chunk, and each method's cost.

    ``words`` and ``tokens`` are the chunk's word and token tables (:func:`.tables.build_tables`);
    words that are punctuation or truncated get no score, as in the engine's ranking. Returns
    a long table (prompt_id, word_index, method, score) and {method: {unet_rows, unet_calls,
    seconds, ...}}. Occlusion variants are scored ``score_batch`` at a time (no gradient).
    """
    wanted = [m for m in methods if m in (*INPUT_METHODS, "occlusion_replace")]
    problems = method_requirements(model, wanted)
    if problems:
        raise ValueError("; ".join(problems))
    stats: dict[str, Any] = {
        m: {"unet_rows": 0, "unet_calls": 0, "backward_rows": 0, "seconds": 0.0} for m in wanted
    }
    if not wanted or not len(prompt_ids):
        return typed_frame([], METHOD_WORD_COLUMNS), stats
    neutral_id = neutral_token_id(model, neutral_token)
    order = {pid: i for i, pid in enumerate(prompt_ids)}
    ranked = words[~words["is_punct"] & ~words["truncated"]]
    per_prompt = {pid: group for pid, group in ranked.groupby("prompt_id", sort=False)}
    content = np.zeros(tuple(input_ids.shape), dtype=bool)
    for r in tokens[~tokens["is_special"] & ~tokens["is_padding"]].itertuples(index=False):
        content[order[r.prompt_id], int(r.position)] = True
    content_t = torch.from_numpy(content)
    noise = initial_noise(model.latent_shape, spec.generations, spec.seed, model.device)
    n = len(prompt_ids)
    bar = tqdm(total=n, unit="prompt", desc="methods", file=progress, disable=progress is None)
    inputs = [m for m in wanted if m in INPUT_METHODS]

    def step(lo: int, size: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """One batch of prompts, every method; its own counters (merged only on success, so
        a batch re-run after an out-of-memory error is not counted twice)."""
        local: dict[str, Any] = {
            m: {"unet_rows": 0, "unet_calls": 0, "backward_rows": 0, "seconds": 0.0} for m in wanted
        }
        batch = list(range(lo, lo + size))
        ids = input_ids[batch]
        units = [per_prompt.get(prompt_ids[p], ranked.iloc[0:0]) for p in batch]
        positions = [
            [list(map(int, r.positions)) for r in u.itertuples(index=False)] for u in units
        ]
        rows: list[dict[str, Any]] = []

        def emit(method: str, values: Sequence[Any]) -> None:
            for i, p in enumerate(batch):
                for w, r in enumerate(units[i].itertuples(index=False)):
                    rows.append(_row(prompt_ids[p], r.word_index, method, values[i][w]))

        if inputs:
            start = time.perf_counter()
            result = input_attributions(
                model, ids, content_t[batch], spec, inputs, neutral_id, ig_steps, local, noise
            )
            for m in inputs:
                local[m]["seconds"] = (time.perf_counter() - start) / len(inputs)
                emit(m, [[result[m][i, pos] for pos in positions[i]] for i in range(size)])
            if "integrated_gradients" in inputs:
                total = result["integrated_gradients"].sum(axis=1)
                gap = result["F"] - result["F_baseline"]
                local["integrated_gradients"]["completeness_error"] = (
                    np.abs(total - gap) / np.maximum(np.abs(gap), 1e-12)
                ).tolist()
        if "occlusion_replace" in wanted:
            start = time.perf_counter()
            _, drops = replacement_drops(
                model,
                ids,
                positions,
                spec,
                neutral_id,
                score_batch,
                local["occlusion_replace"],
                noise,
            )
            local["occlusion_replace"]["seconds"] = time.perf_counter() - start
            emit("occlusion_replace", drops)
        return rows, local

    parts, final_batch, halvings = run_halving_batches(
        n,
        max(1, min(batch_size, n)),
        step,
        "prompts per attribution batch",
        "out of GPU memory attributing a single prompt; use fewer generations, fewer "
        "attribution.ig_steps or a shorter attribution.window",
        progress,
        bar,
    )
    bar.close()
    rows = [row for part_rows, _ in parts for row in part_rows]
    for _, local in parts:
        for m, block in local.items():
            for key, value in block.items():
                if key == "completeness_error":
                    stats[m].setdefault(key, []).extend(value)
                else:
                    stats[m][key] += value
    for m in wanted:
        stats[m]["n_prompts"] = n
        if "completeness_error" in stats[m]:
            errors = np.asarray(stats[m].pop("completeness_error"))
            stats[m]["completeness_error_median"] = (
                float(np.median(errors)) if len(errors) else None
            )
            stats[m]["completeness_error_max"] = float(errors.max()) if len(errors) else None
        stats[m]["ig_steps"] = ig_steps if m == "integrated_gradients" else None
        stats[m].update(batch_size_final=final_batch, oom_halvings=halvings)
    table = typed_frame(rows, METHOD_WORD_COLUMNS)
    table["_m"] = table["method"].map({m: i for i, m in enumerate(METHODS)})
    table["_p"] = table["prompt_id"].map(order)
    table = table.sort_values(["_m", "_p", "word_index"], kind="mergesort")
    return table.drop(columns=["_m", "_p"]).reset_index(drop=True), stats


def _row(pid: str, word_index: int, method: str, value: Any) -> dict[str, Any]:
    return {
        "prompt_id": pid,
        "word_index": int(word_index),
        "method": method,
        "score": float(np.sum(value)),
    }
