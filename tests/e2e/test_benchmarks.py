"""benchmarks/ and scripts/ run as a user runs them (a child process or the script's main(argv)): each prints its
summary and its machine-readable last line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))


def test_scale_benchmark_prints_its_summary_line(tmp_path):
    """The benchmark end to end at tiny widths; the last line is machine-readable."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path)}
    args = [sys.executable, str(ROOT / "benchmarks" / "attribution_scale.py"), "--tiny", "--samples", "2",
            "--threads", "1", "--memory", "1,4", "--json", str(tmp_path / "s.json")]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fields = dict(kv.split("=") for kv in proc.stdout.strip().splitlines()[-1].split())
    assert list(fields)[:3] == ["exact_speedup", "work_floor", "max_abs_diff"]
    assert float(fields["max_abs_diff"]) <= 1e-5
    assert fields["M"] == "none" or 0 <= int(fields["M"]) <= int(fields["L"]) * int(fields["H"])
    assert float(fields["work_floor"]) > 1
    import json

    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["memory"]["how"] == "peak RSS (VmHWM)" and set(saved["memory"]["peak_bytes"]) == {"1", "4"}
    assert "MiB per ablated copy" in proc.stdout


@pytest.mark.slow
def test_dress_rehearsal_script_runs_every_step_at_tiny_size(tmp_path):
    """The full-width rehearsal's script (heads exact, heads atp + re-scoring, train.py with the saved head
    scores, eval with the saved modulation, trace) on the tiny models: every step runs and is checked, and the
    report says the rehearsal is complete."""
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "dress_rehearsal.py"), "--tiny", "--out",
                           str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    report = json.loads((tmp_path / "dress_rehearsal.json").read_text())
    steps = {(s["arch"], s["step"]) for s in report["steps"]}
    for arch in ("llava", "instructblip"):
        assert {(arch, "heads exact"), (arch, "heads atp + rescore"), (arch, "train (saved head scores)"),
                (arch, "eval (modulated)"), (arch, "trace (groups)")} <= steps
    assert report["complete"] is True
    assert all(s["peak_rss_gb"] > 0 and s["returncode"] == 0 for s in report["steps"])


@pytest.mark.slow
def test_gpu_check_script_dry_run(tmp_path):
    """The GPU check's every step on the CPU at tiny sizes: the report has each section's figures."""
    import json

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--dry-run", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=1800)
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    r = json.loads(out.read_text())
    assert r["dry_run"] is True and r["date"]
    assert set(r["scale"]) == {"float32", "bfloat16"}
    assert r["engine_bf16_vs_fp32"]["max_abs_diff_ablated"] < 0.05
    assert r["organism_heads"]["bf16_vs_fp32"]["signed"]["max_abs_diff"] >= 0
    assert set(r["train_bf16_mixed"]["methods"]) == {"none", "learned"}


def test_atp_quality_script_prints_every_choice_and_its_machine_line(capsys):
    """The estimate-quality benchmark on a small random grid: every (atp_path, atp_alpha) row with its pass
    count, and a last line naming the default with figures in range."""
    import atp_quality

    torch.manual_seed(0)
    atp_quality.main(["--model", "random:2x4", "--samples", "3", "--batch-size", "3"])
    out = capsys.readouterr().out
    for path, passes in (("all", "1 fwd + 1 bwd"), ("layer", "3 fwd + 2 bwd"), ("index", "5 fwd + 4 bwd")):
        assert f"atp_path={path}" in out and passes in out
    last = dict(kv.split("=") for kv in out.strip().splitlines()[-1].split())
    assert last["atp_path"] == "layer" and last["atp_alpha"] == "0.5" and last["heads"] == "8"
    assert -1 <= float(last["spearman_default"]) <= 1 and 0 <= int(last["top8_default"]) <= 8


def test_benchmark_script_prints_its_summary_line(tmp_path):
    """The speed benchmark end to end on a 2 x 4 model; its last line is the machine-readable summary."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TMPDIR": str(tmp_path)}
    args = [sys.executable, str(ROOT / "benchmarks" / "attribution_speed.py"), "--layers", "2", "--heads", "4",
            "--hidden", "16", "--samples", "2", "--ref-heads", "4", "--agreement-samples", "2", "--threads", "2",
            "--organism", str(tmp_path / "no-organism"), "--procs", "2"]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split())
    assert list(fields)[:5] == ["exact_speedup", "max_abs_diff", "atp_speedup", "spearman", "top10_overlap"]
    assert float(fields["max_abs_diff"]) <= 1e-5
    assert float(fields["exact_speedup"]) > 0 and float(fields["atp_speedup"]) > 0
    assert float(fields["exact_bound"]) > 0  # inf at 2 layers: no layer after the ablated one needs all positions
    assert "bound: none at 2 layers" in proc.stdout
    # with 2 torch threads it also times the attention kernel on one, and says what the second gains
    gain = re.search(r"the attention kernel with 1 thread: \S+ us per \(row, head\); 2 threads make it (\S+)x faster",
                     proc.stdout)
    # a measured ratio, not asserted on: on a loaded 2-core machine the second thread can make it 0.00x
    assert gain and float(gain.group(1)) >= 0, proc.stdout
    # the engine in 2 processes of one thread each: same numbers as in one process
    assert float(fields["exact_speedup_2procs"]) > 0
    procs_diff = re.search(r"in 2 processes x 1 thread .* max \|diff\| to it (\S+)", proc.stdout)
    assert procs_diff and float(procs_diff.group(1)) <= 1e-5, proc.stdout


def test_overhead_benchmark_prints_its_machine_readable_line(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "modulation_overhead.py"
    spec = importlib.util.spec_from_file_location("modulation_overhead", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--layers", "2", "--heads", "4", "--hidden", "32", "--batch", "2", "--repeats", "5", "--k", "4"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    fields = dict(kv.split("=") for kv in last.split())
    assert set(fields) == {"step_overhead", "trainable_fraction"}
    # K=20 heads x (1 scale + 128 offset dims) over LLaVA-1.5-7B's parameter count (meta build)
    assert out["trainable_fraction"] == pytest.approx(20 * 129 / 7_063_427_072)
    assert float(fields["step_overhead"]) == pytest.approx(out["step_overhead"], abs=1e-3) and out["step_overhead"] > 0


def test_the_draws_benchmark_runs_both_arms_and_checks_they_agree(world_root, capsys):
    """benchmarks/random_draws.py on a tiny model: both arms run train.py's code, the subset trained one
    at a time has the parameters of the same draws trained together, and the last line is machine-readable."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "random_draws.py"
    spec = importlib.util.spec_from_file_location("random_draws_bench", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--draws", "3", "--alone", "2", "--epochs", "1", "--together", "2", "--workers", "2",
                      "model=tiny-llava", f"data.root={world_root}", "data.world_seed=5", "data.batch_size=8",
                      "modulation.k_pos=1", "modulation.k_neg=1"])
    printed = capsys.readouterr().out
    last = dict(kv.split("=") for kv in printed.strip().splitlines()[-1].split())
    assert set(last) == {"ratio_wall", "ratio_cpu", "ratio_wall_one_process", "max_param_diff"}
    assert out["max_param_diff"] < 1e-5 and out["ratio_wall"] > 0 and out["ratio_cpu"] > 0
    for arm in ("together: 3 draws, 2 a batch, 1 process ", "together: 3 draws, 2 a batch, 2 processes",
                "one at a time: 3 draws (extrapolated x 3/2)", "plain forward (sdpa), 1 draw a batch",
                "last-position forward (eager),  2 draws a batch"):
        assert arm in printed, arm
