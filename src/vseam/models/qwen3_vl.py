"""Qwen3-VL (``Qwen3VLForConditionalGeneration``): a dynamic-resolution ViT (16 px patches, learned position
embeddings interpolated to each image's grid plus 2-D rotary positions, all images packed into one sequence),
a 2 x 2 patch merger, and a Qwen3 language model with interleaved M-RoPE (``[3, B, T]`` ids, or ``[4, B, T]``
with a text row first, as for Qwen2-VL: ``Qwen2VLAdapter``) and DeepStack.

DeepStack: the vision layers named in ``vision_config.deepstack_visual_indexes`` each feed a merger of their
own (``visual.deepstack_merger_list``); the k features they make for every image token are added to the
language model's hidden states at the image tokens, feature j right after decoder layer j (j = 0 .. k-1),
inside the decoder's own forward. ``extras`` keeps them from the HF model's call of its decoder as dense
per-token tensors, so they follow rows, padding, crops and the embedding cache like the embeddings do:
``extra["visual"]`` (bool [B, T], the image tokens) and ``extra["deepstack"]`` ([B, k, d, T], zero elsewhere);
``lm_kwargs`` hands them back as the decoder's ``visual_pos_masks`` / ``deepstack_visual_embeds``. (They
make an embedding-cache entry k + 1 times the size of the embeddings alone.)

The exact engine replays what the decoder adds between two layers (``attribution.exact``), so a head
ablated in layer l < k still sees the features added after layers l .. k-1. An addition after the last
layer (k = the number of layers) touches image tokens only, never the last position the answer is read
at. Activation patching of a layer's output (``resid_post``, tracing's ``resid``) edits the hidden state
before that layer's feature is added: the patched run's own image features still enter afterwards.

The vision tower's ``proj_out`` site is the main merger (``visual.merger``); the DeepStack mergers' outputs
are ``extra["deepstack"]``. A hub checkpoint's processor needs torchvision (transformers' video processor).
"""

from __future__ import annotations

import torch

from vseam.models.base import Embedded, Encoded
from vseam.models.qwen2_vl import Qwen2VLAdapter


class Qwen3VLAdapter(Qwen2VLAdapter):
    arch = "qwen3-vl"
    hf_class = "Qwen3VLForConditionalGeneration"
    model_types = ("qwen3_vl",)

    @property
    def deepstack_levels(self) -> int:
        """k: how many vision features are added, one after each of the first k decoder layers."""
        return len(self.model.config.vision_config.deepstack_visual_indexes)

    def extras(self, enc: Encoded, decoder_kwargs: dict) -> dict[str, torch.Tensor]:
        x = decoder_kwargs["inputs_embeds"]
        B, T, d = x.shape
        mask = decoder_kwargs.get("visual_pos_masks")
        feats = decoder_kwargs.get("deepstack_visual_embeds") or []
        visual = torch.zeros(B, T, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device).bool()
        if len(feats) != (self.deepstack_levels if mask is not None else 0):
            raise RuntimeError(f"{type(self.model).__name__} passed its language model {len(feats)} DeepStack "
                               f"features; its config names {self.deepstack_levels} "
                               f"(vision_config.deepstack_visual_indexes)")
        dense = x.new_zeros(B, T, self.deepstack_levels, d)
        if feats:
            n = int(visual.sum())
            if any(f.shape != (n, d) for f in feats):
                raise RuntimeError(f"DeepStack features of shapes {[tuple(f.shape) for f in feats]} do not fit "
                                   f"{n} image tokens of width {d}")
            dense[visual] = torch.stack([f.to(x.device, x.dtype) for f in feats], 1)
        return {"visual": visual, "deepstack": dense.permute(0, 2, 3, 1)}

    def lm_kwargs(self, emb: Embedded) -> dict:
        kwargs = super().lm_kwargs(emb)
        visual, dense = emb.extra["visual"].bool(), emb.extra["deepstack"]
        kwargs["visual_pos_masks"] = visual
        kwargs["deepstack_visual_embeds"] = [dense[:, j].transpose(1, 2)[visual] for j in range(dense.shape[1])]
        return kwargs
