"""The one tracking module (W&B / CSV / none, rank-zero aware) and the one ``is_rank_zero``."""

from __future__ import annotations

import csv

import pytest
from omegaconf import OmegaConf

from vseam.utils.ranks import is_rank_zero
from vseam.utils.tracking import Tracker


def _cfg(**logger):
    return OmegaConf.create({"logger": {"kind": "csv", "save_dir": None, **logger}, "run_name": None})


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_csv_tracker_writes_metrics_tables_and_summary(tmp_path):
    t = Tracker(_cfg(), tmp_path, "heads")
    t.log({"progress/chunks_done": 1})
    t.table("heads/table", ["layer", "head", "signed"], [[0, 1, 0.5], [1, 0, -0.25]])
    t.summary({"baseline/accuracy": 0.75})
    t.summary({"method": "exact"})  # summaries accumulate
    t.finish()
    run = tmp_path / "logs" / "heads" / "version_0"
    assert _rows(run / "heads_table.csv") == [["layer", "head", "signed"], ["0", "1", "0.5"], ["1", "0", "-0.25"]]
    assert _rows(run / "summary.csv") == [["metric", "value"], ["baseline/accuracy", "0.75"], ["method", "exact"]]
    assert "progress/chunks_done" in (run / "metrics.csv").read_text()


def test_none_and_disabled_write_nothing_and_bad_kind_is_named(tmp_path):
    for cfg in (_cfg(kind="none"), _cfg(kind="wandb", mode="disabled")):
        t = Tracker(cfg, tmp_path, "eval")
        assert t.lightning is None
        t.log({"a": 1})
        t.table("x", ["a"], [[1]])
        t.summary({"a": 1})
        t.finish()
    assert not (tmp_path / "logs").exists()
    with pytest.raises(ValueError, match="logger.kind='tensorboard'"):
        Tracker(_cfg(kind="tensorboard"), tmp_path, "eval")


def test_only_rank_zero_writes(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not is_rank_zero()
    t = Tracker(_cfg(), tmp_path, "train")
    t.table("comparison", ["method"], [["none"]])
    t.summary({"a": 1})
    t.log({"a": 1})
    t.finish()
    assert not list(tmp_path.rglob("*.csv"))
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("NODE_RANK", "1")  # the launcher of the second node is not rank 0 either
    assert not is_rank_zero()
    monkeypatch.delenv("NODE_RANK")
    assert is_rank_zero()
