"""LLaVA-NeXT (``LlavaNextForConditionalGeneration``): CLIP vision tower on anyres tiles (a base view plus
the tiles of the best-fitting grid), projector, an image-newline embedding after each row of patches,
and a Llama / Mistral / Vicuna language model.

Nothing here differs from the generic adapter: the image tokens are all ``<image>`` ids the processor
expanded to the image's own count (which depends on its size and aspect: tiles are unpadded back to
the image's aspect, plus one newline token per row), the HF model fills them (newline tokens included)
before its language model runs, and that model takes ordinary 1-D positions. The prompt is the
checkpoint's chat template (``[INST] <image>\\n... [/INST]`` for the Mistral one).
"""

from vseam.models.base import VLMAdapter


class LlavaNextAdapter(VLMAdapter):
    arch = "llava-next"
    hf_class = "LlavaNextForConditionalGeneration"
    model_types = ("llava_next",)
