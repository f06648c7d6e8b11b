"""Held-out accuracy of a model on the organism world, per level, category and question kind, and on its
POPE analog (POPE's measures, plus whether the yes-vs-no margin ranks present above absent objects).

Scored by the adapter (``adapter.score``: first answer token, yes/no case-insensitive), the same
measure every analysis uses, on world splits no training step has seen: the build's own test and POPE
splits (``organism-test``, ``organism-pope``), which no other world draws.
"""

from __future__ import annotations

from collections import defaultdict

import torch

from vseam.world.questions import CATEGORIES, KINDS, NEGATIVES, generate
from vseam.world.scene import DIFFICULTY, Difficulty

TEST_SEED_OFFSET = 3  # train, val and test worlds use seeds seed*1000 + 1, 2, 3
POPE_SEED_OFFSET = 4  # the held-out POPE analog: seed*1000 + 4
TEST_SPLIT, POPE_SPLIT = "organism-test", "organism-pope"  # what these items are for (part of their identity)


def heldout_items(n_per_category: int = 100, seed: int = 0, kinds=KINDS, difficulty: Difficulty = DIFFICULTY):
    return [it for c in CATEGORIES
            for it in generate(c, n_per_category, seed=seed * 1000 + TEST_SEED_OFFSET, kinds=tuple(kinds),
                               split=TEST_SPLIT, difficulty=difficulty)]


def heldout_worlds(seed: int, n_per_category: int, n_pope_per_split: int) -> dict:
    """The worlds ``accuracy.json`` is measured on (split, seed, size), recorded beside the numbers."""
    return {"test_world": {"split": TEST_SPLIT, "seed": seed * 1000 + TEST_SEED_OFFSET, "n_per_category": n_per_category},
            "pope_world": {"split": POPE_SPLIT, "seed": seed * 1000 + POPE_SEED_OFFSET, "n_per_split": n_pope_per_split},
            "n_per_category": n_per_category}


def accuracy_report(adapter, items, batch_size: int = 128) -> dict:
    """{"overall", "level": {...}, "category": {...}, "kind": {...}, "n"} for the given world items, with
    ``ci`` (95% percentile bootstrap intervals over questions of the overall, level and category accuracies,
    ``vseam.stats.bootstrap_ci``) and ``n_incorrect`` per category (the baseline errors a study can use)."""
    from vseam.stats import bootstrap_ci

    res = adapter.score([it.sample() for it in items], batch_size=batch_size)
    groups: dict[str, dict[str, list[bool]]] = {"level": defaultdict(list), "category": defaultdict(list),
                                                "kind": defaultdict(list)}
    for it, ok in zip(items, res.correct.tolist()):
        groups["level"][it.level].append(ok)
        groups["category"][it.category].append(ok)
        groups["kind"][it.kind].append(ok)
    out = {"overall": res.accuracy, "n": len(items)}
    for name, g in groups.items():
        out[name] = {k: sum(v) / len(v) for k, v in sorted(g.items())}
    out["min_level"] = min(out["level"].values())
    out["min_category"] = min(out["category"].values())
    out["ci"] = {"overall": bootstrap_ci(res.correct.tolist())["ci"],
                 **{name: {k: bootstrap_ci(v)["ci"] for k, v in sorted(groups[name].items())}
                    for name in ("level", "category")}}
    out["n_incorrect"] = {k: len(v) - sum(v) for k, v in sorted(groups["category"].items())}
    return out


def pope_report(adapter, n_per_split: int = 300, seed: int = 0, batch_size: int = 128,
                difficulty: Difficulty = DIFFICULTY) -> dict:
    """Per POPE split of a fresh POPE analog (built by POPE's rules, 3 yes + 3 no per image): accuracy,
    precision, recall, F1 and yes-ratio (POPE's measures), and whether the yes-vs-no margin ranks the "yes"
    questions above the "no" ones: its AUROC and accuracy at a yes-ratio of 0.5 (``pope_metrics``), and the
    best accuracy any single threshold on it reaches (``best_threshold_accuracy``: what shifting a bias
    alone could do)."""
    import numpy as np

    from vseam.evaluation.metrics import is_yes, pope_metrics
    from vseam.evaluation.score import yes_no_margin
    from vseam.stats import auroc, best_threshold_accuracy, bootstrap_ci, bootstrap_statistic
    from vseam.world.pope import pope_items

    out = {}
    for split in NEGATIVES:
        items = pope_items(n_per_split, seed * 1000 + POPE_SEED_OFFSET, split, purpose=POPE_SPLIT,
                           difficulty=difficulty)
        pred, margin = [], []
        with torch.no_grad():
            for start in range(0, len(items), batch_size):
                chunk = [it.sample() for it in items[start:start + batch_size]]
                logits = adapter.last_logits(adapter.encode(chunk).to(adapter.device))
                pred += adapter.token_text(logits.argmax(-1).tolist())
                margin += yes_no_margin(adapter, logits, [s.answer for s in chunk])
        gold = [is_yes(it.answer) for it in items]
        best = best_threshold_accuracy(margin, gold)
        pred_yes = [is_yes(t) for t in pred]
        m, g = np.asarray(margin, dtype=float), np.asarray(gold, dtype=bool)
        # 95% bootstrap intervals over questions (the margin's AUROC: questions resampled with their labels)
        def resampled_auroc(idx, m=m, g=g) -> float:
            return auroc(m[idx], g[idx]) if 0 < g[idx].sum() < len(idx) else float("nan")

        ci = {"accuracy": bootstrap_ci([p == y for p, y in zip(pred_yes, gold)])["ci"],
              "auroc": bootstrap_statistic(resampled_auroc, len(g))["ci"]}
        out[split] = {**pope_metrics(pred_yes, gold, margin),
                      "best_threshold_accuracy": best["accuracy"], "best_threshold": best["threshold"], "ci": ci}
    return out
