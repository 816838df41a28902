"""Benchmark the attribution methods: UNet rows per prompt, rows/s and projected hours.

Not a test: run it by hand and read the table.

    python benchmarks/bench_attribution.py                      # demo-size random model, CPU
    python benchmarks/bench_attribution.py --model-dir results/model/demo
    python benchmarks/bench_attribution.py --radedit-size --prompts 16   # on a GPU

For each method (``attribution.methods``) it attributes the same prompts with the attribution
engine (the default window: Wen et al.'s first step, 4 generations, 50 scheduler steps) and
prints the UNet rows per prompt it counted (forward rows; the rows that also carry a backward
pass apart), the rows/s it reached, the seconds per prompt and the hours projected for the top
1 % of ~10^5 MIMIC-CXR prompts (1,000 prompts) on this machine. ``--radedit-size`` uses
RadEdit-size random components (SD-1-size UNet, 768-wide 12-layer BERT, 128 tokens) and also
prints the UNet FLOPs per row; on a CPU that is a smoke check of the code path, not a figure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scoring import chosen_model, flops_per_row, make_prompts

from memaudit.attribution.engine import attribute_prompts
from memaudit.attribution.spec import METHODS, AttributionSpec
from memaudit.selection import select_prompts
from memaudit.text import prompt_id

TOP_PROMPTS = 1000  # the top 1 % of ~10^5 unique MIMIC-CXR prompts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="prompts attributed per method")
    parser.add_argument("--model-dir", help="a trained demo model folder (default: random)")
    parser.add_argument("--radedit-size", action="store_true", help="RadEdit-size components")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per backward pass")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50, help="scheduler steps")
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    texts = make_prompts(args.prompts)
    model = chosen_model(args.model_dir, args.radedit_size, texts, device)
    memorized = pd.DataFrame(
        {
            "prompt_id": [prompt_id(t) for t in texts],
            "text": texts,
            "d_mem": np.linspace(2.0, 1.0, len(texts)),
            "rank": np.arange(1, len(texts) + 1),
        }
    )
    selected, _ = select_prompts(memorized)
    spec = AttributionSpec(ig_steps=args.ig_steps).scoring_spec(
        {"steps": args.steps, "generations": args.generations, "guidance": 7.5, "seed": 0}
    )
    print(
        f"device {device}, {len(texts)} prompts, window {list(spec.window_bounds())}, "
        f"{args.generations} generations, {args.steps} steps, ig_steps {args.ig_steps}, "
        f"batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    if args.radedit_size:
        print(f"UNet FLOPs per row: {flops_per_row(model) / 1e9:.1f} GFLOP")
    print()
    header = (
        f"{'method':<22}{'rows/prompt':>12}{'backward/prompt':>16}{'rows/s':>10}"
        f"{'s/prompt':>10}{f'h for {TOP_PROMPTS:,}':>12}"
    )
    print(header)
    print("-" * len(header))
    for method in args.methods:
        methods = ("gradient",) if method == "gradient" else ("gradient", method)
        _, stats = attribute_prompts(
            model, selected, spec, args.batch_size, ["___"], methods=methods
        )
        if method == "gradient":
            block = stats["gradient"]
        elif method == "occlusion_delete":
            block = stats["occlusion"]
        else:
            block = stats["methods"][method]
        rows = float(block["unet_rows"])
        backward = float(block.get("backward_rows", 0) or 0)
        seconds = float(block["seconds"])
        n = len(selected)
        per_prompt = seconds / n
        print(
            f"{method:<22}{rows / n:>12.0f}{backward / n:>16.0f}{rows / seconds:>10.1f}"
            f"{per_prompt:>10.3f}{TOP_PROMPTS * per_prompt / 3600:>12.3f}"
        )
    print()
    print(
        "rows/prompt and backward/prompt are counted, the same on every machine; rows/s, "
        "s/prompt and the projected hours are this machine's."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
