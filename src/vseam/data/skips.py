"""Samples that cannot be scored: each is a counted skip with its reason, and a run with no usable
sample, or more skipped than ``data.max_skip_fraction``, stops with an error that prints the first
reasons instead of writing empty results.

Before the model loads: a missing image (``missing_images``). Once it is loaded, ``model_skips`` is the
one screen every job runs its samples through: a duplicate dropped by ``data.duplicate_ids=drop``, an
answer the model cannot tokenize, a prompt longer than the model's positions, an image that is missing
or smaller than the vision tower's patch; it also counts the images converted to RGB (grayscale,
palette, CMYK, RGBA), which the jobs report in their result files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vseam.data.sample import Sample
from vseam.utils.errors import UserError


class NothingToScoreError(UserError, RuntimeError):
    """No usable sample, or too large a share of them skipped."""


def where(s: Sample) -> str:
    """The file and record a sample was read from (the readers record it), else its id."""
    return str(s.meta.get("source") or f"sample {s.id!r}")


def missing_images(samples: Sequence[Sample]) -> list[dict]:
    """Samples whose image file does not exist (a cheap check before any model loads)."""
    return [{"id": s.id, "reason": f"{where(s)}: image not found: {s.image_path}"} for s in samples
            if s.image is None and not (s.image_path and os.path.exists(s.image_path))]


@dataclass
class Screen:
    """What ``model_skips`` found: the usable samples, the skipped ones (id and reason) and how many images
    of each mode are converted to RGB when they are read."""

    kept: list[Sample]
    skipped: list[dict]
    converted: dict[str, int] = field(default_factory=dict)  # image mode (L, P, CMYK, RGBA, ...) -> count

    def report(self) -> dict:
        """The result files' record of it (besides the skips, which they list)."""
        return {"images_converted_to_rgb": dict(sorted(self.converted.items()))}

    def say(self, what: str) -> None:
        """One line when images are converted (rank zero)."""
        from vseam.utils.ranks import is_rank_zero

        if self.converted and is_rank_zero():
            modes = ", ".join(f"{n} {m}" for m, n in sorted(self.converted.items()))
            print(f"note: {what}: {sum(self.converted.values())} image(s) converted to RGB ({modes}); counted in "
                  f"the result file (images_converted_to_rgb)", flush=True)


def model_skips(adapter: Any, samples: Sequence[Sample]) -> Screen:
    """Screen ``samples`` for ``adapter`` (see the module's text): each sample that cannot be scored becomes a
    skip naming its file and record and what is wrong, with both lengths for a prompt that is too long."""
    from vseam.data.load import DUPLICATE

    patch = getattr(adapter, "patch_size", None)
    kept, skipped, converted = [], [], {}
    for s in samples:
        reason = None
        if s.meta.get(DUPLICATE):
            reason = f"duplicate id {s.id!r} of {s.meta[DUPLICATE]} (data.duplicate_ids=drop)"
        if reason is None and s.answer is not None:
            try:
                adapter.answer_token_ids(s.answer)
            except ValueError as e:
                reason = f"answer {s.answer!r}: {e}"
        if reason is None and hasattr(adapter, "position_limits"):
            over = [f"its prompt takes {n} positions of the {part}, which has {limit}"
                    for part, n, limit in adapter.position_limits(s.question) if n > limit]
            reason = "; ".join(over) or None
        if reason is None:
            size, mode, reason = _image_facts(s)
            if reason is None and patch and size is not None and min(size) < patch:
                reason = f"image {size[0]}x{size[1]} is smaller than the vision tower's {patch}x{patch} patch"
            if reason is None and mode not in (None, "RGB"):
                converted[mode] = converted.get(mode, 0) + 1
        if reason is not None:
            skipped.append({"id": s.id, "reason": f"{where(s)}: {reason}"})
        else:
            kept.append(s)
    return Screen(kept, skipped, converted)


def _image_facts(s: Sample) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """(size, mode, why it cannot be read) of a sample's image; only its header is read."""
    if s.image is not None:
        return tuple(s.image.size), getattr(s.image, "mode", None), None
    if not s.image_path:
        return None, None, None  # no image of its own: nothing to check here
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(s.image_path) as im:
            return tuple(im.size), im.mode, None
    except FileNotFoundError:
        return None, None, f"image not found: {s.image_path}"
    except (UnidentifiedImageError, OSError) as e:
        return None, None, f"image unreadable: {s.image_path} ({e})"


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
