"""The counted-work cost model of benchmarks/attribution_scale.py and benchmarks/cost_model.py at the real widths:
no model is built."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import attribution_scale as scale  # noqa: E402


def test_counted_work_floor_at_the_real_widths():
    """From LLaVA-1.5-7B's config (meta device, nothing allocated): the reference does every layer, the
    vision tower and all-position logits; the engine's floor is (L+1)/2 layers and one logit row."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    from vseam.models.tiny import FULL_WIDTH

    w = FULL_WIDTH["llava-1.5-7b"]
    cfg = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                                                     image_size=336, patch_size=14),
                      text_config=LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                              num_attention_heads=32, num_key_value_heads=32, vocab_size=32064))
    assert w["hidden_size"] == 4096 and w["intermediate_size"] == 11008 and w["vocab_size"] == 32064
    work = scale.counted_work(type("M", (), {"config": cfg})(), T=600, n_image=576)
    assert work["engine_floor"] == pytest.approx(33 / 2 * work["layer"] + 4096 * 32064)
    assert 1.9 < work["floor_gain"] < 2.2  # layer reuse is (nearly) all an exact method saves at this shape


def test_smallest_rescoring_that_recovers_the_exact_lists():
    from vseam.attribution.scores import head_scores

    torch.manual_seed(0)
    N, L, H = 3, 4, 8
    prob = torch.rand(N)
    correct = torch.tensor([True, False, True])
    exact = torch.rand(N, L, H)
    target = scale.lists(head_scores(prob, correct, exact))
    # a perfect estimate needs no re-scoring
    order = scale.rescore_order(head_scores(prob, correct, exact), L * H)
    assert scale.smallest_m(prob, correct, exact, exact, order, target) == 0
    # a noisy one needs some; at that M the combined lists equal the exact ones, at M - 1 they do not
    est = exact + 0.3 * torch.randn(N, L, H)
    order = scale.rescore_order(head_scores(prob, correct, est), L * H)
    m = scale.smallest_m(prob, correct, est, exact, order, target)
    assert m is not None and 0 < m <= L * H
    got = scale.lists(head_scores(prob, correct, scale.combined(est, exact, order, m)))
    assert all(got[k] == v for k, v in target.items())
    before = scale.lists(head_scores(prob, correct, scale.combined(est, exact, order, m - 1)))
    assert any(before[k] != v for k, v in target.items())


def test_cost_model_counts_the_paper_models_as_counted_work():
    """The per-architecture cost model, on LLaVA-1.5-7B's entry, counts what ``counted_work`` counts from the config:
    the same reference forward and the same engine floor."""
    import cost_model as cm
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    cfg = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                     num_attention_heads=16, image_size=336, patch_size=14),
                      text_config=LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                              num_attention_heads=32, num_key_value_heads=32, vocab_size=32064))
    work = scale.counted_work(type("M", (), {"config": cfg})(), T=600, n_image=576)
    m = cm.ARCHS["llava-1.5-7b"]
    c = cm.counted(m, 480, 640)
    assert c["T"] == 600 and c["reference"] == pytest.approx(work["reference"], rel=1e-12)
    assert 1 / cm.floor(m, c)["mean"] == pytest.approx(work["floor_gain"], rel=1e-12)
    assert cm.params(m) == pytest.approx(7.06e9, rel=2e-3)  # LLaVA-1.5-7B's parameter count from its widths


def test_cost_model_has_a_row_for_every_architecture():
    """Every ``model.arch`` the project supports, and every hub checkpoint it ships a model config for, has its row
    in the cost model (issue 23)."""
    import cost_model as cm

    from vseam.config import CONFIG_DIR
    from vseam.models import ADAPTERS

    assert set(ADAPTERS) <= {m.arch for m in cm.ARCHS.values()}
    hubs = {line.split(":", 1)[1].split("#")[0].strip() for f in (CONFIG_DIR / "model").glob("*.yaml")
            for line in f.read_text().splitlines() if line.startswith("path:")}
    hubs = {h for h in hubs if "/" in h and not h.startswith(("tiny:", "checkpoints/"))}
    assert len(hubs) >= 8 and hubs <= {m.hub for m in cm.ARCHS.values()}, sorted(hubs - {m.hub for m in cm.ARCHS.values()})


def test_cost_model_attention_pairs_follow_each_mask():
    """Causal triangle; a sliding window caps the keys; Gemma 3's image block and PaliGemma's prefix add the pairs
    above the diagonal inside them."""
    import cost_model as cm

    lm = cm.LM(d=8, layers=6, heads=2, kv_heads=1, head_dim=4, mlp=16, vocab=10)
    assert lm.pairs(0, 5, 0, 0) == 15
    win = cm.LM(d=8, layers=6, heads=2, kv_heads=1, head_dim=4, mlp=16, vocab=10, window=2, global_every=3)
    assert [win.windowed(l) for l in range(6)] == [True, True, False, True, True, False]
    assert win.pairs(0, 5, 0, 0) == 1 + 2 + 2 + 2 + 2 and win.pairs(2, 5, 0, 0) == 15
    bi = cm.LM(d=8, layers=1, heads=2, kv_heads=1, head_dim=4, mlp=16, vocab=10, attention="image-bidirectional")
    assert bi.pairs(0, 5, 3, 0) == 15 + 3
    pre = cm.LM(d=8, layers=1, heads=2, kv_heads=1, head_dim=4, mlp=16, vocab=10, attention="prefix")
    assert pre.pairs(0, 5, 0, 5) == 25  # a whole-prompt prefix: every pair


# the tiny build at the checkpoint's image-processor settings, and where its processor puts the views
REAL_PROCESSING = {
    "llava-next": (dict(image_size=336, patch_size=14, grid_pinpoints=((336, 672), (672, 336), (672, 672), (1008, 336),
                                                                      (336, 1008))), "llava-v1.6-mistral-7b",
                   lambda pv: pv.shape[1]),
    "qwen2-vl": (dict(patch_size=14, min_pixels=56 * 56, max_pixels=28 * 28 * 16384), "qwen2-vl-7b",
                 lambda pv: pv.shape[0]),
    "qwen2.5-vl": (dict(patch_size=14, min_pixels=56 * 56, max_pixels=28 * 28 * 16384), "qwen2.5-vl-7b",
                   lambda pv: pv.shape[0]),
    "qwen3-vl": (dict(patch_size=16, min_pixels=65536, max_pixels=16777216), "qwen3-vl-8b", lambda pv: pv.shape[0]),
    "llava-onevision": (dict(image_size=384, patch_size=14, max_grid=6, vision_aspect_ratio="anyres_max_9"),
                        "llava-onevision-qwen2-7b", lambda pv: pv.shape[1]),
    "idefics3": (dict(image_size=364, patch_size=14, max_splits=4), "idefics3-8b", lambda pv: pv.shape[1]),
    "smolvlm": (dict(image_size=384, patch_size=14, max_splits=4), "smolvlm2-2.2b", lambda pv: pv.shape[1]),
    "internvl": (dict(image_size=448, patch_size=14, max_patches=12), "internvl3-8b", lambda pv: pv.shape[0]),
}


@pytest.mark.parametrize("arch", list(REAL_PROCESSING))
@pytest.mark.parametrize("size", [(480, 640), (500, 375)])
def test_cost_model_image_tokens_are_what_the_processor_makes(arch, size):
    """The cost model's image tokens, band (markers included) and vision views for an image equal what the
    architecture's processor makes of it at the checkpoint's settings (tiny widths, real image sizes)."""
    import cost_model as cm
    import numpy as np
    from PIL import Image

    from vseam.data import Sample
    from vseam.models import ADAPTERS
    from vseam.models.tiny import TINY_BUILDERS

    kwargs, name, views = REAL_PROCESSING[arch]
    a = ADAPTERS[arch](*TINY_BUILDERS[arch](num_layers=1, vision_layers=1, **kwargs))
    h, w = size
    image = Image.fromarray(np.random.RandomState(0).randint(0, 255, (h, w, 3), dtype=np.uint8))
    enc = a.encode([Sample(id="s", question="Is there a dog?", answer="Yes", image=image, category="T", level="object")])
    ids = enc.inputs["input_ids"][0]
    prompt_ids = a.tokenizer(a.prompt("Is there a dog?"))["input_ids"]
    band = len(ids) - (len(prompt_ids) - prompt_ids.count(a.image_token_id))  # what replaced the placeholder
    want = cm.ARCHS[name].image(h, w)
    assert (int((ids == a.image_token_id).sum()), band) == (want.tokens, want.band)
    assert views(enc.inputs["pixel_values"]) == (want.views[0] if arch.startswith("qwen") else len(want.views))
