"""Jobs say what they did: progress on long work, a short summary and the path of what they wrote at the
end, the report beside its results, a resumed run's W&B run resumed, the heads run's baseline scalar,
Lightning's lines once, readable numbers and tokens."""

from __future__ import annotations

import csv
import json
import re

import pytest

from vseam.config import load_config

from conftest import heads_cfg, small_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory, n_per_category=2)


def _last_lines(text: str, n: int) -> list[str]:
    return [x for x in text.splitlines() if x.strip()][-n:]


def test_ablate_shows_progress_and_ends_with_its_findings_and_path(world, tmp_path, capsys):
    from vseam.study.ablation import run_ablate

    out = tmp_path / "ablate"
    summary = run_ablate(heads_cfg(world, out, "study.k=[1,2]", "study.random_trials=2", "attribution.progress=true"))
    captured = capsys.readouterr()
    assert re.search(r"ablate \(\d+ conditions\):.*100%", captured.err)  # the bar over the samples
    head, k1, k2, written = _last_lines(captured.out, 4)
    assert head.startswith(f"ablation study (mean ablation, heads from {out / 'heads'}): {summary['n']} samples scored")
    # (a random tiny model may have no head of positive score: that condition is skipped, and named in the file)
    rank = r" \(rank \d+, p=[\d.e-]+, floor [\d.e-]+\)"  # each top-K set among the random sets of its K
    assert re.fullmatch(rf"  accuracy with K=1 heads ablated: (positive \d\.\d{{3}}{rank}, )?negative \d\.\d{{3}}{rank}, "
                        r"random \d\.\d{3} \+- \d\.\d{3} \(2 trials\)", k1)
    assert k2.startswith("  accuracy with K=2 heads ablated:")
    assert re.fullmatch(rf"written: {re.escape(str(out / 'ablation.json'))} \(\d+ s\)", written)


def test_overlap_ends_with_the_path_it_wrote(world, tmp_path, capsys):
    from vseam.attribution.run import run_heads
    from vseam.study.run import run_overlap

    run_heads(heads_cfg(world, tmp_path / "h"))
    out = tmp_path / "ov"
    run_overlap(heads_cfg(world, out, f"study.head_scores={tmp_path / 'h'}", "study.overlap_k=[1,2]",
                          "study.n_permutations=50"))
    said, written = _last_lines(capsys.readouterr().out, 2)
    assert said.startswith(f"overlap of 9 categories' top-K head sets (K = 1, 2) of {tmp_path / 'h' / 'head_scores.json'}")
    assert written.startswith(f"written: {out / 'overlap.json'}")


def test_the_report_is_written_beside_its_results(world, tmp_path, capsys):
    from vseam.attribution.run import run_heads
    from vseam.study.report import run_report

    results = tmp_path / "results"
    run_heads(heads_cfg(world, results / "heads"))
    rep = run_report(load_config(["logger=none", f"results_dir={results}"]))
    assert rep["html"] == str(results / "report" / "report.html") and (results / "report" / "report.html").exists()
    assert f"report: {results / 'report' / 'report.html'}" in capsys.readouterr().out
    again = run_report(load_config(["logger=none", f"results_dir={results}"]))  # the same report, rewritten
    assert again["sections"] == rep["sections"]


def test_heads_logs_its_baseline_accuracy_as_a_scalar_and_prints_it_rounded(world, tmp_path, capsys):
    from vseam.attribution.run import run_heads

    res = run_heads(heads_cfg(world, tmp_path / "h", "logger=csv"))
    rows = list(csv.DictReader((tmp_path / "h" / "logs" / "heads" / "version_0" / "metrics.csv").open()))
    logged = [r["baseline/accuracy"] for r in rows if r.get("baseline/accuracy")]
    assert logged and float(logged[0]) == pytest.approx(res["baseline"]["accuracy"])
    assert re.search(r"baseline accuracy \d\.\d{4};", capsys.readouterr().out)


def test_a_resumed_run_resumes_its_wandb_run(tmp_path):
    """The W&B run id is kept in the run folder: a second start of the same run (a resume) logs into the
    same W&B run; another configuration taking a folder without results starts a new one."""
    from vseam.utils.rundir import WANDB_IDS, run_folder
    from vseam.utils.tracking import Tracker

    out = tmp_path / "run"
    ids = []
    for step in range(2):
        cfg = load_config(["logger=wandb", "logger.mode=offline", f"out_dir={out}"])
        with run_folder(cfg, "heads"):
            t = Tracker(cfg, out, "heads")
            t.log({"x": step})
            ids.append(t.lightning.experiment.id)
            t.finish()
    assert ids[0] == ids[1] == json.loads((out / WANDB_IDS).read_text())["heads"]
    runs = sorted(p.name for p in (out / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(ids[0] in r for r in runs)
    other = load_config(["logger=wandb", "logger.mode=offline", f"out_dir={out}", "seed=1"])
    with run_folder(other, "heads"):  # no results there: it takes the folder, with a W&B run of its own
        assert Tracker(other, out, "heads").run_id != ids[0]


def test_lightning_says_its_device_lines_once_not_once_per_method(tmp_path, caplog):
    import logging

    from vseam.modulation.job import build_trainer

    cfg = load_config(["logger=none", "trainer.accelerator=cpu"])
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        for method in ("learned", "random", "lora"):
            build_trainer(cfg, method, tmp_path, None)
    said = [r.getMessage() for r in caplog.records]
    assert sum("GPU available" in m for m in said) <= 1 and sum("Tip:" in m for m in said) <= 1


def test_the_notebook_api_gives_predicted_tokens_as_text(world):
    """The organism answers in whole words: the notebook API shows them as text (Yes, red), not as
    SentencePiece pieces (▁Yes, ▁red)."""
    import vseam

    model = vseam.load("organism-llava", device="cpu")
    samples = vseam.load_samples("organism", f"data.root={world}")[:6]
    out = model.run(samples)
    assert not any("▁" in t for t in out.pred_token)
    right = [(t, s.answer) for t, s, ok in zip(out.pred_token, samples, out.correct) if ok]
    assert right and all(t.lower() == a.lower() for t, a in right)
    assert model.adapter.score(samples).pred_token == out.pred_token
