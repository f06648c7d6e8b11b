"""InternVL (``InternVLForConditionalGeneration``, the transformers port of InternVL 2.5 / 3: ``...-hf``
checkpoints): an InternViT vision tower (CLS token dropped) on dynamic tiles (the image cut into a grid of
448 px tiles chosen for its aspect, up to 12, plus a thumbnail when there are several), a pixel-unshuffle
projector (2 x 2 patches -> one token: layer norm and a two-layer MLP) and a Qwen2 (or InternLM2 / Llama)
language model.

The prompt's one ``<IMG_CONTEXT>`` becomes ``<img>``, 256 ``<IMG_CONTEXT>`` tokens per tile, and ``</img>``:
the tracing band is all of that, ``visual_token_mask`` the ``<IMG_CONTEXT>`` tokens the HF model fills. The
language model takes ordinary 1-D positions. The prompt is the checkpoint's chat template (ChatML,
``<|im_start|>user\\n<IMG_CONTEXT>\\n...``). A vision layer's head outputs are the input of its
``attention.projection_layer``. A hub checkpoint's processor carries a video processor, which needs
torchvision installed.
"""

from vseam.models.base import VLMAdapter


class InternVLAdapter(VLMAdapter):
    arch = "internvl"
    hf_class = "InternVLForConditionalGeneration"
    model_types = ("internvl",)
