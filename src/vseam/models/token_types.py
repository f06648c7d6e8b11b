"""Adapters of VLMs whose language-model masks follow the processor's token types (Gemma 3, PaliGemma).

Such a model does not hand its decoder a padding mask to make causal: it builds the masks itself from the
processor's ``token_type_ids`` (Gemma 3: tokens of one image attend to each other both ways; PaliGemma: the
whole prefix, image and prompt, does) and hands its decoder one mask per layer type (sliding-window and full
layers). Here the token types travel with the embeddings (``Embedded.extra["token_type_ids"]``: rows, crops
and the cache's re-padding follow them) and ``lm_kwargs`` rebuilds the masks with the HF class's own
``create_masks_for_generate`` (what ``generate`` builds them with: the same functions as its forward), for the
attention implementation the decoder runs at that moment (eager while patterns are read). Nothing of a mask is
re-implemented here, so every analysis sees the HF model's masks.

``unembed`` applies the final logit soft cap (``tanh(x / c) * c``) when the HF class does
(``softcaps_logits``) and the text config sets one.
"""

from __future__ import annotations

import torch

from vseam.models.base import Embedded, Encoded, VLMAdapter


class TokenTypeMaskAdapter(VLMAdapter):
    causal = False  # some positions attend to later ones (an image's tokens, a prefix)
    softcaps_logits = False  # the HF class soft-caps its logits with text_config.final_logit_softcapping

    def extras(self, enc: Encoded, decoder_kwargs: dict) -> dict[str, torch.Tensor]:
        types = enc.inputs.get("token_type_ids")
        if types is None or types.shape != enc.inputs["input_ids"].shape:
            raise RuntimeError(f"{type(self.processor).__name__} gave no token_type_ids of the input ids' shape "
                               f"{tuple(enc.inputs['input_ids'].shape)}: {type(self.model).__name__} builds its "
                               f"attention masks from them")
        return {"token_type_ids": types.to(self.device)}

    def lm_kwargs(self, emb: Embedded) -> dict:
        masks = type(self.model).create_masks_for_generate(
            config=self.decoder.config, inputs_embeds=emb.inputs_embeds, attention_mask=emb.attention_mask,
            cache=None, position_ids=emb.position_ids, token_type_ids=emb.extra["token_type_ids"])
        return {"attention_mask": masks, "position_ids": emb.position_ids}

    def unembed(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden)
        cap = getattr(self.model.config.get_text_config(), "final_logit_softcapping", None)
        if self.softcaps_logits and cap is not None:
            logits = torch.tanh(logits / cap) * cap
        return logits
