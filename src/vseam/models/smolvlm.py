"""SmolVLM2 (``SmolVLMForConditionalGeneration``, ``model_type`` smolvlm): Idefics3's design (image splits,
pixel-shuffle connector, a SmolLM2 / Llama language model, the same crop and row markers around the image
tokens) with a stronger shuffle (3 x 3 for the checkpoints). SmolVLM v1 checkpoints
(``HuggingFaceTB/SmolVLM-Instruct``) are ``model_type`` idefics3: the ``idefics3`` adapter serves them.

The one difference an adapter sees: SmolVLM's processor reads a flat list of images as the images of one
prompt, so each prompt's image is passed in its own list. A hub checkpoint's processor carries a video
processor, which needs torchvision installed, and SmolVLM's processor needs ``num2words``.
"""

from vseam.models.idefics3 import Idefics3Adapter


class SmolVLMAdapter(Idefics3Adapter):
    arch = "smolvlm"
    hf_class = "SmolVLMForConditionalGeneration"
    model_types = ("smolvlm",)

    def processor_images(self, images: list) -> list:
        return [[image] for image in images]
