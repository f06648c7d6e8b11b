"""Tiny random LLaVA and InstructBLIP models of the real HF classes, built from configs with no download.

Used by the tests (every code path of the 7B models, in seconds) and as the starting point of the
organism's models. Sizes are keyword arguments; defaults are the smallest that keep the structure:
grouped-query attention in the language model (fewer KV heads than query heads), a Q-Former for
InstructBLIP, a Llama language model for both (as Vicuna is).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from vseam.models.tokenizer import build_tokenizer


@dataclass(frozen=True)
class TinySizes:
    """The sizes both builders share: a ViT vision tower, a Llama language model, the init and the seed.
    The builders take them as keyword arguments (``build_tiny_llava(num_layers=3)``)."""

    image_size: int = 32
    patch_size: int = 8
    vision_hidden_size: int = 32
    vision_layers: int = 2
    vision_heads: int = 4
    vision_intermediate_size: int | None = None  # None: 2 x vision_hidden_size
    hidden_size: int = 32
    num_layers: int = 2
    num_heads: int = 4
    num_kv_heads: int | None = 2  # None: as many as num_heads (no grouped-query attention)
    intermediate_size: int | None = None  # None: 2 x hidden_size
    initializer_range: float = 0.02
    max_position_embeddings: int = 512
    vocab_size: int | None = None  # None: the tokenizer's size
    seed: int = 0  # torch seed of the random weights

    def vision_config(self, config_class):
        """The vision tower's config: ``CLIPVisionConfig`` (LLaVA) or ``InstructBlipVisionConfig``."""
        return config_class(
            hidden_size=self.vision_hidden_size,
            intermediate_size=self.vision_intermediate_size or 2 * self.vision_hidden_size,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            initializer_range=self.initializer_range,
        )

    def text_config(self, tokenizer):
        """The Llama language model's config (Vicuna's architecture, untied embeddings)."""
        from transformers import LlamaConfig

        if self.vocab_size is not None and self.vocab_size < len(tokenizer):
            raise ValueError(f"vocab_size={self.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
        return LlamaConfig(
            vocab_size=self.vocab_size or len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size or 2 * self.hidden_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads or self.num_heads,
            max_position_embeddings=self.max_position_embeddings,
            initializer_range=self.initializer_range,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            tie_word_embeddings=False,
        )


def build_tiny_llava(tokenizer=None, *, vision_feature_layer: int = -1, **sizes):
    """A random ``LlavaForConditionalGeneration`` (CLIP vision + Llama LM) and its ``LlavaProcessor``;
    ``sizes``: the fields of ``TinySizes``.

    ``vocab_size`` (default: the tokenizer's size) may exceed the tokenizer, as LLaVA-1.5's 32,064 rows do
    Llama's 32,000 tokens."""
    from transformers import CLIPVisionConfig, LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    sz = TinySizes(**sizes)
    image_size, patch_size = sz.image_size, sz.patch_size
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    vision = sz.vision_config(CLIPVisionConfig)
    text = sz.text_config(tokenizer)
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer,
        projector_hidden_act="gelu",
    )
    torch.manual_seed(sz.seed)
    model = LlavaForConditionalGeneration(config).eval()
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_convert_rgb=True,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, dropped by the "default" strategy
    )
    return model, processor


def build_tiny_instructblip(tokenizer=None, *, qformer_hidden_size: int = 32, qformer_layers: int = 2,
                            qformer_heads: int = 4, qformer_intermediate_size: int | None = None,
                            num_query_tokens: int = 8, cross_attention_frequency: int = 1, **sizes):
    """A random ``InstructBlipForConditionalGeneration`` (vision + Q-Former + Llama LM) and its processor;
    ``sizes``: the fields of ``TinySizes``."""
    from transformers import (
        InstructBlipConfig,
        InstructBlipForConditionalGeneration,
        InstructBlipProcessor,
        InstructBlipQFormerConfig,
        InstructBlipVisionConfig,
    )
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    sz = TinySizes(**sizes)
    image_size = sz.image_size
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer()
    vision = sz.vision_config(InstructBlipVisionConfig)
    qformer = InstructBlipQFormerConfig(
        vocab_size=len(tokenizer),
        hidden_size=qformer_hidden_size,
        num_hidden_layers=qformer_layers,
        num_attention_heads=qformer_heads,
        intermediate_size=qformer_intermediate_size or 2 * qformer_hidden_size,
        encoder_hidden_size=sz.vision_hidden_size,
        cross_attention_frequency=cross_attention_frequency,
        max_position_embeddings=sz.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        initializer_range=sz.initializer_range,
    )
    text = sz.text_config(tokenizer)
    config = InstructBlipConfig(
        vision_config=vision.to_dict(),
        qformer_config=qformer.to_dict(),
        text_config=text.to_dict(),
        num_query_tokens=num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        initializer_range=sz.initializer_range,
    )
    torch.manual_seed(sz.seed)
    model = InstructBlipForConditionalGeneration(config).eval()
    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size}, do_convert_rgb=True)
    # The Q-Former reads the question too; it shares the LM tokenizer's vocabulary here (right padding).
    qformer_tokenizer = copy.deepcopy(tokenizer)
    qformer_tokenizer.padding_side = "right"
    processor = InstructBlipProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        qformer_tokenizer=qformer_tokenizer,
        num_query_tokens=num_query_tokens,
    )
    return model, processor


# The real 7B checkpoints' widths (llava-hf/llava-1.5-7b-hf, Salesforce/instructblip-vicuna-7b config.json),
# all but the depths: a random model of these shapes with a few layers runs every code path at the real
# tensor sizes (576 image tokens through the real CLIP processor at 336; 32 Q-Former query tokens).
FULL_WIDTH = {
    "llava-1.5-7b": dict(
        image_size=336, patch_size=14, vision_hidden_size=1024, vision_intermediate_size=4096, vision_heads=16,
        vision_feature_layer=-2, hidden_size=4096, num_heads=32, num_kv_heads=32, intermediate_size=11008,
        vocab_size=32064, max_position_embeddings=4096),
    "instructblip-vicuna-7b": dict(
        image_size=224, patch_size=14, vision_hidden_size=1408, vision_intermediate_size=6144, vision_heads=16,
        qformer_hidden_size=768, qformer_heads=12, qformer_intermediate_size=3072, cross_attention_frequency=2,
        num_query_tokens=32, hidden_size=4096, num_heads=32, num_kv_heads=32, intermediate_size=11008,
        vocab_size=32001, max_position_embeddings=2048),
}
FULL_WIDTH_ARCH = {"llava-1.5-7b": "llava", "instructblip-vicuna-7b": "instructblip"}


def build_full_width(name: str, *, num_layers: int = 2, vision_layers: int = 2, qformer_layers: int = 2,
                     seed: int = 0, tokenizer=None):
    """A random model of ``name``'s real widths (``FULL_WIDTH``) with ``num_layers`` language-model layers,
    ``vision_layers`` vision layers (and ``qformer_layers`` Q-Former layers), and its processor."""
    if name not in FULL_WIDTH:
        raise ValueError(f"full-width model {name!r}: expected one of {sorted(FULL_WIDTH)}")
    kw = dict(FULL_WIDTH[name], num_layers=num_layers, vision_layers=vision_layers, seed=seed, tokenizer=tokenizer)
    if FULL_WIDTH_ARCH[name] == "llava":
        return build_tiny_llava(**kw)
    return build_tiny_instructblip(**kw, qformer_layers=qformer_layers)
