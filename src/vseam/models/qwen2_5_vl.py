"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): Qwen2-VL's design (dynamic-resolution ViT over all
images packed into one sequence, 2 x 2 patch merger, Qwen2 language model with M-RoPE, the same chat
template), with windowed attention in the vision tower: most vision layers attend only within windows of
``window_size`` pixels (``fullatt_block_indexes`` attend over the whole image), RMSNorm and SwiGLU there.

The language model's inputs are Qwen2-VL's (``Qwen2VLAdapter``). What differs is the order of the vision
tower's sequence: the tower permutes the patches window by window before its first layer (merged tokens
of window 1 row by row, then window 2, ..., per image) and restores the processor's order only after the
merger. Its ``z`` and hidden-state sites are therefore in window order: position ``i`` holds row
``vision_order(enc)[i]`` of ``pixel_values``. Ablating a head touches every position (order does not matter);
to patch or read the positions of a region, map them through ``vision_order``. The merger's output (site
``proj_out``, [1, N / 4, d]) is in window order too: its row j is the image's merged token
``vision_order(enc)[4 * j] // 4`` (with 2 x 2 merging); the image tokens the language model sees are in the
processor's order (row by row), as for Qwen2-VL.

A hub checkpoint's processor needs torchvision (transformers' video processor) installed.
"""

from __future__ import annotations

import torch

from vseam.models.base import Encoded
from vseam.models.qwen2_vl import Qwen2VLAdapter


class Qwen2_5_VLAdapter(Qwen2VLAdapter):
    arch = "qwen2.5-vl"
    hf_class = "Qwen2_5_VLForConditionalGeneration"
    model_types = ("qwen2_5_vl",)

    def vision_order(self, enc: Encoded) -> torch.Tensor:
        """The window order of the tower (``transformers.vision_utils.get_vision_window_index``, the model's
        own), at patch level: each merged token's ``spatial_merge_size ** 2`` patches stay together."""
        from transformers.vision_utils import get_vision_window_index

        tower = self.vision.decoder
        cfg = tower.config
        window_index, _ = get_vision_window_index(enc.inputs["image_grid_thw"].cpu(), spatial_merge_size=
                                                  cfg.spatial_merge_size, window_size=cfg.window_size,
                                                  patch_size=cfg.patch_size)
        unit = cfg.spatial_merge_size ** 2
        return (window_index[:, None] * unit + torch.arange(unit)).reshape(-1)
