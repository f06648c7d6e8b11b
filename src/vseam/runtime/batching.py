"""Forwards of many rows that halve themselves on out-of-memory: the memory knob of every engine
(``attribution.rows_per_forward``, ``trace.rows_per_forward``, the ablation study's rows) is a starting
size, so a value too large for the device costs time, not the run."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

import torch

log = logging.getLogger(__name__)

T = TypeVar("T")


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is an accelerator's out-of-memory error (CUDA's own class, or its message elsewhere)."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


class RowBatches:
    """Runs ``forward(start, stop)`` over rows ``0..n-1`` in slices of at most ``size`` rows; on an
    out-of-memory error the size halves (down to 1) and the slice is retried, and the smaller size is
    kept for every later call. ``key`` names the config key in the warning."""

    def __init__(self, size: int, key: str):
        self.size = max(1, int(size))
        self.key = key

    def run(self, n: int, forward: Callable[[int, int], T]) -> list[T]:
        """``[forward(start, stop), ...]`` over consecutive slices covering ``0..n-1``, in order."""
        out: list[T] = []
        start = 0
        while start < n:
            stop = min(n, start + self.size)
            try:
                out.append(forward(start, stop))
            except RuntimeError as e:
                if not is_oom(e) or self.size == 1:
                    raise
                self.size = max(1, self.size // 2)
                log.warning("out of memory: %s lowered to %d", self.key, self.size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            start = stop
        return out
