"""Rebuild the organism's checkpoints (tiny LLaVA and InstructBLIP, trained and under-trained) and report
their held-out accuracy per semantic level.

    python scripts/build_organism.py                      # both architectures -> checkpoints/organism/
    python scripts/build_organism.py --arch llava max_steps=3000 lr=3e-3
    python scripts/build_organism.py --rescore            # re-measure accuracy.json of the saved checkpoints
    python scripts/build_organism.py --arch llava --planted   # <out>/llava-planted from <out>/llava (no training)

``key=value`` arguments override fields of ``vseam.organism.build.OrganismTrainConfig``; each
architecture's own defaults are in ``vseam.organism.build.ARCH_DEFAULTS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vseam.organism.build import (
    ARCH_DEFAULTS,
    build_organism,
    build_planted,
    plot_learning_curves,
    rescore,
    train_config,
)
from vseam.utils.io import write_json


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["llava", "instructblip", "both"], default="both")
    ap.add_argument("--out", default="checkpoints/organism", help="folder of the checkpoints")
    ap.add_argument("--rescore", action="store_true",
                    help="train nothing: re-measure accuracy.json of the checkpoints in --out with the current code")
    ap.add_argument("--planted", action="store_true",
                    help="train nothing: write <out>/<arch>-planted, <out>/<arch> with the defect of "
                         "vseam.organism.mechanism.PLANTED_HEADS[arch] in its weights")
    ap.add_argument("overrides", nargs="*", help="key=value fields of OrganismTrainConfig")
    a = ap.parse_args(argv)
    overrides = dict(kv.split("=", 1) for kv in a.overrides)
    archs = list(ARCH_DEFAULTS) if a.arch == "both" else [a.arch]
    summary = {}
    for arch in archs:
        cfg = train_config(arch, overrides)
        if a.planted:
            from vseam.organism.mechanism import PLANTED_HEADS

            if arch not in PLANTED_HEADS:
                raise SystemExit(f"no planted heads defined for {arch}; known: {sorted(PLANTED_HEADS)}")
            out = Path(a.out) / f"{arch}-planted"
            summary[out.name] = build_planted(Path(a.out) / arch, out, arch, PLANTED_HEADS[arch], cfg)
            continue
        if a.rescore:
            for folder in sorted(Path(a.out).glob(f"{arch}*")):
                if folder.name.split("-")[0] == arch and (folder / "training.json").exists():
                    summary[folder.name] = rescore(folder, cfg)
            continue
        summary.update(build_organism(cfg, a.out))
    print(json.dumps({name: {"level": acc["level"], "overall": acc["overall"],
                             "pope": {k: {m: round(v[m], 3) for m in ("accuracy", "auroc", "best_threshold_accuracy")}
                                      for k, v in acc.get("pope", {}).items()}}
                      for name, acc in summary.items()}, indent=1))
    # summary.json holds every checkpoint of the folder: a build replaces only the entries it wrote
    path = Path(a.out) / "summary.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**previous, **summary})
    plot_learning_curves(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
