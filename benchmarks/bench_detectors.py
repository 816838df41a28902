"""Benchmark the memorization detectors: counted UNet rows, measured speed, projected cost.

Not a test: run it by hand and read the table.

    python benchmarks/bench_detectors.py                            # demo-size random model
    python benchmarks/bench_detectors.py --model-dir results/model/demo
    python benchmarks/bench_detectors.py --radedit-size --prompts 16   # on a GPU
    python benchmarks/bench_detectors.py --tflops 400                # also project at 400 TFLOP/s

For every detector of ``scoring.detectors`` it scores the same prompts with the scoring engine
(50 steps, 4 generations: the paper's settings) and prints the UNet forward rows and
derivative rows per prompt it counted (the same on every machine), the seconds per 1,000
prompts on this machine, and the cost of 10^5 prompts at RadEdit size: the FLOPs of one
RadEdit-size UNet row (an SD-1-size UNet on a 4x64x64 latent with 128 text tokens, counted by
``torch.utils.flop_counter.FlopCounterMode``) times the rows, a derivative row counted as one
more row (forward-mode AD runs each operation once more on the tangent), divided by a
throughput: the one this run measured on this machine with the RadEdit-size UNet, and the one
given with ``--tflops`` (a GPU's, when none is at hand). Without a GPU the first is a CPU
figure: no GPU hour is printed that was not measured or given.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_scoring import chosen_model, flops_per_row, make_prompts, radedit_size_model

from memaudit.diffusion import unet_eps
from memaudit.scoring.catalog import CATALOG
from memaudit.scoring.engine import detect_prompts
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id

MIMIC_PROMPTS = 100_000  # ~10^5 unique MIMIC-CXR prompts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=16, help="prompts scored")
    parser.add_argument("--model-dir", help="a trained demo model folder (default: random)")
    parser.add_argument("--radedit-size", action="store_true", help="score at RadEdit size")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per batch")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--tflops", type=float, help="a throughput to project at (TFLOP/s)")
    parser.add_argument("--detectors", nargs="+", default=list(CATALOG), choices=list(CATALOG))
    return parser.parse_args(argv)


def measured_tflops(model, rows: int = 2, repeats: int = 2) -> float:
    """Achieved UNet TFLOP/s of ``model`` at ``rows`` rows per call, on this machine."""
    flops = flops_per_row(model)
    sample = torch.randn(rows, *model.latent_shape, device=model.device)
    context = model.encode(["no acute process"] * rows)
    t = torch.tensor(500, device=model.device)
    with torch.no_grad():
        unet_eps(model, sample, t, context)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            unet_eps(model, sample, t, context)
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        seconds = time.perf_counter() - start
    return flops * rows * repeats / seconds / 1e12


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    texts = make_prompts(args.prompts)
    model = chosen_model(args.model_dir, args.radedit_size, texts, device)
    spec = ScoringSpec.from_dict(
        {
            "steps": args.steps,
            "generations": args.generations,
            "batch_size": args.batch_size,
            "detectors": ["wen", *[d for d in args.detectors if d != "wen"]],
        }
    )
    print(
        f"device {device}, {len(texts)} prompts, {args.generations} generations, "
        f"{args.steps} steps, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    _, stats = detect_prompts(model, [prompt_id(t) for t in texts], texts, spec)
    big = model if args.radedit_size else radedit_size_model(texts[:2], device)
    flops = flops_per_row(big)
    here = measured_tflops(big)
    print(f"RadEdit-size UNet: {flops / 1e9:.0f} GFLOP per row; this machine: {here:.3f} TFLOP/s")
    print()
    rates = [("this machine", here)] + ([("given", args.tflops)] if args.tflops else [])
    header = f"{'detector':<19}{'rows/prompt':>12}{'deriv/prompt':>13}{'s/1000 here':>12}"
    header += f"{'PFLOP/1e5':>11}" + "".join(f"{f'h at {n}':>18}" for n, _ in rates)
    print(header)
    print("-" * len(header))
    for name, cost in stats["detectors"].items():
        rows = cost["unet_rows"] / len(texts)
        derivative = cost["backward_rows"] / len(texts)
        total = (rows + derivative) * flops * MIMIC_PROMPTS
        line = (
            f"{name:<19}{rows:>12.1f}{derivative:>13.1f}"
            f"{1000 * cost['seconds'] / len(texts):>12.1f}{total / 1e15:>11.1f}"
        )
        line += "".join(f"{total / (rate * 1e12) / 3600:>18.2f}" for _, rate in rates)
        print(line)
    print()
    print(
        "rows, derivative rows and PFLOP are counted (machine independent); s/1000 is this "
        "machine's with the model scored; the hours divide the counted FLOPs by a throughput "
        "(measured here, or --tflops)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
