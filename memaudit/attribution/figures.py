"""Fig. 3 (per-token contributions) and the word-type figure."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from memaudit.plotting import MARKER_COLOR, ORDINARY_COLOR, save_figure, use_style

TRIGGER_COLOR = "#8e44ad"


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
