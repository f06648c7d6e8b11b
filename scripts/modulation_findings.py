"""The findings of a ``train.py`` run (and of the ``analyze.py eval`` run of its modulation), each claim with
the statistic the code computed, read from the files the runs wrote (``summary.json``, ``table.txt``,
``eval_results.json``): what docs/results.md#learned-modulation and the README's Quick start quote.

    python scripts/modulation_findings.py runs/train/<x> [runs/eval/<y>]

Nothing here computes a statistic: it prints what ``summary.json``'s ``stats`` (``vseam.modulation.outputs``)
and ``eval_results.json``'s ``stats`` (``vseam.evaluation.run``) hold.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def _ci(ci) -> str:
    return f"{ci[0]:+.3f} to {ci[1]:+.3f}"


def train_lines(summary: dict) -> list[str]:
    m, st = summary["methods"], summary["stats"]
    acc = lambda k: m[k]["test"]["accuracy"]  # noqa: E731
    n = m["learned"]["test"]["n"]
    lines = [f"test split: n = {n}; key heads {summary['key_heads']['all']} "
             f"({m['learned']['trainable_params']} parameters)"]
    for k, c in st.get("vs_learned", {}).items():
        verdict = ("learned better" if c["p"] < st["alpha"] and c["a_only"] > c["b_only"] else
                   "learned worse" if c["p"] < st["alpha"] and c["b_only"] > c["a_only"] else
                   f"no significant difference at {st['alpha']}")
        lines.append(f"learned {acc('learned'):.3f} vs {k} {acc(k):.3f}: {c['diff']:+.3f} (95% CI {_ci(c['ci'])}), "
                     f"{c['a_only']} fixed / {c['b_only']} broken, exact McNemar p = {_p(c['p'])}: {verdict}")
    rh = st.get("random_heads")
    if rh:
        lines.append(f"random heads: {rh['n_draws']} draws of {rh['k']} heads, test accuracy mean {rh['mean']:.3f} "
                     f"(sd {rh['sd']:.3f}, median {rh['median']:.3f}, central 95% {rh['q025']:.3f}-{rh['q975']:.3f}, "
                     f"range {rh['min']:.3f}-{rh['max']:.3f}); key heads {rh['learned_accuracy']:.3f}: rank "
                     f"{rh['rank']} of {rh['n_draws'] + 1}, {rh['n_at_least']} draws at least as accurate, "
                     f"permutation p = {_p(rh['p'])} (floor {_p(rh['p_floor'])}); McNemar per draw: learned better "
                     f"than {rh['learned_better']}, worse than {rh['learned_worse']} (p < {rh['alpha']})")
    if "bias" in m and m["bias"].get("bias"):
        b = m["bias"]["bias"]
        lines.append(f"bias-only baseline: {m['bias']['trainable_params']} parameters, learned yes-vs-no margin shift "
                     f"{b['margin']:+.3f}" if b.get("margin") is not None else "bias-only baseline: no yes/no margin")
    for k, row in m.items():
        pope = row["test"].get("pope", {})
        if pope:
            lines.append(f"POPE {k}: " + "; ".join(
                f"{s} acc {v['accuracy']:.3f} F1 {v['f1']:.3f} yes-ratio {v['yes_ratio']:.3f} AUROC "
                f"{v['auroc']:.3f} acc@0.5 {v['acc_at_balanced']:.3f}" for s, v in pope.items()
                if v.get("auroc") is not None))
    return lines


def eval_lines(res: dict) -> list[str]:
    st, r = res["stats"], res["results"]
    lines = [f"eval on {res['data']}: " + ", ".join(
        f"{k} {v['accuracy']:.3f} (95% CI {st['accuracy'][k]['ci'][0]:.3f}-{st['accuracy'][k]['ci'][1]:.3f}, "
        f"n = {v['n']})" for k, v in r.items())]
    c = st.get("modulated_vs_base")
    if c:
        lines.append(f"modulated vs base: {c['diff']:+.3f} (95% CI {_ci(c['ci'])}), {c['a_only']} fixed / "
                     f"{c['b_only']} broken, exact McNemar p = {_p(c['p'])}")
    for k, v in r.items():
        for s, pm in v.get("pope", {}).items():
            lines.append(f"  {k} pope/{s}: acc {pm['accuracy']:.3f} F1 {pm['f1']:.3f} yes-ratio {pm['yes_ratio']:.3f} "
                         f"AUROC {pm['auroc']:.3f} acc@0.5 {pm['acc_at_balanced']:.3f}")
    cats = {k: {c: a["acc"] for c, a in v["by_category"].items() if c not in ("random", "popular", "adversarial")}
            for k, v in r.items()}
    for k, v in cats.items():
        lines.append(f"  {k} world categories: " + ", ".join(f"{c} {a:.3f}" for c, a in v.items()))
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train_dir", help="out_dir of a train.py run (summary.json, table.txt)")
    ap.add_argument("eval_dir", nargs="?", help="out_dir of the analyze.py eval run of its modulation")
    a = ap.parse_args(argv)
    train = Path(a.train_dir)
    print((train / "table.txt").read_text().rstrip() + "\n")
    print("\n".join(train_lines(json.loads((train / "summary.json").read_text()))))
    if a.eval_dir:
        print()
        print("\n".join(eval_lines(json.loads((Path(a.eval_dir) / "eval_results.json").read_text()))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
