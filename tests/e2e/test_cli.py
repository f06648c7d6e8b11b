"""The entry points as a user runs them: `python train.py` / `python analyze.py` help, and errors that end the
command in one line before any model loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_help_lists_analyses_and_groups():
    r = _run("analyze.py", "--help")
    assert r.returncode == 0
    for word in ("heads", "edit", "eval", "model", "llava-1.5-7b", "organism-llava"):
        assert word in r.stdout
    r = _run("train.py", "--help")
    assert r.returncode == 0 and "modulation" in r.stdout


def test_cli_config_errors_exit_before_loading_a_model():
    r = _run("train.py", "trainer.devicez=2")
    assert r.returncode != 0 and "trainer.devicez" in r.stderr
    r = _run("analyze.py", "nosuch")
    assert r.returncode != 0 and "heads" in r.stderr
