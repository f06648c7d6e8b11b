"""Results that cannot be silently wrong: run folders of their own, refused reuse, nothing-to-score
errors, named bad files, file permissions, validation before the model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vseam.config import load_config
from vseam.utils.rundir import RunFolderError, claim, release, run_folder
from conftest import heads_cfg

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ run folders
def test_default_folders_are_unique_within_one_second_and_across_processes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfgs = [load_config(["logger=none"]) for _ in range(3)]
    outs = []
    for c in cfgs:  # one process, the same second
        out, took = claim(c, "train")
        assert took
        outs.append(out)
    for o in outs:
        release(o)
    assert len(set(outs)) == 3 and all(o.parent == Path("runs/train") for o in outs)
    # two processes started together
    code = ("import sys; from vseam.config import load_config; from vseam.utils.rundir import claim; "
            "c = load_config(['logger=none']); print(claim(c, 'train')[0])")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    got = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs) and len(set(got)) == 2, got


def test_ddp_children_write_into_the_launchers_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parent = load_config(["logger=none"])
    with run_folder(parent, "heads") as out:
        monkeypatch.setenv("LOCAL_RANK", "1")  # what Lightning sets in a child process
        child = load_config(["logger=none"])
        child_out, took = claim(child, "heads")
        assert child_out == out and not took and child.out_dir == str(out)
        monkeypatch.delenv("LOCAL_RANK")


def test_an_out_dir_of_another_config_is_refused_and_keeps_its_config(tmp_path):
    out = tmp_path / "run"
    a = load_config(["logger=none", f"out_dir={out}", "modulation.lr=0.05"])
    with run_folder(a, "train"):
        (out / "summary.json").write_text("{}")
    saved = (out / "config.yaml").read_text()
    b = load_config(["logger=none", f"out_dir={out}", "modulation.lr=0.01"])
    with pytest.raises(RunFolderError, match=r"modulation.lr: 0.05 -> 0.01"):
        claim(b, "train")
    assert (out / "config.yaml").read_text() == saved
    # the same config resumes; logging / progress keys do not count
    same = load_config(["logger=csv", f"out_dir={out}", "modulation.lr=0.05", "attribution.progress=false"])
    with run_folder(same, "train") as o:
        assert o == out
    # files that are no run's
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match="no config.yaml"):
        claim(load_config(["logger=none", f"out_dir={other}"]), "train")
    assert not (other / "config.yaml").exists()


def test_a_folder_in_use_is_refused(tmp_path):
    out = tmp_path / "run"
    code = ("import sys, time; from vseam.config import load_config; from vseam.utils.rundir import claim; "
            f"claim(load_config(['logger=none', 'out_dir={out}']), 'train'); print('held', flush=True); "
            "time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    holder = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {holder.pid}\\)"):
            claim(load_config(["logger=none", f"out_dir={out}"]), "train")
    finally:
        holder.kill()
        holder.wait()
    # a killed holder leaves no stale lock
    with run_folder(load_config(["logger=none", f"out_dir={out}"]), "train"):
        pass


def test_edit_rerun_with_other_settings_is_refused(tmp_path):
    from vseam.editing.run import run_edit

    world = tmp_path / "world"
    args = ["model=tiny-llava", "data=organism", f"data.root={world}", "data.n_per_category=2",
            "data.categories=[Color]", "logger=none", "edit.progress=false", "edit.filter=false",
            f"out_dir={tmp_path / 'out'}"]
    run_edit(load_config(args))
    with pytest.raises(RunFolderError, match="seed: 0 -> 1"):
        run_edit(load_config(args + ["seed=1"]))
    run_edit(load_config(args))  # the same settings resume


# ------------------------------------------------------------------------------- nothing to score
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
    with pytest.raises(NothingToScoreError, match="heads: no usable sample: all 6 were skipped; first reasons: .*"
                                                  "image not found"):
        run_heads(heads_cfg(world, tmp_path / "h", bad))
    with pytest.raises(NothingToScoreError, match="eval: no usable sample"):
        run_eval(heads_cfg(world, tmp_path / "e", bad))
    with pytest.raises(NothingToScoreError, match="train: no usable sample"):
        run_train(heads_cfg(world, tmp_path / "t", bad))


def test_a_skip_share_above_the_threshold_fails_and_below_is_counted(world, tmp_path):
    from vseam.attribution.run import run_heads
    from vseam.data.skips import NothingToScoreError

    from vseam.data.load import load_samples

    used = {Path(s.image_path).name for s in load_samples(heads_cfg(world, None).data)}
    gone = sorted(used)[0]
    img = tmp_path / "img"
    img.mkdir()
    for p in (world / "images").glob("*.png"):  # one used scene's image missing
        if p.name != gone:
            (img / p.name).symlink_to(p)
    n_gone = sum(Path(s.image_path).name == gone for s in load_samples(heads_cfg(world, None).data))
    cfg = heads_cfg(world, tmp_path / "h", f"data.image_dir={img}", "data.max_skip_fraction=0.0")
    with pytest.raises(NothingToScoreError, match=f"{n_gone} of 6 samples skipped .*above data.max_skip_fraction=0.0"):
        run_heads(cfg)
    res = run_heads(heads_cfg(world, tmp_path / "h2", f"data.image_dir={img}", "data.max_skip_fraction=0.5"))
    assert res["n_skipped"] == n_gone and res["n"] == 6 - n_gone and gone in res["skipped"][0]["reason"]


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


# ---------------------------------------------------------------------------------- permissions
def test_atomic_writes_keep_normal_permissions(tmp_path):
    import torch

    from vseam.utils.io import save_safetensors, write_json, write_text

    old = os.umask(0o022)
    try:
        paths = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "b.json", {"a": 1}),
                 save_safetensors(tmp_path / "c.safetensors", {"t": torch.zeros(2)})]
    finally:
        os.umask(old)
    for p in paths:
        assert oct(p.stat().st_mode & 0o777) == oct(0o644), p


# ---------------------------------------------------------------------------------- bad files
def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def test_a_truncated_progress_chunk_is_named(tiny_llava, samples, tmp_path):
    from vseam.attribution.sweep import Sweep
    from vseam.runtime import Runtime
    from vseam.utils.io import BadFileError

    Sweep(tiny_llava, samples[:2], {"chunk_size": 2}, runtime=Runtime(tmp_path)).run()
    chunk = tmp_path / "exact-chunk00000.safetensors"
    _truncate(chunk)
    with pytest.raises(BadFileError, match=f"progress chunk {chunk} is unreadable: not a complete safetensors file"
                                           ".*delete it to recompute"):
        Sweep(tiny_llava, samples[:2], {"chunk_size": 2}, runtime=Runtime(tmp_path)).run()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "nan"])
def test_a_damaged_modulation_file_is_named(tiny_llava, tmp_path, damage):
    import torch

    from vseam.interventions import HeadModulation
    from vseam.interventions.checkpoint import read_modulation, save_modulation
    from vseam.utils.io import BadFileError

    mod = HeadModulation([(0, 1)], tiny_llava.head_dim, scale="scalar")
    if damage == "nan":
        with torch.no_grad():
            mod.offset.fill_(float("nan"))
    path = save_modulation(tmp_path / "m.safetensors", mod, model="tiny", num_layers=2, num_heads=4)
    if damage == "truncated":
        _truncate(path)
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a safetensors file")
    want = {"truncated": "is unreadable", "garbage": "is unreadable", "nan": "offset holds NaN"}[damage]
    with pytest.raises(BadFileError, match=f"{path}.*{want}|{want}.*{path}") as e:
        read_modulation(path)
    assert "\n" not in str(e.value)


def test_a_corrupt_training_checkpoint_is_named(tmp_path):
    from vseam.utils.io import BadFileError, load_torch_checkpoint

    import torch

    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, path)
    assert "state_dict" in load_torch_checkpoint(path)
    _truncate(path)
    with pytest.raises(BadFileError, match=f"checkpoint {path} is unreadable: truncated"):
        load_torch_checkpoint(path)


# ------------------------------------------------------------------- validation before the model
@pytest.mark.parametrize("command,bad,key", [
    ("train", "model.dtype=float33", "model.dtype"),
    ("train", "data.batch_size=0", "data.batch_size"),
    ("train", "trainer.max_epochs=0", "trainer.max_epochs"),
    ("train", "trainer.devices=0", "trainer.devices"),
    ("train", "modulation.k_pos=-1", "modulation.k_pos"),
    ("train", "modulation.scale=scalr", "modulation.scale"),
    ("train", "attribution.method=exactt", "attribution.method"),
    ("train", "modulation.methods=[learned,lorra]", "modulation.methods"),
    ("train", "modulation.lr=0", "modulation.lr"),
    ("heads", "attribution.top_k=0", "attribution.top_k"),
    ("heads", "trainer.accelerator=gpu0", "trainer.accelerator"),
    ("edit", "edit.resolution=500", "edit.resolution"),
    ("eval", "logger.kind=tensorboard", "logger.kind"),
])
def test_bad_values_fail_before_the_model_loads_naming_the_key(tmp_path, monkeypatch, command, bad, key):
    import vseam.models
    from vseam.cli import analyze_main, train_main

    monkeypatch.setattr(vseam.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "out"
    args = ["logger=none", f"out_dir={out}", bad]
    with pytest.raises(SystemExit, match=f"config error: {key}="):
        train_main(args) if command == "train" else analyze_main([command, *args])
    assert not out.exists()  # nothing written for a refused run, config.yaml included


def test_scale_none_without_offset_is_refused(tmp_path):
    from vseam.cli import train_main

    with pytest.raises(SystemExit, match="modulation.scale=none with modulation.offset=false"):
        train_main(["logger=none", f"out_dir={tmp_path / 'o'}", "modulation.scale=none", "modulation.offset=false"])


def test_k_above_the_model_heads_is_said_not_hidden(capsys):
    from vseam.validate import say_k_fits

    assert say_k_fits(20, "modulation.k_pos", 3, 4) == 12
    assert "modulation.k_pos=20 is larger than the model's 12 heads" in capsys.readouterr().out
    assert say_k_fits(3, "modulation.k_pos", 3, 4) == 3 and capsys.readouterr().out == ""


def test_no_draw_of_the_shipped_sweep_fails_on_the_default_model():
    """Every combination of the sweep's discrete values (and both ends of each range) passes validation
    and fits the heads of train.py's default model."""
    import itertools

    import yaml

    from vseam.validate import validate

    sweep = yaml.safe_load((ROOT / "configs" / "sweep.yaml").read_text())
    grid = {}
    for k, v in sweep["parameters"].items():
        grid[k] = v["values"] if "values" in v else [v["value"]] if "value" in v else [v["min"], v["max"]]
    from vseam.config import CONFIG_GROUPS

    choices = {k: v.pop() for k, v in grid.items() if k in CONFIG_GROUPS and len(v) == 1}  # group=choice (logger: wandb)
    grid = {k: v for k, v in grid.items() if k not in choices}
    base = load_config([f"{k}={v}" for k, v in choices.items()], top="train.yaml")
    cfg_json = json.loads((ROOT / base.model.path / "config.json").read_text())["text_config"]
    heads = cfg_json["num_hidden_layers"] * cfg_json["num_attention_heads"]
    from omegaconf import OmegaConf

    n = 0
    for combo in itertools.product(*grid.values()):
        argv = [f"{k}={v}" for k, v in zip(grid, combo)]
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(argv))  # load_config's last step, without re-reading
        validate(cfg, "train")
        assert cfg.modulation.k_pos + cfg.modulation.k_neg <= heads, argv
        n += 1
    assert n == len(list(itertools.product(*grid.values()))) >= 2 * 4 * 4 * 2 * 2 * 3
    last = load_config([f"{k}={v}" for k, v in choices.items()] + argv, top="train.yaml")
    validate(last, "train")  # the real parse of the last draw


# ------------------------------------------------------------------------------------ model identity
def test_another_models_modulation_is_refused_unless_asked(tmp_path, tiny_llava, capsys):
    from vseam.interventions import HeadModulation
    from vseam.models import load_adapter
    from vseam.models.identity import ModelMismatchError
    from vseam.interventions.checkpoint import load_modulation, save_modulation

    other = load_adapter({"arch": "llava", "path": "tiny:llava", "dtype": "float32", "device": "cpu", "seed": 1,
                          "name": "tiny-llava-seed1"})
    assert other.shape == tiny_llava.shape
    assert other.identity["weights_sha256"] != tiny_llava.identity["weights_sha256"]
    mod = HeadModulation([(0, 1)], tiny_llava.head_dim, scale="scalar")
    path = save_modulation(tmp_path / "m.safetensors", mod, model=tiny_llava.name, num_layers=2, num_heads=4,
                           identity=tiny_llava.identity)
    load_modulation(path, tiny_llava)  # its own model
    with pytest.raises(ModelMismatchError, match="was made with model .* weights sha256 .* but this model is "
                                                 "tiny-llava-seed1.*allow_other_model=true"):
        load_modulation(path, other)
    load_modulation(path, other, allow_other_model=True)
    assert "WARNING" in capsys.readouterr().out
    # a file that does not say which weights it was made with is refused too
    anon = save_modulation(tmp_path / "anon.safetensors", mod, model="?", num_layers=2, num_heads=4)
    with pytest.raises(ModelMismatchError, match="does not record the weights"):
        load_modulation(anon, tiny_llava)


def test_weights_hash_is_of_the_files_not_the_dtype(tmp_path):
    from vseam.models import load_adapter

    base = {"arch": "llava", "path": str(ROOT / "checkpoints/organism/llava-undertrained"), "device": "cpu",
            "local_files_only": True}
    a = load_adapter({**base, "dtype": "float32"})
    b = load_adapter({**base, "dtype": "bfloat16"})
    c = load_adapter({**base, "path": str(ROOT / "checkpoints/organism/llava"), "dtype": "float32"})
    assert a.identity["weights_sha256"] == b.identity["weights_sha256"] != c.identity["weights_sha256"]
    import hashlib

    raw = hashlib.sha256((ROOT / "checkpoints/organism/llava-undertrained/model.safetensors").read_bytes()).hexdigest()
    assert a.identity["weights_sha256"] == hashlib.sha256(f"model.safetensors:{raw}\n".encode()).hexdigest()


@pytest.mark.parametrize("content,problem", [
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, 0.2], [0.3', "not valid JSON"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, 0.2], [0.3]]}', "ragged"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, "x"], [0.3, 0.4]]}', r"non-numeric entry at \[0\]\[1\]"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, NaN], [0.3, 0.4]]}', "1 NaN / infinite"),
    ('{"num_layers": 2, "num_heads": 2, "positive": [[0.1, null], [0.3, 0.4]]}', "non-numeric entry"),
    ('[1, 2]', "expected a JSON object"),
])
def test_a_bad_head_score_file_is_named(tmp_path, content, problem):
    from vseam.attribution.outputs import load_head_scores
    from vseam.utils.io import BadFileError

    path = tmp_path / "head_scores.json"
    path.write_text(content)
    with pytest.raises(BadFileError, match=problem) as e:
        load_head_scores(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_head_scores_of_another_model_are_refused_by_train(world, tmp_path):
    """head_scores.json names the weights it was made with; train.py refuses another checkpoint's."""
    from vseam.attribution.run import run_heads
    from vseam.models.identity import ModelMismatchError
    from vseam.modulation.run import run_train

    res = run_heads(heads_cfg(world, tmp_path / "h", "model.seed=1"))  # a tiny llava of other weights
    assert len(res["weights_sha256"]) == 64 and res["model_path"] == "tiny:llava"
    args = ["model=tiny-llava", "logger=none", f"data.root={world}", "modulation.methods=[learned]",
            f"modulation.head_scores={tmp_path / 'h'}", "trainer.max_steps=1", "modulation.k_pos=1",
            "modulation.k_neg=1", "modulation.val_fraction=0.2", "modulation.test_fraction=0.3"]
    with pytest.raises(ModelMismatchError, match="was made with model .* but this model is tiny-llava"):
        run_train(load_config(args + [f"out_dir={tmp_path / 't'}"]))
    assert not (tmp_path / "t" / "checkpoints").exists()


def test_a_sweep_resumed_with_other_weights_in_the_same_folder_is_refused(world, tmp_path, tiny_llava):
    """The sweep's progress fingerprint holds the weights' hash (models.identity.weights_sha256), as
    tracing's does: replaced weights under the same model.path (same config) never reuse saved chunks."""
    from vseam.attribution.run import run_heads
    from vseam.runtime import ProgressMismatchError
    from vseam.models import load_adapter

    folder = tmp_path / "model"
    tiny_llava.model.save_pretrained(folder)
    tiny_llava.processor.save_pretrained(folder)
    args = (f"model.path={folder}", "model.local_files_only=true")
    first = run_heads(heads_cfg(world, tmp_path / "h", *args))
    assert len(first["weights_sha256"]) == 64 and first["model_path"] == str(folder)
    assert run_heads(heads_cfg(world, tmp_path / "h", *args))["signed"] == first["signed"]  # same weights: resumed
    other = load_adapter({"arch": "llava", "path": "tiny:llava", "dtype": "float32", "device": "cpu", "seed": 1})
    other.model.save_pretrained(folder)  # the same path and config, other weights
    with pytest.raises(ProgressMismatchError, match="model weights"):
        run_heads(heads_cfg(world, tmp_path / "h", *args))


# ------------------------------------------------------------------------------ leak-free evaluation
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny learned modulation (one step) and the world it was trained on."""
    from vseam.modulation.run import run_train
    from vseam.world.write import write_world

    root = tmp_path_factory.mktemp("world14")
    write_world(root, n_per_category=6, seed=3)  # runs on it say data.world_seed=3 (ensure_world checks)
    import contextlib
    import io

    out = root / "train"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_train(load_config(["model=tiny-llava", "logger=none", f"data.root={root}", "data.world_seed=3", "modulation.methods=[learned]",
                               "modulation.k_pos=1", "modulation.k_neg=1", "trainer.max_steps=1",
                               "modulation.attribution_limit=12", f"out_dir={out}"]))
    return root, out / "modulation.safetensors", printed.getvalue()


def test_eval_refuses_the_samples_the_modulation_was_trained_on(trained, tmp_path, capsys):
    from vseam.evaluation.run import OverlapError, run_eval
    from vseam.interventions.checkpoint import read_modulation

    world, mod, train_out = trained
    seen = read_modulation(mod)[1]["extra"]
    assert len(seen["seen"]["train"]) == len(seen["seen_ids"]["train"]) > 0 and seen["seen"]["val"]
    assert f"python analyze.py eval model=tiny-llava data=organism-heldout eval.checkpoint={mod}" in train_out
    args = ["model=tiny-llava", "logger=none", "data=organism", f"data.root={world}", "data.world_seed=3",
            f"eval.checkpoint={mod}"]
    with pytest.raises(OverlapError, match=r"of the 36 evaluation samples are ones modulation .* was trained \(\d+\) "
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
    assert fresh["overlap_with_training"] == {"known": True, "n_eval": 12, "n_in_train": 0, "n_in_val": 0}
    assert "WARNING" not in capsys.readouterr().out


def test_the_default_eval_data_is_a_fresh_world():
    train = load_config([], top="train.yaml").data
    ev = load_config([], analysis="eval").data
    assert ev.format == train.format == "organism"
    assert (ev.root, ev.world_seed) != (train.root, train.world_seed) and ev.root != train.root


# ------------------------------------------------------------------------------- seeding and resuming
def _train_args(world, out, *extra):
    return ["model=tiny-llava", "logger=none", f"data.root={world}", "data.world_seed=3", "modulation.k_pos=1",
            "modulation.k_neg=1", "modulation.attribution_limit=12", f"out_dir={out}", *extra]


def _ckpt_state(path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def test_a_methods_row_does_not_depend_on_the_other_methods(trained, tmp_path):
    import torch

    from vseam.modulation.run import run_train

    world = trained[0]
    alone = run_train(load_config(_train_args(world, tmp_path / "a", "modulation.methods=[lora]", "trainer.max_steps=3")))
    mixed = run_train(load_config(_train_args(world, tmp_path / "b", "modulation.methods=[learned,random,lora]",
                                              "trainer.max_steps=3")))
    assert alone["methods"]["lora"]["test"] == mixed["methods"]["lora"]["test"]
    a, b = (_ckpt_state(p / "checkpoints" / "lora" / "last.ckpt") for p in (tmp_path / "a", tmp_path / "b"))
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_a_killed_train_resumes_to_the_same_table(trained, tmp_path, monkeypatch, capsys):
    import torch

    from vseam.interventions.checkpoint import read_modulation
    from vseam.modulation.module import FrozenVLMModule
    from vseam.modulation.run import run_train

    world = trained[0]
    extra = ["modulation.methods=[none,learned]", "trainer.max_epochs=3", "modulation.lr=0.05"]
    full = run_train(load_config(_train_args(world, tmp_path / "full", *extra)))

    class Killed(RuntimeError):
        pass

    original = FrozenVLMModule.on_train_epoch_start

    def die_in_epoch_3(self):
        if self.current_epoch == 2:
            raise Killed("killed")
        return original(self)

    cfg_args = _train_args(world, tmp_path / "killed", *extra)
    monkeypatch.setattr(FrozenVLMModule, "on_train_epoch_start", die_in_epoch_3, raising=False)
    with pytest.raises(Killed):
        run_train(load_config(cfg_args))
    monkeypatch.undo()
    assert not (tmp_path / "killed" / "summary.json").exists()
    capsys.readouterr()
    steps = []
    step = FrozenVLMModule.training_step
    monkeypatch.setattr(FrozenVLMModule, "training_step", lambda self, *a: steps.append(1) or step(self, *a))
    again = run_train(load_config(cfg_args))  # the same command
    resumed = capsys.readouterr().out
    assert "[learned] resuming from" in resumed
    # it continued from the last saved epoch instead of starting again
    assert 0 < len(steps) < full["methods"]["learned"]["steps"], resumed
    assert (tmp_path / "killed" / "table.txt").read_text() == (tmp_path / "full" / "table.txt").read_text()
    assert again["methods"]["learned"]["steps"] == full["methods"]["learned"]["steps"]
    a, _ = read_modulation(tmp_path / "full" / "modulation.safetensors")
    b, _ = read_modulation(tmp_path / "killed" / "modulation.safetensors")
    torch.testing.assert_close(a.offset, b.offset, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.scale, b.scale, rtol=0, atol=1e-6)


@pytest.mark.slow  # three train.py processes (~1-2 min on 2 shared cores)
def test_train_py_killed_mid_training_resumes_to_the_same_table(trained, tmp_path):
    """`python train.py ...` killed (SIGKILL) after its first checkpoint; the same command again ends with
    the table of an uninterrupted run."""
    import signal
    import time

    world = trained[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}

    def cmd(out):
        return [sys.executable, str(ROOT / "train.py"), *_train_args(world, out, "modulation.methods=[none,learned]",
                                                                     "trainer.max_epochs=6")]

    full = subprocess.run(cmd(tmp_path / "full"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = subprocess.Popen(cmd(tmp_path / "killed"), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    last = tmp_path / "killed" / "checkpoints" / "learned" / "last.ckpt"
    deadline = time.monotonic() + 600
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "table.txt").exists(), "the run finished before it could be killed"
    again = subprocess.run(cmd(tmp_path / "killed"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "[learned] resuming from" in again.stdout
    assert (tmp_path / "killed" / "table.txt").read_text() == (tmp_path / "full" / "table.txt").read_text()


# ---------------------------------------------------------------------------- exact vs estimate
def test_exact_and_estimated_cells_are_kept_apart(world, tmp_path):
    import torch

    from vseam.attribution.run import run_heads

    mixed = run_heads(heads_cfg(world, tmp_path / "mixed", "attribution.method=atp", "attribution.rescore_top_k=2"))
    pure = run_heads(heads_cfg(world, tmp_path / "pure", "attribution.method=atp"))
    exact = {tuple(h) for h in mixed["exact_heads"]}
    cells = [(l, h) for l, row in enumerate(mixed["cell_method"]) for h, m in enumerate(row) if m == "exact"]
    assert set(cells) == exact and sum(r.count("estimate") for r in mixed["cell_method"]) == 8 - len(exact)
    for name in ("signed", "positive"):
        if mixed[name] is None:
            continue
        for d in mixed["top_k"][name]:  # every entry says which kind of value it is
            assert d["method"] == ("exact" if (d["layer"], d["head"]) in exact else "estimate")
        ranked = mixed["top_k_exact"][name]
        assert {(d["layer"], d["head"]) for d in ranked} <= exact and len(ranked) == min(10, len(exact))
        assert [d["score"] for d in ranked] == sorted((d["score"] for d in ranked), reverse=True)
        # the pure estimate is kept as it was, beside the mixed matrix
        torch.testing.assert_close(torch.tensor(mixed["estimate"][name]), torch.tensor(pure[name]))
    # every per-category and per-level block is marked the same way, with its own pure estimate
    assert mixed["by_category"] and mixed["by_level"] and mixed["rescore_top_k"] == 2
    for group in ("by_category", "by_level"):
        for g, block in mixed[group].items():
            assert block["cell_method"] == mixed["cell_method"] and block["exact_heads"] == mixed["exact_heads"]
            for name in ("positive", "negative", "signed"):
                if block[name] is None:
                    assert block["estimate"][name] is None and block["top_k_exact"][name] is None
                    continue
                assert all(d["method"] == ("exact" if (d["layer"], d["head"]) in exact else "estimate")
                           for d in block["top_k"][name])
                assert {(d["layer"], d["head"]) for d in block["top_k_exact"][name]} <= exact
                torch.testing.assert_close(torch.tensor(block["estimate"][name]), torch.tensor(pure[group][g][name]))
    from safetensors.torch import load_file

    t = load_file(tmp_path / "mixed" / "head_scores.safetensors")
    assert {(l, h) for l, h in t["exact_cells"].nonzero().tolist()} == exact
    torch.testing.assert_close(t["estimate/signed"], torch.tensor(pure["signed"]))
    cat = next(iter(mixed["by_category"]))
    torch.testing.assert_close(t[f"category/{cat}/estimate/signed"], torch.tensor(pure["by_category"][cat]["signed"]))


def test_key_heads_of_a_mixed_result_are_ranked_on_exact_scores_only():
    """An estimate that overshoots must not outrank exactly scored heads when train.py picks key heads."""
    import torch

    from vseam.attribution.scores import HeadScores
    from vseam.modulation.heads import MixedRankingError, select_key_heads

    # head (1, 1) is an estimate (0.9) above the exact values of the re-scored heads (0, 0), (0, 1), (1, 0)
    pos = torch.tensor([[0.5, 0.3], [0.2, 0.9]])
    neg = torch.tensor([[0.0, 0.1], [0.4, 0.8]])
    meta = {"exact_heads": [[0, 0], [0, 1], [1, 0]], "rescore_top_k": 2}
    mixed = HeadScores(pos, neg, pos - neg, 3, 3, method="atp+exact_topk", meta=meta)
    key = select_key_heads(mixed, 2, 1)
    assert key["positive"] == [(0, 0), (0, 1)] and key["negative"] == [(1, 0)]
    one_kind = HeadScores(pos, neg, pos - neg, 3, 3, method="atp")  # all estimates: ranked as they are
    assert select_key_heads(one_kind, 2, 1)["positive"] == [(1, 1), (0, 0)]
    with pytest.raises(MixedRankingError, match="attribution.rescore_top_k >= 3"):
        select_key_heads(mixed, 3, 1)
    # an older file without rescore_top_k takes it from its recorded config
    old = HeadScores(pos, neg, pos - neg, 3, 3, method="atp+exact_topk",
                     meta={"exact_heads": meta["exact_heads"], "config": {"attribution": {"rescore_top_k": 1}}})
    with pytest.raises(MixedRankingError, match="modulation.k_pos=2"):
        select_key_heads(old, 2, 1)


def test_train_refuses_more_key_heads_than_were_rescored(tmp_path):
    from vseam.config import ConfigError
    from vseam.validate import validate

    cfg = load_config(["model=tiny-llava", "attribution.method=atp", "attribution.rescore_top_k=2",
                       "modulation.k_pos=3", "modulation.k_neg=1", f"out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="attribution.rescore_top_k=2 .*modulation.k_pos=3"):
        validate(cfg, "train")
    validate(load_config(["model=tiny-llava", "attribution.method=atp", "attribution.rescore_top_k=3",
                          "modulation.k_pos=3", "modulation.k_neg=1"]), "train")


def test_train_on_atp_with_rescoring_picks_exactly_scored_key_heads(trained, tmp_path):
    from vseam.modulation.run import run_train

    root, _, _ = trained
    out = tmp_path / "atp"
    run_train(load_config(["model=tiny-llava", "logger=none", f"data.root={root}", "data.world_seed=3", "modulation.methods=[learned]",
                           "modulation.k_pos=1", "modulation.k_neg=1", "trainer.max_steps=1",
                           "attribution.method=atp", "attribution.rescore_top_k=1",
                           "modulation.attribution_limit=12", f"out_dir={out}"]))
    summary = json.loads((out / "summary.json").read_text())
    exact = summary["head_scores"]["exact_heads"]
    assert summary["head_scores"]["method"] == "atp+exact_topk" and summary["key_heads"]["all"]
    assert all(h in exact for h in summary["key_heads"]["all"])
    assert summary["key_heads_ranked_on"] == f"the exact scores of the {len(exact)} re-scored heads only"
    used = json.loads((out / "head_scores_used.json").read_text())
    assert sum(r.count("exact") for r in used["cell_method"]) == len(exact)


# ------------------------------------------------------------------------------------ dashboards
def test_eval_logs_per_level_accuracy_and_run_names_are_not_doubled(tmp_path):
    from conftest import wandb_run_data

    from vseam.evaluation.run import run_eval
    from vseam.utils.tracking import run_name

    assert run_name("heads", "runs/heads-organism") == "heads-organism"
    assert run_name("heads", "runs/heads/20261201-1200-1-ab") == "heads-20261201-1200-1-ab"
    out = tmp_path / "eval-organism"
    run_eval(load_config(["model=tiny-llava", "logger=wandb", "logger.mode=offline", f"data.root={tmp_path / 'w'}",
                          "data.n_per_category=2", f"out_dir={out}"]))
    data = wandb_run_data(out / "logs", ["base/acc_level/object", "base/acc_level/attribute",
                                         "base/acc_level/relation", "base/acc/Color"])
    assert b"eval-eval-organism" not in data


def test_edit_logs_clean_and_edited_example_images(tmp_path):
    from conftest import wandb_run_data

    from vseam.editing.run import run_edit

    out = tmp_path / "edit"
    run_edit(load_config(["model=tiny-llava", "data=organism", f"data.root={tmp_path / 'world'}",
                          "data.n_per_category=2", "data.categories=[Color]", "logger=wandb", "logger.mode=offline",
                          "edit.progress=false", "edit.filter=false", f"out_dir={out}"]))
    wandb_run_data(out / "logs", ["edit/examples/0/clean", "edit/examples/0/edited", "edit/examples/1/edited"])
