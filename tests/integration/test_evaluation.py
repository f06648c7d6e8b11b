"""Benchmark evaluation: metric math (no model), and ``analyze.py eval`` on the GQA / POPE / COCO-QA
annotation samples with generated images, a missing image counted as a skip, with and without a
saved modulation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import vseam.stats as stats
from vseam.data.readers import read_benchmark
from vseam.evaluation import evaluate, grouped_accuracy, is_yes, pope_metrics, summarize, yes_no_margin
from vseam.interventions import HeadModulation
from vseam.interventions.checkpoint import save_modulation

from conftest import wandb_run_data

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "data"
FILES = {"gqa": FIXTURES / "gqa" / "Color.sample.json", "pope": FIXTURES / "pope" / "coco_pope_random.sample.jsonl",
         "cocoqa": FIXTURES / "cocoqa" / "color_coco_qa.sample.csv"}


def test_pope_metrics_by_hand():
    pred = [True, True, False, False, True]
    gold = [True, False, False, True, True]  # TP 2, FP 1, FN 1, TN 1
    m = pope_metrics(pred, gold)
    assert m["n"] == 5
    assert m["accuracy"] == pytest.approx(3 / 5) and m["yes_ratio"] == pytest.approx(3 / 5)
    assert m["precision"] == pytest.approx(2 / 3) and m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert pope_metrics([], [])["accuracy"] is None


def test_pope_auroc_and_balanced_accuracy_of_the_margin_by_hand():
    """The threshold-free figures from the yes-vs-no margin: margins 2, 1, -1, -2 for gold yes, no, yes, no.
    AUROC = P(a yes question outscores a no question) = 3 of the 4 pairs; at a yes-ratio of 0.5 the top two
    (2: yes, right; 1: no, wrong) are called yes and the rest no (-1: yes, wrong; -2: no, right): 2 of 4."""
    gold = [True, False, True, False]
    m = pope_metrics([True, True, False, False], gold, [2.0, 1.0, -1.0, -2.0])
    assert m["auroc"] == pytest.approx(0.75) and m["acc_at_balanced"] == pytest.approx(0.5)
    # a shift of every margin (what a bias on the logits does) moves neither; a separating margin gives 1 and 1
    shifted = pope_metrics([True] * 4, gold, [7.0, 6.0, 4.0, 3.0])
    assert shifted["auroc"] == m["auroc"] and shifted["acc_at_balanced"] == m["acc_at_balanced"]
    perfect = pope_metrics([True] * 4, gold, [0.5, -3.0, 0.1, -0.2])
    assert perfect["auroc"] == 1.0 and perfect["acc_at_balanced"] == 1.0 and perfect["accuracy"] == 0.5
    assert pope_metrics([True], [True], None)["auroc"] is None  # no margins recorded: no figure, not a 0


def test_yes_no_margin_is_the_log_ratio_of_the_summed_answer_probabilities(tiny_llava):
    """``log p(yes) - log p(no)`` with each p summed over the answer's probability ids (its case variants),
    the "no" written in the gold answer's case; None for a non-yes/no answer."""
    from vseam.evaluation.score import yes_no_forms

    assert yes_no_forms("Yes") == ("Yes", "No") and yes_no_forms("no") == ("yes", "no")
    assert yes_no_forms("NO") == ("YES", "NO") and yes_no_forms("red") is None
    V = tiny_llava.vocab_size
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(0))
    got = yes_no_margin(tiny_llava, logits, ["Yes", "no", "red"])
    probs = logits.softmax(-1)
    for i, (yes, no) in enumerate([("Yes", "No"), ("yes", "no")]):
        py = probs[i, tiny_llava.answer_tokens(yes)[0]].sum()
        pn = probs[i, tiny_llava.answer_tokens(no)[0]].sum()
        assert got[i] == pytest.approx(float(torch.log(py / pn)), abs=1e-5)
    assert got[2] is None


def test_yes_reading_and_grouped_accuracy():
    assert is_yes("▁Yes") and is_yes("yes") and is_yes("YES") and not is_yes("▁No") and not is_yes("▁yesterday")
    recs = [{"level": "object", "correct": True}, {"level": "object", "correct": False},
            {"level": "relation", "correct": True}, {"level": None, "correct": False}]
    assert grouped_accuracy(recs, "level") == {"object": {"acc": 0.5, "n": 2}, "relation": {"acc": 1.0, "n": 1}}
    s = summarize(recs, skipped=[{"id": "x", "reason": "gone"}])
    assert s["accuracy"] == 0.5 and s["skipped"] == 1 and summarize([])["accuracy"] is None


def _make_images(samples, image_dir: Path, leave_out: int = 1) -> int:
    """Draw an image for every referenced file except the last ``leave_out`` distinct ones."""
    paths = sorted({s.image_path for s in samples})
    rng = np.random.RandomState(0)
    for p in paths[: len(paths) - leave_out]:
        Image.fromarray(rng.randint(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
    missing = set(paths[len(paths) - leave_out:])
    return sum(s.image_path in missing for s in samples)


@pytest.mark.parametrize("fmt", ["gqa", "pope", "cocoqa"])
def test_evaluate_counts_missing_images_as_skips(fmt, tmp_path, tiny_llava):
    samples = read_benchmark(fmt, FILES[fmt], image_dir=tmp_path, limit=8)
    n_missing = _make_images(samples, tmp_path)
    assert n_missing > 0
    res = evaluate(tiny_llava, samples, batch_size=4)
    assert len(res.skipped) == n_missing and len(res.records) == len(samples) - n_missing
    assert all("image not found" in s["reason"] for s in res.skipped)
    s = res.summary()
    assert s["skipped"] == n_missing and s["n"] == len(res.records)
    ref = tiny_llava.score([x for x in samples if x.id in {r["id"] for r in res.records}])
    assert [r["correct"] for r in res.records] == ref.correct.tolist()
    torch.testing.assert_close(torch.tensor([r["prob"] for r in res.records]), ref.prob, atol=1e-5, rtol=1e-4)
    if fmt == "pope":
        assert set(s["pope"]) == {"random"} and s["pope"]["random"]["n"] == len(res.records)


def test_analyze_eval_pope_with_a_saved_modulation(tmp_path, tiny_llava):
    from vseam.cli import analyze_main

    samples = read_benchmark("pope", FILES["pope"], image_dir=tmp_path / "img", limit=8)  # two images
    (tmp_path / "img").mkdir()
    n_missing = _make_images(samples, tmp_path / "img")
    mod = HeadModulation([(0, 1), (1, 2)], tiny_llava.head_dim, scale="scalar")
    with torch.no_grad():
        mod.scale.fill_(0.0)  # silence two heads: the answer probabilities must move
        mod.offset.normal_(generator=torch.Generator().manual_seed(0))
    mpath = save_modulation(tmp_path / "m.safetensors", mod, model="tiny", num_layers=2, num_heads=4,
                            identity=tiny_llava.identity,  # the same seed as configs/model/tiny-llava.yaml
                            extra={"seen": {"train": [], "val": []}})  # trained on none of these samples
    out = tmp_path / "eval"
    summary = analyze_main(["eval", "model=tiny-llava", "data.format=pope", f"data.annotations=[{FILES['pope']}]",
                            f"data.image_dir={tmp_path / 'img'}", "data.limit=8", "data.max_skip_fraction=0.8", "logger=wandb", "logger.mode=offline", f"out_dir={out}",
                            f"eval.checkpoint={mpath}"])
    on_disk = json.loads((out / "eval_results.json").read_text())
    assert set(on_disk["results"]) == {"base", "modulated"}
    for r in on_disk["results"].values():
        assert r["skipped"] == n_missing and r["n"] == 8 - n_missing > 0
        assert set(r["pope"]["random"]) == {"n", "accuracy", "precision", "recall", "f1", "yes_ratio", "auroc",
                                            "acc_at_balanced"}
    preds = [json.loads(x) for x in (out / "eval_predictions.jsonl").read_text().splitlines()]
    base = [p["prob"] for p in preds if p["run"] == "base"]
    modded = [p["prob"] for p in preds if p["run"] == "modulated"]
    assert len(base) == len(modded) == 8 - n_missing and base != modded
    # the statistics in eval_results.json are vseam.stats' on the per-question rows of eval_predictions.jsonl
    rows = {run: [p for p in preds if p["run"] == run] for run in ("base", "modulated")}
    for run, rr in rows.items():
        assert all(isinstance(p["margin"], float) for p in rr)  # every POPE question has its yes-vs-no margin
        assert on_disk["stats"]["accuracy"][run] == stats.bootstrap_ci([p["correct"] for p in rr], seed=0)
        gold = [is_yes(p["answer"]) for p in rr]
        assert on_disk["results"][run]["pope"]["random"]["auroc"] == stats.auroc([p["margin"] for p in rr], gold)
        assert on_disk["results"][run]["pope"]["random"]["acc_at_balanced"] == \
            stats.accuracy_at_yes_ratio([p["margin"] for p in rr], gold, 0.5)
    by_id = {p["id"]: p["correct"] for p in rows["base"]}
    mod_c, base_c = [p["correct"] for p in rows["modulated"]], [by_id[p["id"]] for p in rows["modulated"]]
    paired = on_disk["stats"]["modulated_vs_base"]
    assert {k: paired[k] for k in ("n", "a_only", "b_only", "p")} == stats.mcnemar(mod_c, base_c)
    assert paired["ci"] == stats.paired_bootstrap_ci(mod_c, base_c, seed=0)["ci"]
    assert summary["modulation"] == str(mpath)
    # the offline W&B run has the metrics
    wandb_run_data(out / "logs", ["base/accuracy", "modulated/pope/random/f1", "modulated/skipped", "by_category"])
