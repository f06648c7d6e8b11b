"""One clean line for every user error: ``error: ...`` on stderr naming the file / key / value and what to
do, a non-zero status, no traceback (unless ``VSEAM_TRACEBACK=1`` / ``--traceback``), one rank reporting;
and what can be checked from the config alone is checked before a process is spawned or a model loads."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vseam.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def _run(capsys, main: str, argv: list[str]) -> str:
    """``script(<main>, argv)`` as train.py / analyze.py run it: returns stderr; the exit status must be 1."""
    from vseam import cli

    with pytest.raises(SystemExit) as e:
        cli.script(getattr(cli, main), argv)
    err = capsys.readouterr().err
    assert e.value.code == 1, err
    return err


def _one_line(err: str, *fragments: str) -> None:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def _eval(pope, *extra) -> list[str]:
    return ["eval", "model=tiny-llava", "logger=none", "data=pope", f"data.image_dir={pope / 'images'}", *extra]


# ----------------------------------------------------------------------------- each error class
def test_an_out_dir_that_is_a_file(capsys, tmp_path, pope):
    f = tmp_path / "taken"
    f.write_text("mine")
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{pope / 'organism_pope_random.json'}]",
                                             f"out_dir={f}"))
    _one_line(err, f"out_dir {f} is a file, not a folder", "choose another out_dir")


def test_a_read_only_out_dir(capsys, tmp_path, pope):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if _writable(ro):  # root writes anyway: a folder of a read-only file system then, when there is one
        ro = Path("/sys/kernel")
        if not ro.is_dir() or _writable(ro):
            pytest.skip("no read-only folder to test with")
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{pope / 'organism_pope_random.json'}]",
                                             f"out_dir={ro}"))
    _one_line(err, f"out_dir {ro} is not writable", "choose a folder you can write")


def _writable(folder: Path) -> bool:
    try:
        os.close(os.open(folder / ".probe", os.O_RDWR | os.O_CREAT, 0o644))
    except OSError:
        return False
    os.unlink(folder / ".probe")
    return True


def test_a_missing_annotation_file(capsys, tmp_path, pope):
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{tmp_path / 'nope.json'}]",
                                             f"out_dir={tmp_path / 'o'}"))
    _one_line(err, f"data.annotations: {tmp_path / 'nope.json'} does not exist")


def test_a_bad_pope_label_and_an_empty_file(capsys, tmp_path, pope):
    bad = tmp_path / "coco_pope_random.json"
    bad.write_text('{"question_id": 1, "image": "a.png", "text": "Is there a cat?", "label": "maybe"}\n')
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{bad}]", f"out_dir={tmp_path / 'o'}"))
    _one_line(err, f"{bad}: line 1: label must be yes or no, got 'maybe'")
    bad.write_text("")
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{bad}]", f"out_dir={tmp_path / 'o'}"))
    _one_line(err, f"{bad}: the annotation file holds no record")


def test_a_locked_out_dir(capsys, tmp_path, pope):
    out = tmp_path / "run"
    code = ("import time; from vseam.config import load_config; from vseam.utils.rundir import claim; "
            f"claim(load_config(['logger=none', 'out_dir={out}']), 'eval'); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{pope / 'organism_pope_random.json'}]",
                                                 f"out_dir={out}"))
        _one_line(err, f"out_dir {out} is in use by another run (pid {holder.pid})")
    finally:
        holder.kill()
        holder.wait()


def test_another_models_scores(capsys, tmp_path, tiny_llava, world):
    scores = {"schema": "vseam.head_scores/1", "model_id": "other-model", "weights_sha256": "0" * 64,
              "num_layers": tiny_llava.num_layers, "num_heads": tiny_llava.num_heads, "method": "exact",
              **{m: [[0.1] * tiny_llava.num_heads] * tiny_llava.num_layers for m in ("positive", "negative", "signed")}}
    from vseam.attribution.outputs import SCHEMA

    scores["schema"] = SCHEMA
    (tmp_path / "head_scores.json").write_text(json.dumps(scores))
    err = _run(capsys, "train_main", ["model=tiny-llava", "logger=none", f"data.root={world}", "data=organism",
                                      "modulation.methods=[learned]", f"modulation.head_scores={tmp_path}",
                                      f"out_dir={tmp_path / 't'}"])
    _one_line(err, "other-model", "modulation.allow_other_model=true")


def test_a_truncated_modulation_file(capsys, tmp_path, pope):
    bad = tmp_path / "modulation.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"__metadata__\"")
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{pope / 'organism_pope_random.json'}]",
                                             f"eval.checkpoint={bad}", f"out_dir={tmp_path / 'o'}"))
    _one_line(err, str(bad), "unreadable")


def test_a_full_disk_names_the_file(capsys, tmp_path, pope, monkeypatch):
    import vseam.utils.io as io

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    out = tmp_path / "o"
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{pope / 'organism_pope_random.json'}]",
                                             f"out_dir={out}"))
    _one_line(err, f"{out / 'config.yaml'}: no space left on the device", "set out_dir to a folder on another disk")


def test_wandb_online_without_a_key(capsys, tmp_path, monkeypatch, pope):
    import io

    for var in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_CONFIG_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no settings file
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal to ask on
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{pope / 'organism_pope_random.json'}]",
                                             "logger=wandb", "logger.mode=online", f"out_dir={tmp_path / 'o'}"))
    _one_line(err, "logger.mode=online: no W&B API key found", "wandb login", "logger.mode=offline")
    assert not (tmp_path / "o").exists()


def test_the_train_eval_overlap_refusal(capsys, tmp_path, pope, tiny_llava):
    from vseam.data.load import load_samples
    from vseam.data.sample import sample_key
    from vseam.interventions import HeadModulation
    from vseam.interventions.checkpoint import save_modulation

    ann = pope / "organism_pope_random.json"
    cfg = load_config(_eval(pope, f"data.annotations=[{ann}]")[1:])
    keys = [sample_key(s) for s in load_samples(cfg.data)]
    mod = save_modulation(tmp_path / "m.safetensors", HeadModulation([(0, 1)], tiny_llava.head_dim, scale="scalar"),
                          model=tiny_llava.name, num_layers=tiny_llava.num_layers, num_heads=tiny_llava.num_heads,
                          identity=tiny_llava.identity, extra={"seen": {"train": keys[:3], "val": keys[3:4]}})
    err = _run(capsys, "analyze_main", _eval(pope, f"data.annotations=[{ann}]", f"eval.checkpoint={mod}",
                                             f"out_dir={tmp_path / 'o'}"))
    _one_line(err, "4 of the 6 evaluation samples are ones modulation", "eval.allow_overlap=true")


def test_a_config_error_and_an_unknown_analysis(capsys, tmp_path):
    _one_line(_run(capsys, "train_main", ["logger=none", "model.dtype=float33"]), "model.dtype='float33'")
    _one_line(_run(capsys, "analyze_main", ["headz"]), "unknown analysis 'headz'")


# ------------------------------------------------------------------- what is not a user error
def test_a_bug_keeps_its_traceback_and_the_opt_in_shows_every_one(monkeypatch, tmp_path, pope):
    from vseam import cli

    def bug(cfg):
        return {}["missing"]  # an operation that fails: a bug, not an error raised on purpose

    resolve = cli._resolve
    monkeypatch.setattr(cli, "_resolve", lambda module, func: bug)
    with pytest.raises(KeyError):
        cli.script(cli.analyze_main, ["report", "logger=none", f"out_dir={tmp_path / 'r'}"])
    monkeypatch.setattr(cli, "_resolve", resolve)
    monkeypatch.setenv("VSEAM_TRACEBACK", "1")
    with pytest.raises(SystemExit, match="config error: model.dtype"):
        cli.script(cli.train_main, ["model.dtype=float33"])
    monkeypatch.delenv("VSEAM_TRACEBACK")
    with pytest.raises(FileNotFoundError):  # --traceback does the same
        cli.script(cli.analyze_main, _eval(pope, f"data.annotations=[{tmp_path / 'nope'}]", "--traceback",
                                           f"out_dir={tmp_path / 'o'}"))


def test_only_rank_zero_reports(capsys, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    from vseam import cli

    with pytest.raises(SystemExit) as e:
        cli.script(cli.train_main, ["logger=none", "model.dtype=float33"])
    assert e.value.code == 1 and capsys.readouterr().err == ""


# ------------------------------------------------------------------------ before anything starts
def test_devices_and_batch_are_checked_before_a_process_spawns(capsys, tmp_path, monkeypatch):
    """`python train.py trainer.devices=3` on a CPU: 3 processes, and the global batch of 16 does not split
    over them; said before any process starts or model loads, nothing written."""
    import vseam.models

    monkeypatch.setattr(vseam.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "o"
    err = _run(capsys, "train_main", ["logger=none", "trainer.accelerator=cpu", "trainer.devices=3", f"out_dir={out}"])
    _one_line(err, "data.batch_size=16 (the global batch) is not divisible by the 3 processes of trainer.devices=3")
    err = _run(capsys, "train_main", ["logger=none", "trainer.accelerator=cpu", "trainer.devices=[0,1]", f"out_dir={out}"])
    _one_line(err, "trainer.accelerator=cpu trainer.devices=[0, 1]", "not possible on this machine")
    err = _run(capsys, "analyze_main", ["heads", "logger=none", "trainer.strategy=ddpx", "trainer.devices=2",
                                        f"out_dir={out}"])
    _one_line(err, "trainer.strategy=ddpx", "not possible on this machine")
    assert not out.exists()


def test_train_py_on_three_cpu_devices_fails_in_one_line_before_spawning(tmp_path):
    """The real command line: one line on stderr, status 1, no rank started (no Lightning device lines)."""
    out = tmp_path / "o"
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "logger=none", "trainer.accelerator=cpu",
                        "trainer.devices=3", f"out_dir={out}"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.returncode == 1, p.stderr
    _one_line(p.stderr, "not divisible by the 3 processes")
    assert "GPU available" not in p.stdout + p.stderr and not out.exists()


def test_analyze_py_prints_one_line_for_a_missing_file(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "analyze.py"), "eval", "model=tiny-llava", "logger=none",
                        "data=pope", f"data.annotations=[{tmp_path / 'gone.json'}]", f"out_dir={tmp_path / 'o'}"],
                       capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.returncode == 1
    _one_line(p.stderr, f"{tmp_path / 'gone.json'} does not exist")


# ----------------------------------------------------------------------------- a full disk, whoever writes
def test_a_full_disk_under_safetensors_names_the_file(capsys, tmp_path, monkeypatch):
    """safetensors says a full disk in its own error type (no errno): the line still names the file."""
    import safetensors.torch
    import torch
    from safetensors import SafetensorError

    from vseam import cli
    from vseam.utils.io import save_safetensors

    def full(*a, **k):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    target = tmp_path / "head_scores.safetensors"
    with pytest.raises(SystemExit) as e:
        cli.script(lambda argv: save_safetensors(target, {"x": torch.zeros(2)}), [])
    assert e.value.code == 1
    _one_line(capsys.readouterr().err, f"{target}: no space left on the device", "another disk")
    assert not target.exists() and not list(tmp_path.iterdir())  # the atomic write left nothing behind


def test_a_full_disk_under_a_lightning_checkpoint_names_the_run_folder(capsys, tmp_path, monkeypatch):
    """torch.save (Lightning's checkpoints) says only "file write failed": with the run folder's disk full that is
    one line naming the folder; with space left it is not a full disk and keeps its traceback (a bug to see)."""
    import shutil
    from collections import namedtuple

    from vseam import cli
    from vseam.utils import errors

    monkeypatch.setattr(errors, "LAST_RUN_FOLDER", tmp_path / "run")
    usage = namedtuple("usage", "total used free")

    def save(argv):
        raise RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")

    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 0))
    with pytest.raises(SystemExit) as e:
        cli.script(save, [])
    assert e.value.code == 1
    _one_line(capsys.readouterr().err, f"writing under the run folder {tmp_path / 'run'}: no space left on the device",
              "PytorchStreamWriter")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10 << 30, 1 << 30, 9 << 30))
    with pytest.raises(RuntimeError, match="file write failed"):
        cli.script(save, [])
