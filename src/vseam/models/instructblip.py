"""InstructBLIP-Vicuna (``InstructBlipForConditionalGeneration``): vision + Q-Former + Llama/Vicuna.

The Q-Former's query outputs stand at the start of the sequence as ``num_query_tokens`` image tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vseam.data.sample import Sample
from vseam.models.base import Encoded, VLMAdapter


class InstructBlipAdapter(VLMAdapter):
    arch = "instructblip"
    hf_class = "InstructBlipForConditionalGeneration"
    model_types = ("instructblip",)
    # docs/method.md#prompts
    default_template = "Question: {question} Answer using a single word."

    def position_limits(self, question: str) -> list[tuple[str, int, int]]:
        """The language model's limit and the Q-Former's: it reads the prompt's text too."""
        limits = super().position_limits(question)
        qformer = getattr(self.model.config, "qformer_config", None)
        limit = getattr(qformer, "max_position_embeddings", None)
        if limit:
            n = len(self.processor.qformer_tokenizer(self.prompt(question))["input_ids"])
            limits.append(("Q-Former", n, int(limit)))
        return limits

    def encode(self, samples: Sequence[Sample], images: Sequence[Any] | None = None) -> Encoded:
        enc = super().encode(samples, images)
        # The processor pads the Q-Former text on the LM tokenizer's side (left); the Q-Former has
        # absolute positions, so left padding would change its output with the batch. Re-pad right.
        qtok = self.processor.qformer_tokenizer
        q = qtok([self.prompt(s.question) for s in samples], padding=True, padding_side="right",
                 return_tensors="pt")
        enc.inputs["qformer_input_ids"] = q["input_ids"]
        enc.inputs["qformer_attention_mask"] = q["attention_mask"]
        return enc
