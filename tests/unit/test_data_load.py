"""From a data config to samples: the organism world is built on first use (``ensure_world``, which
every job calls); bad paths are named."""

from __future__ import annotations

import pytest

from vseam.config import load_config
from vseam.data.load import load_samples
from vseam.world import ensure_world


def test_organism_built_on_first_use_then_reused(tmp_path):
    cfg = load_config([f"data.root={tmp_path / 'w'}", "data.n_per_category=4"])
    with pytest.raises(FileNotFoundError, match="no organism world there.*ensure_world"):
        load_samples(cfg.data)  # data/ reads files; it never builds the world (that is world/'s job)
    assert ensure_world(cfg.data) == tmp_path / "w"
    samples = load_samples(cfg.data)
    assert (tmp_path / "w" / "world.json").exists()
    levels = {s.level for s in samples}
    assert levels == {"object", "attribute", "relation"}
    assert all(s.benchmark == "organism" and s.image_path for s in samples)
    mtime = (tmp_path / "w" / "world.json").stat().st_mtime
    ensure_world(cfg.data)
    again = load_samples(cfg.data)
    assert [s.id for s in again] == [s.id for s in samples]
    assert (tmp_path / "w" / "world.json").stat().st_mtime == mtime  # not rebuilt


def test_category_filter_and_limit(tmp_path):
    cfg = load_config([f"data.root={tmp_path / 'w'}", "data.n_per_category=4", "data.limit=2",
                       "data.categories=[Color]"])
    ensure_world(cfg.data)
    samples = load_samples(cfg.data)
    assert len(samples) == 2 and {s.category for s in samples} == {"Color"}
    cfg.data.categories = ["Nope"]
    with pytest.raises(ValueError, match="Nope"):
        load_samples(cfg.data)


def test_benchmark_files_must_exist(tmp_path):
    cfg = load_config(["data.format=gqa", f"data.annotations=[{tmp_path / 'missing.json'}]"])
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_samples(cfg.data)
    cfg.data.annotations = []
    with pytest.raises(ValueError, match="data.annotations"):
        load_samples(cfg.data)
