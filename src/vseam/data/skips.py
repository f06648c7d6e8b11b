"""Samples that cannot be scored (missing image, an answer that cannot be tokenized): each is a counted
skip with its reason, and a run with no usable sample, or more skipped than ``data.max_skip_fraction``,
stops with an error that prints the first reasons instead of writing empty results."""

from __future__ import annotations

import os
from typing import Any, Sequence

from vseam.data.sample import Sample


class NothingToScoreError(RuntimeError):
    """No usable sample, or too large a share of them skipped."""


def where(s: Sample) -> str:
    """The file and record a sample was read from (the readers record it), else its id."""
    return str(s.meta.get("source") or f"sample {s.id!r}")


def missing_images(samples: Sequence[Sample]) -> list[dict]:
    """Samples whose image file does not exist (a cheap check before any model loads)."""
    return [{"id": s.id, "reason": f"{where(s)}: image not found: {s.image_path}"} for s in samples
            if s.image is None and not (s.image_path and os.path.exists(s.image_path))]


def answer_skips(adapter: Any, samples: Sequence[Sample]) -> tuple[list[Sample], list[dict]]:
    """Samples whose gold answer the model can tokenize, and the others as skips naming file and record."""
    kept, skipped = [], []
    for s in samples:
        try:
            adapter.answer_token_ids(s.answer)
        except ValueError as e:
            skipped.append({"id": s.id, "reason": f"{where(s)}: answer {s.answer!r}: {e}"})
            continue
        kept.append(s)
    return kept, skipped


def check_skips(n_total: int, skipped: Sequence[dict], max_fraction: float, what: str) -> None:
    """Raise ``NothingToScoreError`` when nothing of ``n_total`` is left or the skipped share is above
    ``max_fraction``; the message counts the skips and prints the first three reasons."""
    n_skip = len(skipped)
    first = "; ".join(str(s.get("reason", s)) for s in list(skipped)[:3])
    if n_total == 0:
        raise NothingToScoreError(f"{what}: no sample to score (the data config selects none; check "
                                  f"data.annotations, data.categories, data.limit)")
    if n_skip >= n_total:
        raise NothingToScoreError(f"{what}: no usable sample: all {n_total} were skipped; first reasons: {first} "
                                  f"(check data.image_dir / data.image_pattern)")
    share = n_skip / n_total
    if share > float(max_fraction):
        raise NothingToScoreError(f"{what}: {n_skip} of {n_total} samples skipped ({share:.0%}, above "
                                  f"data.max_skip_fraction={max_fraction}); first reasons: {first}")
