"""Nearest training image of each query, and the copy threshold from held-out images.

:func:`nearest_neighbours` is an exact (brute-force) cosine search by blocked matrix products:
one pass over the training matrix, all queries at once, float32 throughout, on the GPU when
given one. Memory stays bounded however large the training set is (377k MIMIC-CXR images and
more), and the block size changes no result. :func:`copy_threshold` turns the held-out images'
nearest-neighbour similarities into the similarity above which a generation counts as a copy.
"""

from __future__ import annotations

import numpy as np
import torch

# Training (reference) rows per block: the config's copy_detection.search_block default.
_REFERENCE_CHUNK = 65536
# Query rows per matrix product: with a block of B training rows the similarity buffer holds
# at most _QUERY_CHUNK x B float32 values (1 GiB for the default block).
_QUERY_CHUNK = 4096
# Rows are unit length (or zero, for an image with no direction); a norm above this is a bug.
_NORM_TOLERANCE = 1e-3


def nearest_neighbours(
    queries: np.ndarray,
    reference: np.ndarray,
    device: str | torch.device = "cpu",
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity float32 [Q], row int64 [Q]) of each query's nearest reference row.

    Both inputs are [n, d] rows of unit length (zero rows are allowed: similarity 0 to all).
    The search is exact: an outer loop over blocks of ``block`` reference rows (default
    65536, config ``copy_detection.search_block``) reads the reference once, each block is
    multiplied with the queries in chunks of 4096 rows, and a running maximum keeps the best
    row, ties going to the lower reference row. Products accumulate in float32 (TF32 and
    other reduced-precision matmuls are switched off for the call).

    Memory, besides the inputs: one similarity buffer of min(4096, Q) x min(block, N) float32
    (at most 16 KiB x block: 1 GiB for the default block), one reference block on ``device``
    (block x d float32; none on the CPU when ``reference`` is float32 and C-ordered), the
    queries on ``device`` (Q x d float32) and 12 bytes per query of running maxima. A
    ``numpy.memmap`` reference is read block by block.

    ``block`` changes no result beyond float rounding: similarities agree to about 1e-6 and
    rows are identical unless two reference rows are within that rounding of the best.
    """
    queries = _as_rows(queries, "queries")
    reference = reference if isinstance(reference, np.memmap) else np.asarray(reference)
    if reference.ndim != 2 or reference.shape[1] != queries.shape[1]:
        raise ValueError(
            f"embeddings do not match: queries {queries.shape}, reference {reference.shape} "
            "(both must be [rows, dimension] with the same dimension)"
        )
    if len(reference) == 0:
        raise ValueError("the reference (training) embedding set is empty")
    block = _REFERENCE_CHUNK if block is None else block
    if isinstance(block, bool) or not isinstance(block, int | np.integer) or block < 1:
        raise ValueError(f"copy_detection.search_block must be a positive integer, got {block!r}")
    n_query, n_ref = len(queries), len(reference)
    if n_query == 0:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
    device = torch.device(device)
    step = min(int(block), n_ref)
    chunk = min(_QUERY_CHUNK, n_query)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        q_all = torch.from_numpy(queries).to(device)
        best = torch.full((n_query,), -torch.inf, dtype=torch.float32, device=device)
        where = torch.zeros(n_query, dtype=torch.int64, device=device)
        buffer = torch.empty(chunk * step, dtype=torch.float32, device=device)
        values = torch.empty(chunk, dtype=torch.float32, device=device)
        rows = torch.empty(chunk, dtype=torch.int64, device=device)
        for r0 in range(0, n_ref, step):
            part = _as_rows(reference[r0 : r0 + step], "reference", offset=r0)
            if not part.flags.writeable:  # a read-only memmap: torch wants its own copy
                part = part.copy()
            r = torch.from_numpy(part).to(device)
            for q0 in range(0, n_query, chunk):
                q = q_all[q0 : q0 + chunk]
                n = len(q)
                sims = buffer[: n * len(r)].view(n, len(r))
                torch.mm(q, r.T, out=sims)
                torch.max(sims, dim=1, out=(values[:n], rows[:n]))  # first maximum on ties
                better = values[:n] > best[q0 : q0 + n]  # strict: earlier blocks win ties
                best[q0 : q0 + n] = torch.where(better, values[:n], best[q0 : q0 + n])
                where[q0 : q0 + n] = torch.where(better, rows[:n] + r0, where[q0 : q0 + n])
        return best.cpu().numpy(), where.cpu().numpy()
    finally:
        torch.set_float32_matmul_precision(precision)


def _as_rows(array: np.ndarray, name: str, offset: int = 0) -> np.ndarray:
    """``array`` as C-ordered float32 [n, d] rows of at most unit length, or a ValueError."""
    rows = np.ascontiguousarray(array, dtype=np.float32)
    if rows.ndim != 2 or rows.shape[1] == 0:
        raise ValueError(f"{name} embeddings must be [rows, dimension > 0], got {rows.shape}")
    if rows.size:
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{name} embedding row {offset + int(np.argmax(bad))} is not finite (NaN or inf)"
            )
        norms = np.linalg.norm(rows, axis=1)
        if norms.max() > 1.0 + _NORM_TOLERANCE:
            i = int(np.argmax(norms))
            raise ValueError(
                f"{name} embedding row {offset + i} has norm {norms[i]:.4g}; cosine search "
                "needs unit-length rows"
            )
    return rows


def copy_threshold(
    heldout_similarity: np.ndarray, percentile: float = 95.0, fixed: float | None = None
) -> float:
    """The similarity above which a generation is a copy.

    ``fixed`` (config ``copy_detection.threshold``) wins when given; otherwise the
    ``percentile`` of the held-out images' nearest-training-image similarities.
    """
    if fixed is not None:
        return float(fixed)
    values = np.asarray(heldout_similarity, dtype=np.float64)
    if values.size == 0:
        raise ValueError(
            "no held-out images to calibrate the copy threshold: configure "
            "copy_detection.heldout_images or a fixed copy_detection.threshold"
        )
    return float(np.percentile(values, percentile))
