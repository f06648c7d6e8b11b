"""DDP: two processes launched by analyze.py (Lightning / Fabric on gloo) write one process's result files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import heads_cfg, trace_cfg

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow  # ~50-70 s on 2 shared cores: two interpreter start-ups and a gloo group
def test_ddp_two_processes_equal_one(world, tmp_path):
    """Chunks sharded over 2 CPU processes (DDP, gloo) give bit-identical files to 1 process.

    Both use one intra-op thread per process: CPU kernels may sum in another order with another thread
    count, and that, not the sharding, would be what differs.
    """
    from vseam.attribution.run import run_heads

    common = ["data.batch_size=2", "attribution.chunk_size=2", "trainer.accelerator=cpu"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_heads(heads_cfg(world, tmp_path / "one", *common))
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "two"
    args = [sys.executable, str(ROOT / "analyze.py"), "heads", "model=tiny-llava", "logger=none",
            f"data.root={world}", "data.limit=1", "attribution.progress=false", *common, "trainer.devices=2",
            "trainer.strategy=ddp", f"out_dir={out}"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((out / "head_scores.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    a, b = load_file(one["files"]["safetensors"]), load_file(out / "head_scores.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.slow  # two interpreter start-ups and a gloo group
def test_trace_ddp_two_processes_equal_one(tmp_path):
    """Pair chunks sharded over 2 CPU processes (DDP, gloo) give bit-identical arrays to 1 process."""
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    from vseam.tracing.run import run_trace

    root = Path(__file__).resolve().parents[2]
    common = ["trainer.accelerator=cpu", "trace.plots=false"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = run_trace(trace_cfg(tmp_path / "one", *common))
    finally:
        torch.set_num_threads(threads)
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root / "src")}
    out = tmp_path / "two"
    args = [sys.executable, str(root / "analyze.py"), "trace", "logger=none", "trace.limit=1", "trace.chunk_size=1",
            "data.categories=[Shape,Color]", "trace.progress=false", "data.batch_size=2", *common,
            "trainer.devices=2", "trainer.strategy=ddp", f"out_dir={out}"]
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = json.loads((out / "trace.json").read_text())
    assert (one["world_size"], two["world_size"]) == (1, 2)
    a, b = load_file(str(tmp_path / "one" / "trace.safetensors")), load_file(str(out / "trace.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k].nan_to_num(-9), b[k].nan_to_num(-9)), k
