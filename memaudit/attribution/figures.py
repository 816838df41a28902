"""Fig. 3 (per-token contributions) and the word-type figure."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch

from memaudit.plotting import (
    MARKER_COLOR,
    ORDINARY_COLOR,
    save_figure,
    save_message_figure,
    use_style,
)

TRIGGER_COLOR = "#8e44ad"


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------


KEY_COLOR = "#c0392b"


def choose_fig3_prompt(methods: pd.DataFrame, per_prompt: pd.DataFrame) -> str | None:
    """The prompt of Fig. 3: the memorized prompt of highest d_mem that has a ranked marker
    (else the memorized prompt of highest d_mem; None without one)."""
    memorized = per_prompt[per_prompt["memorized"]].sort_values(
        ["d_mem", "prompt_id"], ascending=[False, True], kind="mergesort"
    )
    if memorized.empty:
        return None
    with_marker = set(methods.loc[methods["is_marker"], "prompt_id"])
    marked = memorized[memorized["prompt_id"].isin(with_marker)]
    return str((marked if len(marked) else memorized)["prompt_id"].iloc[0])


def _word_colors(table: pd.DataFrame, key: tuple[int, int] | None) -> list[str]:
    colors = []
    for r in table.itertuples(index=False):
        in_key = key is not None and r.start < key[1] and key[0] < r.end
        colors.append(
            KEY_COLOR
            if in_key and not r.is_marker
            else MARKER_COLOR
            if r.is_marker
            else TRIGGER_COLOR
            if r.is_trigger
            else ORDINARY_COLOR
        )
    return colors


def _bars(ax, table: pd.DataFrame, key: tuple[int, int] | None, top_n: int, fontsize: int) -> None:
    shown = table.sort_values(["rank", "word_index"], kind="mergesort").head(top_n)
    labels = [textwrap.shorten(t, 24, placeholder="…") for t in shown["text"]]
    y = np.arange(len(shown))
    ax.barh(y, shown["score"].to_numpy(), color=_word_colors(shown, key))
    ax.set_yticks(y, labels=labels, fontsize=fontsize)
    ax.invert_yaxis()
    ax.axvline(0, color="grey", lw=0.5)


def plot_token_attribution(
    methods: pd.DataFrame,
    per_prompt: pd.DataFrame,
    primary: str,
    png_path: str | Path,
    top_n: int = 25,
    key_spans: dict[str, tuple[int, int]] | None = None,
    labels: dict[str, str] | None = None,
) -> None:
    """Fig. 3: the ``top_n`` words of one memorized prompt (:func:`choose_fig3_prompt`) by
    the ``primary`` method, the marker highlighted (on the demo also the trigger and the
    causal key), beside a small-multiples panel of every method on the same prompt."""
    use_style()
    pid = choose_fig3_prompt(methods, per_prompt)
    if pid is None:
        save_message_figure(png_path, "no memorized prompts to attribute")
        return
    labels = labels or {}
    mine = methods[methods["prompt_id"] == pid]
    names = [m for m in dict.fromkeys(mine["method"]) if m != primary]
    key = (key_spans or {}).get(pid)
    row = per_prompt[per_prompt["prompt_id"] == pid].iloc[0]
    n_words = int(mine.groupby("method").size().max())
    height = max(3.0, 0.24 * min(top_n, n_words) + 1.5)
    cols = max(1, math.ceil(len(names) / 2))
    fig = plt.figure(figsize=(5.5 + 3.2 * cols, height))
    grid = fig.add_gridspec(2, 1 + cols, width_ratios=[1.7] + [1] * cols)
    ax_main = fig.add_subplot(grid[:, 0])
    _bars(ax_main, mine[mine["method"] == primary], key, top_n, 8)
    ax_main.set_xlabel(f"{labels.get(primary, primary)} (word score)")
    ax_main.set_title(f"primary: {primary}", fontsize=9)
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[i % 2, 1 + i // 2])
        _bars(ax, mine[mine["method"] == name], key, min(top_n, 10), 6)
        ax.set_title(labels.get(name, name), fontsize=8)
        ax.tick_params(axis="x", labelsize=6)
    handles = [Patch(color=MARKER_COLOR, label="de-identification marker")]
    if key is not None:
        handles.append(Patch(color=KEY_COLOR, label="causal key (demo)"))
    if bool(mine["is_trigger"].any()):
        handles.append(Patch(color=TRIGGER_COLOR, label="planted trigger word"))
    handles.append(Patch(color=ORDINARY_COLOR, label="other word"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(
        f"Fig. 3 · prompt {pid[:10]} · d_mem {row.d_mem:.3g} · {row.reason} · "
        f"top {min(top_n, n_words)} words",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    save_figure(fig, png_path)


def plot_method_comparison(comparison: pd.DataFrame, png_path: str | Path) -> None:
    """Key top-1 rate of every method (95 % intervals, random order as a tick) against its
    cost in UNet rows per prompt, over all causal keys of the demo."""
    use_style()
    pooled = comparison[(comparison["kind"] == "all") & (comparison["n_keys"] > 0)]
    if pooled.empty:
        save_message_figure(png_path, "no causal key to score the methods against")
        return
    fig, (ax_top, ax_cost) = plt.subplots(1, 2, figsize=(10, 0.45 * len(pooled) + 1.8))
    y = np.arange(len(pooled))
    top = pooled["key_top1"].to_numpy(dtype=np.float64)
    err = _error_bars(top, pooled["key_top1_lo"], pooled["key_top1_hi"])
    ax_top.barh(y, top, xerr=err, color=ORDINARY_COLOR, ecolor="black", capsize=2)
    ax_top.scatter(pooled["chance_top1"], y, marker="|", color="grey", s=120, label="random order")
    ax_top.set_yticks(y, labels=pooled["method"].tolist(), fontsize=8)
    ax_top.invert_yaxis()
    ax_top.set(xlabel="causal key ranked first (fraction of keys)", xlim=(0, 1.05))
    ax_top.legend(loc="lower right", fontsize=8)
    ax_cost.scatter(pooled["unet_rows_per_prompt"], top, color=ORDINARY_COLOR)
    for r in pooled.itertuples(index=False):
        ax_cost.annotate(r.method, (r.unet_rows_per_prompt, r.key_top1), fontsize=7)
    ax_cost.set(xlabel="UNet rows per prompt", ylabel="key top-1", xscale="log", ylim=(0, 1.05))
    n = int(pooled["n_keys"].max())
    fig.suptitle(f"Attribution methods on the demo's {n} causal keys")
    fig.tight_layout()
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
        save_message_figure(png_path, "no word types to show (no memorized prompts)")
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
