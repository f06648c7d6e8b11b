"""What ``train.py`` writes and prints: each method's row, the statistics computed from the per-question
results (``stats`` of ``summary.json``), the printed tables, ``summary.json`` / ``table.txt`` /
``predictions.jsonl`` / ``modulation.safetensors``, the tracker's tables, and each finished method's
result kept under ``<out_dir>/methods/`` so that a resumed run reuses it instead of training it again.

The statistics (``comparison_stats``): the test accuracy of every method with its percentile bootstrap
interval over test questions; every row against the frozen model (``vs_none``) and the learned row against
every other (``vs_learned``) on the same questions (exact McNemar p, questions only one of the two gets
right, the paired difference with its paired SE and paired bootstrap interval), overall, per semantic level
and per POPE split; the key heads' rank among the random-head draws with its permutation p
(``draws.random_control``). Intervals: 95%, 2000 resamples, seeded by ``seed``. Each row also says what the
method changes and its cost, in forward passes per question (``changes``, ``cost``).
"""

from __future__ import annotations

import json
from pathlib import Path

from vseam.attribution.outputs import scores_to_dict
from vseam.attribution.scores import HeadScores
from vseam.data.sample import sample_key
from vseam.evaluation.metrics import accuracy_interval, paired_by_group
from vseam.evaluation.score import EvalResult
from vseam.interventions.checkpoint import read_modulation, save_modulation
from vseam.modulation.draws import draws_row, random_control
from vseam.modulation.job import Job, Outcome, say
from vseam.utils.io import append_jsonl, write_json, write_text
from vseam.utils.ranks import is_rank_zero
from vseam.utils.tracking import Tracker

LEVEL_ORDER = ("object", "attribute", "relation")
POPE_SPLITS = ("random", "popular", "adversarial")
ALPHA = 0.05  # the level at which the printed comparisons say "better" / "worse"
N_BOOT, LEVEL = 2000, 0.95  # bootstrap resamples and interval level of every printed interval


# ------------------------------------------------------------------------------------- rows and stats
def method_row(outcome: Outcome) -> dict:
    """A method's row of ``summary.json``: test accuracy (overall, per level and category, POPE metrics),
    validation accuracy, trainable parameters and the method's own fields; the random control's row is
    the mean over its draws."""
    if outcome.draws is not None:
        return {**draws_row(outcome.draws["draws"], outcome.trainable), **outcome.extra}
    s = outcome.test.summary()
    return {"test": {"accuracy": s["accuracy"], "n": s["n"], "skipped": s["skipped"],
                     "by_level": {k: v["acc"] for k, v in s["by_level"].items()},
                     "by_category": {k: v["acc"] for k, v in s["by_category"].items()},
                     **({"pope": s["pope"]} if "pope" in s else {})},
            "val_accuracy": outcome.val.summary()["accuracy"], "trainable_params": int(outcome.trainable),
            **outcome.extra}


def comparison_stats(evals: dict[str, EvalResult], draws: dict | None, seed: int) -> dict:
    """The statistics of ``summary.json``: per method its test accuracy with a bootstrap interval; every method
    against the frozen model (``vs_none``: A = the method) and the learned method against every other
    (``vs_learned``: A = learned), each overall, per level and per POPE split (``paired_by_group``); the key
    heads against the random draws (``draws.random_control``)."""
    out: dict = {"interval": f"percentile bootstrap over test questions, {LEVEL:.0%}, {N_BOOT} resamples, seed {seed}",
                 "alpha": ALPHA,
                 "accuracy": {m: accuracy_interval(e.records, seed=seed, n_boot=N_BOOT, level=LEVEL)
                              for m, e in evals.items()}}
    if "none" in evals:
        out["vs_none"] = {m: paired_by_group(e.records, evals["none"].records, seed=seed, n_boot=N_BOOT, level=LEVEL,
                                             names=(m, "none")) for m, e in evals.items() if m != "none"}
    if "learned" in evals:
        out["vs_learned"] = {m: paired_by_group(evals["learned"].records, e.records, seed=seed, n_boot=N_BOOT,
                                                level=LEVEL, names=("learned", m)) for m, e in evals.items() if m != "learned"}
        if draws is not None:
            out["random_heads"] = random_control(evals["learned"], draws["draws"], exact=draws["exact"], alpha=ALPHA)
    return out


# ------------------------------------------------------------------------------------------- printing
def _fmt(x: float | None, digits: int = 3, missing: str = "  -  ") -> str:
    """An accuracy for the console: ``digits`` places, ``missing`` where there is none (empty split)."""
    return f"{x:.{digits}f}" if isinstance(x, float) else missing


def _p(p: float | None) -> str:
    return "  -  " if p is None else f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _columns(methods: dict[str, dict]) -> tuple[list[str], list[str]]:
    levels = [lv for lv in LEVEL_ORDER if any(lv in m["test"]["by_level"] for m in methods.values())]
    pope = [s for s in POPE_SPLITS if any(s in m["test"].get("by_category", {}) for m in methods.values())]
    return levels, pope


def format_table(methods: dict[str, dict], total_params: int, stats: dict | None = None) -> str:
    """The printed comparison: one row per method (trainable parameters, val / test accuracy with its 95%
    bootstrap interval, test accuracy per level and POPE split); then the learned row against every other
    on the same questions (fixed / broken, paired difference with its interval, exact McNemar p); the key
    heads against the random draws; POPE's threshold-free figures (AUROC of the yes-vs-no margin,
    accuracy at a yes-ratio of 0.5)."""
    stats = stats or {}
    levels, pope = _columns(methods)
    head = f"{'method':<10} {'trainable':>10} {'% of model':>10} {'fwd/q':>5} {'val acc':>8} {'test acc':>8} " \
        f"{'95% CI':>12} " + " ".join(f"{lv:>9}" for lv in levels) + "".join(f" {'pope-' + s[0]:>7}" for s in pope)
    lines = [head, "-" * len(head)]
    for name, m in methods.items():
        pct = 100.0 * m["trainable_params"] / max(1, total_params)
        if "mean_of_draws" in m:  # the random control: the draws' mean, and the central 95% of the draws
            rh = stats.get("random_heads", {})
            ci = f"{rh['q025']:.3f}-{rh['q975']:.3f}*" if rh else ""
        else:
            acc = stats.get("accuracy", {}).get(name, {})
            ci = f"{acc['ci'][0]:.3f}-{acc['ci'][1]:.3f}" if acc.get("ci") else ""
        passes = (m.get("cost") or {}).get("forward_passes")
        lines.append(f"{name:<10} {m['trainable_params']:>10,d} {pct:>9.4f}% {passes if passes else '-':>5} "
                     f"{_fmt(m['val_accuracy']):>8} "
                     f"{_fmt(m['test']['accuracy']):>8} {ci:>12} " +
                     " ".join(f"{_fmt(m['test']['by_level'].get(lv)):>9}" for lv in levels) +
                     "".join(f" {_fmt(m['test']['by_category'].get(s)):>7}" for s in pope))
    if "random" in methods and "mean_of_draws" in methods["random"]:
        lines.append(f"* random: the mean of {methods['random']['mean_of_draws']} draws; its interval is the central "
                     f"95% of the draws' test accuracies, not a CI")
    lines.append("fwd/q: forward passes of the language model per test question")
    lines += _changes_lines(methods)
    lines += _paired_lines(methods, stats)
    lines += _vs_none_lines(methods, stats)
    lines += _pope_lines(methods, pope)
    return "\n".join(lines)


def _changes_lines(methods: dict[str, dict]) -> list[str]:
    """What each method changes, and what it costs besides its forward passes (vision passes, setup)."""
    rows = [(n, m) for n, m in methods.items() if m.get("changes")]
    if not rows:
        return []
    lines = ["", "what each method changes (and its cost beyond one forward pass per question):"]
    for name, m in rows:
        cost = m.get("cost") or {}
        more = [f"{cost['vision_passes']} vision passes" if cost.get("vision_passes", 1) != 1 else "",
                cost.get("note") or "", cost.get("setup") or ""]
        more = "; ".join(x for x in more if x)
        lines.append(f"{name:<10} {m['changes']}" + (f" [{more}]" if more else ""))
    return lines


def _group_cells(c: dict, levels: list[str], splits: list[str]) -> str:
    """``diff (p)`` of a paired comparison within each level and POPE split."""
    cells = []
    for kind, keys in (("by_level", levels), ("by_pope_split", splits)):
        for k in keys:
            g = (c.get(kind) or {}).get(k)
            cells.append(f"{g['diff']:+.3f} ({_p(g['p'])})" if g and g.get("diff") is not None else "  -  ")
    return " ".join(f"{x:>16}" for x in cells)


def _group_head(stats: dict, key: str) -> tuple[list[str], list[str], str]:
    comps = list((stats.get(key) or {}).values())
    levels = [lv for lv in LEVEL_ORDER if any(lv in (c.get("by_level") or {}) for c in comps)]
    splits = [s for s in POPE_SPLITS if any(s in (c.get("by_pope_split") or {}) for c in comps)]
    return levels, splits, " ".join(f"{x:>16}" for x in levels + [f"pope-{s}" for s in splits])


def _vs_none_lines(methods: dict[str, dict], stats: dict) -> list[str]:
    """Every method against the frozen model on the same questions: overall and per level / POPE split."""
    vs = stats.get("vs_none")
    if not vs:
        return []
    levels, splits, groups = _group_head(stats, "vs_none")
    head = f"{'vs frozen':<10} {'fixed':>6} {'broken':>6}  {'diff (95% CI)':<26} {'McNemar p':>9}  {'verdict':<20} {groups}"
    lines = ["", head, "-" * len(head)]
    for name, c in vs.items():
        diff = f"{c['diff']:+.3f} ({c['ci'][0]:+.3f}, {c['ci'][1]:+.3f})" if c.get("ci") else "  -  "
        verdict = ("better" if c["a_only"] > c["b_only"] else "worse") if c["p"] < ALPHA else "no sig. difference"
        lines.append(f"{name:<10} {c['a_only']:>6} {c['b_only']:>6}  {diff:<26} {_p(c['p']):>9}  {verdict:<20} "
                     f"{_group_cells(c, levels, splits)}")
    lines.append("fixed / broken: questions the method gets right / wrong that the frozen model gets wrong / right; "
                 "per level and POPE split: diff (exact McNemar p)")
    return lines


def _paired_lines(methods: dict[str, dict], stats: dict) -> list[str]:
    vs, rh = stats.get("vs_learned"), stats.get("random_heads")
    if not vs and not rh:
        return []
    levels, splits, groups = _group_head(stats, "vs_learned")
    head = f"{'learned vs':<10} {'fixed':>6} {'broken':>6}  {'diff (95% CI)':<26} {'McNemar p':>9}  verdict (p < {ALPHA})"
    lines = ["", head, "-" * len(head)]
    group_lines = []
    for name, c in (vs or {}).items():
        if levels or splits:
            group_lines.append(f"{name:<10} {_group_cells(c, levels, splits)}")
        diff = f"{c['diff']:+.3f} ({c['ci'][0]:+.3f}, {c['ci'][1]:+.3f})" if c.get("ci") else "  -  "
        better = c["p"] < ALPHA and c["a_only"] > c["b_only"]
        worse = c["p"] < ALPHA and c["b_only"] > c["a_only"]
        verdict = "learned better" if better else "learned worse" if worse else "no significant difference"
        if name == "bias" and not better:
            verdict += ": the key heads do not beat the bias-only baseline"  # said in the table (issue 21)
        lines.append(f"{name:<10} {c['a_only']:>6} {c['b_only']:>6}  {diff:<26} {_p(c['p']):>9}  {verdict}")
    if group_lines:
        head = f"{'learned vs':<10} {groups}   (per level and POPE split: diff (exact McNemar p))"
        lines += ["", head, "-" * len(head), *group_lines]
    if rh:
        kind = "every other set" if rh["exact"] else "random sets"
        sd = f", sd {rh['sd']:.3f}" if rh.get("sd") is not None else ""
        verdict = ("the key heads beat the random heads" if rh["p"] < ALPHA else
                   "the key heads do not beat the random heads (undecided)")
        lines += [f"{'random':<10} {rh['n_draws']} draws ({kind} of {rh['k']} heads, each trained as the key heads): "
                  f"test acc mean {rh['mean']:.3f}{sd}, median {rh['median']:.3f}, range {rh['min']:.3f}-{rh['max']:.3f}",
                  f"{'':<10} key heads {rh['learned_accuracy']:.3f}: rank {rh['rank']} of {rh['n_draws'] + 1}, "
                  f"{rh['n_at_least']} draws at least as accurate, permutation p = {_p(rh['p'])} (floor "
                  f"{_p(rh['p_floor'])}): {verdict}",
                  f"{'':<10} McNemar against each draw: learned better than {rh['learned_better']}, worse than "
                  f"{rh['learned_worse']} of {rh['n_draws']} (p < {ALPHA} each)"]
    return lines


def _pope_lines(methods: dict[str, dict], pope: list[str]) -> list[str]:
    have = [s for s in pope if any(s in m["test"].get("pope", {}) for m in methods.values())]
    if not have:
        return []
    head = f"{'POPE test':<10} " + " ".join(f"{'f1-' + s[0]:>7}" for s in have) + " " + \
        " ".join(f"{'auroc-' + s[0]:>8}" for s in have) + " " + \
        " ".join(f"{'bal-' + s[0]:>7}" for s in have) + " " + " ".join(f"{'yes-' + s[0]:>7}" for s in have)
    lines = ["", head, "-" * len(head)]
    for name, m in methods.items():
        p = m["test"].get("pope", {})
        get = lambda s, k, p=p: p.get(s, {}).get(k)  # noqa: E731
        lines.append(f"{name:<10} " + " ".join(f"{_fmt(get(s, 'f1')):>7}" for s in have) + " " +
                     " ".join(f"{_fmt(get(s, 'auroc')):>8}" for s in have) + " " +
                     " ".join(f"{_fmt(get(s, 'acc_at_balanced')):>7}" for s in have) + " " +
                     " ".join(f"{_fmt(get(s, 'yes_ratio')):>7}" for s in have))
    lines.append("f1: of yes as the positive class; auroc: of the yes-vs-no margin (threshold-free); bal: accuracy at "
                 "a yes-ratio of 0.5; yes: the yes-ratio of the answers")
    return lines


# ---------------------------------------------------------------------------- finished methods (resume)
def _method_path(out: Path, method: str) -> Path:
    return out / "methods" / f"{method}.json"


def save_outcome(job: Job, method: str, outcome: Outcome) -> None:
    """Keep a finished method's result in the run folder (``methods/<method>.json``, the learned
    modulation beside it), so that a resumed run (same command, same config) reuses it."""
    if not is_rank_zero():
        return
    path = _method_path(job.out, method)
    payload = {"method": method, "trainable": int(outcome.trainable), "extra": outcome.extra, "draws": outcome.draws,
               **{k: None if r is None else {"records": r.records, "skipped": r.skipped}
                  for k, r in (("test", outcome.test), ("val", outcome.val))},
               "modulation": None}
    if outcome.modulation is not None:
        a = job.adapter
        mod_path = save_modulation(path.with_suffix(".safetensors"), outcome.modulation, model=a.name,
                                   num_layers=a.num_layers, num_heads=a.num_heads, identity=a.identity)
        payload["modulation"] = mod_path.name
    write_json(path, payload)


def load_outcome(job: Job, method: str) -> Outcome | None:
    """The result a stopped run kept for ``method`` (``save_outcome``), None when it has none."""
    path = _method_path(job.out, method)
    if not path.exists():
        return None
    saved = json.loads(path.read_text())
    res = {k: None if saved[k] is None else EvalResult(saved[k]["records"], saved[k]["skipped"]) for k in ("test", "val")}
    mod = None
    if saved.get("modulation"):
        mod = read_modulation(path.parent / saved["modulation"])[0].to(job.adapter.device)
    say(f"[{method}] reusing its result from {path} (finished before the run was stopped)")
    return Outcome(res["test"], res["val"], int(saved["trainable"]), saved["extra"], mod, saved.get("draws"))


# ------------------------------------------------------------------------------------------- files
def write_results(job: Job, summary: dict, outcomes: dict[str, Outcome], learned) -> None:
    """Rank 0: ``modulation.safetensors`` (the learned method), ``head_scores_used.json``, ``summary.json``,
    ``table.txt``, ``predictions.jsonl``, ``random_draws.json``; print the table; log the tables."""
    cfg, out, adapter, splits, results = job.cfg, job.out, job.adapter, job.splits, summary["methods"]
    table = format_table(results, job.total_params, summary.get("stats"))
    out.mkdir(parents=True, exist_ok=True)
    if learned is not None:
        path = save_modulation(out / "modulation.safetensors", learned, model=adapter.name,
                               num_layers=adapter.num_layers, num_heads=adapter.num_heads,
                               identity=adapter.identity,
                               extra={"data": cfg.data.name, "test_accuracy": results["learned"]["test"]["accuracy"],
                                      # what it was trained and selected on: eval refuses an overlap with these
                                      "seen": {k: [sample_key(x) for x in splits[k]] for k in ("train", "val")},
                                      "seen_ids": {k: [x.id for x in splits[k]] for k in ("train", "val")}})
        summary["modulation_file"] = str(path)
    if job.scores is not None:
        write_json(out / "head_scores_used.json", scores_to_dict(job.scores))
    draws = next((o.draws for o in outcomes.values() if o.draws is not None), None)
    if draws is not None:
        write_json(out / "random_draws.json", draws)
    write_json(out / "summary.json", summary)
    write_text(out / "table.txt", table + "\n")
    _write_predictions(out, {m: o.test for m, o in outcomes.items() if o.test is not None})
    print("\n" + table + f"\n\nwritten: {out / 'summary.json'} ({summary['seconds']} s)", flush=True)
    if learned is not None:
        print(f"evaluate it on held-out data: {eval_command(cfg, out / 'modulation.safetensors')}", flush=True)
    _log_tables(job.tracker, results, summary.get("stats", {}), outcomes, out, artifact=bool(cfg.logger.artifact))


def eval_command(cfg, modulation_file: Path) -> str:
    """The ``analyze.py eval`` command for a saved modulation: the same model, on the held-out twin of
    this run's organism data (``configs/data/<name>-heldout.yaml``: another world seed, disjoint
    images and questions); other data: a placeholder the user must fill with a disjoint set."""
    from vseam.config import CONFIG_DIR

    name = str(cfg.model.name)
    model = f"model={name}" if (CONFIG_DIR / "model" / f"{name}.yaml").exists() else f"model.path={cfg.model.path}"
    heldout = f"{cfg.data.name}-heldout"
    data = (f" data={heldout}" if cfg.data.format == "organism" and (CONFIG_DIR / "data" / f"{heldout}.yaml").exists()
            else " data=<a set disjoint from the train / val split>")
    return f"python analyze.py eval {model}{data} eval.checkpoint={modulation_file}"


def _write_predictions(out: Path, evals: dict[str, EvalResult]) -> None:
    path = out / "predictions.jsonl"
    if path.exists():
        path.unlink()
    append_jsonl(path, [{"method": m, **r} for m, e in evals.items() for r in e.records])


def ranked_on(scores: HeadScores, otherwise: str) -> str:
    """What the key heads were ranked on: for an estimate-plus-exact result the exact scores of its
    re-scored heads only (``select_key_heads``), else ``otherwise``."""
    n = len(scores.meta.get("exact_heads") or [])
    return f"the exact scores of the {n} re-scored heads only" if n else otherwise


# ------------------------------------------------------------------------------------------- tracker
def log_key_heads(tracker: Tracker, scores: HeadScores, key: dict, out: Path) -> None:
    """The key heads and their scores as a table, and the signed-score heat map they were picked from."""
    kinds = {tuple(h): "positive" for h in key.get("positive", [])}
    kinds.update({tuple(h): "negative" for h in key.get("negative", []) if tuple(h) not in kinds})
    cell = lambda m, l, h: None if m is None else float(m[l, h])  # noqa: E731
    tracker.table("key_heads", ["layer", "head", "kind", "positive", "negative", "signed"],
                  [[l, h, kind, cell(scores.positive, l, h), cell(scores.negative, l, h), cell(scores.signed, l, h)]
                   for (l, h), kind in kinds.items()])
    if scores.signed is not None:
        import matplotlib.pyplot as plt

        from vseam.attribution.outputs import heatmap_figure
        from vseam.utils.io import save_figure

        facts = {"n_correct": scores.n_correct, "n_incorrect": scores.n_incorrect, "n": scores.n,
                 "method": scores.method, "ablation": scores.meta.get("ablation", "mean"), "model_id": scores.model,
                 "dataset_id": scores.meta.get("dataset", ""), "exact_heads": scores.meta.get("exact_heads")}
        fig = heatmap_figure(scores.signed, "signed", facts)
        fig.axes[0].scatter([h for _, h in kinds], [l for l, _ in kinds], marker="o", facecolors="none",
                            edgecolors="black", s=60, label="key heads")
        fig.axes[0].legend(loc="upper right", fontsize=7)
        path = save_figure(out / "key_heads_signed.png", fig)
        plt.close(fig)
        tracker.images({"key_heads/heatmap": path})


COMPARISON_COLUMNS_POPE = ("accuracy", "f1", "yes_ratio", "auroc", "acc_at_balanced")


def comparison_rows(results: dict, stats: dict) -> tuple[list[str], list[list]]:
    """The tracker's ``comparison`` table: the printed table's columns (cost, what the method changes, accuracy
    interval, levels, POPE splits) and statistics (the paired comparisons with the learned row and with the
    frozen model, overall and per level / POPE split), plus each POPE split's metrics."""
    levels, pope = _columns(results)
    pope_metrics = [s for s in POPE_SPLITS if any(s in m["test"].get("pope", {}) for m in results.values())]
    groups = [("by_level", lv, lv) for lv in levels] + [("by_pope_split", s, f"pope_{s}") for s in pope]
    cols = ["method", "trainable_params", "forward_passes", "vision_passes", "changes", "val_acc", "test_acc",
            "test_acc_ci_low", "test_acc_ci_high", *levels,
            *[f"pope_{s}" for s in pope], "vs_learned_fixed", "vs_learned_broken", "vs_learned_diff",
            "vs_learned_diff_ci_low", "vs_learned_diff_ci_high", "vs_learned_mcnemar_p",
            *[f"pope_{s}_{k}" for s in pope_metrics for k in COMPARISON_COLUMNS_POPE],
            "vs_none_fixed", "vs_none_broken", "vs_none_diff", "vs_none_diff_ci_low", "vs_none_diff_ci_high",
            "vs_none_mcnemar_p", *[f"vs_{ref}_{col}_{x}" for ref in ("none", "learned") for _, _, col in groups
                                   for x in ("diff", "mcnemar_p")]]
    rows = []
    for name, m in results.items():
        if "mean_of_draws" in m:
            rh = stats.get("random_heads", {})
            ci = [rh.get("q025"), rh.get("q975")]
        else:
            ci = (stats.get("accuracy", {}).get(name, {}).get("ci") or [None, None])
        c = stats.get("vs_learned", {}).get(name, {})
        cci = c.get("ci") or [None, None]
        n = stats.get("vs_none", {}).get(name, {})
        nci = n.get("ci") or [None, None]
        p = m["test"].get("pope", {})
        cost = m.get("cost") or {}
        per_group = [((stats.get(f"vs_{ref}", {}).get(name, {}).get(kind) or {}).get(g) or {}).get(x)
                     for ref in ("none", "learned") for kind, g, _ in groups for x in ("diff", "p")]
        rows.append([name, m["trainable_params"], cost.get("forward_passes"), cost.get("vision_passes"),
                     m.get("changes"), m["val_accuracy"], m["test"]["accuracy"], *ci,
                     *[m["test"]["by_level"].get(lv) for lv in levels],
                     *[m["test"]["by_category"].get(s) for s in pope],
                     c.get("a_only"), c.get("b_only"), c.get("diff"), *cci, c.get("p"),
                     *[p.get(s, {}).get(k) for s in pope_metrics for k in COMPARISON_COLUMNS_POPE],
                     n.get("a_only"), n.get("b_only"), n.get("diff"), *nci, n.get("p"), *per_group])
    return cols, rows


def _log_tables(tracker: Tracker, results: dict, stats: dict, outcomes: dict[str, Outcome], out: Path,
                artifact: bool) -> None:
    """The comparison table, the random-heads control, a before/after per-sample table and the modulation
    file (W&B online)."""
    tracker.table("comparison", *comparison_rows(results, stats))
    rh = stats.get("random_heads")
    if rh:
        tracker.summary({f"random_heads/{k}": v for k, v in rh.items() if isinstance(v, (int, float))})
        draws = next(o.draws["draws"] for o in outcomes.values() if o.draws is not None)
        tracker.table("random_draws", ["draw", "heads", "val_acc", "test_acc", "best_epoch"],
                      [[i, json.dumps(d["heads"]), d["val_accuracy"], d["test_accuracy"], d["best_epoch"]]
                       for i, d in enumerate(draws)])
    if "none" in outcomes and "learned" in outcomes:
        after = {r["id"]: r for r in outcomes["learned"].test.records}
        rows = [[r["id"], r["category"], r["level"], r["answer"], r["pred_token"], after[r["id"]]["pred_token"],
                 r["prob"], after[r["id"]]["prob"], r["correct"], after[r["id"]]["correct"]]
                for r in outcomes["none"].test.records if r["id"] in after]
        tracker.table("before_after", ["id", "category", "level", "answer", "pred_before", "pred_after",
                                       "prob_before", "prob_after", "correct_before", "correct_after"], rows)
    if artifact:
        tracker.artifact(out / "modulation.safetensors", f"modulation-{out.name}", "modulation")
