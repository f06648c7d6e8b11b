"""Benchmark metrics as pure functions over per-sample records: accuracy overall and per group (level,
category), and POPE's accuracy / precision / recall / F1 / yes-ratio (torchmetrics, "yes" = positive).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Sequence

import torch
from torchmetrics.functional.classification import binary_accuracy, binary_f1_score, binary_precision, binary_recall


def is_yes(token_or_answer: str) -> bool:
    """A predicted token / gold answer read as yes/no: SentencePiece's word marker dropped, case ignored."""
    return token_or_answer.replace("▁", "").replace("Ġ", "").strip().lower() == "yes"


def accuracy(correct: Sequence[bool]) -> float | None:
    """Fraction correct; None (not 0.0) for an empty group."""
    if len(correct) == 0:
        return None
    return float(torch.as_tensor(list(correct), dtype=torch.float32).mean())


def grouped_accuracy(records: Iterable[dict], key: str) -> dict[str, dict]:
    """``{group: {"acc": .., "n": ..}}`` for records grouped by ``record[key]`` (None groups dropped)."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in records:
        if r.get(key) is not None:
            groups[str(r[key])].append(bool(r["correct"]))
    return {g: {"acc": accuracy(v), "n": len(v)} for g, v in sorted(groups.items())}


def pope_metrics(pred_yes: Sequence[bool], gold_yes: Sequence[bool]) -> dict[str, float | int | None]:
    """POPE: "yes" is the positive class; a prediction that is not "yes" counts as "no" (as in POPE's script)."""
    n = len(gold_yes)
    if n == 0:
        return {"n": 0, "accuracy": None, "precision": None, "recall": None, "f1": None, "yes_ratio": None}
    p = torch.as_tensor(list(pred_yes), dtype=torch.long)
    g = torch.as_tensor(list(gold_yes), dtype=torch.long)
    return {
        "n": n,
        "accuracy": float(binary_accuracy(p, g)),
        "precision": float(binary_precision(p, g)),
        "recall": float(binary_recall(p, g)),
        "f1": float(binary_f1_score(p, g)),
        "yes_ratio": float(p.float().mean()),
    }


def summarize(records: Sequence[dict], skipped: Sequence[dict] = ()) -> dict:
    """Overall and per-level / per-category accuracy, plus POPE metrics per POPE split when present."""
    out = {
        "n": len(records),
        "skipped": len(skipped),
        "accuracy": accuracy([r["correct"] for r in records]),
        "by_level": grouped_accuracy(records, "level"),
        "by_category": grouped_accuracy(records, "category"),
        "by_benchmark": grouped_accuracy(records, "benchmark"),
    }
    pope = [r for r in records if r.get("benchmark") == "pope"]
    if pope:
        splits: dict[str, list[dict]] = defaultdict(list)
        for r in pope:
            splits[str(r.get("category") or "unknown")].append(r)  # a file whose split nothing names (said at load)
        out["pope"] = {k: pope_metrics([is_yes(r["pred_token"]) for r in v], [is_yes(r["answer"]) for r in v])
                       for k, v in sorted(splits.items())}
    return out
