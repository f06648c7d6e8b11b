"""Mechanism ground truth of the shipped organism, written to ``<out>/mechanisms.json``:

- the absence probe (image tokens at the LM input -> is the queried object absent?) on held-out
  POPE-adversarial questions, on all of them and on those the model answers wrongly;
- per category, the Spearman correlation over heads between the attention mass from the last
  position to the queried object's image tokens and the head's positive score;
- the planted defect: a "Yes" bias on one head, its rank among the negative heads, and the accuracy
  learned modulation on that head recovers;
- the planted heads (``<out>/<arch>-planted``, a weight-level defect in specific heads): their ranks
  among the negative heads, and the accuracy learned modulation recovers on the top negative heads,
  on the planted heads (with random others to K), and on random K-head sets without them.

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
    train = pope_items(600, 501, "random", purpose="mech") + pope_items(600, 502, "adversarial", purpose="mech")
    test = pope_items(200, 503, "adversarial", purpose="mech")
    ok = adapter.score([it.sample() for it in test], batch_size=64).correct.tolist()
    wrong = [it for it, c in zip(test, ok) if not c]
    probe = {"all": absence_probe(adapter, train, test).to_dict(),
             "model_wrong": absence_probe(adapter, train, wrong).to_dict() if wrong else None,
             "model_accuracy": sum(ok) / len(ok), "train": len(train), "test_split": "adversarial"}
    # by what the question is about: an absent object, a present one of weak evidence (faint / small), a clear one
    def kind(it):
        i = it.scene.find(it.change["object"])
        return "absent" if i is None else "weak_present" if it.scene.objects[i].weak else "clear_present"

    for k in ("absent", "weak_present", "clear_present"):
        sub = [it for it in test if kind(it) == k]
        if sub:
            probe[k] = {"n": len(sub), "probe_accuracy": absence_probe(adapter, train, sub).accuracy,
                        "model_accuracy": sum(c for it, c in zip(test, ok) if kind(it) == k) / len(sub)}
    items = [it for c in CATEGORIES for it in generate(c, n, seed=611, split="mech")]
    spearman = mass_score_correlation(adapter, items)
    layer, head, strength = PLANTED_DEFECT[arch]
    dtrain = [it.sample() for c in CATEGORIES for it in generate(c, 16, seed=621, kinds=("verify",), split="mech")]
    dtest = [it.sample() for c in CATEGORIES for it in generate(c, 24, seed=622, kinds=("verify",), split="mech")]
    defect = defect_experiment(adapter, dtrain, dtest, layer, head, strength, epochs=6)
    out = {"checkpoint": str(folder), "probe": probe, "attention_mass_vs_positive": spearman, "defect": defect}
    planted_folder = folder.parent / f"{arch}-planted"
    if (planted_folder / "planted.json").exists():
        out["planted_heads"] = planted_report(arch, folder, planted_folder)
    out["seconds"] = round(time.time() - t0, 1)
    return out


def planted_report(arch: str, folder: Path, planted_folder: Path, n_random: int = 5) -> dict:
    """The planted-heads experiment (``vseam.study.ground_truth.planted_heads_experiment``) on questions of
    every category (both kinds): K = 6 heads, as train.py's default key heads (3 positive + 3 negative)."""
    from vseam.models import load_adapter
    from vseam.organism.mechanism import PlantedHeads
    from vseam.study.ground_truth import planted_heads_experiment
    from vseam.world.questions import CATEGORIES, generate

    planted = PlantedHeads.from_dict(json.loads((planted_folder / "planted.json").read_text()))
    train = [it.sample() for c in CATEGORIES for it in generate(c, 24, seed=631, split="mech")]
    test = [it.sample() for c in CATEGORIES for it in generate(c, 40, seed=632, split="mech")]
    clean = load_adapter({"arch": arch, "path": str(folder), "device": "cpu", "local_files_only": True})
    clean_acc = float(clean.score(test, batch_size=64).correct.float().mean())
    adapter = load_adapter({"arch": arch, "path": str(planted_folder), "device": "cpu", "local_files_only": True})
    res = planted_heads_experiment(adapter, clean_acc, planted.heads, train, test, k=6, n_random=n_random, epochs=6)
    return {"checkpoint": str(planted_folder), **planted.to_dict(), **res}


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
              f"{(r['probe']['model_wrong'] or {}).get('accuracy', float('nan')):.3f}; probe / model on "
              + ", ".join(f"{k} {v['probe_accuracy']:.3f} / {v['model_accuracy']:.3f} (n {v['n']})"
                          for k in ("absent", "weak_present", "clear_present") if (v := r["probe"].get(k)))
              + "); spearman "
              + " ".join(f"{c}={v['spearman']:.2f}" for c, v in r["attention_mass_vs_positive"].items()
                         if v["spearman"] is not None)
              + f"; defect {r['defect']['head']}: rank {r['defect']['negative_rank']}, accuracy "
              f"{json.dumps({k: round(v, 3) for k, v in r['defect']['accuracy'].items()})}, recovered "
              f"{r['defect']['recovered']}", flush=True)
        if "planted_heads" in r:
            p = r["planted_heads"]
            m = p["modulated"]
            print(f"{arch}-planted {p['heads']} x {p['factor']}: negative ranks {p['negative_ranks']}, accuracy "
                  f"clean {p['accuracy']['clean']:.3f} planted {p['accuracy']['planted']:.3f}; modulated: top negative "
                  f"{(m['top_negative'] or {}).get('accuracy')}, planted + random "
                  f"{m['planted_plus_random']['accuracy']:.3f}, random without them "
                  f"{[round(x['accuracy'], 3) for x in m['random_without_planted']]}", flush=True)
    write_json(path, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
