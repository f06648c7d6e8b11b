"""Integration tier of the head study on tiny random models: per-category scores from one sweep,
the ablation study against the engine's per-head ablation, resume, and the study's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import heads_cfg, small_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory, n_per_category=3)


def _cfg(world, out, *extra):
    """``heads_cfg`` with two samples per category, batches and chunks of 4."""
    return heads_cfg(world, out, "data.limit=2", "data.batch_size=4", "attribution.chunk_size=4", *extra)


def test_per_category_matrices_equal_single_category_sweeps(world, tmp_path):
    from vseam.attribution.outputs import load_head_scores
    from vseam.attribution.run import run_heads

    full = run_heads(_cfg(world, tmp_path / "all"))
    cats = full["by_category"]
    from vseam.world.questions import CATEGORIES

    assert len(cats) == len(CATEGORIES) and sum(b["n"] for b in cats.values()) == full["n"]
    assert set(full["by_level"]) == {"object", "attribute", "relation"}
    assert {b["level"] for b in cats.values()} == {"object", "attribute", "relation"}
    tensors = load_file(tmp_path / "all" / "head_scores.safetensors")
    loaded = load_head_scores(tmp_path / "all")
    for cat in ("Color", "Vertical"):
        one = run_heads(_cfg(world, tmp_path / cat, f"data.categories=[{cat}]"))
        block, json_block = loaded.by_category[cat], cats[cat]
        assert block.n == json_block["n"] == one["n"] and block.n_correct == one["n_correct"]
        assert block.meta["level"] == json_block["level"] and block.shape == loaded.shape
        for m in ("positive", "negative", "signed"):
            mine = block.matrices()[m]
            if one[m] is None:
                assert mine is None and json_block[m] is None and m in json_block["undefined"]
                continue
            torch.testing.assert_close(mine, torch.tensor(one[m]), atol=1e-6, rtol=0)
            torch.testing.assert_close(tensors[f"category/{cat}/{m}"], mine, atol=0, rtol=0)
        assert json_block["top_k"]["signed"] == one["top_k"]["signed"] or \
            [(d["layer"], d["head"]) for d in json_block["top_k"]["signed"]] == \
            [(d["layer"], d["head"]) for d in one["top_k"]["signed"]]
    # a level's block is the union of its categories' samples
    assert loaded.by_level["attribute"].n == sum(cats[c]["n"] for c, lv in CATEGORIES.items() if lv == "attribute")
    # the reader gives back what was written
    from vseam.attribution.outputs import scores_from_dict, scores_to_dict

    again = scores_from_dict(scores_to_dict(loaded))
    assert set(again.by_category) == set(loaded.by_category)
    torch.testing.assert_close(again.by_category["Color"].signed, loaded.by_category["Color"].signed)


def test_k1_ablation_equals_the_engines_per_head_ablation(tiny_llava, samples):
    from vseam.attribution.exact import ExactEngine
    from vseam.study.ablation import Condition, ablated_answer_stats

    enc = tiny_llava.encode(samples)
    with torch.no_grad():
        emb = tiny_llava.embed(enc)
    mask = enc.answer_mask(tiny_llava.vocab_size)
    for mode in ("mean", "zero"):
        p_abl, _ = ExactEngine(tiny_llava, mode=mode).ablated_probs(emb, mask)
        heads = [(l, h) for l in range(tiny_llava.num_layers) for h in range(tiny_llava.num_heads)]
        conds = [Condition("none", 0, None, ((None, ()),))] + \
            [Condition("positive", 1, i, ((None, (lh,)),)) for i, lh in enumerate(heads)]
        # rows_per_forward=7: conditions of one sample split over forwards, and samples share none
        p, ok = ablated_answer_stats(tiny_llava, emb, mask, conds, [s.category for s in samples], mode=mode,
                                     rows_per_forward=7)
        want = p_abl.reshape(len(samples), -1)
        torch.testing.assert_close(p[:, 1:], want, atol=1e-5, rtol=0)
        assert (want - p[:, :1]).abs().max() > 1e-6  # the ablations do something


def test_summary_spread_and_drops_by_hand():
    from vseam.study.ablation import Condition, summarize

    none = Condition("none", 0, None, ((None, ()),))
    pos = Condition("positive", 2, None, ((None, ((0, 0), (0, 1))),))
    r0 = Condition("random", 2, 0, ((None, ((1, 0), (1, 1))),))
    r1 = Condition("random", 2, 1, ((None, ((0, 2), (1, 3))),))
    prob = torch.tensor([[0.9, 0.1, 0.8, 0.9], [0.7, 0.3, 0.7, 0.5]])
    correct = torch.tensor([[True, False, True, True], [True, False, True, False]])
    s = summarize(prob, correct, [none, pos, r0, r1])
    assert s["baseline"] == {"accuracy": 1.0, "mean_prob": pytest.approx(0.8)}
    c = s["conditions"]["positive@2"]
    assert c["accuracy"] == 0.0 and c["accuracy_drop"] == 1.0 and c["prob_drop"] == pytest.approx(0.6)
    rnd = s["random"]["2"]
    assert rnd["accuracy"]["mean"] == pytest.approx(0.75) and rnd["accuracy"]["min"] == 0.5
    assert rnd["prob_drop"]["mean"] == pytest.approx((0.05 + 0.1) / 2)
    assert rnd["accuracy"]["std"] == pytest.approx(0.3535534, abs=1e-6)  # std of (1.0, 0.5), n-1
    # no random trial ends as low as the positive set (0.0): p = (1 + 0) / (1 + 2), its floor; rank 1
    assert c["vs_random"] == {"n_trials": 2, "exact": False, "n_random_as_bad": 0, "p": pytest.approx(1 / 3),
                              "floor": pytest.approx(1 / 3), "rank": 1,
                              "prob_drop": {"p": pytest.approx(1 / 3), "floor": pytest.approx(1 / 3), "rank": 1}}


def test_exhaustive_null_for_k1_equals_a_brute_force_null():
    """Where there are no more K-head sets than trials (K=1: L x H), every one is run once and the top set's
    p is the share of all sets ending as low: the same number as a brute-force loop over every head."""
    from vseam.attribution.scores import HeadScores
    from vseam.study.ablation import conditions, summarize

    L, H = 2, 3
    pos = torch.tensor([[0.1, 0.5, 0.0], [0.2, 0.0, 0.3]])
    scores = HeadScores(pos, None, torch.zeros(L, H), 4, 0)
    conds, _ = conditions(scores, [1, 2], None, trials=6, seed=0)  # 6 single heads (exhaustive), 15 pairs (> 6)
    singles = [c for c in conds if c.kind == "random" and c.k == 1]
    assert all(c.exhaustive for c in singles) and sorted(c.heads_for(None) for c in singles) == \
        [((l, h),) for l in range(L) for h in range(H)]
    pairs = [c for c in conds if c.kind == "random" and c.k == 2]
    assert len(pairs) == 6 and not any(c.exhaustive for c in pairs)
    assert conditions(scores, [2], None, trials=15, seed=0)[0][-1].exhaustive  # C(6, 2) = 15 <= 15 trials
    # made-up per-sample outcomes: sample i is answered right under a condition when its value > threshold
    rng = np.random.default_rng(0)
    n = 40
    prob = torch.tensor(rng.uniform(0.2, 1.0, size=(n, len(conds))), dtype=torch.float32)
    prob[:, 0] = 0.95
    for j, c in enumerate(conds):  # a set removed twice (as a top set and as a random one) gives the same numbers
        same = next(i for i, d in enumerate(conds) if d.heads_for(None) == c.heads_for(None))
        prob[:, j] = prob[:, same]
    correct = prob > 0.5
    s = summarize(prob, correct, conds)
    acc = {c.heads_for(None): float(correct[:, j].float().mean()) for j, c in enumerate(conds) if c in singles}
    top = conds[1]
    assert top.name == "positive@1" and top.heads_for(None) == ((0, 1),)
    brute = sum(a <= acc[((0, 1),)] for a in acc.values()) / (L * H)  # the top head itself among them
    vs = s["conditions"]["positive@1"]["vs_random"]
    assert vs["exact"] and vs["p"] == pytest.approx(brute) and vs["floor"] == pytest.approx(1 / 6)
    assert 1 / 6 <= brute < 1  # a p that neither hits the floor nor 1: the count matters
    assert vs["rank"] == 1 + sum(a < acc[((0, 1),)] for a in acc.values())
    assert s["random"]["1"]["exhaustive"] and not s["random"]["2"]["exhaustive"]
    assert not s["conditions"]["positive@2"]["vs_random"]["exact"]  # 6 of 15 pairs: a Monte Carlo p


def test_ablate_end_to_end_resumes_and_names_skipped_conditions(world, tmp_path):
    from vseam.study.ablation import run_ablate

    base = ["study.k=[1,2]", "study.random_trials=2", "data.limit=1", "attribution.chunk_size=2"]
    full = run_ablate(_cfg(world, tmp_path / "full", *base))
    out = tmp_path / "full"
    for f in ("ablation.json", "ablation.safetensors", "ablation.png", "heads/head_scores.json"):
        assert (out / f).exists(), f
    names = [c["name"] for c in full["conditions"]]
    assert names[0] == "none" and "random@2#1" in names
    assert set(full["groups"]) >= {"all", "level/object", "category/Color"}
    # a condition that cannot run is named with its reason, never silently dropped
    heads = json.loads((out / "heads" / "head_scores.json").read_text())
    for kind in ("positive", "negative"):
        for k in (1, 2):
            assert (f"{kind}@{k}" in names) != any(s["name"] == f"{kind}@{k}" for s in full["skipped_conditions"])
        assert (f"{kind}@1" in names) == (heads[kind] is not None)

    class Kill(RuntimeError):
        pass

    def kill(ci):
        raise Kill

    cfg = _cfg(world, tmp_path / "killed", *base, f"study.head_scores={out / 'heads'}")
    with pytest.raises(Kill):
        run_ablate(cfg, on_chunk=kill)
    done = []
    again = run_ablate(cfg, on_chunk=done.append)
    assert 0 not in done and done  # chunk 0 was loaded
    a, b = load_file(out / "ablation.safetensors"), load_file(tmp_path / "killed" / "ablation.safetensors")
    assert torch.equal(a["prob"], b["prob"]) and torch.equal(a["correct"], b["correct"])
    assert again["groups"] == full["groups"]
    from vseam.utils.rundir import RunFolderError

    # another configuration in the same folder is refused, never mixed with the saved chunks
    with pytest.raises(RunFolderError, match="study.ablation"):
        run_ablate(_cfg(world, tmp_path / "killed", *base, f"study.head_scores={out / 'heads'}", "study.ablation=zero"))


# ----------------------------------------------------------------------------------- report
@pytest.fixture(scope="module")
def tiny_results(world, tmp_path_factory):
    """A tiny results folder: heads, ablation and overlap of the tiny LLaVA (no tracing, no modulation)."""
    from vseam.study.ablation import run_ablate
    from vseam.study.run import run_overlap

    root = tmp_path_factory.mktemp("results")
    run_ablate(_cfg(world, root / "ablate", "study.k=[1,2]", "study.random_trials=2", "data.limit=1"))
    run_overlap(_cfg(world, root / "overlap", f"study.head_scores={root / 'ablate' / 'heads'}",
                     "study.overlap_k=[1,2]", "study.n_permutations=200", "study.n_bootstrap=50",
                     "study.min_samples=1"))
    return root


def test_overlap_run_tests_the_stored_per_sample_values(tiny_results, world, tmp_path, capsys):
    """overlap.json from the per-sample values head_scores.safetensors keeps: its sets are the top-K of the
    per-category matrices head_scores.json stores; each claim has a verdict, effect, CI, p, floor and n."""
    from vseam.attribution.outputs import load_head_scores
    from vseam.study.overlap import VERDICTS, top_heads
    from vseam.study.run import run_overlap

    ov = json.loads((tiny_results / "overlap" / "overlap.json").read_text())
    assert ov["schema"] == "vseam.overlap/2" and ov["min_samples"] == 1
    assert [c["key"] for c in ov["claims"]] == ["positive_level_specific", "negative_generalise"]
    assert all(c["verdict"] in VERDICTS for c in ov["claims"])
    scores = load_head_scores(tiny_results / "ablate" / "heads")
    for kind, block in ov["kinds"].items():
        for e in block["per_k"]:
            for c, s in e["sets"].items():
                assert {tuple(h) for h in s} == top_heads(scores.by_category[c].matrices()[kind].numpy(), e["k"])
    for c in ov["claims"]:
        assert set(c["n"]["positive"]) == set(scores.by_category)
        for d in c["per_k"]:
            assert {"effect", "ci", "p", "floor", "verdict"} <= set(d)
    assert "sample-level null's smallest p is 0.005" in ov["power_note"]
    assert (tiny_results / "overlap" / "overlap.png").exists() == any(b["per_k"] for b in ov["kinds"].values())
    # the default guard (30 samples) on one sample per category: insufficient data, the counts named
    capsys.readouterr()
    res = run_overlap(_cfg(world, tmp_path / "guarded", f"study.head_scores={tiny_results / 'ablate' / 'heads'}",
                           "study.n_permutations=50", "study.n_bootstrap=20"))
    assert {c["verdict"] for c in res["claims"]} == {"insufficient data"}
    printed = capsys.readouterr().out
    assert "insufficient data" in printed and "Color 1" in printed


def test_overlap_refuses_head_scores_without_per_sample_categories(tiny_results, tmp_path):
    """A head_scores.safetensors written before each sample's category was stored: a clear error naming the
    file and the fix, not a silent analysis of something else."""
    import shutil

    from safetensors.torch import save_file

    from vseam.attribution.outputs import load_per_sample
    from vseam.utils.io import BadFileError

    heads = tmp_path / "heads"
    shutil.copytree(tiny_results / "ablate" / "heads", heads)
    st = heads / "head_scores.safetensors"
    from safetensors import safe_open

    with safe_open(str(st), "pt") as f:
        meta = {k: v for k, v in f.metadata().items() if k not in ("categories", "levels")}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(tensors, str(st), metadata=meta)
    with pytest.raises(BadFileError, match=r"head_scores.safetensors lacks 'categories'.*analyze.py heads"):
        load_per_sample(heads)
    st.unlink()
    with pytest.raises(FileNotFoundError, match="per-sample values"):
        load_per_sample(heads / "head_scores.json")


@pytest.fixture(scope="module")
def tiny_report(tiny_results, tmp_path_factory):
    """The report of the tiny results folder, its figures also sent to an offline W&B run."""
    from vseam.config import load_config
    from vseam.study.report import run_report

    out = tmp_path_factory.mktemp("report")
    rep = run_report(load_config(["logger=wandb", "logger.mode=offline", f"results_dir={tiny_results}",
                                  f"out_dir={out}"]))
    return rep, out


def test_report_builds_from_a_tiny_folder_and_names_missing_sections(tiny_report, tmp_path):
    from vseam.config import load_config
    from vseam.study.report import run_report

    rep, _ = tiny_report
    page = Path(rep["html"]).read_text()
    assert rep["sections"] == ["head-scores", "head-bars", "overlap", "ablation", "configs"]
    assert [m["id"] for m in rep["missing"]] == ["tracing", "modulation"]
    for sid in rep["sections"] + ["missing"]:
        assert f"id='{sid}'" in page
    assert "python analyze.py trace" in page and "python train.py" in page  # the missing ones say how to make them
    assert page.count("<img ") == len(rep["figures"]) and page.count("src='data:image/png;base64,") == len(rep["figures"])
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    for f in rep["figures"].values():
        assert Path(f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(FileNotFoundError, match="no such folder"):
        run_report(load_config(["logger=none", f"results_dir={tmp_path / 'nope'}", f"out_dir={tmp_path}"]))


CHECK_SCRIPT = """<script>window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var out = {images: imgs.length,
             loaded: imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
             sections: Array.prototype.map.call(document.querySelectorAll('section[data-section]'),
                                                function (s) { return s.id; })};
  var pre = document.createElement('pre'); pre.id = 'browser-check'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});</script>"""


def test_report_renders_in_headless_chromium(tiny_report, tmp_path):
    """The page as a person sees it: every figure decoded by a real browser, every section there."""
    import os
    import re
    import subprocess

    from conftest import chromium, chromium_flags

    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium; .ci/run installs it)")
    rep, _ = tiny_report
    page = Path(rep["html"]).read_text()
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    dom = subprocess.run(chromium_flags(browser, tmp_path / "profile-dom") + ["--dump-dom", checked.as_uri()],
                         capture_output=True, text=True, timeout=180)
    m = re.search(r"<pre id=\"browser-check\">(.*?)</pre>", dom.stdout)
    assert m, f"the check did not run in the browser (rc {dom.returncode}): {dom.stderr[-2000:]}"
    status = json.loads(m.group(1).replace("&quot;", '"'))
    assert status["images"] == len(rep["figures"]) > 0
    assert status["loaded"] == status["images"], status  # every figure decoded
    assert status["sections"] == rep["sections"] + ["missing"]
    # keep a screenshot of the page as a test artifact
    art = Path(os.environ.get("VSEAM_TEST_ARTIFACTS", Path(__file__).resolve().parents[2] / "test-artifacts"))
    art.mkdir(parents=True, exist_ok=True)
    shot = art / "report.png"
    subprocess.run(chromium_flags(browser, tmp_path / "profile-shot") + [f"--screenshot={shot}", "--window-size=1280,4000",
                                                                         Path(rep["html"]).as_uri()],
                   capture_output=True, text=True, timeout=180)
    assert shot.exists() and shot.stat().st_size > 10_000 and shot.read_bytes()[:4] == b"\x89PNG"


def test_report_figures_reach_an_offline_wandb_run(tiny_report):
    from conftest import wandb_run_data

    rep, out = tiny_report
    wandb_run_data(out / "logs", ["report/figures", *(f"figure/{key}" for key in rep["figures"])])


def test_report_includes_tracing_and_modulation_results_when_present(tiny_results, tmp_path):
    import shutil

    from vseam.study.report import build_report

    root = tmp_path / "results"
    shutil.copytree(tiny_results / "overlap", root / "overlap")
    png = next((tiny_results / "overlap").glob("*.png"))
    (root / "trace").mkdir()
    (root / "trace" / "trace.json").write_text(json.dumps({"model": "m", "n_pairs": 3, "direction": "denoise"}))
    shutil.copy(png, root / "trace" / "heatmap_prob.png")
    (root / "trace" / "logit_lens.txt").write_text("layer rank\n0 5\n")
    (root / "train").mkdir()
    (root / "train" / "summary.json").write_text(json.dumps({"model": "m", "data": "d", "methods": {
        "none": {"trainable": 0, "val": {"accuracy": 0.5}, "test": {"accuracy": 0.25}}}}))
    page, sections, missing = build_report(root)
    ids = [s.id for s in sections]
    assert ids == ["overlap", "tracing", "modulation", "configs"]
    assert [m["id"] for m in missing] == ["head-scores", "head-bars", "ablation"]
    assert "heatmap_prob.png" in page and "layer rank" in page and "0.25" in page


@pytest.mark.parametrize("bad", ["study.ablation=noise", "study.heads_from=mine", "study.k=[0]", "study.k=[]",
                                 "study.random_trials=0", "study.alpha=1.5", "study.models=[no-such-model]",
                                 "study.min_samples=0", "study.n_bootstrap=0"])
def test_bad_study_choices_fail_before_the_model_loads(world, tmp_path, bad, monkeypatch):
    import vseam.models
    from vseam.config import ConfigError
    from vseam.study.ablation import run_ablate
    from vseam.study.run import run_study

    monkeypatch.setattr(vseam.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded"))
    key = bad.split("=")[0]
    run = run_study if key == "study.models" else run_ablate
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run(_cfg(world, tmp_path / "x", bad))
    assert not (tmp_path / "x").exists()  # no folder taken for a run that cannot start


def test_conditions_per_category_and_their_row_masks():
    from vseam.attribution.scores import HeadScores
    from vseam.study.ablation import conditions, layer_masks

    def hs(pos, neg):
        return HeadScores(torch.tensor(pos), None if neg is None else torch.tensor(neg), torch.zeros(2, 2), 1, 1)

    scores = hs([[0.9, 0.1], [0.0, 0.5]], [[0.0, 0.0], [0.2, 0.0]])
    scores.by_category = {"A": hs([[0.0, 0.0], [0.0, 0.7]], [[0.1, 0.0], [0.0, 0.0]]),
                          "B": hs([[0.3, 0.0], [0.0, 0.0]], None)}
    conds, skipped = conditions(scores, [1, 2], None, trials=3, seed=0, heads_from="all")
    names = [c.name for c in conds]
    assert names == ["none", "positive@1", "positive@2", "negative@1", "negative@2",
                     "random@1#0", "random@1#1", "random@1#2", "random@2#0", "random@2#1", "random@2#2"]
    assert conds[2].heads_for("anything") == ((0, 0), (1, 1))  # strictly positive, best first
    assert conds[4].heads_for(None) == ((1, 0),)  # only one head has a negative score > 0: no filler
    assert all(len(set(c.heads_for(None))) == c.k for c in conds if c.kind == "random")
    again, _ = conditions(scores, [1, 2], None, trials=3, seed=0)
    assert [c.heads for c in again] == [c.heads for c in conds]  # seeded

    per_cat, skipped = conditions(scores, [1], [2], trials=1, seed=0, heads_from="category")
    assert [c.name for c in per_cat] == ["none", "positive@1", "random@2#0"]
    assert skipped == [{"name": "negative@1", "reason": "no negative scores for B (no baseline-incorrect sample)"}]
    masks = layer_masks(per_cat, ["A", "B"], 2, 2)  # [L, B*C, H], rows sample-major
    assert masks[:, 1].nonzero().tolist() == [[1, 1]]  # sample A, positive@1: A's own top head (1, 1)
    assert masks[:, 4].nonzero().tolist() == [[0, 0]]  # sample B, positive@1: B's top head (0, 0)
    assert not masks[:, 0].any() and not masks[:, 3].any()  # the unablated rows
    assert torch.equal(masks[:, 2], masks[:, 5])  # the random set is the same for both categories


def test_conditions_rank_estimate_plus_exact_scores_on_exact_heads_only():
    """atp + rescore_top_k: an estimate (0.9 at (0, 1)) never outranks the exactly re-scored heads, and a
    K above their number is listed as skipped."""
    from vseam.attribution.scores import HeadScores
    from vseam.study.ablation import conditions

    scores = HeadScores(torch.tensor([[0.2, 0.9], [0.5, 0.0]]), None, torch.zeros(2, 2), 1, 0, method="atp+exact_topk",
                        meta={"exact_heads": [[0, 0], [1, 0]], "rescore_top_k": 2})
    conds, skipped = conditions(scores, [1, 2, 3], [], trials=1, seed=0)
    by_name = {c.name: c for c in conds}
    assert by_name["positive@1"].heads_for(None) == ((1, 0),)
    assert by_name["positive@2"].heads_for(None) == ((1, 0), (0, 0))
    assert {"name": "positive@3", "reason": "K=3 is more than the 2 heads re-scored exactly per matrix of these "
            "atp+exact_topk scores (attribution.rescore_top_k)"} in skipped
    # the re-scored heads of all matrices together (3 here) are more than R = 2 per matrix: the bound is R,
    # the one train.py's key heads keep (select_key_heads)
    scores.meta["exact_heads"] = [[0, 0], [1, 0], [1, 1]]
    conds, skipped = conditions(scores, [3], [], trials=1, seed=0)
    assert [c.name for c in conds] == ["none"] and skipped[0]["name"] == "positive@3"


def test_report_of_an_earlier_overlap_json_says_so_instead_of_failing(tmp_path):
    from vseam.study.report import build_report

    (tmp_path / "overlap").mkdir()
    (tmp_path / "overlap" / "overlap.json").write_text(json.dumps({
        "schema": "vseam.overlap/1", "kinds": {}, "claims": [
            {"key": "positive_within", "verdict": "holds", "sentence": "Claim 'shared within a level' holds"}]}))
    page, sections, _ = build_report(tmp_path)
    assert [s.id for s in sections] == ["overlap"]
    assert "earlier version" in page and "python analyze.py overlap</code> again" in page


def test_the_study_refuses_vision_tower_head_scores(tiny_results, world, tmp_path):
    """Scores of the vision tower's heads (attribution.tower=vision) have an L x H of their own: the study,
    which removes and compares the language model's heads, refuses them instead of reading them as such."""
    import shutil

    from vseam.study.ablation import run_ablate
    from vseam.study.run import run_overlap

    heads = tmp_path / "heads"
    shutil.copytree(tiny_results / "ablate" / "heads", heads)
    d = json.loads((heads / "head_scores.json").read_text())
    (heads / "head_scores.json").write_text(json.dumps({**d, "tower": "vision"}))
    for run in (run_overlap, run_ablate):
        with pytest.raises(ValueError, match="vision tower's heads"):
            run(_cfg(world, tmp_path / run.__name__, f"study.head_scores={heads}"))
