"""Edit masks: annotated boxes scaled to the image, dilated by a margin and rasterised; optionally
refined by a segmenter (``vseam.editing.sam``). Pure numpy functions, tested without a model.

Boxes are ``[x, y, w, h]`` in pixels of the annotation's reference size (GQA: the original image).
"""

from __future__ import annotations

import numpy as np


class BoxOutsideImageError(ValueError):
    """A box lies outside the image (or is empty); the editing run counts it as a skip."""


def scale_box(box: list[float], from_size: tuple[int, int] | None, to_size: tuple[int, int]) -> list[float]:
    """Scale ``[x, y, w, h]`` from an annotation size ``(W, H)`` to the image size ``(W, H)``.

    ``from_size=None``: the box is already in the image's pixels.
    """
    if from_size is None or tuple(from_size) == tuple(to_size):
        return [float(v) for v in box]
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    x, y, w, h = box
    return [x * sx, y * sy, w * sx, h * sy]


def dilate_box(box: list[float], image_size: tuple[int, int], margin: float = 0.1,
               margin_px: int = 4) -> list[int]:
    """Grow ``[x, y, w, h]`` by ``margin`` of its own size plus ``margin_px`` on every side, clip to the
    image, and return integer pixel bounds ``[x, y, w, h]``.

    Raises ``BoxOutsideImageError`` when the box has no area or does not overlap the image at all
    (a box partly outside is clipped: GQA boxes often run a pixel past the border).
    """
    W, H = image_size
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        raise BoxOutsideImageError(f"box {list(box)} has no area")
    if x >= W or y >= H or x + w <= 0 or y + h <= 0:
        raise BoxOutsideImageError(f"box {list(box)} lies outside the {W}x{H} image")
    dx, dy = margin * w + margin_px, margin * h + margin_px
    x0, y0 = max(0, int(np.floor(x - dx))), max(0, int(np.floor(y - dy)))
    x1, y1 = min(W, int(np.ceil(x + w + dx))), min(H, int(np.ceil(y + h + dy)))
    return [x0, y0, x1 - x0, y1 - y0]


def rasterize(boxes: list[list[int]], image_size: tuple[int, int]) -> np.ndarray:
    """Bool mask ``[H, W]``, True inside any of the integer boxes ``[x, y, w, h]``."""
    W, H = image_size
    mask = np.zeros((H, W), dtype=bool)
    for x, y, w, h in boxes:
        mask[int(y):int(y + h), int(x):int(x + w)] = True
    return mask


def box_mask(boxes: list[list[float]], image_size: tuple[int, int], from_size: tuple[int, int] | None = None,
             margin: float = 0.1, margin_px: int = 4) -> tuple[np.ndarray, list[list[int]]]:
    """Scale, dilate and rasterise annotated boxes; returns (mask ``[H, W]`` bool, the dilated boxes)."""
    if not boxes:
        raise BoxOutsideImageError("no boxes")
    dil = [dilate_box(scale_box(b, from_size, image_size), image_size, margin, margin_px) for b in boxes]
    return rasterize(dil, image_size), dil


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Binary dilation by a square of half-width ``pixels`` (separable running max; no scipy needed)."""
    if pixels <= 0:
        return mask.copy()
    m = mask.astype(bool)
    for axis in (0, 1):
        out = m.copy()
        for k in range(1, pixels + 1):
            shifted = np.zeros_like(m)
            if axis == 0:
                shifted[k:] |= m[:-k]
                out |= shifted
                shifted = np.zeros_like(m)
                shifted[:-k] |= m[k:]
            else:
                shifted[:, k:] |= m[:, :-k]
                out |= shifted
                shifted = np.zeros_like(m)
                shifted[:, :-k] |= m[:, k:]
            out |= shifted
        m = out
    return m


def paste_unmasked(original: np.ndarray, edited: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Keep the original pixels wherever ``mask`` is False, so only the masked region changes."""
    if original.shape != edited.shape:
        raise ValueError(f"shapes differ: {original.shape} vs {edited.shape}")
    out = original.copy()
    out[mask] = edited[mask]
    return out
