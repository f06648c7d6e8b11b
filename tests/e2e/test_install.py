"""A non-editable ``pip install .`` works outside the source tree: the configs and the shipped organism
checkpoints are package data, and the console scripts run from any folder (slow: builds a wheel)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _copy_source(dst: Path) -> Path:
    """The checkout without its run outputs (pip builds in the source folder; keep the real one clean)."""
    top = {".git", "runs", "data", "wandb", "build", "lightning_logs", ".pytest_cache"}  # only at the top:
    anywhere = shutil.ignore_patterns("*.egg-info", "__pycache__")  # configs/data/ is a config group

    def ignore(folder: str, names: list[str]) -> set[str]:
        return set(anywhere(folder, names)) | ({n for n in names if n in top} if Path(folder) == REPO else set())

    shutil.copytree(REPO, dst, ignore=ignore, symlinks=True)
    return dst


def test_non_editable_install_runs_from_another_folder(tmp_path):
    src = _copy_source(tmp_path / "src-copy")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    py = env_dir / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
               PYTHONWARNINGS="ignore")
    subprocess.run([str(py), "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                    str(src)], check=True, env=env, timeout=600, capture_output=True)
    shutil.rmtree(src)  # nothing may come from the source tree any more
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> str:
        r = subprocess.run(list(args), cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        return r.stdout

    where = run(str(py), "-c", "import vseam; print(vseam.__file__)").strip()
    assert where.startswith(str(env_dir)), where  # the installed copy, not an editable checkout
    assert "modulation" in run(str(env_dir / "bin" / "vseam-train"), "--help")  # configs found (package data)
    run(str(env_dir / "bin" / "vseam-analyze"), "heads", "logger=none", "data.n_per_category=2", "data.root=w",
        "out_dir=o", "attribution.progress=false", "attribution.heatmaps=false")
    result = json.loads((elsewhere / "o" / "head_scores.json").read_text())
    got = {k: result.get(k) for k in ("model_id", "n", "num_layers", "num_heads")}
    from vseam.world import CATEGORIES

    expected = {"model_id": "organism-llava", "n": 2 * len(CATEGORIES), "num_layers": 6, "num_heads": 8}
    assert got == expected, got  # the shipped checkpoint, two questions of each category of the world
