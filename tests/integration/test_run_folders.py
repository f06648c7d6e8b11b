"""Run folders: each run has one of its own (unique defaults, also across processes; DDP children write into
the launcher's); a folder of another configuration or in use is refused; a failed run does not poison its
folder: a folder with no results takes a corrected configuration, one with results still refuses another;
``.lock`` is gone when a run ends, also on an error."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vseam.config import load_config
from vseam.utils.rundir import LOCK, RunFolderError, claim, release, run_folder

ROOT = Path(__file__).resolve().parents[2]


def test_a_failed_runs_folder_takes_the_corrected_rerun(pope, tmp_path, capsys):
    from vseam.data.readers import AnnotationError
    from vseam.evaluation.run import run_eval
    from vseam.utils.rundir import holds_results

    out = tmp_path / "o"
    bad = tmp_path / "coco_pope_random.json"
    bad.write_text('{"question_id": 1, "image": "x.png", "text": "Is there a cat?", "label": "maybe"}\n')
    args = ["model=tiny-llava", "logger=none", "data=pope", f"data.image_dir={pope / 'images'}", f"out_dir={out}"]
    with pytest.raises(AnnotationError):
        run_eval(load_config(args + [f"data.annotations=[{bad}]"]))
    assert (out / "config.yaml").exists() and not (out / LOCK).exists()  # the lock is gone on an error too
    assert not holds_results(out)
    good = pope / "organism_pope_random.json"
    res = run_eval(load_config(args + [f"data.annotations=[{good}]"]))
    assert res["results"]["base"]["n"] == 6
    assert str(good) in (out / "config.yaml").read_text() and not (out / LOCK).exists()
    assert "wrote no results; taking it for this configuration (data.annotations" in capsys.readouterr().out
    # now it holds results: another configuration is refused, as before
    assert holds_results(out)
    with pytest.raises(RunFolderError, match="holds the results of a run with another configuration"):
        run_eval(load_config(args + [f"data.annotations=[{bad}]"]))


def test_bookkeeping_is_not_results_but_progress_is(tmp_path):
    from vseam.utils.rundir import holds_results

    out = tmp_path / "o"
    with run_folder(load_config(["logger=none", f"out_dir={out}"]), "heads"):
        (out / "logs" / "heads").mkdir(parents=True)
        (out / "logs" / "heads" / "metrics.csv").write_text("a\n")
        (out / "wandb_run_ids.json").write_text("{}")
        (out / "progress").mkdir()  # an empty folder holds nothing
        assert (out / LOCK).exists() and not holds_results(out)
        (out / "progress" / "exact-chunk00000.safetensors").write_bytes(b"x")
        assert holds_results(out)
    assert not (out / LOCK).exists()


def test_a_removed_lock_file_still_excludes_a_second_run(tmp_path):
    """A run that ends removes .lock while holding it; a run starting then locks the file that is there."""
    out = tmp_path / "o"
    cfg = load_config(["logger=none", f"out_dir={out}"])
    a, took = claim(cfg, "heads")
    assert took
    release(a)
    b, took = claim(load_config(["logger=none", f"out_dir={out}"]), "heads")
    assert took and (out / LOCK).exists()
    release(b)
    assert not (out / LOCK).exists()


# --------------------------------------------------------------------- one folder per run, reuse refused
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
