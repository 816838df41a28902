"""Benchmark the batched d_mem engine against a per-prompt StableDiffusionPipeline loop.

Not a test: run it by hand and read the table.

    python benchmarks/bench_scoring.py                        # demo-size random model, CPU
    python benchmarks/bench_scoring.py --model-dir results/model/demo
    python benchmarks/bench_scoring.py --radedit-size --dtype bfloat16 --prompts 64   # GPU

The per-prompt loop is the seed paper's way of scoring: for each prompt, one
``StableDiffusionPipeline`` call with ``num_images_per_prompt=n`` and the same x_T, a
``callback_on_step_end`` that runs the UNet again on the latents the step started from, once
with the prompt and once with the empty prompt, and takes the norm of the difference; the
pipeline decodes images that are never used. It must run whole trajectories to get any score,
so its first-step and full-trajectory throughput are the same. It always runs in float32.

A demo (pixel-space) model has no VAE, but the pipeline needs one: the loop gets a one-level
random ``AutoencoderKL`` with one channel (scale factor 1, so latents = pixels) whose decode
stands in for the decode the loop pays for and never uses.

``--radedit-size``: a UNet with Stable-Diffusion-1 sizes (4x64x64 latents, block channels
320/640/1280/1280, 2 layers per block, 8 attention heads, cross-attention 768) and a random
12-layer BERT of width 768 with 128 tokens, all with random weights; the loop decodes with an
SDXL-VAE-size random AutoencoderKL. It prints UNet evaluations/s, achieved TFLOP/s (FLOPs of
one UNet row counted by ``torch.utils.flop_counter.FlopCounterMode``) and the hours projected
for 100,000 prompts at 50 steps x 4 generations. On a CPU (smoke check only) it uses one
generation and a tiny VAE unless told otherwise.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from scipy.stats import spearmanr
from torch.utils.flop_counter import FlopCounterMode
from transformers import BertConfig, BertModel, BertTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit import diffusion
from memaudit.diffusion import initial_noise
from memaudit.model.loading import AuditModel, load_model, radedit_scheduler
from memaudit.scoring.engine import score_prompts
from memaudit.scoring.spec import ScoringSpec
from memaudit.text import prompt_id

FINDINGS = [
    "no acute cardiopulmonary process",
    "small left pleural effusion",
    "right lower lobe pneumonia",
    "mild cardiomegaly without pulmonary edema",
    "no pneumothorax",
    "stable post-operative appearance of the mediastinum",
    "bibasilar atelectasis",
    "endotracheal tube terminates above the carina",
]
TAILS = [
    "",
    "unchanged since ___",
    "findings discussed with dr. ___ at ___",
    "compared to the prior study",
    "recommend follow-up radiograph",
]
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def make_prompts(n: int) -> list[str]:
    """``n`` distinct report-like prompts, some with the marker ``___`` (deterministic)."""
    prompts = []
    for i in range(n):
        finding = FINDINGS[i % len(FINDINGS)]
        tail = TAILS[(i // len(FINDINGS)) % len(TAILS)]
        number = i // (len(FINDINGS) * len(TAILS))
        text = f"{finding}. {tail}." if tail else f"{finding}."
        prompts.append(f"{text} case {number}." if number else text)
    return prompts


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def demo_spec():
    """The default demo's architecture: ``config.yaml``'s train block and image size over the
    schema's defaults (the model `make demo` trains)."""
    import yaml

    from memaudit.model.spec import TrainSpec

    config = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text())
    train = dict(config.get("train") or {})
    train["image_size"] = (config.get("demo") or {}).get("image_size", TrainSpec().image_size)
    return TrainSpec.from_dict(train)


def demo_size_model(prompts: list[str], device: torch.device) -> AuditModel:
    """The default demo's architecture (:func:`demo_spec`) with random weights."""
    from memaudit.model.training import build_demo_model

    return build_demo_model(prompts, demo_spec(), device=device)


def radedit_size_model(prompts: list[str], device: torch.device) -> AuditModel:
    """SD-1-size UNet + 768-wide 12-layer BERT (128 tokens), random weights, float32."""
    words = sorted({w for p in prompts for w in p.replace(".", " . ").split()})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "_", *words]
    folder = Path(tempfile.mkdtemp(prefix="bench_vocab_"))
    (folder / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.model_max_length = 128
    torch.manual_seed(0)
    with torch.device(device):
        encoder = BertModel(BertConfig(vocab_size=30522, max_position_embeddings=512))
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            layers_per_block=2,
            attention_head_dim=8,
            cross_attention_dim=768,
        )
    return AuditModel(
        kind="radedit",
        tokenizer=tokenizer,
        text_encoder=encoder.eval(),
        unet=unet.eval(),
        scheduler=radedit_scheduler(),
        vae=None,
        vae_scaling_factor=0.13025,
        image_size=512,
        latent_shape=(4, 64, 64),
        max_length=128,
        dtype=torch.float32,
        device=device,
    )


def chosen_model(
    model_dir: str | None, radedit_size: bool, texts: list[str], device: torch.device
) -> AuditModel:
    """The model a benchmark's ``--model-dir`` / ``--radedit-size`` flags ask for (a trained
    demo folder first), else the demo-size random model."""
    if model_dir:
        return load_model({"kind": "demo", "path": model_dir}, device=str(device))
    if radedit_size:
        return radedit_size_model(texts, device)
    return demo_size_model(texts, device)


def loop_vae(model: AuditModel, size: str) -> AutoencoderKL:
    """The VAE the per-prompt pipeline decodes with (random weights; output never used)."""
    channels = model.latent_shape[0]
    torch.manual_seed(0)
    if model.vae is not None and size == "model":
        return model.vae
    if size == "full":  # SDXL-VAE sizes
        blocks, layers, groups, image_channels = (128, 256, 512, 512), 2, 32, 3
    elif model.vae is None:  # pixel space: one level, scale factor 1
        blocks, layers, groups, image_channels = (8,), 1, 4, channels
    else:  # latent space on a CPU smoke run: a tiny VAE with the right scale factor
        levels = int(round(math.log2(model.image_size / model.latent_shape[1]))) + 1
        blocks, layers, groups, image_channels = tuple([8] * levels), 1, 4, 3
    vae = AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        down_block_types=("DownEncoderBlock2D",) * len(blocks),
        up_block_types=("UpDecoderBlock2D",) * len(blocks),
        block_out_channels=blocks,
        layers_per_block=layers,
        latent_channels=channels,
        norm_num_groups=groups,
        sample_size=model.latent_shape[1] * 2 ** (len(blocks) - 1),
        scaling_factor=model.vae_scaling_factor if model.vae is not None else 1.0,
    )
    return vae.to(model.device).eval()


def run_loop(model: AuditModel, vae: AutoencoderKL, texts: list[str], spec: ScoringSpec):
    """The per-prompt reference: returns norms [prompts, gens, steps] and seconds."""
    tokenizer = copy.deepcopy(model.tokenizer)
    tokenizer.model_max_length = model.max_length
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=model.text_encoder,
        tokenizer=tokenizer,
        unet=model.unet,
        scheduler=copy.deepcopy(model.scheduler),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    # The constructor silently switches clip_sample off (a diffusers deprecation shim), which
    # would give the loop another trajectory than the demo model's clipped DDIM sampler.
    pipe.scheduler = copy.deepcopy(model.scheduler)
    pipe.set_progress_bar_config(disable=True)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    side = model.latent_shape[1] * factor
    n = spec.generations
    x_T = initial_noise(model.latent_shape, n, spec.seed, model.device)
    all_norms = []
    start = time.perf_counter()
    for text in texts:
        with torch.no_grad():
            cond = model.encode([text]).repeat(n, 1, 1)
            uncond = model.encode([""]).repeat(n, 1, 1)
        state = {"latents": x_T, "norms": []}

        def on_step_end(pipeline, step, timestep, kwargs, state=state, cond=cond, uncond=uncond):
            x = state["latents"]  # the latents this step started from
            with torch.no_grad():
                eps_c = model.unet(x, timestep, encoder_hidden_states=cond).sample
                eps_u = model.unet(x, timestep, encoder_hidden_states=uncond).sample
            diff = (eps_c - eps_u).float().flatten(1)
            state["norms"].append(torch.linalg.vector_norm(diff, dim=1).cpu())
            state["latents"] = kwargs["latents"]
            return kwargs

        pipe(
            text,
            height=side,
            width=side,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance,
            num_images_per_prompt=n,
            latents=x_T.clone(),
            output_type="np",
            callback_on_step_end=on_step_end,
        )
        all_norms.append(torch.stack(state["norms"], dim=1).numpy())
    if model.device.type == "cuda":
        torch.cuda.synchronize()
    return np.stack(all_norms), time.perf_counter() - start


def flops_per_row(model: AuditModel) -> float:
    """FLOPs of one UNet evaluation of one latent (FlopCounterMode on a forward of batch 1)."""
    sample = torch.zeros((1, *model.latent_shape), device=model.device, dtype=model.dtype)
    emb = model.encode([""])
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model.unet(sample, torch.tensor(999, device=model.device), encoder_hidden_states=emb)
    return float(counter.get_total_flops())


def matmul_gflops(
    device: torch.device, n: int = 2048, repeats: int = 10, dtype: torch.dtype = torch.float32
) -> float:
    """The machine's matrix-multiply rate in GFLOP/s (n x n by n x n in ``dtype``, best of
    three rounds of ``repeats``), with the thread count this process uses: the peak the engine
    is held against."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = 0.0
    for _ in range(3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9)
    return best


def print_efficiency(model: AuditModel, results: dict) -> float:
    """Achieved GFLOP/s of the engine (UNet FLOPs per row x rows/s) in both modes, against
    the 2048^2 matmul rate measured here and now, and their ratio. Returns the matmul rate."""
    flops = flops_per_row(model)
    peak = matmul_gflops(torch.device(model.device))
    print()
    print(
        f"UNet FLOPs per row: {flops / 1e9:.4f} GFLOP; float32 2048^2 matmul: {peak:.1f} GFLOP/s "
        f"({torch.get_num_threads()} threads, measured in this run)"
    )
    for name in ("full", "first"):
        stats = results[name][1]
        rows_s = stats["unet_rows"] / stats["seconds"]
        achieved = flops * rows_s / 1e9
        print(
            f"efficiency {name:<5}: {rows_s:8.1f} UNet rows/s = {achieved:7.1f} GFLOP/s; "
            f"matmul {peak:7.1f} GFLOP/s; ratio {achieved / peak:.2f}"
        )
    return peak


def layer_profile(model: AuditModel, batch_rows: int, repeats: int = 5) -> tuple[list[dict], float]:
    """Where one UNet call's time goes, per leaf module: FLOPs (counted), seconds (wall clock
    between forward pre- and post-hooks, averaged over ``repeats`` calls of ``batch_rows``
    rows) and the GFLOP/s each layer achieves. Grouped by module class and place; returns the
    groups, slowest first, and the seconds of one whole call."""
    unet = model.unet
    sample = torch.randn((batch_rows, *model.latent_shape), device=model.device)
    emb = model.encode([""]).expand(batch_rows, -1, -1)
    timestep = torch.tensor(999, device=model.device)
    names = {m: n for n, m in unet.named_modules()}
    leaves = [m for m in unet.modules() if not list(m.children())]
    # attention blocks are timed whole (their kernels run outside any leaf module)
    attention = [m for m in unet.modules() if type(m).__name__ == "Attention"]
    inside = {m for a in attention for m in a.modules()}
    timed = [m for m in leaves if m not in inside] + attention
    seconds = dict.fromkeys(timed, 0.0)
    starts: dict = {}

    def before(module, _args):
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        starts[module] = time.perf_counter()

    def after(module, _args, _out):
        if model.device.type == "cuda":
            torch.cuda.synchronize(model.device)
        seconds[module] += time.perf_counter() - starts[module]

    with torch.no_grad():
        counter = FlopCounterMode(display=False)
        with counter:
            unet(sample, timestep, encoder_hidden_states=emb)
        per_module = counter.get_flop_counts()
        unet(sample, timestep, encoder_hidden_states=emb)  # warm-up
        handles = [m.register_forward_pre_hook(before) for m in timed]
        handles += [m.register_forward_hook(after) for m in timed]
        start = time.perf_counter()
        for _ in range(repeats):
            unet(sample, timestep, encoder_hidden_states=emb)
        total = (time.perf_counter() - start) / repeats
        for handle in handles:
            handle.remove()
    groups: dict[str, dict] = {}
    for module in timed:
        name = names[module]
        place = "down" if "down_blocks" in name else "up" if "up_blocks" in name else "mid"
        place = place if "blocks" in name else "in/out"
        key = f"{type(module).__name__} ({place})"
        flops = sum(per_module.get(f"UNet2DConditionModel.{name}", {}).values())
        group = groups.setdefault(key, {"layer": key, "calls": 0, "flops": 0.0, "seconds": 0.0})
        group["calls"] += 1
        group["flops"] += flops
        group["seconds"] += seconds[module] / repeats
    timed_total = sum(g["seconds"] for g in groups.values())
    groups["(between layers: adds, concatenations, reshapes)"] = {
        "layer": "(between layers: adds, concatenations, reshapes)",
        "calls": 0,
        "flops": 0.0,
        "seconds": max(0.0, total - timed_total),
    }
    return sorted(groups.values(), key=lambda g: -g["seconds"]), total


def print_layer_profile(model: AuditModel, batch_rows: int, peak: float) -> None:
    """:func:`layer_profile` as a table: the layers that hold the engine back, and why."""
    rows, total = layer_profile(model, batch_rows)
    flops_total = sum(r["flops"] for r in rows)
    print()
    print(f"per-layer profile: one UNet call of {batch_rows} rows, {total * 1e3:.1f} ms")
    header = (
        f"{'layer (class, place)':<52} {'calls':>5} {'time %':>7} {'FLOP %':>7} "
        f"{'GFLOP/s':>8} {'of matmul':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        rate = r["flops"] / r["seconds"] / 1e9 if r["seconds"] > 0 else 0.0
        print(
            f"{r['layer']:<52} {r['calls']:>5} {100 * r['seconds'] / total:>6.1f}% "
            f"{100 * r['flops'] / max(flops_total, 1):>6.1f}% {rate:>8.1f} {rate / peak:>9.2f}"
        )


def with_dtype(model: AuditModel, dtype: torch.dtype) -> AuditModel:
    if dtype == model.dtype:
        return model
    out = copy.copy(model)
    out.unet = copy.deepcopy(model.unet).to(dtype)
    out.text_encoder = copy.deepcopy(model.text_encoder).to(dtype)
    out.dtype = dtype
    return out


def rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-12)))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model-dir", help="a demo model folder (kind: demo)")
    parser.add_argument("--radedit-size", action="store_true", help="RadEdit-size random model")
    parser.add_argument("--prompts", type=int, default=32, help="prompts the engine scores")
    parser.add_argument(
        "--loop-prompts",
        type=int,
        help="prompts the per-prompt loop scores (default: all; 1 for a CPU RadEdit smoke)",
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--generations", type=int, help="default 4 (1 for a CPU RadEdit smoke)")
    parser.add_argument("--guidance", type=float, default=7.5)
    parser.add_argument("--batch-size", default="auto", help="prompts per UNet call, or auto")
    parser.add_argument("--dtype", choices=sorted(DTYPES), help="engine dtype (default float32)")
    parser.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    parser.add_argument(
        "--loop-vae",
        choices=["auto", "full", "tiny", "model"],
        default="auto",
        help="VAE the loop decodes with: the model's, SDXL-size, tiny; auto = model's, else "
        "SDXL-size for --radedit-size on a GPU, else tiny",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also time one UNet call per layer (what holds the achieved GFLOP/s back)",
    )
    parser.add_argument(
        "--tf32",
        action="store_true",
        help="allow TF32 convolutions/matmuls on the GPU (off: float32 means float32)",
    )
    args = parser.parse_args(argv)
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    args.torch_dtype = DTYPES[args.dtype or "float32"]
    if args.device.type == "cpu" and args.torch_dtype != torch.float32:
        parser.error("only --dtype float32 is supported on CPU (bfloat16 UNets crash some CPUs)")
    return args


def build_models(
    args: argparse.Namespace, texts: list[str], cpu_smoke: bool
) -> tuple[AuditModel, AuditModel, AutoencoderKL, str, str]:
    """(the float32 model, the engine's model in its dtype, the loop's VAE, labels)."""
    device = args.device
    if args.radedit_size:
        model = radedit_size_model(texts, device)
        label = "RadEdit-size random UNet (4x64x64, SD-1 sizes) + BERT-768x12, 128 tokens"
    elif args.model_dir:
        model = load_model({"kind": "demo", "path": args.model_dir}, device=str(device))
        label = f"demo model {args.model_dir}"
    else:
        model = demo_size_model(texts, device)
        spec = demo_spec()
        label = (
            f"demo-size random model (1x{spec.image_size}x{spec.image_size} pixels, UNet "
            f"{'/'.join(map(str, spec.unet_block_out_channels))}, "
            f"BERT-{spec.text_hidden_size}x{spec.text_layers})"
        )
    vae_size = args.loop_vae
    if vae_size == "auto":
        vae_size = "model" if model.vae is not None else ("full" if args.radedit_size else "tiny")
        if cpu_smoke:
            vae_size = "tiny"
    return model, with_dtype(model, args.torch_dtype), loop_vae(model, vae_size), label, vae_size


def print_comparison(
    results: dict, loop_norms: np.ndarray, loop_s: float, loop_n: int, steps: int
) -> None:
    """The engine against the loop, full trajectory and first step."""
    loop_rate = loop_n / loop_s
    header = (
        f"{'mode':<7} {'engine prompts/s':>17} {'loop prompts/s':>15} {'speed-up':>9} "
        f"{'max rel diff':>13} {'spearman':>9} {'engine batch':>13} {'UNet rows/s':>12} "
        f"{'peak GPU MB':>12}"
    )
    print(header)
    print("-" * len(header))
    for name, window in (("full", (0, None)), ("first", (0, 1))):
        table, stats = results[name]
        engine = table["d_mem"].to_numpy()[:loop_n]
        stop = window[1] or steps
        loop = loop_norms[..., window[0] : stop].mean(axis=(1, 2))
        rho = spearmanr(engine, loop).statistic if loop_n > 2 else float("nan")
        rows_s = stats["unet_rows"] / stats["seconds"]
        gpu = f"{stats['peak_gpu_mb']:.0f}" if stats["peak_gpu_mb"] is not None else "-"
        print(
            f"{name:<7} {stats['prompts_per_s']:>17.2f} {loop_rate:>15.3f} "
            f"{stats['prompts_per_s'] / loop_rate:>8.1f}x {rel_diff(engine, loop):>13.2e} "
            f"{rho:>9.4f} {stats['batch_size_final']:>13} {rows_s:>12.1f} {gpu:>12}"
        )


def print_projection(engine_model: AuditModel, stats: dict) -> None:
    """UNet FLOPs, achieved TFLOP/s and hours for 100,000 prompts (RadEdit size)."""
    flops = flops_per_row(engine_model)
    rows_s = stats["unet_rows"] / stats["seconds"]
    b = stats["batch_size_final"]
    rows_full = 2 * 4 * 50 - 4 + 4 / b  # 50 steps x 4 generations, shared first step
    rows_first = 4 + 4 / b
    print()
    print(f"UNet FLOPs per row (one latent): {flops / 1e9:.1f} GFLOP")
    print(f"engine UNet evaluations/s: {rows_s:.2f}; achieved {flops * rows_s / 1e12:.2f} TFLOP/s")
    for name, rows in (("50 steps x 4 gens", rows_full), ("first step x 4 gens", rows_first)):
        hours = 100_000 * rows / rows_s / 3600
        print(f"projected for 100,000 prompts, {name}: {hours:.2f} h ({rows:.0f} rows/prompt)")


def main(argv: list[str] | None = None) -> int:
    # 1. Settings
    args = parse_args(argv)
    device = args.device
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = args.tf32
        torch.backends.cuda.matmul.allow_tf32 = args.tf32
    cpu_smoke = args.radedit_size and device.type == "cpu"
    generations = args.generations or (1 if cpu_smoke else 4)
    if cpu_smoke and args.generations is None and args.loop_prompts is None:
        print("CPU RadEdit-size smoke check: 1 generation, the loop scores 1 prompt")
    batch = args.batch_size if args.batch_size == "auto" else int(args.batch_size)
    texts = make_prompts(args.prompts)
    ids = [prompt_id(t) for t in texts]
    loop_n = min(args.loop_prompts or (1 if cpu_smoke else len(texts)), len(texts))
    # 2. Models
    t0 = time.perf_counter()
    model, engine_model, vae, label, vae_size = build_models(args, texts, cpu_smoke)
    build_s = time.perf_counter() - t0
    print(
        f"model: {label}; built in {build_s:.1f} s; device {device}; engine dtype "
        f"{args.torch_dtype}"
    )
    print(
        f"prompts: engine {len(texts)}, loop {loop_n}; steps {args.steps}, generations "
        f"{generations}, guidance {args.guidance}, batch {batch}; loop VAE: {vae_size}"
        + (f"; TF32 {'on' if args.tf32 else 'off'}" if device.type == "cuda" else "")
    )
    # 3. The engine, full trajectory and first step, then the per-prompt loop
    full = ScoringSpec(
        steps=args.steps,
        guidance=args.guidance,
        generations=generations,
        window=(0, None),
        batch_size=batch,
        seed=args.seed,
    )
    modes = (("full", full), ("first", dataclasses.replace(full, window=(0, 1))))
    results = {}
    for name, spec in modes:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        results[name] = score_prompts(engine_model, ids, texts, spec, progress=sys.stderr)
    eager = {}
    if device.type == "cpu":  # the same engine with the frozen UNet switched off
        diffusion.FREEZE = False
        try:
            for name, spec in modes:
                eager[name] = score_prompts(engine_model, ids, texts, spec, progress=sys.stderr)
        finally:
            diffusion.FREEZE = True
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loop_norms, loop_s = run_loop(model, vae, texts[:loop_n], full)
    loop_gpu = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
    # 4. Report
    print()
    print_comparison(results, loop_norms, loop_s, loop_n, args.steps)
    print(
        f"loop: {loop_n} prompts in {loop_s:.1f} s; UNet rows per prompt "
        f"{4 * generations * args.steps} (2 pipeline + 2 callback per step and generation)"
        + (f"; peak GPU {loop_gpu:.0f} MB" if loop_gpu is not None else "")
    )
    print(f"peak CPU RSS (whole process): {peak_rss_mb():.0f} MB")
    peak = print_efficiency(engine_model, results)
    for name, (table, stats) in eager.items():
        frozen_table, frozen_stats = results[name]
        same = np.array_equal(table["d_mem"].to_numpy(), frozen_table["d_mem"].to_numpy())
        ratio = stats["seconds"] / frozen_stats["seconds"]
        rate = frozen_stats["unet_rows"] / frozen_stats["seconds"]
        print(
            f"frozen UNet vs eager, {name:<5}: {rate:.1f}"
            f" vs {stats['unet_rows'] / stats['seconds']:.1f} UNet rows/s, {ratio:.2f}x; "
            f"scores identical: {same}"
        )
    if args.profile:
        print_layer_profile(
            engine_model, 2 * generations * results["full"][1]["batch_size_final"], peak
        )
    if args.radedit_size:
        print_projection(engine_model, results["full"][1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
