"""``python analyze.py overlap`` and ``python analyze.py study``.

``overlap``: the cross-level overlap analysis and its claims (``vseam.study.overlap``) from one
head-attribution result's per-sample values (``head_scores.safetensors``), written as ``overlap.json`` +
``overlap.png``. ``study``: for each model of
``study.models`` (both organism architectures by default) head attribution with per-category scores,
the ablation study and the overlap analysis (and with ``study.trace=true`` causal tracing), into
``<out_dir>/<model>/{heads,ablate,overlap,trace}``, then
one report of the whole folder (``<out_dir>/report.html``) and ``study.json``, the verdicts in one file,
printed as a summary at the end.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SCHEMA = "vseam.overlap/2"


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
    """What the sample size allows, in one sentence: which categories enter each kind, and the tests' floors."""
    parts = []
    for kind, block in analysis["kinds"].items():
        cats = block["categories"]
        part = (f"{kind}: {len(cats)} of {len(block['counts'])} categories over {len(set(block['levels']))} levels "
                f"have >= {analysis['min_samples']} {block['stratum']} samples")
        if block["per_k"]:
            part += f"; the sample-level null's smallest p is {1 / (1 + analysis['n_permutations']):.2g}"
            reg = block["per_k"][0].get("regrouping")
            if reg:
                groupings = (f"{round(1 / reg['min_p'])} distinct groupings of these categories into levels"
                             if reg["exact"] else f"{reg['n_arrangements']} sampled groupings")
                part += f", the regrouping test has {groupings} (smallest p {reg['min_p']:.2g})"
        parts.append(part)
    return "; ".join(parts) + "."


def overlap_from_per_sample(values: Any, ks, *, min_samples: int, n_perm: int, n_boot: int, alpha: float,
                            seed: int) -> dict:
    """The overlap analysis of a sweep's per-sample values (``load_per_sample``: ids, prob, correct, ablated,
    each sample's category and level)."""
    from vseam.study.overlap import overlap_analysis

    level_of: dict[str, str] = {}
    for c, lv in zip(values.categories, values.levels):
        if c is not None and (c not in level_of or level_of[c] == "?"):
            level_of[c] = lv or "?"
    if len(level_of) < 2:
        raise ValueError(f"the head scores' samples come from {len(level_of)} categories; the overlap analysis needs "
                         f"at least 2")
    res = overlap_analysis(values.prob, values.correct, values.ablated, values.categories, level_of, list(ks),
                           min_samples=min_samples, n_perm=n_perm, n_boot=n_boot, alpha=alpha, seed=seed)
    res["power_note"] = power_note(res)
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
    from vseam.attribution.outputs import load_head_scores, load_per_sample
    from vseam.study.report import _png, overlap_figure
    from vseam.utils.io import write_bytes, write_json

    path = find_head_scores(cfg)
    if path is None:
        path = _heads(cfg, out / "heads")
    from vseam.study.ablation import language_heads

    scores = language_heads(load_head_scores(path), str(path))
    s = cfg.study
    res = overlap_from_per_sample(load_per_sample(path), s.overlap_k, min_samples=int(s.min_samples),
                                  n_perm=int(s.n_permutations), n_boot=int(s.n_bootstrap), alpha=float(s.alpha),
                                  seed=int(cfg.seed))
    res.update({"schema": SCHEMA, "head_scores": str(path), "model_id": scores.model,
                "dataset_id": scores.meta.get("dataset_id"), "method": scores.method})
    files = {"json": str(out / "overlap.json")}
    if any(b["per_k"] for b in res["kinds"].values()):
        files["figure"] = str(write_bytes(out / "overlap.png", _png(overlap_figure(res))))
    res["files"] = files
    write_json(out / "overlap.json", res)
    print(f"claims on {scores.model} ({scores.method} scores):", flush=True)
    for c in res["claims"]:
        print(f"- {c['sentence']}", flush=True)
    print(res["power_note"], flush=True)
    print(f"overlap of {len(scores.by_category)} categories' top-K head sets (K = {', '.join(map(str, res.get('ks', s.overlap_k)))}) "
          f"of {path}\nwritten: {files['json']}" + (f" and {files['figure']}" if "figure" in files else ""), flush=True)
    metrics = {}
    for kind, block in res["kinds"].items():
        for e in block["per_k"]:
            metrics[f"overlap/{kind}/k{e['k']}/within"] = e["within"]
            metrics[f"overlap/{kind}/k{e['k']}/across"] = e["across"]
    for c in res["claims"]:
        for d in c["per_k"]:
            metrics[f"overlap/{c['key']}/k{d['k']}/effect"] = d["effect"]
            metrics[f"overlap/{c['key']}/k{d['k']}/p"] = d["p"]
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
    summary = {"schema": "vseam.study/2", "models": {}, "command": "python analyze.py study"}
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
            "claims": [{k: c[k] for k in ("key", "verdict", "sentence", "per_k", "n")} for c in overlap["claims"]],
            "power_note": overlap.get("power_note"),
            "ablation_all": ablation["groups"]["all"], "seconds": round(time.time() - t0, 1)}
    rep = run_report(OmegaConf.merge(cfg, {"results_dir": str(out), "out_dir": str(out)}))
    summary["report"] = rep["html"]
    summary["missing_sections"] = [m["id"] for m in rep["missing"]]
    summary["seconds"] = round(time.time() - started, 1)
    write_json(out / "study.json", summary)
    print("\n".join(summary_lines(summary, float(cfg.study.alpha))), flush=True)
    print(f"study written to {out} ({summary['seconds']} s); report: {rep['html']}", flush=True)
    return summary


def summary_lines(summary: dict, alpha: float) -> list[str]:
    """The study's printed summary: per model the top-K sets against the random sets of the same K (all
    samples) and each claim's verdict with effect, CI, p (floor) at every K and the counts it rests on."""
    from vseam.study.overlap import _f, _p

    lines = [f"study summary (alpha {alpha}; every number in study.json and the report):"]
    for name, m in summary["models"].items():
        lines.append(f"{name}:")
        a = m["ablation_all"]
        for c in (a.get("conditions") or {}).values():
            vs = c.get("vs_random")
            if c["kind"] == "random" or not vs:
                continue
            rnd = a["random"][str(c["k"])]["accuracy"]
            lines.append(f"  remove top-{c['k']} {c['kind']}: accuracy {c['accuracy']:.3f} (baseline "
                         f"{a['baseline']['accuracy']:.3f}) vs {'all' if vs['exact'] else 'random'} {vs['n_trials']} "
                         f"{c['k']}-head sets {rnd['mean']:.3f} ± {rnd['std']:.3f}: rank {vs['rank']}, p={_p(vs['p'])} "
                         f"(floor {_p(vs['floor'])}{', exact' if vs['exact'] else ''})")
        for c in m["claims"]:
            per_k = "; ".join(f"K={d['k']} {_f(d['effect'])} [{_f((d['ci'] or [None, None])[0])}, "
                              f"{_f((d['ci'] or [None, None])[1])}] p={_p(d['p'])} (floor {_p(d['floor'])})"
                              for d in c["per_k"])
            lines.append(f"  {c['key']}: {c['verdict']}" + (f" (effect [95% CI] p: {per_k})" if per_k else "")
                         + "; n " + "; ".join(f"{kd}: " + ", ".join(f"{cat} {v}" for cat, v in cs.items())
                                              for kd, cs in c["n"].items()))
    return lines
