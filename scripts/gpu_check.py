"""The GPU check (docs/benchmarks.md#gpu-check) in one command, on a CUDA machine:

1. ``benchmarks/attribution_scale.py`` at a larger size (LLaVA-1.5-7B widths, ``--lm-layers`` language
   layers, ``--samples`` samples) in float32 and in bfloat16: speed of every method, the counted-work
   floor, time to the exact top-10, activation memory per ablated copy (``torch.cuda.max_memory_allocated``);
2. the engine in bfloat16 against float32 on the same samples: max |difference| of the ablated
   probabilities, Spearman and top-10 overlap of the signed scores;
3. ``analyze.py heads`` on the organism in float32 and in bfloat16 (the matrices' distance);
4. ``python train.py trainer.precision=bf16-mixed`` on the organism (the Quick start table in bf16-mixed).

Everything goes into ``benchmarks/results/gpu_check.json`` (``--out``) with the date, the GPU's name and
the versions, written atomically at the end; each step's output stays under ``--work``.

    python scripts/gpu_check.py                     # on a CUDA machine: ~5-10 min on one H100
    python scripts/gpu_check.py --dry-run           # on a CPU: the same steps at tiny sizes (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str], log: Path, timeout: int) -> float:
    """Run one command (its output to ``log``); its wall seconds; a failure stops the check, naming the log."""
    t = time.perf_counter()
    env = {**os.environ, "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env,
                              timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed (exit {proc.returncode}); the end of {log}:\n{log.read_text()[-4000:]}")
    return round(time.perf_counter() - t, 1)


def compare(a_path: Path, b_path: Path) -> dict:
    """bfloat16 (b) against float32 (a): the exact ablated probabilities and the signed scores."""
    from safetensors.torch import load_file

    from vseam.attribution.scores import head_scores, top_k_overlap
    from vseam.stats import spearman

    a, b = load_file(str(a_path)), load_file(str(b_path))
    sa = head_scores(a["prob"], a["correct"].bool(), a["exact"])
    sb = head_scores(b["prob"], b["correct"].bool(), b["exact"])
    k = min(10, sa.signed.numel())
    return {"max_abs_diff_ablated": float((a["exact"] - b["exact"]).abs().max()),
            "max_abs_diff_signed": float((sa.signed - sb.signed).abs().max()),
            "max_abs_signed": float(sa.signed.abs().max()),
            "spearman_signed": spearman(sa.signed, sb.signed), f"top{k}_overlap_signed": top_k_overlap(sa.signed, sb.signed, k),
            "correct_agree": int((a["correct"] == b["correct"]).sum()), "n": int(a["correct"].numel())}


def matrices_distance(a_dir: Path, b_dir: Path) -> dict:
    from vseam.attribution.outputs import load_head_scores
    from vseam.attribution.scores import top_k_overlap
    from vseam.stats import spearman

    a, b = load_head_scores(a_dir), load_head_scores(b_dir)
    out = {}
    for name in ("positive", "negative", "signed"):
        x, y = getattr(a, name), getattr(b, name)
        if x is not None and y is not None:
            out[name] = {"max_abs_diff": float((x - y).abs().max()), "spearman": spearman(x, y),
                         "top10_overlap": top_k_overlap(x, y, min(10, x.numel()))}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lm-layers", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu_check.json"))
    ap.add_argument("--work", default=str(ROOT / "runs" / "gpu-check"))
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: check the script itself")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per step")
    a = ap.parse_args(argv)
    import torch

    if not a.dry_run and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run this on a GPU machine, or --dry-run to check the script on a CPU")
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    dev = "cpu" if a.dry_run else "cuda"
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dry_run": a.dry_run,
                    "device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu",
                    "torch": torch.__version__, "argv": sys.argv[1:]}
    import transformers

    report["transformers"] = transformers.__version__
    try:
        report["git"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        report["git"] = None

    # 1-2: attribution_scale.py's comparison at a larger size, float32 and bfloat16
    size = (["--tiny", "--lm-layers", "2", "--samples", "2", "--ref-heads", "4"] if a.dry_run else
            ["--lm-layers", str(a.lm_layers), "--samples", str(a.samples), "--ref-heads", "16"])
    scale = {}
    for dtype in ("float32", "bfloat16"):
        j, s = work / f"scale-{dtype}.json", work / f"scale-{dtype}.safetensors"
        secs = run(["benchmarks/attribution_scale.py", *size, "--device", dev, "--dtype", dtype, "--rows", str(a.rows),
                    "--memory", "1,16" if a.dry_run else "8,64", "--json", str(j), "--save", str(s)],
                   work / f"scale-{dtype}.log", a.timeout)
        scale[dtype] = {**json.loads(j.read_text()), "seconds": secs}
    report["scale"] = scale
    report["engine_bf16_vs_fp32"] = compare(work / "scale-float32.safetensors", work / "scale-bfloat16.safetensors")

    # 3: head attribution on the organism, float32 and bfloat16
    model = ["model=tiny-llava"] if a.dry_run else []
    gpu = ["trainer.accelerator=cpu"] if a.dry_run else ["trainer.accelerator=gpu"]
    limit = ["data.limit=2"] if a.dry_run else []
    heads = {}
    for dtype in ("float32", "bfloat16"):
        out = work / f"heads-{dtype}"
        secs = run(["analyze.py", "heads", "logger=csv", *model, *gpu, *limit, f"model.dtype={dtype}",
                    "attribution.progress=false", "attribution.resume=false", f"out_dir={out}"],
                   work / f"heads-{dtype}.log", a.timeout)
        heads[dtype] = {"seconds": secs, "baseline": json.loads((out / "head_scores.json").read_text())["baseline"]}
    heads["bf16_vs_fp32"] = matrices_distance(work / "heads-float32", work / "heads-bfloat16")
    report["organism_heads"] = heads

    # 4: train.py in bf16-mixed
    out = work / "train-bf16-mixed"
    quick = ["trainer.max_steps=2", "modulation.methods=[none,learned]", "data.n_per_category=12"] if a.dry_run else []
    secs = run(["train.py", "logger=csv", *model, *gpu, "trainer.precision=bf16-mixed", *quick, f"out_dir={out}"],
               work / "train.log", a.timeout)
    summary = json.loads((out / "summary.json").read_text())
    report["train_bf16_mixed"] = {"seconds": secs, "methods": {
        m: {"val": r["val_accuracy"], "test": r["test"]["accuracy"]} for m, r in summary["methods"].items()}}

    from vseam.utils.io import write_json

    write_json(a.out, report)
    print(json.dumps(report, indent=1, default=str)[:6000])
    print(f"written: {a.out}")


if __name__ == "__main__":
    sys.exit(main())
