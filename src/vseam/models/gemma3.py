"""Gemma 3 (``Gemma3ForConditionalGeneration``): a SigLIP vision tower, a projector without ``nn.Linear`` (average
pooling to ``mm_tokens_per_image`` tokens, RMS norm, a bare weight matrix) and a Gemma 3 language model whose
layers alternate sliding-window and full attention.

Masks: the tokens of one image attend to each other both ways (each image is one block; text stays causal), and
the sliding-window layers see only the last ``sliding_window`` positions, the image's own tokens included
(window AND (causal OR same image)). The HF model builds both masks from the processor's ``token_type_ids`` (1 at
the image's soft tokens); ``TokenTypeMaskAdapter`` keeps them with the embeddings and rebuilds the masks with
the HF class's own functions, so the exact engine, tracing and training run under the model's masks. Attention
patterns are not causal (``causal = False``): an image token's pattern reaches later tokens of its image.

Positions: 1-D, from 0, counted over real tokens (left padding does not move them). Image tokens: a fixed
``mm_tokens_per_image`` per image (256 for the hub checkpoints) whatever the image's size; the processor writes
``\\n\\n<start_of_image>`` + the soft tokens + ``<end_of_image>\\n\\n`` in place of the chat template's
``<start_of_image>`` (``placeholder_token_id``), and that whole run is the image band of tracing. Pan-and-scan
crops (``do_pan_and_scan``, off by default in the hub processor) are not used.

Prompt: the checkpoint's chat template, which writes the BOS itself (so the tokenizer adds none). Logits:
``Gemma3ForConditionalGeneration`` applies no final soft cap (transformers 5.x; Gemma 3 checkpoints set none), so
neither does the adapter.
"""

from __future__ import annotations

from vseam.models.token_types import TokenTypeMaskAdapter


class Gemma3Adapter(TokenTypeMaskAdapter):
    arch = "gemma3"
    hf_class = "Gemma3ForConditionalGeneration"
    model_types = ("gemma3",)
    softcaps_logits = False

    @property
    def placeholder_token_id(self) -> int:
        return int(self.model.config.boi_token_id)

    def processor_images(self, images: list) -> list:
        return [[image] for image in images]
