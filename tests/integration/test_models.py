"""Model adapters on tiny random LLaVA / InstructBLIP: structure, answer tokens, scoring, loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vseam.models import ModelNotFoundError, find_decoder, load_adapter


def test_structure_found_by_shape(tiny_adapter):
    a = tiny_adapter
    assert a.shape == (2, 4, 8)
    assert a.num_kv_heads == 2 < a.num_heads  # grouped-query attention is covered
    assert a.o_proj(1).in_features == a.num_heads * a.head_dim
    # the decoder is the language model's, not the vision tower's (which uses out_proj)
    assert all(hasattr(layer.self_attn, "o_proj") for layer in a.layers)


def test_visual_token_positions(tiny_llava, tiny_instructblip, samples):
    enc = tiny_llava.encode(samples)
    # 32x32 image, 8x8 patches: 16 patch tokens (CLS dropped by the "default" strategy)
    assert tiny_llava.visual_token_mask(enc.inputs["input_ids"]).sum(1).tolist() == [16] * len(samples)
    enc = tiny_instructblip.encode(samples)
    n_query = tiny_instructblip.model.config.num_query_tokens
    mask = tiny_instructblip.visual_token_mask(enc.inputs["input_ids"])
    assert mask.sum(1).tolist() == [n_query] * len(samples)
    assert mask[:, :n_query].all()  # the query tokens stand at the start of the sequence


def test_answer_token_rule(tiny_llava):
    a = tiny_llava
    ids, gold = a.answer_token_ids("Yes")
    assert a.tokenizer.convert_ids_to_tokens(gold) == "▁Yes"  # the leading-space piece
    assert len(ids) >= 2 and a.tokenizer.convert_ids_to_tokens(ids[1]) in ("▁yes", "▁YES")
    ids, gold = a.answer_token_ids("red")
    assert ids == [gold] and a.tokenizer.convert_ids_to_tokens(gold) == "▁red"
    # a multi-token answer counts by its first token
    ids, gold = a.answer_token_ids("giraffe")
    full = a.tokenizer(" giraffe", add_special_tokens=False)["input_ids"]
    assert len(full) > 1 and ids == [gold]
    assert a.tokenizer.convert_ids_to_tokens(gold).startswith("▁")


def test_bad_answer_names_the_sample(tiny_llava, samples):
    from dataclasses import replace

    bad = replace(samples[0], id="q-42", answer="   ")
    with pytest.raises(ValueError, match="q-42"):
        tiny_llava.encode([bad])


def test_decomposed_forward_equals_model_forward(tiny_adapter, samples):
    a = tiny_adapter
    for s in samples[:2]:  # single samples: no padding, so HF's own positions are the same
        enc = a.encode([s])
        with torch.no_grad():
            ref = a.model(**a.model_inputs(enc), use_cache=False).logits[:, -1]
            mine = a.last_logits(enc)
        torch.testing.assert_close(mine, ref, atol=1e-5, rtol=1e-5)


def test_batched_scoring_equals_one_by_one(tiny_adapter, samples):
    a = tiny_adapter
    batched = a.score(samples, batch_size=len(samples))
    single = a.score(samples, batch_size=1)
    torch.testing.assert_close(batched.prob, single.prob, atol=1e-5, rtol=0)
    assert torch.equal(batched.correct, single.correct)
    assert torch.equal(batched.pred_token_id, single.pred_token_id)
    assert batched.ids == [s.id for s in samples]
    assert ((batched.prob > 0) & (batched.prob < 1)).all()


def test_score_correctness_is_argmax(tiny_llava, samples):
    a = tiny_llava
    res = a.score(samples)
    for i, s in enumerate(samples):
        ids, _ = a.answer_token_ids(s.answer)
        assert bool(res.correct[i]) == (int(res.pred_token_id[i]) in ids)


def test_save_and_load_local_folder(tmp_path, tiny_llava, samples):
    tiny_llava.model.save_pretrained(tmp_path)
    tiny_llava.processor.save_pretrained(tmp_path)
    b = load_adapter({"arch": "llava", "path": str(tmp_path), "device": "cpu", "local_files_only": True})
    torch.testing.assert_close(b.score(samples).prob, tiny_llava.score(samples).prob)


def test_absent_model_gives_clear_message(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ModelNotFoundError, match="hf download llava-hf/llava-1.5-7b-hf"):
        load_adapter({"arch": "llava", "path": "llava-hf/llava-1.5-7b-hf", "device": "cpu"})
    with pytest.raises(ModelNotFoundError, match="incomplete"):
        (tmp_path / "empty").mkdir()
        load_adapter({"arch": "llava", "path": str(tmp_path / "empty"), "device": "cpu"})


def test_unknown_arch_and_no_decoder():
    with pytest.raises(ValueError, match="model.arch"):
        load_adapter({"arch": "blip9", "path": "tiny:blip9"})
    with pytest.raises(ValueError, match="no decoder"):
        find_decoder(nn.Sequential(nn.Linear(2, 2)))


def test_tiny_builders_share_one_set_of_sizes():
    """Both builders read the vision tower and language model sizes from ``TinySizes`` (one home)."""
    from vseam.models.tiny import TinySizes, build_tiny_instructblip, build_tiny_llava

    sizes = dict(num_layers=1, vision_layers=1, vision_hidden_size=16, vision_heads=2, image_size=16)
    llava, _ = build_tiny_llava(**sizes)
    blip, _ = build_tiny_instructblip(qformer_layers=1, **sizes)
    for m in (llava, blip):
        v, t = m.config.vision_config, m.config.text_config
        assert (v.hidden_size, v.intermediate_size, v.num_hidden_layers, v.num_attention_heads) == (16, 32, 1, 2)
        assert (t.num_hidden_layers, t.num_attention_heads, t.num_key_value_heads) == (1, TinySizes.num_heads, 2)
    assert blip.config.qformer_config.encoder_hidden_size == 16
    with pytest.raises(TypeError, match="nosuch"):
        build_tiny_llava(nosuch=1)
