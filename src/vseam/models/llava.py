"""LLaVA-1.5 (``LlavaForConditionalGeneration``): CLIP vision tower + projector + Llama/Vicuna."""

from vseam.models.base import VLMAdapter


class LlavaAdapter(VLMAdapter):
    arch = "llava"
    hf_class = "LlavaForConditionalGeneration"
    model_types = ("llava",)
    # docs/method.md#prompts
    default_template = "USER: <image>\n{question} Please answer with a single word.\nASSISTANT:"
