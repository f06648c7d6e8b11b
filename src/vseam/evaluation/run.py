"""``python analyze.py eval``: score a model on benchmark samples (organism, GQA-style subsets, POPE,
COCO-QA), without and with a saved modulation (``modulation.checkpoint``); results as JSON and in W&B.

Example (POPE, images from a COCO folder; a missing image is a counted skip):
``python analyze.py eval model=llava-1.5-7b data.format=pope data.annotations=[coco_pope_random.jsonl]
data.image_dir=/data/coco/val2014 modulation.checkpoint=runs/train/x/modulation.safetensors``
"""

from __future__ import annotations

import time
from pathlib import Path

from vseam.data.load import load_samples
from vseam.evaluation.score import evaluate
from vseam.interventions.checkpoint import load_modulation
from vseam.models import load_adapter
from vseam.utils.io import append_jsonl, write_json
from vseam.utils.tracking import Tracker
from vseam.world.write import ensure_world


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def run_eval(cfg) -> dict:
    out = Path(cfg.out_dir or "runs/eval/latest")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    adapter = load_adapter(cfg.model)
    mod_path = cfg.modulation.checkpoint
    mod = load_modulation(mod_path, adapter) if mod_path else None
    ensure_world(cfg.data)
    samples = load_samples(cfg.data)
    runs = {"base": None}
    if mod is not None:
        runs["modulated"] = mod
    results, preds = {}, []
    for name, m in runs.items():
        res = evaluate(adapter, samples, m, batch_size=int(cfg.data.batch_size), progress=True)
        results[name] = {**res.summary(), "skipped_samples": res.skipped}
        preds += [{"run": name, **r} for r in res.records]
    summary = {"model": adapter.name, "data": cfg.data.name, "format": cfg.data.format,
               "modulation": str(mod_path) if mod_path else None, "results": results,
               "seconds": round(time.time() - t0, 1)}
    write_json(out / "eval_results.json", summary)
    path = out / "eval_predictions.jsonl"
    if path.exists():
        path.unlink()
    append_jsonl(path, preds)
    for name, r in results.items():
        line = f"[{name}] n={r['n']} skipped={r['skipped']} accuracy={_fmt(r['accuracy'])}"
        for split, pm in r.get("pope", {}).items():
            line += f"\n  pope/{split}: " + " ".join(f"{k}={_fmt(v)}" for k, v in pm.items())
        print(line)
    print(f"written: {out / 'eval_results.json'}")
    _track(cfg, out, summary)
    return summary


def _track(cfg, out: Path, summary: dict) -> None:
    """Accuracy per run and category, POPE metrics and a per-category table to the tracker."""
    tracker = Tracker(cfg, out, "eval")
    metrics = {}
    rows = []
    for name, r in summary["results"].items():
        metrics[f"{name}/accuracy"] = r["accuracy"]
        metrics[f"{name}/skipped"] = r["skipped"]
        for g, v in r["by_category"].items():
            metrics[f"{name}/acc/{g}"] = v["acc"]
            rows.append([name, g, v["acc"], v["n"]])
        for split, pm in r.get("pope", {}).items():
            metrics.update({f"{name}/pope/{split}/{k}": v for k, v in pm.items()})
    tracker.log(metrics)
    tracker.table("by_category", ["run", "category", "accuracy", "n"], rows)
    tracker.summary(metrics)
    tracker.finish()
