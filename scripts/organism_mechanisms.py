"""Mechanism ground truth of the shipped organism, written to ``<out>/mechanisms.json``:

- the absence probe (image tokens at the LM input -> is the queried object absent?) on held-out
  POPE-adversarial questions, on all of them and on those the model answers wrongly;
- per category, the Spearman correlation over heads between the attention mass from the last
  position to the queried object's image tokens and the head's positive score;
- the planted defect: a "Yes" bias on one head, its rank among the negative heads, and the accuracy
  learned modulation on that head recovers.

    python scripts/organism_mechanisms.py                        # both architectures
    python scripts/organism_mechanisms.py --arch llava --n 40
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from vseam.utils.io import write_json


def report(arch: str, folder: Path, n: int) -> dict:
    from vseam.models import load_adapter
    from vseam.organism.mechanism import PLANTED_DEFECT, absence_probe
    from vseam.study.ground_truth import defect_experiment, mass_score_correlation
    from vseam.world.pope import pope_items
    from vseam.world.questions import CATEGORIES, generate

    t0 = time.time()
    adapter = load_adapter({"arch": arch, "path": str(folder), "device": "cpu", "local_files_only": True})
    train = pope_items(600, 501, "random") + pope_items(600, 502, "adversarial")
    test = pope_items(200, 503, "adversarial")
    ok = adapter.score([it.sample() for it in test], batch_size=64).correct.tolist()
    wrong = [it for it, c in zip(test, ok) if not c]
    probe = {"all": absence_probe(adapter, train, test).to_dict(),
             "model_wrong": absence_probe(adapter, train, wrong).to_dict() if wrong else None,
             "model_accuracy": sum(ok) / len(ok), "train": len(train), "test_split": "adversarial"}
    items = [it for c in CATEGORIES for it in generate(c, n, seed=611, split="mech")]
    spearman = mass_score_correlation(adapter, items)
    layer, head, strength = PLANTED_DEFECT[arch]
    dtrain = [it.sample() for c in CATEGORIES for it in generate(c, 16, seed=621, kinds=("verify",))]
    dtest = [it.sample() for c in CATEGORIES for it in generate(c, 24, seed=622, kinds=("verify",))]
    defect = defect_experiment(adapter, dtrain, dtest, layer, head, strength, epochs=6)
    return {"checkpoint": str(folder), "probe": probe, "attention_mass_vs_positive": spearman, "defect": defect,
            "seconds": round(time.time() - t0, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", choices=["llava", "instructblip", "both"], default="both")
    ap.add_argument("--out", default="checkpoints/organism", help="folder of the checkpoints")
    ap.add_argument("--n", type=int, default=40, help="questions per category for the attention-mass correlation")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    archs = ["llava", "instructblip"] if a.arch == "both" else [a.arch]
    path = Path(a.out) / "mechanisms.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    for arch in archs:
        out[arch] = report(arch, Path(a.out) / arch, a.n)
        r = out[arch]
        print(f"{arch}: probe {r['probe']['all']['accuracy']:.3f} (on the model's errors: "
              f"{(r['probe']['model_wrong'] or {}).get('accuracy', float('nan')):.3f}); spearman "
              + " ".join(f"{c}={v['spearman']:.2f}" for c, v in r["attention_mass_vs_positive"].items()
                         if v["spearman"] is not None)
              + f"; defect {r['defect']['head']}: rank {r['defect']['negative_rank']}, accuracy "
              f"{json.dumps({k: round(v, 3) for k, v in r['defect']['accuracy'].items()})}, recovered "
              f"{r['defect']['recovered']}", flush=True)
    write_json(path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
