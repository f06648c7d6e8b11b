"""The progress bar of a long job: tqdm with an ETA on rank 0 when enabled, a no-op elsewhere."""

from __future__ import annotations


class Progress:
    """tqdm bar with ETA when enabled (rank 0); a no-op elsewhere. ``unit`` defaults to layer passes
    for the exact engine (its cost unit) and samples otherwise."""

    def __init__(self, enabled: bool, total: int, desc: str, unit: str | None = None):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            unit = unit or ("layer pass" if "exact" in desc else "sample")
            self.bar = tqdm(total=total, desc=desc, unit=unit, unit_scale=True, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
