"""The GPU check of the scoring engine at RadEdit size: one prepared script, one run.

Not a test: run it on a machine with a CUDA GPU and read the table (and the JSON it writes).

    python benchmarks/bench_gpu.py                      # RadEdit size, bfloat16 and float32
    python benchmarks/bench_gpu.py --prompts 128 --loop-prompts 4
    python benchmarks/bench_gpu.py --smoke              # CPU: the demo model, float32 only

It records, in one process and on one card:

- the card's measured matmul peak (8192^2, bfloat16 and float32 with TF32 off), TFLOP/s;
- per dtype, the engine's UNet rows/s and achieved TFLOP/s (FLOPs of one UNet row counted by
  FlopCounterMode) against that dtype's peak, full trajectory (50 steps x 4 generations) and
  first step;
- the agreement of bfloat16 with float32 scores: Spearman of d_mem over the same prompts and
  x_T (the bar: >= 0.999);
- the batched engine against the per-prompt StableDiffusionPipeline loop (float32);
- the hours projected for 10^5 prompts, full trajectory and first step, per dtype.

With ``--smoke`` (no GPU) the same code runs on the demo-size model in float32 only, so the
script can be checked anywhere; its numbers are not GPU figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_scoring import (  # noqa: E402
    demo_size_model,
    flops_per_row,
    loop_vae,
    make_prompts,
    matmul_gflops,
    radedit_size_model,
    run_loop,
    with_dtype,
)

from memaudit.scoring.engine import score_prompts  # noqa: E402
from memaudit.scoring.spec import ScoringSpec  # noqa: E402
from memaudit.text import prompt_id  # noqa: E402

PROMPTS_PROJECTED = 100_000


def engine_run(model, ids, texts, spec) -> dict:
    """One scoring pass: d_mem per prompt, rows/s, prompts/s."""
    table, stats = score_prompts(model, ids, texts, spec, progress=sys.stderr)
    return {
        "d_mem": table["d_mem"].to_numpy().tolist(),
        "rows_per_s": stats["unet_rows"] / stats["seconds"],
        "prompts_per_s": stats["prompts_per_s"],
        "rows_per_prompt": stats["unet_rows"] / len(ids),
        "batch": stats["batch_size_final"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts the engine scores")
    parser.add_argument("--loop-prompts", type=int, default=4, help="prompts the loop scores")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--smoke", action="store_true", help="CPU, demo model, float32 only")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu.json"))
    args = parser.parse_args(argv)
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this is the GPU check (use --smoke to try it on a CPU)")
    if device.type == "cuda":  # float32 means float32
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    texts = make_prompts(args.prompts)
    ids = [prompt_id(t) for t in texts]
    model = demo_size_model(texts, device) if args.smoke else radedit_size_model(texts, device)
    dtypes = {"float32": torch.float32} | ({} if args.smoke else {"bfloat16": torch.bfloat16})
    full = ScoringSpec(steps=args.steps, generations=args.generations, window=(0, None))
    first = dataclasses.replace(full, window=(0, 1))
    report: dict = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "model": "demo-size (smoke)" if args.smoke else "RadEdit-size random UNet + BERT-768",
        "prompts": args.prompts,
        "steps": args.steps,
        "generations": args.generations,
        "dtypes": {},
    }
    for name, dtype in dtypes.items():
        engine_model = with_dtype(model, dtype)
        flops = flops_per_row(engine_model)
        n = 8192 if device.type == "cuda" else 1024
        peak = matmul_gflops(device, n=n, repeats=20, dtype=dtype) / 1000  # TFLOP/s
        runs = {
            mode: engine_run(engine_model, ids, texts, spec)
            for mode, spec in (("full", full), ("first", first))
        }
        for run in runs.values():
            run["tflops"] = flops * run["rows_per_s"] / 1e12
            run["of_peak"] = run["tflops"] / peak
            run["hours_for_1e5_prompts"] = (
                PROMPTS_PROJECTED * run["rows_per_prompt"] / run["rows_per_s"] / 3600
            )
        report["dtypes"][name] = {"gflop_per_row": flops / 1e9, "matmul_peak_tflops": peak, **runs}
    if "bfloat16" in report["dtypes"]:
        for mode in ("full", "first"):
            rho = spearmanr(
                report["dtypes"]["float32"][mode]["d_mem"],
                report["dtypes"]["bfloat16"][mode]["d_mem"],
            ).statistic
            report[f"spearman_bf16_fp32_{mode}"] = float(rho)
    loop_n = min(args.loop_prompts, len(texts))
    _, loop_s = run_loop(
        model, loop_vae(model, "full" if not args.smoke else "tiny"), texts[:loop_n], full
    )
    report["loop_prompts_per_s"] = loop_n / loop_s
    report["engine_vs_loop_full_fp32"] = (
        report["dtypes"]["float32"]["full"]["prompts_per_s"] / report["loop_prompts_per_s"]
    )
    # print
    print(f"device: {report['device']}; model: {report['model']}")
    for name, block in report["dtypes"].items():
        print(
            f"{name}: matmul peak {block['matmul_peak_tflops']:.1f} TFLOP/s; "
            f"{block['gflop_per_row']:.1f} GFLOP per UNet row"
        )
        for mode in ("full", "first"):
            run = block[mode]
            print(
                f"  {mode:<5} {run['rows_per_s']:10.1f} UNet rows/s  {run['tflops']:8.2f} TFLOP/s"
                f"  ({run['of_peak']:.2f} of peak)  {run['hours_for_1e5_prompts']:8.2f} h for "
                f"10^5 prompts (batch {run['batch']})"
            )
    for mode in ("full", "first"):
        if f"spearman_bf16_fp32_{mode}" in report:
            print(
                f"Spearman bf16 vs fp32 d_mem, {mode}: {report[f'spearman_bf16_fp32_{mode}']:.5f}"
                " (bar: >= 0.999)"
            )
    print(
        f"engine vs per-prompt loop, full trajectory, float32: "
        f"{report['engine_vs_loop_full_fp32']:.1f}x ({loop_n} loop prompts)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
