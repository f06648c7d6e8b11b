"""``python analyze.py eval``: score a model on benchmark samples (organism, GQA-style subsets, POPE,
COCO-QA), without and with a saved modulation (``eval.checkpoint``) or one of the field's methods
(``eval.method``, built by ``vseam.modulation.apply``, which hands ``run_eval`` its ``build``); results as JSON
and in W&B.

Example (POPE, images from a COCO folder; a missing image is a counted skip):
``python analyze.py eval model=llava-1.5-7b data.format=pope data.annotations=[coco_pope_random.jsonl]
data.image_dir=/data/coco/val2014 eval.checkpoint=runs/train/x/modulation.safetensors``
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from vseam.data.load import load_samples
from vseam.data.skips import check_skips, missing_images, model_skips
from vseam.evaluation.metrics import accuracy_interval, paired_by_group
from vseam.evaluation.score import evaluate
from vseam.interventions.checkpoint import load_modulation, seen_samples
from vseam.models import load_adapter
from vseam.utils.devices import torch_device
from vseam.utils.io import append_jsonl, write_json
from vseam.utils.tracking import Tracker
from vseam.world.write import ensure_world


class OverlapError(ValueError):
    """The evaluation set holds samples the modulation was trained or selected on."""


def check_overlap(seen: dict | None, what: str, samples, allow: bool) -> dict:
    """How many of ``samples`` the saved ``what`` (a modulation, a method's file) was trained / selected /
    estimated on (``seen``: split -> content keys, as the file records them; None: it records none); refused
    unless ``allow`` (``eval.allow_overlap=true``), then warned here and recorded in ``eval_results.json``."""
    from vseam.data.sample import sample_key

    if seen is None:
        msg = (f"{what} does not record the samples it was trained and selected on, so an "
               f"overlap with this evaluation set cannot be ruled out")
        if not allow:
            raise OverlapError(f"{msg}; set eval.allow_overlap=true to evaluate it anyway")
        print(f"WARNING: {msg}", flush=True)
        return {"known": False, "warning": msg}
    keys = {k: set(v) for k, v in seen.items()}
    hits = {k: sum(sample_key(s) in keys[k] for s in samples) for k in keys}
    n = sum(hits.values())
    out = {"known": True, "n_eval": len(samples), **{f"n_in_{k}": v for k, v in hits.items()}}
    if n:
        msg = (f"{n} of the {len(samples)} evaluation samples are ones {what} was trained "
               f"({hits.get('train', 0)}) or selected ({hits.get('val', 0)}) on: its accuracy on them is not held-out")
        if not allow:
            raise OverlapError(f"{msg}. Evaluate on a disjoint set (the default data of eval, data=organism-pope-heldout, "
                               f"is one for train.py's default pool; data=organism-heldout for data=organism), or set eval.allow_overlap=true to score it anyway")
        print(f"WARNING: {msg} (eval.allow_overlap=true)", flush=True)
        out["warning"] = msg
    return out


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def run_stats(records: dict[str, list[dict]], seed: int) -> dict:
    """Each run's accuracy with its bootstrap interval over questions and, with a modulation (or a method), the
    modulated run against the base model on the same questions (exact McNemar, paired bootstrap interval of the
    difference), overall, per level and per POPE split: ``eval_results.json``'s ``stats``."""
    out = {"interval": f"percentile bootstrap over questions, 95%, 2000 resamples, seed {seed}",
           "accuracy": {name: accuracy_interval(r, seed=seed) for name, r in records.items()}}
    if "modulated" in records:  # overall, per level and per POPE split
        out["modulated_vs_base"] = paired_by_group(records["modulated"], records["base"], seed=seed,
                                                   names=("modulated", "base"))
    return out


def run_eval(cfg, build: Callable | None = None) -> dict:
    """``analyze.py eval``; ``build(cfg, adapter)`` makes the method ``eval.method`` names (``modulation.apply``): an
    object whose ``scoring(adapter)`` gives the keywords of ``evaluate`` that score with it, ``summary()`` its
    facts and ``extra["seen"]`` (with ``eval.checkpoint``) the samples it was estimated on."""
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    validate(cfg, "eval")
    if str(cfg.eval.method) != "none" and build is None:
        raise ValueError(f"eval.method={cfg.eval.method}: run it through vseam.modulation.apply.run_eval "
                         f"(python analyze.py eval), which builds the method")
    with run_folder(cfg, "eval") as out:  # refused when it holds another run's results
        return _eval(cfg, out, build)


def _eval(cfg, out: Path, build: Callable | None = None) -> dict:
    t0 = time.time()
    ensure_world(cfg.data)
    all_samples = load_samples(cfg.data)
    max_skip = float(cfg.data.max_skip_fraction)
    check_skips(len(all_samples), missing_images(all_samples), max_skip, "eval")  # before the model loads
    adapter = load_adapter(cfg.model, device=torch_device(cfg.trainer.accelerator, cfg.trainer.devices))
    mod_path = cfg.eval.checkpoint
    method, applied = str(cfg.eval.method), None
    runs: dict[str, dict] = {"base": {}}  # each run's keywords of evaluate
    if build is not None:  # a field method, from its hyperparameters or its file (eval.checkpoint)
        applied = build(cfg, adapter)  # scored as every consumer scores it: its scoring keywords
        runs["modulated"] = applied.scoring(adapter)
        overlap = check_overlap(applied.extra.get("seen"), f"{method} file {mod_path}", all_samples,
                                bool(cfg.eval.allow_overlap)) if mod_path else None
    else:
        if mod_path:
            runs["modulated"] = {"modulation": load_modulation(mod_path, adapter,
                                                               allow_other_model=bool(cfg.modulation.allow_other_model))}
        overlap = check_overlap(seen_samples(mod_path), f"modulation {mod_path}", all_samples,
                                bool(cfg.eval.allow_overlap)) if mod_path else None
    screen = model_skips(adapter, all_samples)
    samples, answer_skipped = screen.kept, screen.skipped
    screen.say("eval")
    results, preds = {}, []
    for name, kw in runs.items():
        res = evaluate(adapter, samples, **kw, batch_size=int(cfg.data.batch_size), progress=True)
        res.skipped = answer_skipped + res.skipped
        check_skips(len(all_samples), res.skipped, max_skip, "eval")
        results[name] = {**res.summary(), "skipped_samples": res.skipped}
        preds += [{"run": name, **r} for r in res.records]
    summary = {"model": adapter.name, "answer_definition": adapter.answer_definition,
               "prompt_template": adapter.template, "data": cfg.data.name, "format": cfg.data.format,
               "modulation": str(mod_path) if mod_path else None,
               "method": method if applied is not None else ("learned" if mod_path else "none"),
               **({"method_info": {k: v for k, v in applied.summary().items() if k != "seen"}} if applied else {}),
               "overlap_with_training": overlap, "results": results,
               "stats": run_stats({name: [p for p in preds if p["run"] == name] for name in runs}, int(cfg.seed)),
               **screen.report(),
               "seconds": round(time.time() - t0, 1)}
    write_json(out / "eval_results.json", summary)
    path = out / "eval_predictions.jsonl"
    if path.exists():
        path.unlink()
    append_jsonl(path, preds)
    for name, r in results.items():
        acc = summary["stats"]["accuracy"][name]
        ci = f" (95% CI {acc['ci'][0]:.4f}-{acc['ci'][1]:.4f})" if acc.get("ci") else ""
        line = f"[{name}] n={r['n']} skipped={r['skipped']} accuracy={_fmt(r['accuracy'])}{ci}"
        for split, pm in r.get("pope", {}).items():
            line += f"\n  pope/{split}: " + " ".join(f"{k}={_fmt(v)}" for k, v in pm.items())
        print(line)
    paired = summary["stats"].get("modulated_vs_base")
    if paired:
        print(f"[modulated ({summary['method']}) vs base] same {paired['n']} questions: fixed {paired['a_only']}, broken {paired['b_only']}, "
              f"accuracy {paired['diff']:+.4f} (95% CI {paired['ci'][0]:+.4f} to {paired['ci'][1]:+.4f}), "
              f"exact McNemar p = {paired['p']:.3g}")
        for kind in ("by_level", "by_pope_split"):
            for g, c in paired.get(kind, {}).items():
                print(f"  {g}: n={c['n']} fixed {c['a_only']}, broken {c['b_only']}, accuracy {c['diff']:+.4f}, "
                      f"exact McNemar p = {c['p']:.3g}")
    if overlap and overlap.get("warning"):
        print(f"WARNING: not held-out: {overlap['warning']}")
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
        for lv, v in r["by_level"].items():  # object / attribute / relation, the paper's three levels
            metrics[f"{name}/acc_level/{lv}"] = v["acc"]
        for split, pm in r.get("pope", {}).items():
            metrics.update({f"{name}/pope/{split}/{k}": v for k, v in pm.items()})
    st = summary["stats"]
    for name, acc in st["accuracy"].items():
        if acc.get("ci"):
            metrics.update({f"{name}/accuracy_ci_low": acc["ci"][0], f"{name}/accuracy_ci_high": acc["ci"][1]})
    if "modulated_vs_base" in st:
        c = st["modulated_vs_base"]
        metrics.update({"modulated_vs_base/fixed": c["a_only"], "modulated_vs_base/broken": c["b_only"],
                        "modulated_vs_base/diff": c["diff"], "modulated_vs_base/mcnemar_p": c["p"],
                        "modulated_vs_base/diff_ci_low": c["ci"][0], "modulated_vs_base/diff_ci_high": c["ci"][1]})
        for kind in ("by_level", "by_pope_split"):
            for g, cg in c.get(kind, {}).items():
                metrics.update({f"modulated_vs_base/{g}/diff": cg["diff"], f"modulated_vs_base/{g}/mcnemar_p": cg["p"]})
    metrics = {k: v for k, v in metrics.items() if v is not None}  # e.g. the AUROC of a split of one class
    tracker.log(metrics)
    tracker.table("by_category", ["run", "category", "accuracy", "n"], rows)
    tracker.summary(metrics)
    tracker.finish()
