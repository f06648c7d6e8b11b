"""Causal tracing of the shipped organism (both architectures): the figures and numbers of docs/results.md#causal-tracing.

    python scripts/trace_organism.py                 # 20 pairs per category (120), both architectures
    python scripts/trace_organism.py --limit 50 --arch llava

Runs ``analyze.py trace`` for ``model=organism-<arch>`` into ``runs/trace-organism-<arch>`` (the folder
is emptied first: a replaced checkpoint is traced afresh), copies the averaged figures into
``docs/figures/tracing/<arch>/`` and prints, per architecture, the mean normalised effect on the
answer probability (+- one standard error over pairs) of patching each group of positions at each
layer, and the logit-lens table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = {"heatmap_prob.png": "heatmap_prob.png", "groups_prob.png": "groups_prob.png",
           "logit_lens.png": "logit_lens.png", "pairs/heatmap_1.png": "pair_heatmap.png"}


def group_table(result: dict, metric: str = "prob_norm") -> str:
    """One line per (block, group): the mean +- se at each layer."""
    L = result["num_layers"]
    lines = [f"{'block':<6} {'group':<9} " + " ".join(f"{'layer ' + str(l):>14}" for l in range(L))]
    for block, per in result["average"]["groups"][metric].items():
        for group, d in per.items():
            cells = " ".join(f"{m:>7.3f} ± {s:<5.3f}" for m, s in zip(d["mean"], d["se"]))
            lines.append(f"{block:<6} {group:<9} {cells}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["llava", "instructblip", "both"], default="both")
    ap.add_argument("--limit", type=int, default=20, help="pairs per category (before the effective filter)")
    ap.add_argument("--organism", default="organism",
                    help="model config prefix: traces model=<organism>-<arch>")
    ap.add_argument("--figures", default=str(ROOT / "docs" / "figures" / "tracing"))
    args = ap.parse_args(argv)
    os.environ.setdefault("WANDB_MODE", "offline")
    sys.path.insert(0, str(ROOT / "src"))
    from vseam.config import load_config
    from vseam.tracing.run import run_trace

    for arch in (["llava", "instructblip"] if args.arch == "both" else [args.arch]):
        name = f"{args.organism}-{arch}"
        out = ROOT / "runs" / f"trace-{name}"
        if out.exists():
            shutil.rmtree(out)  # this script's own folder: traced afresh (e.g. after a checkpoint was replaced)
        cfg = load_config([f"model={name}", f"trace.limit={args.limit}", f"out_dir={out}",
                           "trace.progress=false", "logger=csv"])
        result = run_trace(cfg)
        dest = Path(args.figures) / (arch if args.organism == "organism" else name)
        dest.mkdir(parents=True, exist_ok=True)
        for name, to in FIGURES.items():
            if (out / name).exists():
                shutil.copyfile(out / name, dest / to)
        ident = result["model_identity"]
        print(f"\n== {arch}: {result['model']} (weights sha256 {str(ident.get('weights_sha256'))[:12]}), "
              f"{result['num_layers']} layers x {result['num_heads']} heads; {result['n_pairs']} of "
              f"{result['n_manifest']} pairs traced ({result['n_skipped']} skipped); {result['seconds']:.0f} s")
        print("normalised effect on the answer probability (mean ± se over pairs), patching clean into edited:")
        print(group_table(result))
        print((out / "logit_lens.txt").read_text())
        print(f"figures: {dest}")


if __name__ == "__main__":
    main()
