"""Batch sizing: a CPU element budget or a probed GPU memory share, and one out-of-memory halving
loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

import torch
from tqdm import tqdm

from memaudit.model.loading import AuditModel

# CPU "auto" batch: aim for this many latent elements per UNet call (rows × C × h × w).
_CPU_AUTO_ELEMENTS = 2**18


def auto_batch(
    model: AuditModel, unit_elements: int, cap: int, probe: Callable[[], Any], share: float
) -> int:
    """How many work units (a prompt's rows, an image) one batch may hold.

    On CPU: a fixed budget of latent elements per UNet call (``unit_elements`` per unit). On a
    GPU: ``probe()`` runs one unit; the peak memory it takes above what was allocated before
    sets how many units fit in ``share`` of the free memory. Over-estimates are caught later by
    halving on out-of-memory errors.
    """
    device = torch.device(model.device)
    if device.type != "cuda":
        return max(1, min(cap, _CPU_AUTO_ELEMENTS // unit_elements))
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        probe()
    torch.cuda.synchronize(device)
    per_unit = max(1, torch.cuda.max_memory_allocated(device) - base)
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(share * free // per_unit)))


def run_halving_batches(
    total: int,
    batch: int,
    step: Callable[[int, int], Any],
    unit: str,
    single_error: str,
    progress: TextIO | None = None,
    bar: tqdm | None = None,
) -> tuple[list[Any], int, int]:
    """Run ``step(position, size)`` over items [0, total) in batches of at most ``batch``.

    A batch that raises a CUDA out-of-memory error is re-run with half as many items, and the
    halved size is kept for the rest of the pass; a single item that does not fit raises
    RuntimeError(``single_error``). ``unit`` names the batch in the log line (e.g. "prompts per
    batch"). Returns (the step results in order, the final batch size, the number of halvings).
    """
    parts: list[Any] = []
    halvings, position = 0, 0
    while position < total:
        size = min(batch, total - position)
        failed = False
        try:
            part = step(position, size)
        except torch.cuda.OutOfMemoryError as err:
            if size == 1:
                raise RuntimeError(single_error) from err
            failed = True
        if failed:
            # Outside the except clause, so the failed batch's tensors are released.
            batch, halvings = max(1, size // 2), halvings + 1
            if torch.cuda.is_initialized():
                torch.cuda.empty_cache()
            tqdm.write(
                f"out of memory with {size} {unit}; retrying with {batch}",
                file=progress or sys.stderr,
            )
            continue
        parts.append(part)
        position += size
        if bar is not None:
            bar.update(size)
    return parts, batch, halvings
