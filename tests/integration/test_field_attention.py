"""The field's attention-level methods (issue 27): the pre-softmax attention-score site, contrastive next-token
scoring, PAI / VAF / SPIN / AD-HH / VCD against hand-written references on tiny random models, their no-op settings,
validation before a model loads, refusal where a method does not apply, and the files train.py saves for eval."""

from __future__ import annotations

import math

import pytest
import torch

from vseam.config import load_config
from vseam.evaluation.score import contrast_logits, evaluate
from vseam.interventions import AttentionEdit, Read, intervene
from vseam.models.cache import EmbeddingCache
from vseam.modulation import field
from vseam.modulation.field import attention as fa


def _batch(a, samples, n=3):
    return EmbeddingCache(a).batch(samples[:n])


def _last(batch):
    B, T = batch.emb.attention_mask.shape
    q = torch.zeros(B, T, dtype=torch.bool)
    q[:, -1] = True
    return q


def _run(a, batch, *edits):
    with torch.no_grad(), intervene(a, *edits) as cache:
        logits = a.lm_logits(batch.emb)
    return logits, cache


def _unmasked(scores):
    return scores > torch.finfo(scores.dtype).min / 2


# ------------------------------------------------------------------------------------ the attention-score site
def test_score_edits_change_the_softmax_as_the_formula_says(tiny_llava, samples):
    """Scores read before an AttentionEdit, the hand-written formula on them, softmax: the pattern read after it,
    and the head outputs the model computes from it (pattern @ V, by hand from the layer's v_proj)."""
    a, l = tiny_llava, 1
    batch = _batch(a, samples)
    image = batch.visual
    heads = torch.tensor([True, False, True, False])
    edit = AttentionEdit(l, heads=heads, queries=_last(batch), keys=image, scale=2.0, amplify=0.5, add=0.25)
    _, c = _run(a, batch, Read(layers=[l], site="attn_scores"), edit, Read(layers=[l], site="attn_pattern"),
                Read(layers=[l], site="resid_pre"), Read(layers=[l]))
    s = c["attn_scores", l]
    ref = s.clone()
    for b in range(s.shape[0]):
        for h in (0, 2):
            for k in range(s.shape[-1]):
                if image[b, k] and _unmasked(s)[b, h, -1, k]:
                    x = s[b, h, -1, k]
                    ref[b, h, -1, k] = 2.0 * x + 0.5 * x.abs() + 0.25
    pattern = c["attn_pattern", l]
    torch.testing.assert_close(pattern, ref.softmax(-1), rtol=0, atol=1e-6)
    assert not torch.equal(pattern, s.softmax(-1))  # the edit did something
    # what the layer computed next: pattern @ V, V by hand from the normed layer input
    attn, layer = a.attention(l), a.layers[l]
    with torch.no_grad():
        v = attn.v_proj(layer.input_layernorm(c["resid_pre", l]))
    B, T = v.shape[:2]
    v = v.view(B, T, a.num_kv_heads, a.head_dim).repeat_interleave(a.num_heads // a.num_kv_heads, dim=2)
    z = torch.einsum("bhqk,bkhd->bqhd", pattern, v)
    torch.testing.assert_close(c[l], z, rtol=0, atol=1e-5)


def test_scores_equal_the_pattern_before_softmax_and_edits_keep_the_mask(tiny_llava, samples):
    """Read alone: softmax(scores) is the pattern, at every layer; an edit of every entry never unmasks one (padding,
    later positions stay at zero attention); the default edit changes nothing, bit for bit."""
    a = tiny_llava
    batch = _batch(a, samples)
    plain, c = _run(a, batch, Read(site="attn_scores"), Read(site="attn_pattern"))
    for l in range(a.num_layers):
        torch.testing.assert_close(c["attn_scores", l].softmax(-1), c["attn_pattern", l], rtol=0, atol=1e-6)
    eager, _ = _run(a, batch, Read(site="attn_scores"))
    same, _ = _run(a, batch, *[AttentionEdit(l) for l in range(a.num_layers)])
    assert torch.equal(same, eager)
    torch.testing.assert_close(eager, a.lm_logits(batch.emb).detach(), rtol=0, atol=1e-5)  # eager vs the default path
    _, c = _run(a, batch, AttentionEdit(0, add=1e4, scale=3.0), Read(layers=[0], site="attn_pattern"))
    p, real = c["attn_pattern", 0], batch.emb.attention_mask.bool()
    assert float(p.triu(1)[real[:, None, :, None].expand_as(p)].abs().max()) == 0.0
    assert float(p[~real[:, None, None, :].expand_as(p) & real[:, None, :, None]].abs().max()) == 0.0


def test_pattern_edits_act_on_the_softmax_output(tiny_llava, samples):
    """An edit at attn_pattern (AD-HH's deactivation: no renormalisation) is what the pattern read after it holds."""
    a, l = tiny_llava, 0
    batch = _batch(a, samples)
    text = field.token_roles(batch, "test")["after"]
    gate = fa.TextDeactivation(l, [1, 3], text, threshold=0.0)
    _, c = _run(a, batch, Read(layers=[l], site="attn_scores"), gate, Read(layers=[l], site="attn_pattern"))
    ref = c["attn_scores", l].softmax(-1)
    for b in range(ref.shape[0]):
        for h in (1, 3):
            ref[b, h, -1, text[b]] = 0.0
    torch.testing.assert_close(c["attn_pattern", l], ref, rtol=0, atol=1e-6)


def test_score_site_on_the_vision_tower_and_its_errors(tiny_llava, samples):
    """The site serves any stack (the vision tower's bidirectional attention); bad masks and patches are refused."""
    from vseam.interventions import Patch

    a = tiny_llava
    enc = a.encode(samples[:1])
    with torch.no_grad(), intervene(a.vision, Read(site="attn_scores"), Read(site="attn_pattern")) as c:
        a.embed(enc)
    torch.testing.assert_close(c["attn_scores", 0].softmax(-1), c["attn_pattern", 0], rtol=0, atol=1e-6)
    batch = _batch(a, samples, 2)
    with pytest.raises(ValueError, match="key mask"):
        _run(a, batch, AttentionEdit(0, keys=torch.ones(2, 3, dtype=torch.bool)))
    with pytest.raises(ValueError, match="read, not patched"):
        Patch(0, torch.zeros(1), site="attn_scores")
    with pytest.raises(ValueError, match="AttentionEdit at site"):
        AttentionEdit(0, site="z")



def test_score_gradients_match_finite_differences_of_a_score_edit(tiny_llava, samples):
    """Read(grad=True) at attn_scores: d(logit)/d(score) at one entry equals the central difference of adding
    +-eps to that entry with an AttentionEdit."""
    import copy
    from dataclasses import replace

    # in float64: a central difference in float32 is off by ~1% here (rounding of the logits over 2 eps)
    a, l, h = copy.deepcopy(tiny_llava), 1, 2
    a.model.double()
    batch = _batch(tiny_llava, samples, 1)
    batch = replace(batch, emb=replace(batch.emb, inputs_embeds=batch.emb.inputs_embeds.double()))
    image = batch.visual[0].nonzero().squeeze(1)
    k = int(image[3])
    keys = torch.zeros_like(batch.visual)
    keys[0, k] = True
    tok = int(batch.target[0])
    with intervene(a, Read(layers=[l], site="attn_scores", grad=True)) as c:
        a.lm_logits(batch.emb)[0, tok].backward()
    grad = float(c.grad(l, "attn_scores")[0, h, -1, k])
    eps = 1e-2
    f = [float(_run(a, batch, AttentionEdit(l, heads=[h], queries=_last(batch), keys=keys, add=d))[0][0, tok])
         for d in (eps, -eps)]
    assert grad == pytest.approx((f[0] - f[1]) / (2 * eps), rel=1e-3, abs=1e-6)
    assert abs(grad) > 0

# ------------------------------------------------------------------------------------ contrastive scoring
def test_contrast_logits_equal_the_formula():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 11, generator=g) * 3, torch.randn(3, 11, generator=g) * 3
    out = contrast_logits(x, y, 0.7, beta=0.1)
    p = x.softmax(-1)
    for i in range(3):
        for t in range(11):
            expect = 1.7 * x[i, t] - 0.7 * y[i, t] if p[i, t] >= 0.1 * p[i].max() else -math.inf
            assert float(out[i, t]) == pytest.approx(float(expect), abs=1e-5)
    torch.testing.assert_close(contrast_logits(x, y, 0.0), x, rtol=0, atol=1e-6)  # a = 0: the first input's logits
    # PAI's log-softmax form: the same distribution (a constant per row apart)
    lp = contrast_logits(x, y, 0.1, beta=0.1, log_probs=True)
    torch.testing.assert_close(lp.softmax(-1), contrast_logits(x, y, 0.1, beta=0.1).softmax(-1), rtol=0, atol=1e-6)


def test_vcd_scores_the_contrast_of_the_distorted_image(tiny_llava, samples):
    """VCD's records are read off (1 + a) l(x) - a l(x'), with l(x') the model on the image noised by the diffusion
    formula (written out here); a = 0 without the cutoff is the frozen model within 1e-6."""
    a, seed, step = tiny_llava, 3, 500
    ap = fa.vcd(a, alpha=1.0, beta=0.1, noise_step=step, seed=seed)
    res = evaluate(a, samples, ap, contrast=ap.contrast, batch_size=2)
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (0.5e-2 - 1e-5) + 1e-5
    abar = float(torch.cumprod(1 - betas, 0)[step])
    for s, rec in zip(samples, res.records):
        enc = a.encode([s])
        eps = torch.randn(enc.inputs["pixel_values"][0].shape, generator=fa._generator(seed, s.id))
        noised = dict(enc.inputs, pixel_values=(math.sqrt(abar) * enc.inputs["pixel_values"][0] +
                                                math.sqrt(1 - abar) * eps)[None])
        with torch.no_grad():
            l1 = a.lm_logits(a.embed(enc))
            l2 = a.lm_logits(a.embed(type(enc)(noised, enc.answer_ids, enc.target, enc.ids, enc.correct_ids)))
        c = 2.0 * l1 - l2
        c = c.masked_fill(l1.softmax(-1) < 0.1 * l1.softmax(-1).max(), -math.inf)
        assert rec["prob"] == pytest.approx(float(c.softmax(-1)[0, enc.answer_ids[0]].sum()), abs=1e-5)
    base = evaluate(a, samples, batch_size=2)
    none = fa.vcd(a, alpha=0.0, beta=0.1, noise_step=step, seed=seed)
    none.contrast.beta = None
    zero = evaluate(a, samples, none, contrast=none.contrast, batch_size=2)
    for r0, r1 in zip(base.records, zero.records):
        assert abs(r0["prob"] - r1["prob"]) < 1e-6 and r0["pred_token"] == r1["pred_token"]


# ------------------------------------------------------------------------------------ the methods
def _scores_then_pattern(a, batch, ap, layer):
    return _run(a, batch, Read(layers=[layer], site="attn_scores"), *ap.for_batch(batch),
                Read(layers=[layer], site="attn_pattern"))[1]


def test_pai_amplifies_the_last_querys_image_scores_and_contrasts_the_image_free_input(tiny_llava, samples):
    a = tiny_llava
    batch = _batch(a, samples)
    ap = fa.pai(a, alpha=0.5, layers=[1], gamma=1.1, beta=0.1)
    c = _scores_then_pattern(a, batch, ap, 1)
    s = c["attn_scores", 1]
    ref = s.clone()
    img = batch.visual[:, None, :].expand(-1, a.num_heads, -1)
    ref[:, :, -1][img] = s[:, :, -1][img] + 0.5 * s[:, :, -1][img].abs()
    torch.testing.assert_close(c["attn_pattern", 1], ref.softmax(-1), rtol=0, atol=1e-6)
    # the score: the edited run contrasted with the plain image-free run, gamma * lp(x) - (gamma - 1) * lp(x')
    res = evaluate(a, samples[:3], ap, contrast=ap.contrast, batch_size=3)
    with torch.no_grad(), intervene(a, *ap.for_batch(batch)):
        l1 = a.lm_logits(batch.emb)
    with torch.no_grad():
        l2 = a.lm_logits(field.image_free(batch.emb, batch.visual))
    lp1, lp2 = l1.log_softmax(-1), l2.log_softmax(-1)
    c = (1.1 * lp1 - 0.1 * lp2).masked_fill(lp1 < math.log(0.1) + lp1.max(-1, keepdim=True).values, -math.inf)
    for i, rec in enumerate(res.records):
        assert rec["prob"] == pytest.approx(float(c[i].softmax(-1)[batch.answer_ids[i]].sum()), abs=1e-5)


def test_vaf_scales_the_text_queries_scores_to_the_image_and_the_system_prompt(tiny_llava, samples):
    a = tiny_llava
    batch = _batch(a, samples)
    ap = fa.vaf(a, enhance=1.15, suppress=0.95, layers=[0])
    c = _scores_then_pattern(a, batch, ap, 0)
    s = c["attn_scores", 0]
    r = field.token_roles(batch, "vaf")
    ref = s.clone()
    for b in range(s.shape[0]):
        for q in r["after"][b].nonzero().squeeze(1).tolist():
            for k in range(s.shape[-1]):
                factor = 1.15 if r["image"][b, k] else 0.95 if r["before"][b, k] else 1.0
                keep = _unmasked(s)[b, :, q, k]
                ref[b, :, q, k] = torch.where(keep, s[b, :, q, k] * factor, s[b, :, q, k])
    torch.testing.assert_close(c["attn_pattern", 0], ref.softmax(-1), rtol=0, atol=1e-6)


def test_spin_keeps_the_heads_with_most_image_attention_and_damps_the_rest(tiny_llava, samples):
    a, l = tiny_llava, 1
    batch = _batch(a, samples)
    _, plain = _run(a, batch, Read(layers=[l], site="attn_scores"), Read(layers=[l]))
    ap = fa.spin(a, keep=0.5, damp=0.1, layers=[l])
    _, c = _run(a, batch, *ap.for_batch(batch), Read(layers=[l]))
    s, z0, z1 = plain["attn_scores", l], plain[l], c[l]
    assert ap.hyperparameters["kept_heads"] == 2
    for b in range(s.shape[0]):
        mass = [float(s[b, h, -1][batch.visual[b]].sum()) for h in range(a.num_heads)]
        kept = sorted(range(a.num_heads), key=lambda h: -mass[h])[:2]
        for h in range(a.num_heads):
            torch.testing.assert_close(z1[b, -1, h], z0[b, -1, h] * (1.0 if h in kept else 0.1), rtol=0, atol=1e-6)
        torch.testing.assert_close(z1[b, :-1], z0[b, :-1], rtol=0, atol=0)  # only the last position


def test_adhh_influence_and_deactivation_follow_the_paper(tiny_llava, samples):
    a = tiny_llava
    g = torch.Generator().manual_seed(1)
    prob, ablated = torch.rand(6, generator=g), torch.rand(6, 2, 4, generator=g)
    correct = torch.tensor([True, False, True, False, False, True])
    infl = fa.hallucination_influence(prob, correct, ablated)
    for l in range(2):
        for h in range(4):
            wrong = [float(ablated[i, l, h] - prob[i]) for i in range(6) if not correct[i]]
            right = [float(prob[i] - ablated[i, l, h]) for i in range(6) if correct[i]]
            assert float(infl[l, h]) == pytest.approx(sum(wrong) / 3 - sum(right) / 3, abs=1e-6)
    batch = _batch(a, samples)
    ap = fa.adhh(a, [(0, 1), (0, 2)], threshold=0.3)
    c = _scores_then_pattern(a, batch, ap, 0)
    ref = c["attn_scores", 0].softmax(-1)
    text = field.token_roles(batch, "adhh")["after"]
    for b in range(ref.shape[0]):
        for h in (1, 2):
            if float(ref[b, h, -1][text[b]].sum()) >= 0.3:
                ref[b, h, -1, text[b]] = 0.0
    torch.testing.assert_close(c["attn_pattern", 0], ref, rtol=0, atol=1e-6)


@pytest.mark.parametrize("name, kw", [
    ("pai", dict(alpha=0.0, layers=[0, 1], gamma=1.0, beta=0.1)),
    ("vaf", dict(enhance=1.0, suppress=1.0, layers=[0, 1])),
    ("spin", dict(keep=0.5, damp=1.0, layers=[0, 1])),
    ("adhh", dict(heads=[(0, 0), (1, 3)], threshold=1.01)),
])
def test_zero_strength_is_a_no_op(tiny_llava, samples, name, kw):
    a = tiny_llava
    base = evaluate(a, samples, batch_size=2)
    ap = getattr(fa, name)(a, **kw)
    res = evaluate(a, samples, ap, contrast=ap.contrast, batch_size=2)
    for r0, r1 in zip(base.records, res.records):
        assert abs(r0["prob"] - r1["prob"]) < 1e-6 and r0["pred_token"] == r1["pred_token"]
        assert (r0["margin"] is None and r1["margin"] is None) or abs(r0["margin"] - r1["margin"]) < 1e-5


# ------------------------------------------------------------------------------------ refusals and validation
def test_methods_are_refused_where_they_do_not_apply(tiny_instructblip, samples):
    """InstructBLIP's query tokens lead the prompt: no system prompt before the image for VAF to suppress."""
    a = tiny_instructblip
    batch = _batch(a, samples, 2)
    with pytest.raises(field.NotApplicableError, match="vaf: .*no text before the image"):
        fa.vaf(a, 1.15, 0.95, [0]).for_batch(batch)
    fa.pai(a, 0.2, [0, 1], 1.1, 0.1).for_batch(batch)  # PAI and SPIN apply there
    batch.visual = None
    with pytest.raises(field.NotApplicableError, match="image tokens cannot be found"):
        fa.spin(a, 0.8, 0.1, [0]).for_batch(batch)
    batch.visual = torch.zeros_like(batch.emb.attention_mask, dtype=torch.bool)
    with pytest.raises(field.NotApplicableError, match="no image token"):
        fa.pai(a, 0.2, [0], 1.1, 0.1).for_batch(batch)


def test_train_refuses_a_method_before_any_method_runs(tiny_instructblip, samples):
    """train.py's check before its first row: VAF on InstructBLIP is refused with one line naming it."""
    from types import SimpleNamespace

    cfg = load_config(["modulation.methods=[none,pai,vaf,vcd]"])
    job = SimpleNamespace(cfg=cfg, adapter=tiny_instructblip, cache=EmbeddingCache(tiny_instructblip),
                          splits={"test": samples})
    with pytest.raises(field.NotApplicableError, match=r"^vaf: the model \(.*\) puts no text before the image"):
        field.check_applicable(job)
    job.cfg = load_config(["modulation.methods=[none,pai,spin,adhh,vcd]"])
    field.check_applicable(job)  # these apply


# ------------------------------------------------------------------------------------ saved files
def test_saved_method_files_apply_as_saved_and_only_to_their_model(tiny_llava, tiny_instructblip, samples, tmp_path):
    from vseam.interventions import HeadShapeError
    from vseam.interventions.checkpoint import save_method
    from vseam.models.identity import ModelMismatchError
    from vseam.utils.io import BadFileError

    a = tiny_llava
    ap = fa.adhh(a, [(1, 2), (0, 3)], 0.4, torch.rand(2, 4))
    path = ap.save(tmp_path / "adhh.safetensors", a, extra={"seen": {"train": ["k1"]}})
    back = field.from_file("adhh", path, a)
    assert back.hyperparameters == ap.hyperparameters and back.extra["seen"] == {"train": ["k1"]}
    batch = _batch(a, samples, 2)
    assert [(e.layer, e.heads) for e in back.for_batch(batch)] == [(0, [3]), (1, [2])]
    with pytest.raises(BadFileError, match="saved by method 'adhh', not 'pai'"):
        field.from_file("pai", path, a)
    with pytest.raises(ModelMismatchError, match="allow_other_model"):  # another model's weights
        field.from_file("adhh", path, tiny_instructblip)
    other = save_method(tmp_path / "other.safetensors", "adhh", hyperparameters=ap.hyperparameters, tensors=ap.tensors,
                        model="x", num_layers=5, num_heads=4, head_dim=8, identity=a.identity)
    with pytest.raises(HeadShapeError, match="5 layers x 4 heads"):
        field.from_file("adhh", other, a)
    p2 = fa.pai(a, 0.3, [1], 1.2, 0.1).save(tmp_path / "pai.safetensors", a)
    assert field.from_file("pai", p2, a).hyperparameters == {"alpha": 0.3, "layers": [1], "gamma": 1.2, "beta": 0.1}


# ------------------------------------------------------------------------------------ the protocol, end to end
def test_one_train_run_scores_every_method_and_eval_applies_their_files(tmp_path, capsys):
    """train.py with the field's methods beside the frozen and learned rows: every row's cost and what it changes,
    the paired statistics against the frozen model and the learned row (overall, per level, per POPE split) equal
    vseam.stats on predictions.jsonl; each method's file applies in analyze.py eval (AD-HH's refused on the
    samples it was attributed on)."""
    import json

    from vseam import stats
    from vseam.cli import analyze_main
    from vseam.evaluation.run import OverlapError
    from vseam.modulation.run import run_train

    world, out = tmp_path / "world", tmp_path / "run"
    common = ["model=organism-llava", "logger=none", "trainer.accelerator=cpu", "data.batch_size=8"]
    summary = run_train(load_config(common + [
        f"data.root={world}", "data.n_per_category=4", "data.pope_per_split=12", f"out_dir={out}",
        "modulation.methods=[none,learned,pai,vaf,spin,adhh,vcd]", "modulation.k_pos=2", "modulation.k_neg=2",
        "modulation.attribution_limit=24", "modulation.adhh_k=3", "trainer.max_epochs=1"]))
    printed = capsys.readouterr().out
    m, st = summary["methods"], summary["stats"]
    assert list(m) == ["none", "learned", "pai", "vaf", "spin", "adhh", "vcd"]
    passes = {k: v["cost"]["forward_passes"] for k, v in m.items()}
    assert passes == {"none": 1, "learned": 1, "pai": 2, "vaf": 1, "spin": 1, "adhh": 1, "vcd": 2}
    assert m["vcd"]["cost"]["vision_passes"] == 2 and "zero-ablated" in m["adhh"]["cost"]["setup"]
    assert all(v["changes"] for v in m.values()) and m["pai"]["trainable_params"] == 0
    assert m["adhh"]["hyperparameters"]["k"] == 3 and len(m["adhh"]["hyperparameters"]["heads"]) == 3
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    rows = {k: sorted((p for p in preds if p["method"] == k), key=lambda p: p["id"]) for k in m}
    for name in ("learned", "pai", "adhh", "vcd"):
        a, b = [p["correct"] for p in rows[name]], [p["correct"] for p in rows["none"]]
        assert {x: st["vs_none"][name][x] for x in ("n", "a_only", "b_only", "p")} == stats.mcnemar(a, b)
        for kind, key in (("by_level", "level"), ("by_pope_split", "category")):
            groups = st["vs_none"][name][kind]
            assert groups, kind
            for g, c in groups.items():
                sub = [(p["correct"], q["correct"]) for p, q in zip(rows[name], rows["none"]) if p[key] == g
                       and (kind == "by_level" or p["benchmark"] == "pope")]
                assert {x: c[x] for x in ("n", "a_only", "b_only", "p")} == stats.mcnemar(*zip(*sub))
    assert set(st["vs_none"]["pai"]["by_pope_split"]) == {"random", "popular", "adversarial"}
    assert set(st["vs_learned"]) == {"none", "pai", "vaf", "spin", "adhh", "vcd"}
    assert "by_level" in st["vs_learned"]["vcd"]
    for line in ("fwd/q", "vs frozen", "what each method changes", "learned vs", "pope-adversarial"):
        assert line in printed, line
    # the W&B comparison table: the same cost, changes and paired statistics
    from vseam.modulation.outputs import comparison_rows

    cols, table = comparison_rows(m, st)
    row = dict(zip(cols, table[list(m).index("adhh")]))
    assert row["forward_passes"] == 1 and row["changes"] == m["adhh"]["changes"]
    assert row["vs_none_mcnemar_p"] == st["vs_none"]["adhh"]["p"]
    assert row["vs_none_pope_adversarial_mcnemar_p"] == st["vs_none"]["adhh"]["by_pope_split"]["adversarial"]["p"]
    assert row["vs_learned_object_diff"] == st["vs_learned"]["adhh"]["by_level"]["object"]["diff"]
    # each method's file, applied by analyze.py eval to another world
    files = {k: out / "methods" / f"{k}.safetensors" for k in ("pai", "vaf", "spin", "adhh", "vcd")}
    assert all(f.exists() for f in files.values())
    held = ["data.format=organism", f"data.root={tmp_path / 'held'}", "data.world_seed=1", "data.n_per_category=2",
            "data.pope_per_split=6"]
    res = analyze_main(["eval", *common, *held, f"out_dir={tmp_path / 'e-adhh'}", "eval.method=adhh",
                        f"eval.checkpoint={files['adhh']}"])
    assert res["method"] == "adhh" and res["method_info"]["hyperparameters"]["heads"] == \
        m["adhh"]["hyperparameters"]["heads"]
    assert res["overlap_with_training"]["known"] and res["overlap_with_training"]["n_in_train"] == 0
    paired = res["stats"]["modulated_vs_base"]
    assert {"a_only", "b_only", "p"} <= set(paired) and set(paired["by_pope_split"]) == {"random", "popular",
                                                                                         "adversarial"}
    preds = [json.loads(x) for x in (tmp_path / "e-adhh" / "eval_predictions.jsonl").read_text().splitlines()]
    base = {p["id"]: p["correct"] for p in preds if p["run"] == "base"}
    adv = [(p["correct"], base[p["id"]]) for p in preds if p["run"] == "modulated" and p["category"] == "adversarial"]
    assert {x: paired["by_pope_split"]["adversarial"][x] for x in ("n", "a_only", "b_only", "p")} == \
        stats.mcnemar(*zip(*adv))
    res = analyze_main(["eval", *common, *held, f"out_dir={tmp_path / 'e-pai'}", "eval.method=pai"])
    assert res["method_info"]["hyperparameters"]["layers"] == list(range(6)) and res["method_info"]["cost"]["forward_passes"] == 2
    with pytest.raises(OverlapError, match="adhh file"):
        analyze_main(["eval", *common, "data=organism-pope", f"data.root={world}", "data.n_per_category=4",
                      "data.pope_per_split=12",
                      f"out_dir={tmp_path / 'e-same'}", "eval.method=adhh", f"eval.checkpoint={files['adhh']}"])


# ------------------------------------------------------------------------------------ every architecture
from test_architectures import arch_adapter, arch_samples  # noqa: E402,F401  (the tiny build of each architecture)


def test_every_architecture_exposes_its_scores_and_runs_the_methods(arch_adapter, arch_samples):  # noqa: F811 (the fixtures imported above)
    """On each architecture's tiny build: softmax(scores) is the pattern at every layer (the intercepted softmax is
    the attention's); a default AttentionEdit leaves the eager logits bit-identical; PAI (with its image-free
    contrast), SPIN, AD-HH and VCD score every question; VAF runs or is refused for want of a system prompt."""
    a = arch_adapter
    cache = EmbeddingCache(a)
    batch = cache.batch(arch_samples)
    eager, c = _run(a, batch, Read(site="attn_scores"), Read(site="attn_pattern"))
    for l in range(a.num_layers):
        torch.testing.assert_close(c["attn_scores", l].softmax(-1), c["attn_pattern", l], rtol=0, atol=1e-6)
    assert torch.equal(_run(a, batch, *[AttentionEdit(l) for l in range(a.num_layers)])[0], eager)
    layers = list(range(a.num_layers))
    methods = [fa.pai(a, 0.5, layers, 1.1, 0.1), fa.spin(a, 0.5, 0.1, layers),
               fa.adhh(a, [(0, 0), (a.num_layers - 1, 1)], 0.0), fa.vcd(a, 1.0, 0.1, 500, 0)]
    base = evaluate(a, arch_samples, batch_size=3, cache=cache)
    for ap in methods:
        res = evaluate(a, arch_samples, ap, contrast=ap.contrast, batch_size=3, cache=cache)
        assert len(res.records) == len(arch_samples) and not res.skipped
        assert [r["prob"] for r in res.records] != [r["prob"] for r in base.records], ap.name
    r = field.token_roles(batch, "vaf")
    vaf = fa.vaf(a, 1.15, 0.95, layers)
    if bool(r["before"].any(1).all()):
        evaluate(a, arch_samples, vaf, batch_size=3, cache=cache)
    else:
        with pytest.raises(field.NotApplicableError, match="no text before the image"):
            vaf.for_batch(batch)
