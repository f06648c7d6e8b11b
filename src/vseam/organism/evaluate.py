"""Held-out accuracy of a model on the organism world, per level, category and question kind.

Scored by the adapter (``adapter.score``: first answer token, yes/no case-insensitive), the same
measure every analysis uses, on a world split no training step has seen.
"""

from __future__ import annotations

from collections import defaultdict

from vseam.world.questions import CATEGORIES, KINDS, NEGATIVES, generate

TEST_SEED_OFFSET = 3  # train, val and test worlds use seeds seed*1000 + 1, 2, 3
POPE_SEED_OFFSET = 4  # the held-out POPE analog: seed*1000 + 4


def heldout_items(n_per_category: int = 100, seed: int = 0, kinds=KINDS):
    return [it for c in CATEGORIES
            for it in generate(c, n_per_category, seed=seed * 1000 + TEST_SEED_OFFSET, kinds=tuple(kinds), split="test")]


def accuracy_report(adapter, items, batch_size: int = 128) -> dict:
    """{"overall", "level": {...}, "category": {...}, "kind": {...}, "n"} for the given world items."""
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
    return out


def pope_report(adapter, n_per_split: int = 200, seed: int = 0, batch_size: int = 128) -> dict:
    """Per POPE split of a fresh world: accuracy, precision, recall, F1 and yes-ratio (POPE's measures)."""
    from vseam.evaluation.metrics import is_yes, pope_metrics
    from vseam.world.pope import pope_items

    out = {}
    for split in NEGATIVES:
        items = pope_items(n_per_split, seed * 1000 + POPE_SEED_OFFSET, split)
        res = adapter.score([it.sample() for it in items], batch_size=batch_size)
        out[split] = pope_metrics([is_yes(t) for t in res.pred_token], [is_yes(it.answer) for it in items])
    return out
