"""Two nodes on this machine: the head sweep, the study's ablation and tracing sharded over two torchrun
"nodes" (``--nnodes=2 --nproc-per-node=1``, one process each, rendezvous on 127.0.0.1, gloo) write the result
files of one process; and after one node is killed mid-run (SIGKILL) the same command resumes from the
chunks both nodes saved and again writes one process's files.

The kill lands at a known point: a named pipe stands where the killed node's second chunk would be saved, so
that node blocks reading it (a saved chunk is loaded, not recomputed) right after saving its first chunk,
while the other node has saved all of its own and waits in the gather. Every process runs one intra-op
thread, as the reference does: CPU kernels may sum in another order with another thread count.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import small_world

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # about a minute per case on 2 shared cores (interpreter start-ups, gloo groups)

# job -> (analysis, its own arguments, the chunk tag of its progress files, its result files)
JOBS = {
    "heads": ("heads", [], "exact", ("head_scores.safetensors", "head_scores.json")),
    "ablate": ("ablate", ["study.k=[1,2]", "study.random_trials=3"], "ablate",
               ("ablation.safetensors", "ablation.json")),
    "trace": ("trace", ["trace.limit=1", "trace.chunk_size=1", "trace.plots=false", "trace.progress=false"], "trace",
              ("trace.safetensors", "trace.json")),
}
# result keys that say how or where a run ran, not what it found
RUN_KEYS = {"seconds", "world_size", "files", "config", "head_scores", "model_identity"}


_STARTED: list[subprocess.Popen] = []  # every node launcher a test started


@pytest.fixture(autouse=True)
def _no_node_outlives_its_test():
    yield
    while _STARTED:
        p = _STARTED.pop()
        if p.poll() is None:
            _kill(p)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return small_world(tmp_path_factory, n_per_category=2)


def _args(job: str, world: Path, out: Path) -> list[str]:
    """The command line of ``job`` on the organism LLaVA over six of ``world``'s categories (two of each level): 12
    samples in chunks of 2 (tracing: 6 pairs in chunks of 1), so each node owns three of the six chunks."""
    analysis, extra, _, _ = JOBS[job]
    return [analysis, "logger=none", f"data.root={world}", "data.categories=[Shape,Icon,Color,Texture,Horizontal,Vertical]",
            "data.limit=2", "data.batch_size=2",
            "attribution.chunk_size=2", "attribution.progress=false", "trainer.accelerator=cpu", *extra,
            f"out_dir={out}"]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE",
                                                             "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_nodes(args: list[str], logs: Path) -> list[subprocess.Popen]:
    """Two torchrun launchers, node ranks 0 and 1."""
    port = _free_port()
    procs = []
    for rank in (0, 1):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", f"--node-rank={rank}",
               "--master-addr=127.0.0.1", f"--master-port={port}", str(ROOT / "analyze.py"), *args,
               "trainer.strategy=ddp", "trainer.num_nodes=2"]
        log = open(logs / f"node{rank}.log", "w")
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=_env(), stdout=log, stderr=subprocess.STDOUT))
    _STARTED.extend(procs)
    return procs


def _wait(procs: list[subprocess.Popen], logs: Path, timeout: float = 600) -> list[int]:
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(1.0, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            for q in procs:
                _kill(q)
            raise AssertionError(f"a node did not finish in {timeout} s: {_tails(logs)}") from None
    return codes


def _descendants(pid: int) -> list[int]:
    """The processes below ``pid`` (torchrun starts its workers in sessions of their own)."""
    parent = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(stat.parent.name)] = int(fields[1])
    out, todo = [], [pid]
    while todo:
        here = todo.pop()
        kids = [c for c, pp in parent.items() if pp == here]
        out += kids
        todo += kids
    return out


def _kill(p: subprocess.Popen) -> None:
    """SIGKILL a node: its launcher and the workers it started, and reap the launcher."""
    for pid in [*_descendants(p.pid), p.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=60)


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {f.name}\n{f.read_text()[-2500:]}" for f in sorted(logs.glob("node*.log")))


def _two_nodes(args: list[str], logs: Path) -> None:
    logs.mkdir(parents=True, exist_ok=True)
    codes = _wait(_start_nodes(args, logs), logs)
    assert codes == [0, 0], _tails(logs)
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in (logs / "node1.log").read_text(), _tails(logs)  # one world of two


@pytest.fixture(scope="module")
def one_process(world, tmp_path_factory):
    """Each job's result files from one process (one thread), computed once for the module."""
    root = tmp_path_factory.mktemp("one")
    outs = {}
    for job in JOBS:
        out = root / job
        proc = subprocess.run([sys.executable, str(ROOT / "analyze.py"), *_args(job, world, out)], cwd=ROOT,
                              env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[job] = out
    return outs


def _same_results(job: str, one: Path, two: Path) -> None:
    """The two-node run's result files equal one process's: every tensor bit for bit (NaN where NaN), every
    number and list of the JSON file; only how and where it ran differs (world_size 2 against 1)."""
    tensors, summary = JOBS[job][3]
    a, b = load_file(str(one / tensors)), load_file(str(two / tensors))
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k].nan_to_num(-9.0), b[k].nan_to_num(-9.0)), k
    ja, jb = json.loads((one / summary).read_text()), json.loads((two / summary).read_text())
    if "world_size" in jb:
        assert (ja["world_size"], jb["world_size"]) == (1, 2)
    assert {k: v for k, v in ja.items() if k not in RUN_KEYS} == {k: v for k, v in jb.items() if k not in RUN_KEYS}


@pytest.mark.parametrize("job", list(JOBS))
def test_two_nodes_write_one_process_results(job, world, one_process, tmp_path):
    out = tmp_path / "two"
    _two_nodes(_args(job, world, out), tmp_path / "logs")
    _same_results(job, one_process[job], out)
    tag = JOBS[job][2]
    assert sorted(p.name for p in (out / "progress").glob(f"{tag}-chunk*.safetensors")) == \
        [f"{tag}-chunk{c:05d}.safetensors" for c in range(6)]  # both nodes' chunks, side by side


@pytest.mark.parametrize("job", list(JOBS))
def test_a_killed_node_resumes(job, world, one_process, tmp_path):
    """Node 1 is killed after saving its first chunk (chunk 1), node 0 after saving all of its own (0, 2, 4);
    the same command on both nodes then loads those four and computes only chunks 3 and 5."""
    from vseam.config import load_config
    from vseam.utils.rundir import claim, release

    out, logs, tag = tmp_path / "two", tmp_path / "logs", JOBS[job][2]
    logs.mkdir()
    args = _args(job, world, out)
    node_args = [*args[1:], "trainer.strategy=ddp", "trainer.num_nodes=2"]
    claim(load_config(node_args), args[0])  # the folder as the run leaves it before any result: its config.yaml
    release(out)
    progress = out / "progress"
    progress.mkdir()
    chunk = lambda c: progress / f"{tag}-chunk{c:05d}.safetensors"  # noqa: E731
    os.mkfifo(chunk(3))  # node 1 blocks on "loading" it after saving chunk 1

    nodes = _start_nodes(args, logs)
    deadline = time.monotonic() + 600
    while not all(chunk(c).exists() for c in (0, 1, 2, 4)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in nodes), _tails(logs)
        time.sleep(0.2)
    saved = {c: (chunk(c).read_bytes(), chunk(c).stat().st_mtime_ns) for c in (0, 1, 2, 4)}
    _kill(nodes[1])
    try:  # node 0 loses its peer in the gather and stops; it is killed too if it waits on
        nodes[0].wait(timeout=120)
    except subprocess.TimeoutExpired:
        _kill(nodes[0])
    assert nodes[0].returncode != 0 and not (out / JOBS[job][3][1]).exists(), _tails(logs)
    chunk(3).unlink()

    _two_nodes(args, tmp_path / "logs-again")
    _same_results(job, one_process[job], out)
    for c, (data, mtime) in saved.items():  # loaded, not computed again
        assert chunk(c).read_bytes() == data and chunk(c).stat().st_mtime_ns == mtime, c
    assert chunk(3).exists() and chunk(5).exists()
