"""Evaluation never scores what was trained on: the samples a modulation was trained or selected on are refused (or
warned about when allowed); the default eval data is a fresh world."""

from __future__ import annotations

import pytest

from vseam.config import load_config


def test_eval_refuses_the_samples_the_modulation_was_trained_on(trained, tmp_path, capsys):
    from vseam.evaluation.run import OverlapError, run_eval
    from vseam.interventions.checkpoint import read_modulation

    world, mod, train_out = trained
    seen = read_modulation(mod)[1]["extra"]
    assert len(seen["seen"]["train"]) == len(seen["seen_ids"]["train"]) > 0 and seen["seen"]["val"]
    assert f"python analyze.py eval model=tiny-llava data=organism-heldout eval.checkpoint={mod}" in train_out
    args = ["model=tiny-llava", "logger=none", "data=organism", f"data.root={world}", "data.world_seed=3",
            f"eval.checkpoint={mod}"]
    with pytest.raises(OverlapError, match=r"of the 54 evaluation samples are ones modulation .* was trained \(\d+\) "
                                           r"or selected \(\d+\) on"):
        run_eval(load_config(args + [f"out_dir={tmp_path / 'a'}"]))
    res = run_eval(load_config(args + [f"out_dir={tmp_path / 'b'}", "eval.allow_overlap=true"]))
    printed = capsys.readouterr().out
    assert "WARNING: not held-out" in printed and res["overlap_with_training"]["warning"]
    ov = res["overlap_with_training"]
    assert ov["n_in_train"] == len(seen["seen"]["train"]) and ov["n_in_val"] == len(seen["seen"]["val"])
    # a fresh world (another seed and folder) is disjoint: no refusal, no warning
    fresh = run_eval(load_config(["model=tiny-llava", "logger=none", f"data.root={tmp_path / 'fresh'}",
                                  "data.world_seed=9", "data.n_per_category=2", f"eval.checkpoint={mod}",
                                  f"out_dir={tmp_path / 'c'}"]))
    assert fresh["overlap_with_training"] == {"known": True, "n_eval": 18, "n_in_train": 0, "n_in_val": 0}  # 9 x 2
    assert "WARNING" not in capsys.readouterr().out


def test_the_default_eval_data_is_a_fresh_world():
    train = load_config([], top="train.yaml").data
    ev = load_config([], analysis="eval").data
    assert ev.format == train.format == "organism"
    assert (ev.root, ev.world_seed) != (train.root, train.world_seed) and ev.root != train.root
