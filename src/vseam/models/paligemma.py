"""PaliGemma (``PaliGemmaForConditionalGeneration``; PaliGemma 2 alike): a SigLIP vision tower, a linear projector
and a Gemma (PaliGemma) or Gemma 2 (PaliGemma 2: sliding-window layers, soft caps) language model run as a
prefix LM.

Prefix LM: the image tokens and the prompt (``token_type_ids == 0``) attend to each other both ways; only a
suffix (none here: the answer is read at the prompt's last token) is causal. So every attention pattern here is
bidirectional over the prompt (``causal = False``). ``TokenTypeMaskAdapter`` keeps the token types with the
embeddings and rebuilds the masks with the HF class's own functions (PaliGemma 2's sliding-window layers: the
window OR the prefix block, as the HF model makes them).

No chat template: the prompt is the mix checkpoints' VQA task prefix ``<image>answer en {question}``
(``model.prompt_template`` overrides it). The processor completes it: BOS after the image tokens and a newline at
the end (``model_text``), so the answer is the token after ``\\n`` ("yes", no leading space). Image tokens: a
fixed ``image_seq_length`` per image (256 at 224 px) at the start of the row, whatever the image's size.

Positions: the HF model counts them from 1; here from 1 over real tokens (left padding does not move them).
Logits: the HF class soft-caps them with ``final_logit_softcapping`` when the text config sets it (PaliGemma 2:
30), and so does ``unembed``.
"""

from __future__ import annotations

import torch

from vseam.models.base import position_ids_from_mask
from vseam.models.token_types import TokenTypeMaskAdapter

VQA_PROMPT = "<image>answer en {question}"  # the mix checkpoints' VQA prefix (big_vision's PaliGemma README)


class PaliGemmaAdapter(TokenTypeMaskAdapter):
    arch = "paligemma"
    hf_class = "PaliGemmaForConditionalGeneration"
    model_types = ("paligemma",)
    default_template = VQA_PROMPT
    softcaps_logits = True

    def model_text(self, prompt: str) -> str:
        """As ``PaliGemmaProcessor`` completes a prompt: BOS after the last image token and a newline at the end (a
        prompt without the image token gets one in front, as the processor puts it there)."""
        image, bos = str(self.processor.image_token), str(self.tokenizer.bos_token)
        if image not in prompt:
            return f"{image}{bos}{prompt}\n"
        end = prompt.rfind(image) + len(image)
        return f"{prompt[:end]}{bos}{prompt[end:]}\n"

    def model_inputs(self, enc) -> dict:
        inputs = super().model_inputs(enc)
        inputs.pop("labels", None)  # the processor's labels of a suffix (there is none): no loss to compute
        return inputs

    def positions(self, mask: torch.Tensor, decoder_kwargs: dict) -> torch.Tensor:
        pos = decoder_kwargs.get("position_ids")
        if pos is None or pos.shape[-1] != mask.shape[-1]:
            raise RuntimeError(f"{type(self.model).__name__} passed its language model position ids of shape "
                               f"{None if pos is None else tuple(pos.shape)}; expected [.., {mask.shape[-1]}]")
        first = int(pos.reshape(-1, pos.shape[-1])[0, 0])  # where the HF model starts counting (1)
        return position_ids_from_mask(mask) + first
