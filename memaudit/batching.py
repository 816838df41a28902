"""Batch sizing: a CPU element budget or a probed GPU memory share, and one out-of-memory halving
loop.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, TextIO

import torch
from tqdm import tqdm

from memaudit.model.loading import AuditModel

# CPU "auto" batch: aim for this many latent elements per UNet call (rows x C x h x w).
_CPU_AUTO_ELEMENTS = 2**18


def auto_batch_size(
    model: AuditModel, rows_per_unit: int, cap: int, share: float, decode: bool = False
) -> int:
    """How many work units (a prompt with its generations, an image) one batch may hold.

    A unit takes ``rows_per_unit`` UNet rows per call (both guidance branches counted). On CPU:
    a fixed budget of latent elements per UNet call. On a GPU: one unit is run (one UNet call,
    and with ``decode`` one VAE decode of one latent); the peak memory it takes above what was
    allocated before sets how many units fit in ``share`` of the free memory. Over-estimates
    are caught later by halving on out-of-memory errors (:func:`run_halving_batches`).
    """
    device = torch.device(model.device)
    unit_elements = rows_per_unit * math.prod(model.latent_shape)
    if device.type != "cuda":
        return max(1, min(cap, _CPU_AUTO_ELEMENTS // unit_elements))
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.no_grad():
        _probe(model, rows_per_unit, decode)
    torch.cuda.synchronize(device)
    per_unit = max(1, torch.cuda.max_memory_allocated(device) - base)
    free, _total = torch.cuda.mem_get_info(device)
    return max(1, min(cap, int(share * free // per_unit)))


def _probe(model: AuditModel, rows: int, decode: bool) -> None:
    """One unit's work: a UNet call on ``rows`` rows (the empty prompt), then a decode."""
    latent = torch.zeros((rows, *model.latent_shape), device=model.device, dtype=model.dtype)
    embeddings = model.encode([""]).expand(rows, -1, -1)
    model.unet(latent, torch.tensor(999, device=model.device), encoder_hidden_states=embeddings)
    if decode:
        model.decode(latent[:1].float())


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
