"""Benchmark the exact copy-detection search at MIMIC-CXR-JPG scale (not a test; prints lines).

Random unit rows stand in for the embeddings: 377,110 training rows (the MIMIC-CXR-JPG
images) and 10,000 queries (generations or held-out images), dimension 128 by default.
Prints queries/s, seconds, the search's memory (the ``ru_maxrss`` rise and the theoretical
bound of the similarity buffer), then checks a subset of queries against a float64 brute
force (largest similarity difference, share of identical rows). When ``faiss`` is importable
the same search runs through ``faiss.IndexFlatIP`` (also exact) for a speed ratio.

    .venv/bin/python benchmarks/bench_copy_search.py                     # full scale, CPU
    .venv/bin/python benchmarks/bench_copy_search.py --train 20000 --queries 1000 --block 4096
    .venv/bin/python benchmarks/bench_copy_search.py --device cuda
    .venv/bin/python benchmarks/bench_copy_search.py --compare-block 8192 --no-faiss
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memaudit.copy_detection import search
from memaudit.copy_detection.search import nearest_neighbours

MIB = 2**20


def peak_rss_mib() -> float:
    """Largest resident set of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit_rows(n: int, dim: int, rng: np.random.Generator, chunk: int = 65536) -> np.ndarray:
    """[n, dim] float32 random unit rows, drawn in chunks so that no float64 copy exists."""
    rows = np.empty((n, dim), dtype=np.float32)
    for lo in range(0, n, chunk):
        part = rows[lo : lo + chunk]
        rng.standard_normal(part.shape, dtype=np.float32, out=part)
        part /= np.linalg.norm(part, axis=1, keepdims=True)
    return rows


def brute_force(queries: np.ndarray, train: np.ndarray, chunk: int = 32768):
    """float64 (best similarity, row, second-best similarity) of each query, by chunks."""
    q = queries.astype(np.float64)
    best = np.full(len(q), -np.inf)
    second = np.full(len(q), -np.inf)
    where = np.zeros(len(q), dtype=np.int64)
    for lo in range(0, len(train), chunk):
        sims = q @ train[lo : lo + chunk].astype(np.float64).T
        top2 = np.argpartition(sims, -2, axis=1)[:, -2:]
        for col in (0, 1):  # fold this chunk's two best into the running two best
            value = sims[np.arange(len(q)), top2[:, col]]
            row = top2[:, col] + lo
            beats_best = value > best
            second = np.where(beats_best, best, np.maximum(second, value))
            where = np.where(beats_best, row, where)
            best = np.where(beats_best, value, best)
    return best, where, second


def time_faiss(train: np.ndarray, queries: np.ndarray):
    """(seconds, similarities, rows) of faiss.IndexFlatIP, or None when faiss is missing."""
    try:
        import faiss  # noqa: PLC0415 - optional, never a dependency
    except ImportError:
        return None
    start = time.perf_counter()
    index = faiss.IndexFlatIP(train.shape[1])
    index.add(train)
    sims, rows = index.search(queries, 1)
    return time.perf_counter() - start, sims[:, 0], rows[:, 0].astype(np.int64)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=377_110, help="training rows")
    parser.add_argument("--queries", type=int, default=10_000, help="query rows")
    parser.add_argument("--dim", type=int, default=128, help="embedding dimension")
    parser.add_argument("--block", type=int, default=65536, help="copy_detection.search_block")
    parser.add_argument("--check", type=int, default=500, help="queries checked in float64")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--compare-block", type=int, help="also search with this block; print the difference"
    )
    parser.add_argument("--no-faiss", action="store_true", help="skip the faiss comparison")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    # 1. Data
    args = parse_args(argv)
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    train = unit_rows(args.train, args.dim, rng)
    queries = unit_rows(args.queries, args.dim, rng)
    print(
        f"data: {args.train:,} training x {args.queries:,} query rows, dimension {args.dim}, "
        f"float32 ({train.nbytes / MIB:.0f} MiB training); made in "
        f"{time.perf_counter() - t0:.1f} s"
    )
    chunk = min(search._QUERY_CHUNK, args.queries)
    buffer = chunk * min(args.block, args.train) * 4
    print(
        f"search: block {args.block}, query chunk {chunk}, device {args.device}, torch "
        f"threads {torch.get_num_threads()}; similarity buffer bound {buffer / MIB:.0f} MiB"
    )
    # 2. The search, timed, with the rise of the peak resident set
    nearest_neighbours(queries[:8], train[:1024], args.device, args.block)  # warm-up
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    sims, rows = nearest_neighbours(queries, train, args.device, args.block)
    seconds = time.perf_counter() - start
    rise = peak_rss_mib() - rss_before
    print(
        f"memaudit exact search: {seconds:.2f} s, {args.queries / seconds:,.0f} queries/s, "
        f"{args.queries * args.train / seconds / 1e9:.2f} G similarities/s"
    )
    print(
        f"peak RSS rise during the search (ru_maxrss): {rise:.0f} MiB (buffer bound "
        f"{buffer / MIB:.0f} MiB + reference block on device + running maxima); peak RSS "
        f"{peak_rss_mib():.0f} MiB"
    )
    # 3. Correctness on a subset, against float64
    n = min(args.check, args.queries)
    best, where, second = brute_force(queries[:n], train)
    diff = float(np.max(np.abs(sims[:n].astype(np.float64) - best)))
    same = float(np.mean(rows[:n] == where))
    ties = int(np.sum(best - second < 1e-6))
    print(
        f"check against float64 brute force on {n} queries: max |sim diff| {diff:.2e}, "
        f"rows identical {same:.2%} ({ties} queries with the two best within 1e-6)"
    )
    if args.compare_block:
        start = time.perf_counter()
        other_sims, other_rows = nearest_neighbours(queries, train, args.device, args.compare_block)
        other_s = time.perf_counter() - start
        print(
            f"block {args.compare_block}: {other_s:.2f} s, {args.queries / other_s:,.0f} "
            f"queries/s; against block {args.block}: max |sim diff| "
            f"{float(np.max(np.abs(other_sims - sims))):.2e}, rows identical "
            f"{float(np.mean(other_rows == rows)):.2%}"
        )
    # 4. faiss, when installed
    if args.no_faiss:
        print("faiss: skipped (--no-faiss)")
        return 0
    result = time_faiss(train, queries)
    if result is None:
        print("faiss: not installed (pip package faiss-cpu); no comparison")
        return 0
    faiss_s, faiss_sims, faiss_rows = result
    agree = float(np.mean(faiss_rows == rows))
    gap = float(np.max(np.abs(faiss_sims - sims)))
    print(
        f"faiss IndexFlatIP: {faiss_s:.2f} s, {args.queries / faiss_s:,.0f} queries/s; "
        f"memaudit / faiss time ratio {seconds / faiss_s:.2f}x; rows identical {agree:.2%}, "
        f"max |sim diff| {gap:.2e}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
