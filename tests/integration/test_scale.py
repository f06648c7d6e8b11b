"""Attribution at the real model's shape (issue 17): the scale benchmark's counted work and top-10 race,
the full-width random builds, and the answer-definition comparison."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import attribution_scale as scale  # noqa: E402


def test_layer_macs_equal_the_layers_own_linear_shapes(tiny_llava):
    """The config formula counts what the decoder layer's nn.Linear modules hold, plus causal attention."""
    layer = tiny_llava.layers[0]
    per_token = sum(m.in_features * m.out_features for m in layer.modules() if isinstance(m, torch.nn.Linear))
    tc = tiny_llava.model.config.get_text_config()
    T = 7
    got = scale.layer_macs(tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads, tiny_llava.head_dim,
                           tc.intermediate_size, T)
    attn = 2 * tc.num_attention_heads * tiny_llava.head_dim * sum(range(1, T + 1))  # q.k and p.v, causal
    assert got == T * per_token + attn


def test_full_width_builds_have_the_real_shapes():
    """The full-width LLaVA on the meta device: the real widths and, through the real processor
    configuration, 576 image tokens in the real prompt template."""
    from vseam.models.tiny import build_full_width

    with torch.device("meta"):
        model, processor = build_full_width("llava-1.5-7b", num_layers=1, vision_layers=1)
    tc = model.config.get_text_config()
    assert (tc.hidden_size, tc.num_attention_heads, tc.intermediate_size, tc.vocab_size) == (4096, 32, 11008, 32064)
    assert model.config.vision_config.image_size == 336 and model.config.vision_config.patch_size == 14
    from PIL import Image

    from vseam.models.llava import LlavaAdapter

    text = LlavaAdapter.default_template.format(question="Is there a dog?")
    out = processor(images=[Image.new("RGB", (640, 480))], text=[text], return_tensors="pt")
    assert tuple(out["pixel_values"].shape) == (1, 3, 336, 336)
    assert int((out["input_ids"] == model.config.image_token_id).sum()) == 576
    with torch.device("meta"):
        ib, ib_proc = build_full_width("instructblip-vicuna-7b", num_layers=1, vision_layers=1, qformer_layers=1)
    assert ib.config.num_query_tokens == 32 and ib.config.qformer_config.hidden_size == 768
    assert ib.config.vision_config.hidden_size == 1408 and ib.config.get_text_config().hidden_size == 4096
    with pytest.raises(ValueError, match="full-width model 'gpt'"):
        build_full_width("gpt")


def test_both_definitions_equal_the_engine_under_each(tiny_llava, samples):
    import answer_definitions as defs

    from vseam.attribution.exact import ExactEngine
    from vseam.models.base import answer_stats
    from vseam.models.llava import LlavaAdapter

    adapters = {d: LlavaAdapter(tiny_llava.model, tiny_llava.processor, answer_definition=d) for d in defs.DEFINITIONS}
    res = defs.both_definitions(adapters, samples, batch_size=2, rows=3)
    for d, ad in adapters.items():
        enc = ad.encode(samples)
        with torch.no_grad():
            emb = ad.embed(enc)
        p_abl, logits = ExactEngine(ad).ablated_probs(emb, enc.answer_mask(ad.vocab_size))
        p, c, _ = answer_stats(logits, enc.answer_mask(ad.vocab_size), enc.correct_mask(ad.vocab_size))
        torch.testing.assert_close(res[d][2], p_abl, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(res[d][0], p.float(), rtol=1e-5, atol=1e-7)
        assert torch.equal(res[d][1], c)
    assert not torch.allclose(res["project"][0], res["reference"][0])  # yes/no samples: the variants differ
