"""Attribution at the real model's shape (issue 17): the scale benchmark's counted work and top-10 race,
the full-width random builds, and the answer-definition comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
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


def test_scale_benchmark_prints_its_summary_line(tmp_path):
    """The benchmark end to end at tiny widths; the last line is machine-readable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path)}
    args = [sys.executable, str(ROOT / "benchmarks" / "attribution_scale.py"), "--tiny", "--samples", "2",
            "--threads", "1", "--memory", "1,4", "--json", str(tmp_path / "s.json")]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fields = dict(kv.split("=") for kv in proc.stdout.strip().splitlines()[-1].split())
    assert list(fields)[:3] == ["exact_speedup", "work_floor", "max_abs_diff"]
    assert float(fields["max_abs_diff"]) <= 1e-5
    assert fields["M"] == "none" or 0 <= int(fields["M"]) <= int(fields["L"]) * int(fields["H"])
    assert float(fields["work_floor"]) > 1
    import json

    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["memory"]["how"] == "peak RSS (VmHWM)" and set(saved["memory"]["peak_bytes"]) == {"1", "4"}
    assert "MiB per ablated copy" in proc.stdout


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


@pytest.mark.slow
def test_dress_rehearsal_script_runs_every_step_at_tiny_size(tmp_path):
    """The full-width rehearsal's script (heads exact, heads atp + re-scoring, train.py with the saved head
    scores, eval with the saved modulation, trace) on the tiny models: every step runs and is checked, and the
    report says the rehearsal is complete."""
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "dress_rehearsal.py"), "--tiny", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    report = json.loads((tmp_path / "dress_rehearsal.json").read_text())
    steps = {(s["arch"], s["step"]) for s in report["steps"]}
    for arch in ("llava", "instructblip"):
        assert {(arch, "heads exact"), (arch, "heads atp + rescore"), (arch, "train (saved head scores)"),
                (arch, "eval (modulated)"), (arch, "trace (groups)")} <= steps
    assert report["complete"] is True
    assert all(s["peak_rss_gb"] > 0 and s["returncode"] == 0 for s in report["steps"])


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    """The GPU check's every step on the CPU at tiny sizes: the report has each section's figures."""
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    r = json.loads(out.read_text())
    assert r["dry_run"] is True and r["date"]
    assert set(r["scale"]) == {"float32", "bfloat16"}
    assert r["engine_bf16_vs_fp32"]["max_abs_diff_ablated"] < 0.05
    assert r["organism_heads"]["bf16_vs_fp32"]["signed"]["max_abs_diff"] >= 0
    assert set(r["train_bf16_mixed"]["methods"]) == {"none", "learned"}


def test_atp_quality_script_prints_every_choice_and_its_machine_line(capsys):
    """The estimate-quality benchmark on a small random grid: every (atp_path, atp_alpha) row with its pass
    count, and a last line naming the default with figures in range."""
    import atp_quality

    torch.manual_seed(0)
    atp_quality.main(["--model", "random:2x4", "--samples", "3", "--batch-size", "3"])
    out = capsys.readouterr().out
    for path, passes in (("all", "1 fwd + 1 bwd"), ("layer", "3 fwd + 2 bwd"), ("index", "5 fwd + 4 bwd")):
        assert f"atp_path={path}" in out and passes in out
    last = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split())
    assert last["atp_path"] == "layer" and last["atp_alpha"] == "0.5" and last["heads"] == "8"
    assert -1 <= float(last["spearman_default"]) <= 1 and 0 <= int(last["top8_default"]) <= 8


# ------------------------------------------------------------------------------------------- the cost model
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
