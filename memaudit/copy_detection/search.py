"""Nearest training image of each query, and the copy threshold from held-out images.

:func:`nearest_neighbours` finds each query's most similar training embedding with chunked
matrix products (on the GPU when given one), so memory stays bounded for a full training set
(377k MIMIC-CXR images). :func:`copy_threshold` turns the held-out images' nearest-neighbour
similarities into the similarity above which a generation counts as a copy.
"""

from __future__ import annotations

import numpy as np
import torch

# Reference and query rows per matrix product: one [4096, 65536] float32 block of
# similarities (1 GiB) is the most the search holds, however large the training set.
_REFERENCE_CHUNK = 65536
_QUERY_CHUNK = 4096


def nearest_neighbours(
    queries: np.ndarray, reference: np.ndarray, device: str | torch.device = "cpu"
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine similarity, row) of each query's nearest reference row.

    Both inputs are unit-length rows. The search runs over reference chunks of
    ``_REFERENCE_CHUNK`` rows and query chunks of ``_QUERY_CHUNK`` rows, keeping a running
    maximum, so memory stays bounded however large the training set is. Ties go to the lower
    reference row.
    """
    queries = np.asarray(queries, dtype=np.float32)
    reference = np.asarray(reference, dtype=np.float32)
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(
            f"embeddings do not match: queries {queries.shape}, reference {reference.shape}"
        )
    if len(reference) == 0:
        raise ValueError("the reference (training) embedding set is empty")
    device = torch.device(device)
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    where = np.zeros(len(queries), dtype=np.int64)
    for q0 in range(0, len(queries), _QUERY_CHUNK):
        q = torch.from_numpy(queries[q0 : q0 + _QUERY_CHUNK]).to(device)
        run_best = torch.full((len(q),), -torch.inf, device=device)
        run_where = torch.zeros(len(q), dtype=torch.int64, device=device)
        for r0 in range(0, len(reference), _REFERENCE_CHUNK):
            r = torch.from_numpy(reference[r0 : r0 + _REFERENCE_CHUNK]).to(device)
            sims = q @ r.T
            values, rows = sims.max(dim=1)
            better = values > run_best
            run_best = torch.where(better, values, run_best)
            run_where = torch.where(better, rows + r0, run_where)
        best[q0 : q0 + len(q)] = run_best.cpu().numpy()
        where[q0 : q0 + len(q)] = run_where.cpu().numpy()
    return best, where


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
