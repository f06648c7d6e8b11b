"""A run with nothing to score fails, naming why: a world of another seed or split, zero usable samples (before the
model loads), a skip share above the threshold; skips below it are counted and named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vseam.config import load_config

from conftest import heads_cfg


def test_a_world_of_another_seed_or_split_is_refused_naming_the_key(tmp_path, monkeypatch):
    """data.world_seed=1 with the default data.root must not silently score the seed-0 world there."""
    from vseam.world.write import WorldMismatchError, ensure_world

    monkeypatch.chdir(tmp_path)  # the default data.root is relative: data/organism/test-s0 under this folder
    first = load_config(["data.n_per_category=1"]).data
    root = ensure_world(first)
    assert root == Path("data/organism/test-s0") and json.loads((root / "world.json").read_text())["seed"] == 0
    stamp = (root / "world.json").stat().st_mtime_ns
    assert ensure_world(first) == root and (root / "world.json").stat().st_mtime_ns == stamp  # same settings: reused
    with pytest.raises(WorldMismatchError, match=r"data.root=data/organism/test-s0 .*data.world_seed=1 but the world "
                                                 r"there was drawn with seed=0.*data.root=data/organism/test-s1"):
        ensure_world(load_config(["data.n_per_category=1", "data.world_seed=1"]).data)
    with pytest.raises(WorldMismatchError, match="data.world_split='val' but the world there was drawn with split='test'"):
        ensure_world(load_config(["data.n_per_category=1", "data.world_split=val"]).data)
    # the folder it names is one of its own: built there, with its settings recorded
    other = ensure_world(load_config(["data.n_per_category=1", "data.world_seed=1", "data.root=data/organism/test-s1"]).data)
    assert json.loads((other / "world.json").read_text())["seed"] == 1
    # a job stops on it before its model loads
    from vseam.modulation.run import run_train

    monkeypatch.setattr("vseam.modulation.run.load_adapter", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(WorldMismatchError, match="data.world_seed=2"):
        run_train(load_config(["model=tiny-llava", "logger=none", "data.n_per_category=1", "data.world_seed=2",
                               f"out_dir={tmp_path / 'run'}"]))


def test_zero_usable_samples_fail_before_the_model_loads(world, tmp_path, monkeypatch):
    import vseam.models
    from vseam.attribution.run import run_heads
    from vseam.data.skips import NothingToScoreError
    from vseam.evaluation.run import run_eval
    from vseam.modulation.run import run_train

    monkeypatch.setattr(vseam.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded"))
    bad = f"data.image_dir={tmp_path / 'nowhere'}"
    with pytest.raises(NothingToScoreError, match="heads: no usable sample: all 9 were skipped; first reasons: .*"
                                                  "image not found"):
        run_heads(heads_cfg(world, tmp_path / "h", bad))
    with pytest.raises(NothingToScoreError, match="eval: no usable sample"):
        run_eval(heads_cfg(world, tmp_path / "e", bad))
    with pytest.raises(NothingToScoreError, match="train: no usable sample"):
        run_train(heads_cfg(world, tmp_path / "t", bad))


def test_a_skip_share_above_the_threshold_fails_and_below_is_counted(world, tmp_path):
    from vseam.attribution.run import run_heads
    from vseam.data.load import load_samples
    from vseam.data.skips import NothingToScoreError

    used = {Path(s.image_path).name for s in load_samples(heads_cfg(world, None).data)}
    gone = sorted(used)[0]
    img = tmp_path / "img"
    img.mkdir()
    for p in (world / "images").glob("*.png"):  # one used scene's image missing
        if p.name != gone:
            (img / p.name).symlink_to(p)
    samples = load_samples(heads_cfg(world, None).data)
    n_gone, n_all = sum(Path(s.image_path).name == gone for s in samples), len(samples)
    cfg = heads_cfg(world, tmp_path / "h", f"data.image_dir={img}", "data.max_skip_fraction=0.0")
    with pytest.raises(NothingToScoreError, match=f"{n_gone} of {n_all} samples skipped .*above data.max_skip_fraction=0.0"):
        run_heads(cfg)
    res = run_heads(heads_cfg(world, tmp_path / "h2", f"data.image_dir={img}", "data.max_skip_fraction=0.5"))
    assert res["n_skipped"] == n_gone and res["n"] == n_all - n_gone and gone in res["skipped"][0]["reason"]


def test_an_empty_answer_is_a_counted_named_skip(world, tmp_path):
    from vseam.attribution.run import run_heads

    ann = tmp_path / "Color.json"
    recs = json.loads(next((world).glob("**/Color*.json")).read_text())
    items = list(recs.items()) if isinstance(recs, dict) else [(r["question_id"], r) for r in recs]
    bad_id = str(items[0][0])
    first = dict(items[0][1], answer="")
    data = {str(k): v for k, v in items[:4]}
    data[bad_id] = first
    ann.write_text(json.dumps(data))
    cfg = load_config(["model=tiny-llava", "logger=none", "data=gqa", f"data.annotations=[{ann}]",
                       f"data.image_dir={world / 'images'}", "attribution.progress=false",
                       "data.max_skip_fraction=0.5", f"out_dir={tmp_path / 'out'}"])
    cfg.data.image_pattern = "{imageId}.png"
    res = run_heads(cfg)
    assert res["n_skipped"] == 1 and res["n"] == len(data) - 1 > 0
    (skip,) = res["skipped"]
    assert skip["id"] == bad_id and str(ann) in skip["reason"] and "empty answer" in skip["reason"]
