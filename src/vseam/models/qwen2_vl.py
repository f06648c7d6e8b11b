"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): a ViT over dynamic-resolution images (patches of all
images packed into one sequence, 2-D rotary positions, attention within each image), a patch merger
(2 x 2 patches -> one token) and a Qwen2 language model with M-RoPE. Qwen2.5-VL and Qwen3-VL subclass it
(``qwen2_5_vl.py``, ``qwen3_vl.py``).

M-RoPE: every position has three ids (time, height, width). Text tokens carry the same id three times,
counting on from the preceding token; an image's tokens carry their grid row and column (offset by the
text before them), and the text after an image goes on from the largest id of the image. The HF model
builds these ``[3, B, T]`` ids (``get_rope_index``, over the real tokens only, so left padding does not
move them) and hands them to its language model: ``embed`` keeps them batch-first as ``[B, 3, T]``
(so rows, padding and crops follow one rule) and ``lm_kwargs`` gives them back as ``[3, B, T]``. Every
Qwen VL language model also takes ``[4, B, T]`` (a row of plain text positions first, which its causal mask
is built from; ``generate`` passes these): such ids are kept the same way, as ``[B, 4, T]``.

The vision tower's sites (``adapter.vision``: ``z`` ``[1, N, H, D]``, the hidden states ``[1, N, d]``) run
over all patches of the batch's images packed into one sequence of N, image after image. Position ``i`` of
that sequence holds row ``vision_order(enc)[i]`` of the processor's ``pixel_values`` (within an image: the
2 x 2 patches of one merged token together, merged tokens row by row): the identity here, the window order
for Qwen2.5-VL.
"""

from __future__ import annotations

import torch

from vseam.models.base import Embedded, Encoded, VLMAdapter

MROPE_ROWS = (3, 4)  # (time, height, width), or a text row first


class Qwen2VLAdapter(VLMAdapter):
    arch = "qwen2-vl"
    hf_class = "Qwen2VLForConditionalGeneration"
    model_types = ("qwen2_vl",)

    def positions(self, mask: torch.Tensor, decoder_kwargs: dict) -> torch.Tensor:
        pos = decoder_kwargs.get("position_ids")
        if pos is None or pos.dim() != 3 or pos.shape[0] not in MROPE_ROWS or pos.shape[1:] != mask.shape:
            raise RuntimeError(f"{type(self.model).__name__} passed its language model position ids of shape "
                               f"{None if pos is None else tuple(pos.shape)}; expected M-RoPE's [3, B, T] or "
                               f"[4, B, T] with B, T = {mask.shape[0]}, {mask.shape[1]}")
        return pos.permute(1, 0, 2)

    def lm_kwargs(self, emb: Embedded) -> dict:
        return {"attention_mask": emb.attention_mask, "position_ids": emb.position_ids.permute(1, 0, 2)}

    def vision_order(self, enc: Encoded) -> torch.Tensor:
        """LongTensor [N]: for each position of the vision tower's packed sequence (its ``z`` and hidden-state
        sites), the row of ``enc.inputs["pixel_values"]`` (the processor's patch order) it holds."""
        return torch.arange(int(enc.inputs["pixel_values"].shape[0]))
