"""Idefics3 (``Idefics3ForConditionalGeneration``): a SigLIP vision tower on image splits (the image resized
and cut into square crops of the tower's size, plus a downscaled global view), a pixel-shuffle connector
(``scale_factor`` x ``scale_factor`` patches -> one token, then a linear projection) and a Llama language
model.

The processor replaces the prompt's one ``<image>`` by, per crop, ``<fake_token_around_image>``,
``<row_i_col_j>`` and the crop's ``<image>`` tokens, a newline after each row of crops, then the global
view between ``<fake_token_around_image><global-img>`` and ``<fake_token_around_image>``. The tracing band
is all of that (``vseam.tracing.positions``); ``visual_token_mask`` is the ``<image>`` tokens the HF model
fills with the connector's output. The language model takes ordinary 1-D positions (the HF model passes
none and its decoder counts them; the adapter counts them over real tokens, so left padding does not
shift them). The prompt is the checkpoint's chat template (``User:<image>...<end_of_utterance>\\nAssistant:``).
SmolVLM-Instruct and the other SmolVLM (v1) checkpoints are ``model_type`` idefics3 and load with this adapter.
"""

from vseam.models.base import VLMAdapter


class Idefics3Adapter(VLMAdapter):
    arch = "idefics3"
    hf_class = "Idefics3ForConditionalGeneration"
    model_types = ("idefics3",)
