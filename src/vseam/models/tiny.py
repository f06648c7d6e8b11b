"""Tiny random VLMs of the real HF classes (LLaVA, InstructBLIP, LLaVA-NeXT, Qwen2-VL, Qwen2.5-VL, Qwen3-VL,
Gemma 3, PaliGemma, LLaVA-OneVision, Idefics3, SmolVLM, InternVL), built from configs with no download, with
processors and tokenizers built locally.

Used by the tests (every code path of the real models, in seconds) and as the starting point of the
organism's models. Sizes are keyword arguments; defaults are the smallest that keep the structure:
grouped-query attention in the language model (fewer KV heads than query heads), a Q-Former for
InstructBLIP, a Llama language model for LLaVA and InstructBLIP (as Vicuna is), Mistral for LLaVA-NeXT,
Qwen2 with M-RoPE for Qwen2-VL (windowed vision attention for Qwen2.5-VL, DeepStack for Qwen3-VL), Gemma 3 and
Gemma 2 (PaliGemma 2) with sliding-window layers, Qwen2 for LLaVA-OneVision and InternVL, Llama for Idefics3 and
SmolVLM; the chat templates of the hub checkpoints.
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

    def vision_config(self, config_class, **extra):
        """The vision tower's config: ``CLIPVisionConfig`` (LLaVA), ``InstructBlipVisionConfig`` or
        ``SiglipVisionConfig`` (Gemma 3, PaliGemma); ``extra``: further keys."""
        return config_class(
            hidden_size=self.vision_hidden_size,
            intermediate_size=self.vision_intermediate_size or 2 * self.vision_hidden_size,
            num_hidden_layers=self.vision_layers,
            num_attention_heads=self.vision_heads,
            image_size=self.image_size,
            patch_size=self.patch_size,
            initializer_range=self.initializer_range,
            **extra,
        )

    def text_config(self, tokenizer, config_class=None, **extra):
        """The language model's config: Llama (Vicuna's architecture) unless ``config_class`` names another
        of the same keys (Mistral, Qwen2-VL's text model); untied embeddings; ``extra``: further keys."""
        from transformers import LlamaConfig

        if self.vocab_size is not None and self.vocab_size < len(tokenizer):
            raise ValueError(f"vocab_size={self.vocab_size} is smaller than the tokenizer's {len(tokenizer)} tokens")
        return (config_class or LlamaConfig)(
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
            **extra,
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


# The hub checkpoints' chat templates, as their processors ship them (llava-hf/llava-v1.6-mistral-7b-hf,
# Qwen/Qwen2-VL-7B-Instruct; the Qwen one without its video and tool branches): a tiny build prompts as
# the real model does, through ``processor.apply_chat_template``.
LLAVA_NEXT_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{ '<<SYS>>\n' + message['content'][0]['text']"
    " + '\n<</SYS>>\n\n' }}{% elif message['role'] == 'user' %}{{ '[INST] ' }}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}{{' [/INST]' }}{% elif message['role'] "
    "== 'assistant' %}{{ message['content'][0]['text'] + '</s> '}}{% else %}{{ raise_exception('Only user and "
    "assistant roles are supported!') }}{% endif %}{% endfor %}")
QWEN2_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a "
    "helpful assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == "
    "'image' or 'image' in content or 'image_url' in content %}<|vision_start|><|image_pad|><|vision_end|>{% elif "
    "'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN2_VL_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                           "<|image_pad|>", "<|video_pad|>"]
# Qwen/Qwen3-VL-8B-Instruct's chat template without its tool, video and assistant-history branches: no default
# system turn (Qwen2-VL's has one); Qwen2.5-VL ships Qwen2-VL's template.
QWEN3_VL_CHAT_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}{{- '<|im_start|>system\n' }}{%- if messages[0].content is string %}"
    "{{- messages[0].content }}{%- else %}{%- for content in messages[0].content %}{%- if 'text' in content %}"
    "{{- content.text }}{%- endif %}{%- endfor %}{%- endif %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}{%- if message.role == 'user' %}{{- '<|im_start|>' + message.role + '\n' }}"
    "{%- if message.content is string %}{{- message.content }}{%- else %}{%- for content in message.content %}"
    "{%- if content.type == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>{%- elif 'text' in content %}{{- content.text }}{%- endif %}"
    "{%- endfor %}{%- endif %}{{- '<|im_end|>\n' }}{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}")
# kind -> (class-name prefix, transformers module, chat template) of the Qwen VL generations
QWEN_VL_CLASSES = {"qwen2-vl": ("Qwen2VL", "qwen2_vl", QWEN2_VL_CHAT_TEMPLATE),
                   "qwen2.5-vl": ("Qwen2_5_VL", "qwen2_5_vl", QWEN2_VL_CHAT_TEMPLATE),
                   "qwen3-vl": ("Qwen3VL", "qwen3_vl", QWEN3_VL_CHAT_TEMPLATE)}


def build_tiny_llava_next(tokenizer=None, *, grid_pinpoints=((32, 64), (64, 32), (64, 64), (96, 32), (32, 96)),
                          vision_feature_layer: int = -1, **sizes):
    """A random ``LlavaNextForConditionalGeneration`` (CLIP vision, anyres tiles, image newline, Mistral LM)
    and its ``LlavaNextProcessor`` with LLaVA-NeXT-Mistral's chat template; ``sizes``: the fields of
    ``TinySizes``. ``grid_pinpoints`` are the anyres resolutions (LLaVA-NeXT's, scaled from 336 to
    ``image_size``): an image's token count depends on its size and aspect (tiles, unpadding, one newline
    token per row of patches)."""
    from transformers import (
        CLIPVisionConfig,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextProcessor,
        MistralConfig,
    )
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    sz = TinySizes(**sizes)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(["[INST] <image>\n{q} [/INST]"])
    pinpoints = [list(p) for p in grid_pinpoints]
    config = LlavaNextConfig(
        vision_config=sz.vision_config(CLIPVisionConfig),
        text_config=sz.text_config(tokenizer, MistralConfig, sliding_window=None),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=vision_feature_layer,
        image_grid_pinpoints=pinpoints,
        image_seq_length=(sz.image_size // sz.patch_size) ** 2,
    )
    torch.manual_seed(sz.seed)
    model = LlavaNextForConditionalGeneration(config).eval()
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": sz.image_size}, crop_size={"height": sz.image_size, "width": sz.image_size},
        image_grid_pinpoints=pinpoints, do_convert_rgb=True)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=sz.patch_size,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1,
                                   chat_template=LLAVA_NEXT_CHAT_TEMPLATE)
    return model, processor


def build_tiny_qwen2_vl(tokenizer=None, *, merge_size: int = 2, temporal_patch_size: int = 2,
                        mrope_section=(2, 1, 1), min_pixels: int | None = None, max_pixels: int | None = None,
                        **sizes):
    """A random ``Qwen2VLForConditionalGeneration`` (ViT with 2-D rotary positions over packed images,
    patch merger, Qwen2 LM with M-RoPE: 3-D position ids) and its ``Qwen2VLProcessor`` with Qwen2-VL's
    chat template; ``sizes``: the fields of ``TinySizes`` (``patch_size`` defaults to 4 here). Dynamic
    resolution: an image keeps its aspect, resized to multiples of ``patch_size * merge_size`` with a
    pixel count in [``min_pixels``, ``max_pixels``] (defaults: 4 and 64 merged tokens), so images of
    different sizes give different token counts. ``mrope_section`` splits half the head width over the
    (time, height, width) positions."""
    return _build_tiny_qwen_vl("qwen2-vl", tokenizer, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
                               mrope_section=mrope_section, min_pixels=min_pixels, max_pixels=max_pixels, **sizes)


def _build_tiny_qwen_vl(kind: str, tokenizer, *, merge_size: int, temporal_patch_size: int, mrope_section,
                        min_pixels: int | None, max_pixels: int | None, vision_extra: dict | None = None,
                        rope_extra: dict | None = None, **sizes):
    """The Qwen VL family's tiny build (``kind``: qwen2-vl | qwen2.5-vl | qwen3-vl): the same tokenizer,
    image processor, special tokens and M-RoPE language model, each generation's own classes and vision
    config (``vision_extra``: its further keys), and its hub chat template."""
    import importlib

    import transformers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    prefix, module, template = QWEN_VL_CLASSES[kind]
    config_module = importlib.import_module(f"transformers.models.{module}.configuration_{module}")
    sizes.setdefault("patch_size", 4)
    sz = TinySizes(**sizes)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(
        ["<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>{q}<|im_end|>\n<|im_start|>assistant\nYes"],
        extra_special_tokens=QWEN2_VL_SPECIAL_TOKENS, add_bos=False)
    head_dim = sz.hidden_size // sz.num_heads
    if 2 * sum(mrope_section) != head_dim:
        raise ValueError(f"mrope_section {list(mrope_section)} must sum to half the head width {head_dim}")
    vision_width = dict(depth=sz.vision_layers, num_heads=sz.vision_heads, patch_size=sz.patch_size,
                        spatial_merge_size=merge_size, temporal_patch_size=temporal_patch_size,
                        initializer_range=sz.initializer_range)
    mlp = sz.vision_intermediate_size or 2 * sz.vision_hidden_size
    if kind == "qwen2-vl":  # the tower's width is embed_dim, its hidden_size the language model's
        vision_width.update(embed_dim=sz.vision_hidden_size, hidden_size=sz.hidden_size,
                            mlp_ratio=mlp // sz.vision_hidden_size)
    else:
        vision_width.update(hidden_size=sz.vision_hidden_size, intermediate_size=mlp, out_hidden_size=sz.hidden_size)
    vision = getattr(config_module, f"{prefix}VisionConfig")(**vision_width, **(vision_extra or {}))
    text_extra = {"head_dim": head_dim} if kind == "qwen3-vl" else {}
    text = sz.text_config(tokenizer, getattr(config_module, f"{prefix}TextConfig"), rope_parameters={
        "rope_type": "default", "rope_theta": 10000.0, "mrope_section": list(mrope_section), **(rope_extra or {})},
        **text_extra)
    tid = tokenizer.convert_tokens_to_ids
    config = getattr(config_module, f"{prefix}Config")(
        text_config=text.to_dict(), vision_config=vision.to_dict(), image_token_id=tid("<|image_pad|>"),
        video_token_id=tid("<|video_pad|>"), vision_start_token_id=tid("<|vision_start|>"),
        vision_end_token_id=tid("<|vision_end|>"))
    torch.manual_seed(sz.seed)
    model = getattr(transformers, f"{prefix}ForConditionalGeneration")(config).eval()
    factor = sz.patch_size * merge_size
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=sz.patch_size, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
        size={"shortest_edge": min_pixels or 4 * factor * factor, "longest_edge": max_pixels or 64 * factor * factor},
        do_convert_rgb=True)
    processor = _image_only(getattr(transformers, f"{prefix}Processor"))(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None, chat_template=template)
    return model, processor


def build_tiny_qwen2_5_vl(tokenizer=None, *, merge_size: int = 2, temporal_patch_size: int = 2,
                          mrope_section=(2, 1, 1), min_pixels: int | None = None, max_pixels: int | None = None,
                          window_size: int | None = None, fullatt_block_indexes=None, **sizes):
    """A random ``Qwen2_5_VLForConditionalGeneration`` and its ``Qwen2_5_VLProcessor`` (Qwen2.5-VL's chat
    template, Qwen2-VL's): as ``build_tiny_qwen2_vl`` (same sizes and defaults), with the windowed vision
    attention of Qwen2.5-VL: windows of ``window_size`` pixels (default: 2 x 2 merged tokens, so a tiny image
    spans several windows) in every vision layer but those of ``fullatt_block_indexes`` (default: the last
    one, as Qwen2.5-VL-7B's [7, 15, 23, 31] of 32 end with a full-attention layer)."""
    sizes.setdefault("patch_size", 4)
    layers = sizes.get("vision_layers", TinySizes.vision_layers)
    vision_extra = dict(window_size=window_size or 2 * sizes["patch_size"] * merge_size,
                        fullatt_block_indexes=list(fullatt_block_indexes if fullatt_block_indexes is not None
                                                   else [layers - 1]))
    return _build_tiny_qwen_vl("qwen2.5-vl", tokenizer, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
                               mrope_section=mrope_section, min_pixels=min_pixels, max_pixels=max_pixels,
                               vision_extra=vision_extra, **sizes)


def build_tiny_qwen3_vl(tokenizer=None, *, merge_size: int = 2, temporal_patch_size: int = 2,
                        mrope_section=(2, 1, 1), min_pixels: int | None = None, max_pixels: int | None = None,
                        deepstack_visual_indexes=None, num_position_embeddings: int = 16, **sizes):
    """A random ``Qwen3VLForConditionalGeneration`` and its ``Qwen3VLProcessor`` with Qwen3-VL's chat template:
    as ``build_tiny_qwen2_vl`` (same sizes and defaults), with Qwen3-VL's learned vision position embeddings
    (a grid of ``num_position_embeddings``, interpolated to each image), interleaved M-RoPE and DeepStack: the
    vision layers ``deepstack_visual_indexes`` (default: every vision layer) each feed a merger whose output
    is added to the language model's image tokens after decoder layer 0, 1, ... in turn. With the default 2
    vision and 2 language layers the second feature is added after the last decoder layer."""
    layers = sizes.get("vision_layers", TinySizes.vision_layers)
    vision_extra = dict(num_position_embeddings=num_position_embeddings, deepstack_visual_indexes=list(
        deepstack_visual_indexes if deepstack_visual_indexes is not None else range(layers)))
    return _build_tiny_qwen_vl("qwen3-vl", tokenizer, merge_size=merge_size, temporal_patch_size=temporal_patch_size,
                               mrope_section=mrope_section, min_pixels=min_pixels, max_pixels=max_pixels,
                               vision_extra=vision_extra, rope_extra={"mrope_interleaved": True}, **sizes)


# google/gemma-3-4b-it's chat template (chat_template.json): it writes the BOS itself and <start_of_image> for an image
GEMMA3_CHAT_TEMPLATE = (
    "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n"
    "        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n"
    "    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n"
    "    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n"
    "    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n"
    "    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n"
    "            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n"
    "            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n"
    "            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n"
    "        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n"
    "{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n")
GEMMA3_TOKENS = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}


def _gemma_text_keys(sz: TinySizes, sliding_window: int) -> dict:
    """Gemma-family language-model keys of a tiny build: the head width and its query scale from the sizes, full
    and sliding-window layers alternating (full first: with 2 layers the last token reads the image directly in
    layer 0, not only through the one full layer after a window shorter than the question)."""
    head_dim = sz.hidden_size // sz.num_heads
    return dict(head_dim=head_dim, query_pre_attn_scalar=head_dim, sliding_window=sliding_window,
                layer_types=["sliding_attention" if i % 2 else "full_attention" for i in range(sz.num_layers)])


def build_tiny_gemma3(tokenizer=None, *, mm_tokens_per_image: int = 64, sliding_window: int = 40,
                      final_logit_softcapping: float | None = 30.0, **sizes):
    """A random ``Gemma3ForConditionalGeneration`` (SigLIP vision, the weight-only projector pooling the patches to
    ``mm_tokens_per_image`` tokens, a Gemma 3 LM with full and sliding-window layers alternating) and its
    ``Gemma3Processor`` with gemma-3-4b-it's chat template; ``sizes``: the fields of ``TinySizes`` (``patch_size``
    defaults to 4: 8 x 8 patches, one image token each (the projector pools 1 x 1; a coarser pooling of these
    noise images leaves the image too little effect on the answer for the tracing test's check); the projector's
    matrix, zeros from HF's init, is drawn like the other weights). ``sliding_window`` (40) is shorter than an image's tokens, so the windowed
    layer cuts through the bidirectional image block, and long enough that the last token still sees the image's
    end in it after the test questions. ``final_logit_softcapping``
    is set (30) although the HF class ignores it: the adapter must too. The tokenizer merges runs of newlines
    into one token, as Gemma's does."""
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration, Gemma3Processor, SiglipVisionConfig
    from transformers.models.gemma3.configuration_gemma3 import Gemma3TextConfig
    from transformers.models.gemma3.image_processing_pil_gemma3 import Gemma3ImageProcessorPil

    sizes.setdefault("patch_size", 4)
    sz = TinySizes(**sizes)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(
        ["<start_of_turn>user\n\n\n<start_of_image><end_of_image>\n\n{q}<end_of_turn>\n<start_of_turn>model\nYes"],
        extra_special_tokens=["<start_of_turn>", "<end_of_turn>", *GEMMA3_TOKENS.values()],
        special_token_names=GEMMA3_TOKENS, newline_runs=True)
    text = sz.text_config(tokenizer, Gemma3TextConfig, final_logit_softcapping=final_logit_softcapping,
                          **_gemma_text_keys(sz, sliding_window))
    tid = tokenizer.convert_tokens_to_ids
    config = Gemma3Config(text_config=text, vision_config=sz.vision_config(SiglipVisionConfig, vision_use_head=False),
                          mm_tokens_per_image=mm_tokens_per_image, boi_token_index=tid(GEMMA3_TOKENS["boi_token"]),
                          eoi_token_index=tid(GEMMA3_TOKENS["eoi_token"]),
                          image_token_index=tid(GEMMA3_TOKENS["image_token"]), initializer_range=sz.initializer_range)
    torch.manual_seed(sz.seed)
    model = Gemma3ForConditionalGeneration(config).eval()
    from vseam.models.structure import vision_stack

    with torch.no_grad():  # HF initialises the projector's matrix to zeros: the image would reach nothing
        for w in vision_stack(model).projector.parameters():
            if w.dim() == 2:
                w.normal_(0.0, sz.initializer_range)
    image_processor = Gemma3ImageProcessorPil(size={"height": sz.image_size, "width": sz.image_size},
                                              do_convert_rgb=True)
    processor = Gemma3Processor(image_processor=image_processor, tokenizer=tokenizer,
                                chat_template=GEMMA3_CHAT_TEMPLATE, image_seq_length=mm_tokens_per_image)
    return model, processor


def build_tiny_paligemma(tokenizer=None, *, sliding_window: int = 8, attn_logit_softcapping: float | None = 50.0,
                         final_logit_softcapping: float | None = 30.0, **sizes):
    """A random ``PaliGemmaForConditionalGeneration`` as PaliGemma 2 (SigLIP vision, a linear projector, a Gemma 2 LM
    with full and sliding-window layers alternating, attention and final soft caps) and its ``PaliGemmaProcessor``
    (no chat template; it adds its 1,152 location / segmentation tokens to the tokenizer); ``sizes``: the fields
    of ``TinySizes`` (``patch_size`` defaults to 8: 16 image tokens at 32 px)."""
    from transformers import (
        Gemma2Config,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    sizes.setdefault("patch_size", 8)
    sz = TinySizes(**sizes)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(
        ["<image><s>answer en {q}\nyes", "<image><s>answer en {q}\nno"], add_bos=False,
        special_token_names={"image_token": "<image>"})
    image_processor = SiglipImageProcessorPil(size={"height": sz.image_size, "width": sz.image_size},
                                              do_convert_rgb=True)
    image_processor.image_seq_length = (sz.image_size // sz.patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # grows the vocabulary
    text = sz.text_config(tokenizer, Gemma2Config, attn_logit_softcapping=attn_logit_softcapping,
                          final_logit_softcapping=final_logit_softcapping, **_gemma_text_keys(sz, sliding_window))
    config = PaliGemmaConfig(text_config=text, vision_config=sz.vision_config(SiglipVisionConfig, vision_use_head=False),
                             image_token_index=tokenizer.convert_tokens_to_ids("<image>"), vocab_size=text.vocab_size,
                             projection_dim=sz.hidden_size, hidden_size=sz.hidden_size)
    torch.manual_seed(sz.seed)
    model = PaliGemmaForConditionalGeneration(config).eval()
    return model, processor


def _image_only(processor_class):
    """``processor_class`` that accepts no video processor: transformers' video processors import torchvision,
    which the tiny builds do without (images only; a hub checkpoint loads its own processor)."""
    class ImageOnly(processor_class):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument is None and argument_name == "video_processor":
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_class.__name__
    return ImageOnly


# The chat templates of llava-hf/llava-onevision-qwen2-7b-ov-hf (transformers' convert_llava_onevision_weights_to_hf.py,
# which wrote it), HuggingFaceM4/Idefics3-8B-Llama3 and the InternVL ...-hf checkpoints (convert_internvl_weights_to_hf.py);
# SmolVLM2's is transformers' own default (processing_smolvlm.DEFAULT_CHAT_TEMPLATE).
LLAVA_ONEVISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{# Render all images first #}{% for "
    "content in message['content'] | selectattr('type', 'equalto', 'image') %}{{ '<image>\n' }}{% endfor %}{# Render "
    "all video then #}{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}{{ '<video>\n' }}"
    "{% endfor %}{# Render all text next #}{% if message['role'] != 'assistant' %}{% for content in message['content'] "
    "| selectattr('type', 'equalto', 'text') %}{{ content['text'] }}{% endfor %}{% else %}{% for content in "
    "message['content'] | selectattr('type', 'equalto', 'text') %}{% generation %}{{ content['text'] }}{% endgeneration "
    "%}{% endfor %}{% endif %}{{'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>"
    "assistant\n' }}{% endif %}")
IDEFICS3_CHAT_TEMPLATE = (
    "<|begin_of_text|>{% for message in messages %}{{message['role'] | capitalize}}{% if message['content'][0]['type'] "
    "== 'image' %}{{':'}}{% else %}{{': '}}{% endif %}{% for line in message['content'] %}{% if line['type'] == 'text' "
    "%}{{line['text']}}{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}<end_of_utterance>\n{% "
    "endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}")
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n'}}{% if message['content'] is string %}{{ "
    "message['content'] }}{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}{{ "
    "'<IMG_CONTEXT>\n' }}{% elif content['type'] == 'video' %}{{ '<video>\n' }}{% elif content['type'] == 'text' %}{{ "
    "content['text'] }}{% endif %}{% endfor %}{% endif %}{{'<|im_end|>\n'}}{% endfor %}{% if add_generation_prompt "
    "%}{{'<|im_start|>assistant\n' }}{% endif %}")
CHATML_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Idefics3 / SmolVLM: the crop and row markers their processors put around the image tokens (a grid of up to 6 x 6)
IDEFICS3_SPECIAL_TOKENS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>"] + [
    f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]


def build_tiny_llava_onevision(tokenizer=None, *, max_grid: int = 3, vision_aspect_ratio: str = "anyres_max_1",
                               vision_feature_layer: int = -1, **sizes):
    """A random ``LlavaOnevisionForConditionalGeneration`` (SigLIP vision on anyres tiles, image newline, Qwen2 LM)
    and its ``LlavaOnevisionProcessor`` with LLaVA-OneVision's chat template; ``sizes``: the fields of
    ``TinySizes``. The grid pinpoints are 1..``max_grid`` tiles of ``image_size`` a side (the checkpoints': 1..6
    of 384). ``vision_aspect_ratio``: anyres-max's budget in base views (the checkpoints' ``anyres_max_9``); at 1
    the tile features of a two-tile image are already shrunk by the HF model's interpolation, so the tiny build
    runs that path too. Image-only processor (no torchvision)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionProcessor,
        Qwen2Config,
        SiglipVisionConfig,
    )
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

    sz = TinySizes(**sizes)
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(
        ["<|im_start|>user\n<image>\n{q}<|im_end|>\n<|im_start|>assistant\nYes"],
        extra_special_tokens=CHATML_SPECIAL_TOKENS + ["<video>"], add_bos=False)
    pinpoints = [[sz.image_size * i, sz.image_size * j] for i in range(1, max_grid + 1) for j in range(1, max_grid + 1)]
    vision = sz.vision_config(SiglipVisionConfig)
    vision.vision_use_head = False  # the checkpoints' tower has no pooling head
    tid = tokenizer.convert_tokens_to_ids
    config = LlavaOnevisionConfig(
        vision_config=vision, text_config=sz.text_config(tokenizer, Qwen2Config),
        image_token_index=tid("<image>"), video_token_index=tid("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=vision_feature_layer, image_grid_pinpoints=pinpoints,
        vision_aspect_ratio=vision_aspect_ratio)
    torch.manual_seed(sz.seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    image_processor = LlavaOnevisionImageProcessorPil(size={"height": sz.image_size, "width": sz.image_size},
                                                      image_grid_pinpoints=pinpoints, do_convert_rgb=True)
    processor = _image_only(LlavaOnevisionProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
        num_image_tokens=(sz.image_size // sz.patch_size) ** 2, vision_feature_select_strategy="full",
        vision_aspect_ratio=vision_aspect_ratio, chat_template=LLAVA_ONEVISION_CHAT_TEMPLATE)
    return model, processor


def _build_tiny_idefics3_family(smolvlm: bool, tokenizer, scale_factor: int, max_splits: int, sizes: dict):
    """Idefics3 and SmolVLM share the design (module docstrings of ``models.idefics3`` / ``models.smolvlm``)."""
    import transformers
    from transformers import LlamaConfig

    name = "SmolVLM" if smolvlm else "Idefics3"
    module = getattr(transformers.models, name.lower())
    sizes.setdefault("image_size", 48)
    sz = TinySizes(**sizes)
    if (sz.image_size // sz.patch_size) % scale_factor:
        raise ValueError(f"{sz.image_size // sz.patch_size} patches a side do not shuffle by {scale_factor}")
    bos = "<|im_start|>" if smolvlm else "<|begin_of_text|>"
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(
        [f"{bos}User:<image>{{q}}<end_of_utterance>\nAssistant: Yes"],
        extra_special_tokens=[bos] + IDEFICS3_SPECIAL_TOKENS, add_bos=False)
    vision = sz.vision_config(getattr(module, f"{name}VisionConfig"))
    config = getattr(transformers, f"{name}Config")(
        vision_config=vision.to_dict(), text_config=sz.text_config(tokenizer, LlamaConfig).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), scale_factor=scale_factor)
    torch.manual_seed(sz.seed)
    model = getattr(transformers, f"{name}ForConditionalGeneration")(config).eval()
    image_processor = getattr(module, f"{name}ImageProcessorPil")(
        size={"longest_edge": max_splits * sz.image_size}, max_image_size={"longest_edge": sz.image_size},
        do_image_splitting=True, do_convert_rgb=True)
    seq_len = (sz.image_size // sz.patch_size // scale_factor) ** 2
    processor_class = getattr(transformers, f"{name}Processor")
    if not smolvlm:
        return model, processor_class(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=seq_len,
                                      chat_template=IDEFICS3_CHAT_TEMPLATE)
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE
    from transformers.processing_utils import ProcessorMixin

    class SmolVLMImageOnly(_image_only(processor_class)):
        def apply_chat_template(self, conversation, chat_template=None, **kwargs):
            # SmolVLM's own reads its video defaults off the video processor, which an image-only one lacks
            return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)

    SmolVLMImageOnly.__name__ = SmolVLMImageOnly.__qualname__ = processor_class.__name__
    return model, SmolVLMImageOnly(image_processor=image_processor, tokenizer=tokenizer, video_processor=None,
                                   image_seq_len=seq_len, chat_template=DEFAULT_CHAT_TEMPLATE)


def build_tiny_idefics3(tokenizer=None, *, scale_factor: int = 2, max_splits: int = 2, **sizes):
    """A random ``Idefics3ForConditionalGeneration`` (SigLIP-style vision tower on image splits, pixel-shuffle
    connector, Llama LM) and its ``Idefics3Processor`` with Idefics3-8B-Llama3's chat template; ``sizes``: the
    fields of ``TinySizes`` (``image_size`` defaults to 48 here: 6 x 6 patches of 8 px -> 3 x 3 tokens per crop,
    as the checkpoint's 26 x 26 -> 13 x 13). An image is resized to a longest edge of ``max_splits`` crops of
    ``image_size`` (the checkpoint: 4 of 364) and cut into them, plus the global view: its token count follows
    its aspect."""
    return _build_tiny_idefics3_family(False, tokenizer, scale_factor, max_splits, sizes)


def build_tiny_smolvlm(tokenizer=None, *, scale_factor: int = 3, max_splits: int = 2, **sizes):
    """A random ``SmolVLMForConditionalGeneration`` and its ``SmolVLMProcessor`` (image-only, no torchvision) with
    SmolVLM2's chat template: as ``build_tiny_idefics3``, with SmolVLM's 3 x 3 pixel shuffle (6 x 6 patches of 8 px
    -> 2 x 2 tokens per crop, as the checkpoint's 27 x 27 -> 9 x 9)."""
    return _build_tiny_idefics3_family(True, tokenizer, scale_factor, max_splits, sizes)


def build_tiny_internvl(tokenizer=None, *, max_patches: int = 6, downsample_ratio: float = 0.5, **sizes):
    """A random ``InternVLForConditionalGeneration`` (InternViT-style tower on dynamic tiles, pixel-unshuffle
    projector, Qwen2 LM) and its ``InternVLProcessor`` (image-only, no torchvision) with the InternVL ...-hf chat
    template; ``sizes``: the fields of ``TinySizes`` (``image_size`` defaults to 48 here: 6 x 6 patches of 8 px ->
    3 x 3 tokens per tile, as the checkpoints' 32 x 32 -> 16 x 16). An image is cut into the grid of at most
    ``max_patches`` tiles of ``image_size`` that best fits its aspect, plus a thumbnail when there are several (the
    checkpoints: up to 12 tiles of 448), so its token count follows its aspect."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration, InternVLProcessor, Qwen2Config
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil
    from transformers.models.internvl.configuration_internvl import InternVLVisionConfig

    sizes.setdefault("image_size", 48)
    sz = TinySizes(**sizes)
    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(
        ["<|im_start|>user\n<IMG_CONTEXT>\n{q}<|im_end|>\n<|im_start|>assistant\nYes"],
        extra_special_tokens=CHATML_SPECIAL_TOKENS, add_bos=False, special_token_names=named)
    seq_len = int((sz.image_size // sz.patch_size) ** 2 * downsample_ratio ** 2)
    vision = sz.vision_config(InternVLVisionConfig)
    # layer scale starts at 1, not InternViT's training init of 0.1 (a trained checkpoint holds learned scales): at
    # 0.1 a random tower's attention branches are damped so far that ablating a vision head moves p by < 2e-5
    vision.layer_scale_init_value = 1.0
    config = InternVLConfig(
        vision_config=vision.to_dict(),
        text_config=sz.text_config(tokenizer, Qwen2Config).to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=seq_len,
        downsample_ratio=downsample_ratio, tie_word_embeddings=False)
    torch.manual_seed(sz.seed)
    model = InternVLForConditionalGeneration(config).eval()
    image_processor = GotOcr2ImageProcessorPil(size={"height": sz.image_size, "width": sz.image_size},
                                               crop_to_patches=True, min_patches=1, max_patches=max_patches,
                                               do_convert_rgb=True)
    processor = _image_only(InternVLProcessor)(image_processor=image_processor, tokenizer=tokenizer,
                                               video_processor=None, image_seq_length=seq_len,
                                               chat_template=INTERNVL_CHAT_TEMPLATE)
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

# tiny:<arch> -> its builder (``model.path=tiny:<arch>``; a new architecture adds its entry)
TINY_BUILDERS = {"llava": build_tiny_llava, "instructblip": build_tiny_instructblip,
                 "llava-next": build_tiny_llava_next, "qwen2-vl": build_tiny_qwen2_vl,
                 "qwen2.5-vl": build_tiny_qwen2_5_vl, "qwen3-vl": build_tiny_qwen3_vl,
                 "gemma3": build_tiny_gemma3, "paligemma": build_tiny_paligemma,
                 "llava-onevision": build_tiny_llava_onevision, "idefics3": build_tiny_idefics3,
                 "smolvlm": build_tiny_smolvlm, "internvl": build_tiny_internvl}


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
