"""``python analyze.py overlap`` and ``python analyze.py study``.

``overlap``: the cross-level overlap analysis (``vseam.study.overlap``) of one head-attribution result's
per-category matrices, written as ``overlap.json`` + ``overlap.png``. ``study``: for each model of
``study.models`` (both organism architectures by default) head attribution with per-category scores,
the ablation study and the overlap analysis (and with ``study.trace=true`` causal tracing), into
``<out_dir>/<model>/{heads,ablate,overlap,trace}``, then
one report of the whole folder (``<out_dir>/report.html``) and ``study.json``, the verdicts in one file.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from vseam.attribution.scores import HeadScores

log = logging.getLogger(__name__)

SCHEMA = "vseam.overlap/1"


def find_head_scores(cfg: Any) -> Path | None:
    """``study.head_scores``, else the one ``head_scores.json`` under ``results_dir``; None if neither.
    Several under ``results_dir`` is an error naming them (say which with ``study.head_scores``)."""
    if cfg.study.head_scores:
        p = Path(cfg.study.head_scores)
        p = p / "head_scores.json" if p.is_dir() else p
        if not p.exists():
            raise FileNotFoundError(f"study.head_scores={cfg.study.head_scores}: {p} does not exist")
        return p
    if cfg.results_dir:
        from vseam.study.report import find_results

        found = find_results(cfg.results_dir)["heads"]
        if len(found) > 1:
            raise ValueError(f"results_dir={cfg.results_dir} holds {len(found)} head_scores.json files "
                             f"({', '.join(map(str, found))}); name one with study.head_scores=PATH")
        if not found:
            raise FileNotFoundError(f"results_dir={cfg.results_dir}: no head_scores.json in it")
        return found[0]
    return None


def power_note(analysis: dict) -> str:
    """What the sample size allows, in one sentence (the tests' floors)."""
    parts = []
    for kind, block in analysis["kinds"].items():
        e = block["per_k"][0]
        lab = e["label_permutation"]
        groupings = (f"{round(1 / lab['min_p'])} distinct groupings of the categories into levels" if lab["exact"]
                     else f"{lab['n_arrangements']} sampled arrangements")
        parts.append(f"{kind}: {len(e['categories'])} categories over {len(set(e['levels']))} levels, "
                     f"{block['num_heads']} heads; the label-permutation test has {groupings}, so its smallest "
                     f"possible p-value is {lab['min_p']:.3g}")
    note = "; ".join(parts) + "."
    n_heads = min(b["num_heads"] for b in analysis["kinds"].values())
    k_max = max(analysis["ks"])
    if k_max / n_heads > 0.25:
        note += (f" A top-{k_max} set is {k_max / n_heads:.0%} of the {n_heads} heads, so random sets overlap a lot "
                 f"by chance and the random-set test has little power at that K.")
    return note


def overlap_from_scores(scores: HeadScores, ks, n_perm: int, alpha: float, seed: int) -> dict:
    """The overlap analysis of the per-category blocks of ``scores``."""
    from vseam.study.overlap import overlap_analysis

    cats = scores.by_category
    if len(cats) < 2:
        raise ValueError(f"the head scores have {len(cats)} per-category blocks; the overlap analysis needs at "
                         f"least 2 categories (head_scores.json from before per-category scores? run heads again)")
    levels = {c: b.meta.get("level") or "?" for c, b in cats.items()}
    mats = {kind: {c: (None if b.matrices()[kind] is None else b.matrices()[kind].numpy()) for c, b in cats.items()}
            for kind in ("positive", "negative")}
    res = overlap_analysis(mats, levels, list(ks), n_perm=n_perm, alpha=alpha, seed=seed)
    res["power_note"] = power_note(res) if res["kinds"] else ""
    return res


def run_overlap(cfg: Any) -> dict:
    """``python analyze.py overlap [study.head_scores=PATH | results_dir=DIR]``: head scores from there,
    or computed into ``<out_dir>/heads`` when neither is given."""
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    validate(cfg, "overlap")
    with run_folder(cfg, "overlap") as out:
        return _overlap(cfg, Path(out))


def _overlap(cfg: Any, out: Path) -> dict:
    from vseam.attribution.outputs import load_head_scores
    from vseam.study.report import _png, overlap_figure
    from vseam.utils.io import write_bytes, write_json

    path = find_head_scores(cfg)
    if path is None:
        path = _heads(cfg, out / "heads")
    scores = load_head_scores(path)
    s = cfg.study
    res = overlap_from_scores(scores, s.overlap_k, int(s.n_permutations), float(s.alpha), int(cfg.seed))
    res.update({"schema": SCHEMA, "head_scores": str(path), "model_id": scores.model,
                "dataset_id": scores.meta.get("dataset_id"), "method": scores.method})
    files = {"json": str(out / "overlap.json")}
    if res["kinds"]:
        files["figure"] = str(write_bytes(out / "overlap.png", _png(overlap_figure(res))))
    res["files"] = files
    write_json(out / "overlap.json", res)
    for c in res["claims"]:
        print(c["sentence"], flush=True)
    print(f"overlap of {len(scores.by_category)} categories' top-K head sets (K = {', '.join(map(str, res.get('ks', s.overlap_k)))}) "
          f"of {path}\nwritten: {files['json']}" + (f" and {files['figure']}" if "figure" in files else ""), flush=True)
    metrics = {}
    for kind, block in res["kinds"].items():
        for e in block["per_k"]:
            for key in ("within", "across", "p_within", "p_across"):
                metrics[f"overlap/{kind}/k{e['k']}/{key}"] = e["random_sets"][key]
            metrics[f"overlap/{kind}/k{e['k']}/label_p"] = e["label_permutation"]["p"]
    from vseam.utils.tracking import log_analysis

    log_analysis(cfg, out, "overlap", metrics, {k: v for k, v in files.items() if k == "figure"})
    return res


def _heads(cfg: Any, out: Path) -> Path:
    """Run head attribution (per-category blocks included) into ``out`` unless it is there already."""
    from omegaconf import OmegaConf

    if not (out / "head_scores.json").exists():
        from vseam.attribution.run import run_heads

        run_heads(OmegaConf.merge(cfg, {"out_dir": str(out)}))
    return out / "head_scores.json"


def run_study(cfg: Any) -> dict:
    """``python analyze.py study``: heads per category, ablation, overlap for each of ``study.models``,
    then the report. Each step is skipped when its result is already in ``out_dir`` (and the ablation
    resumes chunk by chunk), so a killed study continues with the same command."""
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    validate(cfg, "study")  # every model of study.models has its config file; before anything loads
    with run_folder(cfg, "study") as out:
        return _study(cfg, Path(out))


def _study(cfg: Any, out: Path) -> dict:
    from omegaconf import OmegaConf

    from vseam.config import CONFIG_DIR
    from vseam.study.ablation import run_ablate
    from vseam.study.report import run_report
    from vseam.utils.io import write_json

    started = time.time()
    summary = {"schema": "vseam.study/1", "models": {}, "command": "python analyze.py study"}
    for name in cfg.study.models:
        mcfg = OmegaConf.merge(cfg, {"model": OmegaConf.load(CONFIG_DIR / "model" / f"{name}.yaml")})
        base = out / name
        t0 = time.time()
        heads = _heads(OmegaConf.merge(mcfg, {"out_dir": str(base / "heads")}), base / "heads")
        ablation = run_ablate(OmegaConf.merge(mcfg, {"out_dir": str(base / "ablate"),
                                                     "study": {"head_scores": str(heads)}}))
        overlap = run_overlap(OmegaConf.merge(mcfg, {"out_dir": str(base / "overlap"),
                                                     "study": {"head_scores": str(heads)}}))
        if cfg.study.trace:
            from vseam.tracing.run import run_trace

            run_trace(OmegaConf.merge(mcfg, {"out_dir": str(base / "trace")}))
        summary["models"][name] = {
            "head_scores": str(heads), "ablation": str(base / "ablate" / "ablation.json"),
            "overlap": str(base / "overlap" / "overlap.json"),
            "claims": [{k: c[k] for k in ("key", "verdict", "sentence")} for c in overlap["claims"]],
            "power_note": overlap.get("power_note"),
            "ablation_all": ablation["groups"]["all"], "seconds": round(time.time() - t0, 1)}
    rep = run_report(OmegaConf.merge(cfg, {"results_dir": str(out), "out_dir": str(out)}))
    summary["report"] = rep["html"]
    summary["missing_sections"] = [m["id"] for m in rep["missing"]]
    summary["seconds"] = round(time.time() - started, 1)
    write_json(out / "study.json", summary)
    print(f"study written to {out} ({summary['seconds']} s); report: {rep['html']}", flush=True)
    return summary
