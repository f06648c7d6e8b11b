"""LLaVA-OneVision (``LlavaOnevisionForConditionalGeneration``): a SigLIP vision tower (no CLS token, every
patch kept) on anyres tiles (a base view plus the tiles of the best-fitting grid, up to 6 x 6 for the
checkpoints), a two-layer projector, an image-newline embedding after each row of tile features, and a
Qwen2 language model.

anyres-max: when the unpadded tile features exceed ``anyres_max_9``'s budget (9 base views' worth), the HF
model shrinks them by bilinear interpolation before adding the newline tokens; the processor counts the
same, so an image's token count depends on its size and aspect. Nothing here differs from the generic
adapter: the image tokens are all ``<image>`` ids that the HF model fills (newline tokens included) before
its language model runs, and that model takes ordinary 1-D positions. The prompt is the checkpoint's chat
template (ChatML, ``<|im_start|>user\\n<image>\\n...``). A hub checkpoint's processor carries a video
processor, which needs torchvision installed.
"""

from vseam.models.base import VLMAdapter


class LlavaOnevisionAdapter(VLMAdapter):
    arch = "llava-onevision"
    hf_class = "LlavaOnevisionForConditionalGeneration"
    model_types = ("llava_onevision",)
