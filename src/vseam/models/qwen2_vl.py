"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): a ViT over dynamic-resolution images (patches of all
images packed into one sequence, 2-D rotary positions, attention within each image), a patch merger
(2 x 2 patches -> one token) and a Qwen2 language model with M-RoPE.

M-RoPE: every position has three ids (time, height, width). Text tokens carry the same id three times,
counting on from the preceding token; an image's tokens carry their grid row and column (offset by the
text before them), and the text after an image goes on from the largest id of the image. The HF model
builds these ``[3, B, T]`` ids (``get_rope_index``, over the real tokens only, so left padding does not
move them) and hands them to its language model: ``embed`` keeps them batch-first as ``[B, 3, T]``
(so rows, padding and crops follow one rule) and ``lm_kwargs`` gives them back as ``[3, B, T]``.
"""

from __future__ import annotations

import torch

from vseam.models.base import Embedded, VLMAdapter


class Qwen2VLAdapter(VLMAdapter):
    arch = "qwen2-vl"
    hf_class = "Qwen2VLForConditionalGeneration"
    model_types = ("qwen2_vl",)

    def positions(self, mask: torch.Tensor, decoder_kwargs: dict) -> torch.Tensor:
        pos = decoder_kwargs.get("position_ids")
        if pos is None or pos.dim() != 3 or pos.shape[0] != 3 or pos.shape[1:] != mask.shape:
            raise RuntimeError(f"{type(self.model).__name__} passed its language model position ids of shape "
                               f"{None if pos is None else tuple(pos.shape)}; expected M-RoPE's [3, B, T] = "
                               f"[3, {mask.shape[0]}, {mask.shape[1]}]")
        return pos.permute(1, 0, 2)

    def lm_kwargs(self, emb: Embedded) -> dict:
        return {"attention_mask": emb.attention_mask, "position_ids": emb.position_ids.permute(1, 0, 2)}
