"""`python train.py` killed (SIGKILL) mid-run and started again ends with the uninterrupted run's table (slow:
several train.py processes)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import draws_args, train_args

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # three train.py processes (~1-2 min on 2 shared cores)
def test_train_py_killed_mid_training_resumes_to_the_same_table(trained, tmp_path):
    """`python train.py ...` killed (SIGKILL) after its first checkpoint; the same command again ends with
    the table of an uninterrupted run."""
    import signal
    import time

    world = trained[0]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}

    def cmd(out):
        return [sys.executable, str(ROOT / "train.py"), *train_args(world, out, "modulation.methods=[none,learned]",
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


@pytest.mark.slow  # three train.py processes (~1-2 min on 2 shared cores)
def test_train_py_killed_while_workers_train_draws_leaves_no_worker_and_resumes(tmp_path, world_root):
    """`python train.py` killed (SIGKILL) while its two worker processes train groups of draws: the workers
    end with it (none is left running), and the same command again ends with the uninterrupted run's table."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline"}
    extra = ("modulation.methods=[none,learned,random]", "modulation.random_draws=6", "modulation.draws_together=1",
             "modulation.draws_workers=2", "trainer.max_epochs=2")

    def cmd(out):
        return [sys.executable, str(root / "train.py"), *draws_args(world_root, out, *extra)]

    full = subprocess.run(cmd(tmp_path / "full"), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-2000:]
    proc = subprocess.Popen(cmd(tmp_path / "killed"), cwd=root, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    first = tmp_path / "killed" / "methods" / "random-draws000-000.json"
    deadline = time.monotonic() + 600
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert children, "no worker process was running"
    assert not (tmp_path / "killed" / "table.txt").exists(), "the run finished before it could be killed"
    deadline = time.monotonic() + 3  # SIGKILL'ed with it (not left to finish their group: seconds more)
    while any(Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    alive = [c for c in children if Path(f"/proc/{c}").exists() and
             "Z" not in Path(f"/proc/{c}/stat").read_text().split(")")[-1].split()[:1]]
    assert not alive, f"worker processes {alive} outlived the killed train.py"
    again = subprocess.run(cmd(tmp_path / "killed"), cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "reusing the finished draws" in again.stdout
    assert (tmp_path / "killed" / "table.txt").read_text() == (tmp_path / "full" / "table.txt").read_text()
