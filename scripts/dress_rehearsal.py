"""Full-width dress rehearsal (docs/benchmarks.md#dress-rehearsal-at-full-width): the real entry points end to end on random models of
LLaVA-1.5-7B's and InstructBLIP-Vicuna-7B's real widths with few layers (``configs/model/*-7b-width.yaml``):
576 image tokens through the real LLaVA-1.5 processor configuration (CLIP image processor at 336, the
``<image>`` token expanded by the processor), 32 query tokens through InstructBLIP's real Q-Former widths.

For each architecture, in order, each as its own process (its peak resident memory read by ``wait4``):

1. ``analyze.py heads`` (exact engine) on ``--samples`` organism-world samples;
2. ``analyze.py heads attribution.method=atp attribution.rescore_top_k=2`` (estimate + exact re-scoring);
3. ``train.py`` with the head-score file of step 1 (``modulation.head_scores``; no attribution on train),
   learned modulation against none, ``--steps`` optimizer steps;
4. ``analyze.py eval`` with the modulation file of step 3;
5. ``analyze.py trace`` (the position groups only, every pair) when the installed vseam has it.

Each step's outputs are checked (shapes, the definition named, files present); a failing step stops the
rehearsal with its output. The figures go to ``<out>/dress_rehearsal.json``, rewritten after every step
(``"complete": false`` until the last one has passed, so a stopped run keeps the peaks of the steps that
ran), and a table is printed.

    python scripts/dress_rehearsal.py                         # both, bfloat16 (~35 min on 2 busy CPU cores)
    python scripts/dress_rehearsal.py --arch llava --dtype float32
    python scripts/dress_rehearsal.py --tiny                  # the tiny random models: the same steps in ~1 min
    python scripts/dress_rehearsal.py --only eval,trace       # some steps again, on the outputs of an earlier run
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
MODELS = {"llava": "llava-1.5-7b-width", "instructblip": "instructblip-vicuna-7b-width"}
TINY = {"llava": "tiny-llava", "instructblip": "tiny-instructblip"}


class Report:
    """The rehearsal's record, written atomically after every step."""

    def __init__(self, path: Path, a):
        from vseam.utils.io import write_json

        self.path, self.write_json, self.steps = path, write_json, []
        self.head = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "dtype": a.dtype, "tiny": a.tiny,
                     "samples": a.samples, "rows_per_forward": a.rows}

    def add(self, rec: dict, **extra) -> dict:
        rec.update(extra)
        self.steps.append(rec)
        self.write(complete=False)
        return rec

    def write(self, complete: bool):
        self.write_json(self.path, {**self.head, "complete": complete, "steps": self.steps})


def run_step(name: str, argv: list[str], log: Path) -> dict:
    """Run one entry point as a child process; its wall time, peak RSS (GB) and exit status."""
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                env={**os.environ, "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"})
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rec = {"step": name, "seconds": round(time.perf_counter() - t, 1), "peak_rss_gb": round(usage.ru_maxrss / 2 ** 20, 2),
           "returncode": proc.returncode, "log": str(log), "argv": argv}
    return rec


def has_trace() -> bool:
    try:
        from vseam.cli import ANALYSES
    except ImportError:
        return False
    return "trace" in ANALYSES


def rehearse(arch: str, a, out: Path, report: Report) -> list[dict]:
    model = (TINY if a.tiny else MODELS)[arch]
    base = [f"model={model}", f"model.dtype={a.dtype}", "logger=csv", f"data.root={out / 'world'}",
            "data.n_per_category=8", "data.categories=[Shape]", f"data.limit={a.samples}",
            f"data.batch_size={a.samples}", "attribution.progress=false", f"attribution.rows_per_forward={a.rows}"]
    d = out / arch
    d.mkdir(parents=True, exist_ok=True)
    steps = []
    want = lambda name: not a.only or name in a.only  # noqa: E731

    def step(name, argv, log):  # recorded (a failed one too) before its outputs are checked
        rec = report.add(run_step(name, argv, log), arch=arch, model=model)
        if rec["returncode"] != 0:
            raise SystemExit(f"step {name!r} failed (exit {rec['returncode']}); the end of {log}:\n{log.read_text()[-4000:]}")
        steps.append(rec)

    heads = d / "heads-exact"
    if want("heads"):
        step("heads exact", ["analyze.py", "heads", *base, f"out_dir={heads}"], d / "heads-exact.log")
        res = json.loads((heads / "head_scores.json").read_text())
        L, H = res["num_layers"], res["num_heads"]
        if len(res["signed"]) != L or len(res["signed"][0]) != H or res["answer_definition"] != "project":
            raise SystemExit(f"{heads}/head_scores.json: unexpected shape or definition")
    est = d / "heads-atp"
    if want("atp"):
        step("heads atp + rescore", ["analyze.py", "heads", *base, "attribution.method=atp",
                                     "attribution.rescore_top_k=2", f"out_dir={est}"], d / "heads-atp.log")
        if json.loads((est / "head_scores.json").read_text())["method"] != "atp+exact_topk":
            raise SystemExit(f"{est}/head_scores.json: not an atp+exact_topk result")
    train = d / "train"
    if want("train"):
        # train / val / test splits of the category's first --train-samples questions
        step("train (saved head scores)", [
            "train.py", *[x for x in base if not x.startswith(("data.limit", "data.batch_size"))],
            f"data.limit={a.train_samples}", "data.batch_size=4", f"modulation.head_scores={heads / 'head_scores.json'}",
            "modulation.methods=[none,learned]", "modulation.k_pos=2", "modulation.k_neg=2",
            f"trainer.max_steps={a.steps}", "trainer.max_epochs=1", "trainer.accelerator=cpu",
            *([f"trainer.precision={a.precision}"] if a.precision else []), f"out_dir={train}"], d / "train.log")
        summary = json.loads((train / "summary.json").read_text())
        if summary["head_scores"]["source"] == "computed" or not (train / "modulation.safetensors").exists():
            raise SystemExit(f"{train}: the head-score file was not used or no modulation was saved")
    ev = d / "eval"
    if want("eval"):
        # a world of its own (another seed): eval refuses the samples the modulation was trained on
        held_out = [x for x in base if not x.startswith("data.root=")] + [f"data.root={out / 'world-eval'}",
                                                                           "data.world_seed=1"]
        step("eval (modulated)", ["analyze.py", "eval", *held_out,
                                  f"eval.checkpoint={train / 'modulation.safetensors'}", f"out_dir={ev}"],
             d / "eval.log")
        if set(json.loads((ev / "eval_results.json").read_text())["results"]) != {"base", "modulated"}:
            raise SystemExit(f"{ev}/eval_results.json: expected a base and a modulated run")
    if want("trace") and has_trace():
        # the position groups (image, question, last) only, every pair: a random model has no effective edit
        step("trace (groups)", ["analyze.py", "trace", *base, "trace.tokenwise=false", "trace.effective_only=false",
                                "trace.limit=1", "trace.progress=false", f"trace.rows_per_forward={a.rows}",
                                f"out_dir={d / 'trace'}"], d / "trace.log")
    return steps


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="both", choices=["llava", "instructblip", "both"])
    ap.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    ap.add_argument("--precision", default=None, help="trainer.precision of the train step (default: the config's)")
    ap.add_argument("--samples", type=int, default=1, help="samples of the heads and eval steps")
    ap.add_argument("--train-samples", type=int, default=7, help="questions of the train step (split train/val/test)")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps of the train step")
    ap.add_argument("--rows", type=int, default=16, help="attribution.rows_per_forward")
    ap.add_argument("--out", default="runs/dress-rehearsal")
    ap.add_argument("--tiny", action="store_true", help="the tiny random models (a smoke run of the same steps)")
    ap.add_argument("--only", default="", help="comma-separated steps to run (heads, atp, train, eval, trace); the "
                                              "others' outputs must be in --out already; empty = all")
    a = ap.parse_args(argv)
    a.only = {x for x in a.only.split(",") if x}
    bad = a.only - {"heads", "atp", "train", "eval", "trace"}
    if bad:
        raise SystemExit(f"--only: unknown steps {sorted(bad)}")
    out = (ROOT / a.out).resolve() if not Path(a.out).is_absolute() else Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    archs = ["llava", "instructblip"] if a.arch == "both" else [a.arch]
    name = "dress_rehearsal.json" if not a.only else f"dress_rehearsal-{'-'.join(sorted(a.only))}.json"
    report = Report(out / name, a)
    steps = [s for arch in archs for s in rehearse(arch, a, out, report)]
    print(f"\n{'model':32}{'step':28}{'wall (s)':>10}{'peak RSS (GB)':>15}")
    for s in steps:
        print(f"{s['model']:32}{s['step']:28}{s['seconds']:10.1f}{s['peak_rss_gb']:15.2f}")
    report.write(complete=True)
    print(f"written: {report.path}")


if __name__ == "__main__":
    sys.exit(main())
