"""Integration tier of head attribution on tiny random models: the fast exact engine against the
reference loop, attribution patching against a finite difference, bad input, and the end-to-end run
(outputs, resume after a kill, re-scoring, 2-process DDP)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from vseam.attribution.exact import ExactEngine
from vseam.attribution.patching import estimated_ablated_probs, first_order, path_groups
from vseam.attribution.reference import reference_ablated_probs, reference_baseline
from vseam.attribution.sweep import Sweep
from vseam.data import Sample
from vseam.interventions import Ablate, intervene
from vseam.models.base import answer_stats
from vseam.runtime import ProgressMismatchError, Runtime

from conftest import heads_cfg, wandb_run_data


def _engine_probs(adapter, samples, mode="mean", rows=64, heads=None):
    enc = adapter.encode(samples)
    with torch.no_grad():
        emb = adapter.embed(enc)
    mask = enc.answer_mask(adapter.vocab_size)
    p_abl, logits = ExactEngine(adapter, mode=mode, rows_per_forward=rows).ablated_probs(emb, mask, heads)
    p, c, _ = answer_stats(logits, mask)
    return p_abl, p, c


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_exact_engine_equals_reference(tiny_adapter, samples, mode):
    if mode == "zero" and tiny_adapter.arch != "llava":
        pytest.skip("zero ablation differs only in the replacement; one architecture covers it")
    # the samples' prompts differ in length, so the batch is left-padded while the reference is not
    # rows=5 with 4 heads: one sample per forward, each run without the batch's padding
    p_abl, p, c = _engine_probs(tiny_adapter, samples, mode=mode, rows=5)
    ref = reference_ablated_probs(tiny_adapter, samples, mode=mode)
    ref_p, ref_c = reference_baseline(tiny_adapter, samples)
    assert not ref.isnan().any()
    assert (p_abl - ref).abs().max() <= 1e-5
    assert (p - ref_p).abs().max() <= 1e-5
    assert torch.equal(c, ref_c)
    # the ablations do something, so the comparison is not between two copies of the baseline
    assert (ref - ref_p[:, None, None]).abs().max() > 1e-6


def test_length_groups_split_a_left_padded_batch_by_length():
    from vseam.interventions.replay import length_groups

    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 1, 1], [0, 1, 1, 1, 1]])
    groups = [(g.tolist(), w) for g, w in length_groups(mask, 2)]
    assert groups == [([2, 0], 3), ([3, 1], 5)]  # shortest first, each group as wide as its longest
    assert [(g.tolist(), w) for g, w in length_groups(mask, 8)] == [([2, 0, 3, 1], 5)]
    right = torch.tensor([[1, 1, 0], [1, 1, 1]])  # not left-padded: kept whole
    assert [(g.tolist(), w) for g, w in length_groups(right, 1)] == [([0, 1], 3)]


def test_exact_engine_head_subset_and_copies_per_forward(tiny_llava, samples):
    full, _, _ = _engine_probs(tiny_llava, samples, rows=64)
    heads = torch.zeros(tiny_llava.num_layers, tiny_llava.num_heads, dtype=torch.bool)
    heads[1, 2] = heads[0, 0] = True
    sub, _, _ = _engine_probs(tiny_llava, samples, rows=1, heads=heads)
    assert sub[:, ~heads].isnan().all()
    torch.testing.assert_close(sub[:, heads], full[:, heads], atol=1e-6, rtol=0)


def test_out_of_memory_halves_the_copies_per_forward(tiny_llava, samples, monkeypatch):
    import vseam.attribution.exact as exact

    full, _, _ = _engine_probs(tiny_llava, samples, rows=64)
    real = exact.run_from_layer

    def small_memory(adapter, clean, layer, rows, *edits):
        if len(rows) > 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(adapter, clean, layer, rows, *edits)

    monkeypatch.setattr(exact, "run_from_layer", small_memory)
    enc = tiny_llava.encode(samples)
    with torch.no_grad():
        emb = tiny_llava.embed(enc)
    engine = ExactEngine(tiny_llava, rows_per_forward=16)
    got, _ = engine.ablated_probs(emb, enc.answer_mask(tiny_llava.vocab_size))
    assert engine.rows_per_forward == 2  # 16 -> 8 -> 4 -> 2
    torch.testing.assert_close(got, full, atol=1e-6, rtol=0)


@pytest.mark.parametrize("space,alpha,path", [("prob", 0.0, "all"), ("logodds", 0.0, "all"), ("logodds", 0.5, "all"),
                                              ("logodds", 0.5, "index"), ("prob", 0.5, "layer")])
def test_attribution_patching_is_the_first_order_term(tiny_llava, samples, space, alpha, path):
    """The per-head estimate equals d/ds m at the point where the heads of its group on ``path`` have
    strength alpha and all others 0 (alpha 0: the clean run, where it is sum (z' - z) * dm/dz), for the
    metric m of the space (p, or the answer's log-odds), checked by a central difference in float64 on one
    head's strength, the rest of the point held."""
    a = tiny_llava
    enc = a.encode(samples)
    mask = enc.answer_mask(a.vocab_size)
    L, H = a.num_layers, a.num_heads
    a.model.double()
    try:
        with torch.no_grad():
            emb = a.embed(enc)
        metric, delta, p, _ = first_order(a, emb, mask, mode="mean", space=space, alpha=alpha, path=path)
        layer, head, eps = 1, 2, 1e-2  # smaller steps meet float32 parts of the model (rotary tables)
        group = next(g for g in path_groups(path, L, H) if g[layer, head])
        assert int(group.sum()) == {"all": L * H, "index": L, "layer": H}[path]

        def m_at(s_head):
            strength = alpha * group.double()
            strength[layer, head] = s_head
            edits = [Ablate(l, list(range(H)), strength=strength[l]) for l in range(L)]
            with torch.no_grad(), intervene(a, *edits):
                prob = (a.lm_logits(emb).double().softmax(-1) * mask).sum(-1)
            return prob if space == "prob" else torch.log(prob / (1 - prob))

        fd = (m_at(alpha + eps) - m_at(alpha - eps)) / (2 * eps)
        with torch.no_grad():
            clean_p = (a.lm_logits(emb).double().softmax(-1) * mask).sum(-1)
        est, p2, _ = estimated_ablated_probs(a, emb, mask, mode="mean", space=space, alpha=alpha, path=path)
    finally:
        a.model.float()
    assert fd.abs().max() > 1e-7  # a head with an effect to estimate
    torch.testing.assert_close(delta[:, layer, head].double(), fd, rtol=1e-3, atol=1e-9)
    # the clean metric and probability, also when the gradient was taken away from the clean run
    torch.testing.assert_close(p.double(), clean_p, rtol=1e-5, atol=1e-6)
    clean_m = clean_p if space == "prob" else torch.log(clean_p / (1 - clean_p))
    torch.testing.assert_close(metric.double(), clean_m, rtol=1e-4, atol=1e-5)
    # the estimate of p_abl is p moved by the first-order change (directly, or through the sigmoid)
    lo = torch.logit(p2.double())
    want = p2.double() + (delta[:, layer, head].double() if space == "prob"
                          else torch.sigmoid(lo + delta[:, layer, head].double()) - torch.sigmoid(lo))
    torch.testing.assert_close(est[:, layer, head].double(), want, rtol=0, atol=1e-6)


def test_untokenizable_answer_is_a_named_skip(tiny_llava, samples):
    from vseam.data.skips import model_skips

    bad = Sample(id="q-42", question="What is it?", answer="   ", image=samples[0].image,
                 meta={"source": "ann.json: record 7 (id 'q-42')"})
    screen = model_skips(tiny_llava, [samples[0], bad])
    kept, skipped = screen.kept, screen.skipped
    assert kept == [samples[0]] and [s["id"] for s in skipped] == ["q-42"]
    assert "ann.json: record 7" in skipped[0]["reason"] and "empty answer" in skipped[0]["reason"]


def test_missing_image_is_a_counted_skip(tiny_llava, samples, tmp_path):
    gone = Sample(id="gone", question="Is there a circle?", answer="Yes", image_path=str(tmp_path / "nope.png"))
    sweep = Sweep(tiny_llava, [samples[0], gone, samples[1]], {"chunk_size": 8}, batch_size=2)
    seen = []
    (res,) = sweep.run(on_progress=seen.append)
    assert sum(seen) == sweep.work_units(0)  # the progress bar ends full, skipped samples included
    assert res.ids == ["s0", "s1"]
    assert res.skipped[0]["id"] == "gone" and "nope.png" in res.skipped[0]["reason"]
    assert not res.ablated.isnan().any() and res.ablated.shape[0] == 2


# ----------------------------------------------------------------------------------- end to end


class _Kill(RuntimeError):
    pass


def test_run_writes_outputs_and_resumes_bit_identical(world, tmp_path):
    from vseam.attribution.run import run_heads

    full = run_heads(heads_cfg(world, tmp_path / "full"))
    assert full["method"] == "exact" and full["n"] == full["n_total"] > 2
    assert full["n_correct"] + full["n_incorrect"] == full["n"]
    out = tmp_path / "full"
    for f in ["head_scores.json", "head_scores.safetensors", "config.yaml", "heatmap_signed.png"]:
        assert (out / f).exists(), f
    d = json.loads((out / "head_scores.json").read_text())
    for key in ["model_id", "num_layers", "num_heads", "method", "ablation", "dataset_id", "n", "skipped",
                "baseline", "n_correct", "n_incorrect", "positive", "negative", "signed", "top_k"]:
        assert key in d, key
    for name in ("positive", "negative"):  # a heatmap exactly for each defined matrix
        assert (out / f"heatmap_{name}.png").exists() == (d[name] is not None)

    # kill after the first chunk, then start again with the same config
    calls = []

    def kill(res):
        calls.append(res.index)
        raise _Kill

    cfg = heads_cfg(world, tmp_path / "killed")
    with pytest.raises(_Kill):
        run_heads(cfg, on_chunk=kill)
    assert not (tmp_path / "killed" / "head_scores.json").exists()
    recomputed = []
    run_heads(cfg, on_chunk=lambda r: recomputed.append(r.index))
    assert calls == [0] and 0 not in recomputed and recomputed  # chunk 0 was loaded, the rest computed
    a, b = load_file(out / "head_scores.safetensors"), load_file(tmp_path / "killed" / "head_scores.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k

    # the same folder with another ablation is refused before any model work, naming the key, not mixed
    from vseam.utils.rundir import RunFolderError

    before = (tmp_path / "killed" / "config.yaml").read_text()
    with pytest.raises(RunFolderError, match="attribution.ablation: 'mean' -> 'zero'"):
        run_heads(heads_cfg(world, tmp_path / "killed", "attribution.ablation=zero"))
    assert (tmp_path / "killed" / "config.yaml").read_text() == before  # config.yaml still describes its results
    # files without a config.yaml are not taken for this run's
    (tmp_path / "killed" / "config.yaml").unlink()
    with pytest.raises(RunFolderError, match="no config.yaml"):
        run_heads(heads_cfg(world, tmp_path / "killed"))


def test_progress_of_another_configuration_is_refused(tiny_llava, samples, tmp_path):
    """The chunk fingerprint, the second line of defence behind the run folder's config check."""
    Sweep(tiny_llava, samples[:2], {"chunk_size": 2}, runtime=Runtime(tmp_path)).run()
    with pytest.raises(ProgressMismatchError, match="exact-chunk00000"):
        Sweep(tiny_llava, samples[:2], {"chunk_size": 2, "ablation": "zero"}, runtime=Runtime(tmp_path)).run()


@pytest.mark.parametrize("bad", ["attribution.method=exactly", "attribution.ablation=noise",
                                 "attribution.atp_space=logit", "attribution.chunk_size=0",
                                 "attribution.atp_alpha=1.0"])
def test_bad_attribution_choices_fail_before_the_model_loads(world, tmp_path, bad, monkeypatch):
    import vseam.models
    from vseam.attribution.run import run_heads

    monkeypatch.setattr(vseam.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded"))
    key = bad.split("=")[0].split(".")[1]
    with pytest.raises(ValueError, match=key):
        run_heads(heads_cfg(world, tmp_path, bad))


def test_atp_paths_partition_the_heads_and_meet_at_the_clean_run(tiny_llava, samples):
    """Every path's groups cover each head exactly once (index: no two heads of a layer together; layer:
    one layer each); at alpha 0 every path is the one clean-run gradient; an unknown path is refused."""
    L, H = 3, 4
    for path, n in (("all", 1), ("index", H), ("layer", L)):
        groups = path_groups(path, L, H)
        assert len(groups) == n and torch.equal(torch.stack(groups).sum(0), torch.ones(L, H, dtype=torch.long))
    assert all(int(g.sum(1).max()) == 1 for g in path_groups("index", L, H))
    enc = tiny_llava.encode(samples)
    mask = enc.answer_mask(tiny_llava.vocab_size)
    with torch.no_grad():
        emb = tiny_llava.embed(enc)
    clean = first_order(tiny_llava, emb, mask, alpha=0.0, path="all")[1]
    for path in ("index", "layer"):
        torch.testing.assert_close(first_order(tiny_llava, emb, mask, alpha=0.0, path=path)[1], clean, rtol=0, atol=0)
        assert not torch.allclose(first_order(tiny_llava, emb, mask, alpha=0.5, path=path)[1], clean)
    with pytest.raises(ValueError, match="atp_path='heads'"):
        path_groups("heads", L, H)


def test_attribution_patching_under_a_callers_no_grad(tiny_llava, samples):
    """A caller's torch.no_grad() (the embedding step usually runs under one) does not take the gradient
    away: the estimate is the same inside and outside it."""
    enc = tiny_llava.encode(samples)
    mask = enc.answer_mask(tiny_llava.vocab_size)
    with torch.no_grad():
        emb = tiny_llava.embed(enc)
        inside = first_order(tiny_llava, emb, mask, alpha=0.5)[1]
    outside = first_order(tiny_llava, emb, mask, alpha=0.5)[1]
    assert outside.abs().max() > 0
    torch.testing.assert_close(inside, outside, rtol=0, atol=0)


def test_atp_with_exact_rescoring(world, tmp_path):
    from vseam.attribution.run import run_heads

    exact = load_file_scores(run_heads(heads_cfg(world, tmp_path / "exact")))
    res = run_heads(heads_cfg(world, tmp_path / "atp", "attribution.method=atp", "attribution.rescore_top_k=2"))
    assert res["method"] == "atp+exact_topk" and res["exact_heads"]
    atp = load_file_scores(res)
    for l, h in res["exact_heads"]:
        torch.testing.assert_close(atp["ablated"][:, l, h], exact["ablated"][:, l, h], atol=1e-6, rtol=0)
    assert res["atp_alpha"] == 0.5 and res["atp_path"] == "layer"  # the defaults
    # the classic estimate (the clean run's gradient): recorded in the result, different numbers
    mid = run_heads(heads_cfg(world, tmp_path / "mid", "attribution.method=atp", "attribution.atp_alpha=0",
                              "attribution.atp_path=all"))
    assert mid["method"] == "atp" and mid["atp_alpha"] == 0.0 and mid["atp_path"] == "all"
    rescored = torch.zeros(res["num_layers"], res["num_heads"], dtype=torch.bool)
    for l, h in res["exact_heads"]:
        rescored[l, h] = True
    assert not torch.allclose(load_file_scores(mid)["ablated"][:, ~rescored], atp["ablated"][:, ~rescored])


def load_file_scores(result):
    return load_file(result["files"]["safetensors"])


def test_wandb_offline_run(world, tmp_path):
    from vseam.attribution.run import run_heads

    run_heads(heads_cfg(world, tmp_path, "logger=wandb", "logger.mode=offline"))
    # config, baseline metrics, the heatmaps and the per-head table reach the offline run
    wandb_run_data(tmp_path / "logs", ["baseline/accuracy", "heatmap/signed", "heads/table", "n_correct"])


def test_take_rows_leaves_one_dimensional_tensors_alone():
    """cache_position [T] must not be indexed as if per-sample, even when T equals the batch size."""
    from vseam.interventions.replay import _take_rows

    B = T = 3
    kw = {"cache_position": torch.arange(T), "position_ids": torch.arange(B * T).view(B, T),
          "position_embeddings": (torch.randn(B, T, 2), torch.randn(1, T, 2))}
    rows = torch.tensor([2, 2, 0, 1])
    out = _take_rows(kw, rows, B)
    assert torch.equal(out["cache_position"], kw["cache_position"])
    assert torch.equal(out["position_ids"], kw["position_ids"][rows])
    assert torch.equal(out["position_embeddings"][0], kw["position_embeddings"][0][rows])
    assert out["position_embeddings"][1] is kw["position_embeddings"][1]
