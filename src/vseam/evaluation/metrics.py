"""Benchmark metrics as pure functions over per-sample records: accuracy overall and per group (level,
category); POPE's accuracy / precision / recall / F1 / yes-ratio (torchmetrics, "yes" = positive) and,
from the recorded yes-vs-no margin, its threshold-free AUROC and the accuracy at a yes-ratio of 0.5; and
the intervals and paired tests of two runs on the same questions, overall and per level / POPE split
(``vseam.stats``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import torch
from torchmetrics.functional.classification import binary_accuracy, binary_f1_score, binary_precision, binary_recall

import vseam.stats as stats


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


def pope_metrics(pred_yes: Sequence[bool], gold_yes: Sequence[bool],
                 margin: Sequence[float | None] | None = None) -> dict[str, float | int | None]:
    """POPE: "yes" is the positive class; a prediction that is not "yes" counts as "no" (as in POPE's script).

    With ``margin`` (the yes-vs-no margin ``log p(yes) - log p(no)`` per question, ``score.yes_no_margin``):
    ``auroc``, the threshold-free AUROC of the margin (1.0: one threshold on it separates present from
    absent; 0.5: it carries no information), and ``acc_at_balanced``, the accuracy when the half of the
    questions with the largest margins are called "yes" (yes-ratio 0.5, POPE's balance). None without margins.
    """
    n = len(gold_yes)
    if n == 0:
        return {"n": 0, "accuracy": None, "precision": None, "recall": None, "f1": None, "yes_ratio": None,
                "auroc": None, "acc_at_balanced": None}
    p = torch.as_tensor(list(pred_yes), dtype=torch.long)
    g = torch.as_tensor(list(gold_yes), dtype=torch.long)
    has_margin = margin is not None and len(margin) == n and all(m is not None for m in margin)
    return {
        "n": n,
        "accuracy": float(binary_accuracy(p, g)),
        "precision": float(binary_precision(p, g)),
        "recall": float(binary_recall(p, g)),
        "f1": float(binary_f1_score(p, g)),
        "yes_ratio": float(p.float().mean()),
        "auroc": stats.auroc(list(margin), list(gold_yes)) if has_margin else None,
        "acc_at_balanced": stats.accuracy_at_yes_ratio(list(margin), list(gold_yes), 0.5) if has_margin else None,
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
        out["pope"] = {k: pope_metrics([is_yes(r["pred_token"]) for r in v], [is_yes(r["answer"]) for r in v],
                                       [r.get("margin") for r in v])
                       for k, v in sorted(splits.items())}
    return out


# ------------------------------------------------------------------------ intervals and paired tests
def accuracy_interval(records: Sequence[dict], *, seed: int = 0, n_boot: int = 2000, level: float = 0.95) -> dict:
    """Accuracy of ``records`` with its percentile bootstrap interval over questions: ``{"n", "mean", "ci"}``."""
    return stats.bootstrap_ci([bool(r["correct"]) for r in records], n_boot=n_boot, seed=seed, level=level)


def paired_correct(a: Sequence[dict], b: Sequence[dict], names: tuple[str, str] = ("a", "b")) -> tuple[list, list]:
    """Per-question correctness of two runs matched by question id (the same questions, any order)."""
    by_id = {r["id"]: bool(r["correct"]) for r in b}
    ids = [r["id"] for r in a]
    if len(by_id) != len(b) or len(set(ids)) != len(ids) or set(ids) != set(by_id):
        raise ValueError(f"a paired comparison needs the same questions: {names[0]} scored {len(a)} "
                         f"({len(set(ids))} ids), {names[1]} {len(b)} ({len(by_id)} ids), "
                         f"{len(set(ids) ^ set(by_id))} ids in one only")
    return [bool(r["correct"]) for r in a], [by_id[i] for i in ids]


def paired_comparison(a: Sequence[dict], b: Sequence[dict], *, seed: int = 0, n_boot: int = 2000,
                      level: float = 0.95, names: tuple[str, str] = ("a", "b")) -> dict:
    """Run A against run B on the same questions: the exact McNemar test (``a_only``: questions only A
    answers correctly, ``b_only`` the reverse, ``p`` two-sided) and acc(A) - acc(B) with its paired standard
    error and paired bootstrap interval (questions resampled together): ``{"n", "a_only", "b_only", "p",
    "diff", "se", "ci"}``."""
    ca, cb = paired_correct(a, b, names)
    test = stats.mcnemar(ca, cb)
    diff = stats.paired_bootstrap_ci(ca, cb, n_boot=n_boot, seed=seed, level=level)
    return {**test, "diff": diff["diff"], "se": diff["se"], "ci": diff["ci"]}


def paired_by_group(a: Sequence[dict], b: Sequence[dict], *, seed: int = 0, n_boot: int = 2000, level: float = 0.95,
                    names: tuple[str, str] = ("a", "b")) -> dict:
    """``paired_comparison`` of run A against run B on the same questions, overall and within each semantic level
    (``by_level``: the records' ``level``) and each POPE split (``by_pope_split``: the ``category`` of POPE records)."""
    out = paired_comparison(a, b, seed=seed, n_boot=n_boot, level=level, names=names)
    groups = {"by_level": defaultdict(set), "by_pope_split": defaultdict(set)}
    for r in a:
        if r.get("level") is not None:
            groups["by_level"][str(r["level"])].add(r["id"])
        if r.get("benchmark") == "pope" and r.get("category") is not None:
            groups["by_pope_split"][str(r["category"])].add(r["id"])
    for kind, by in groups.items():
        out[kind] = {g: paired_comparison([r for r in a if r["id"] in ids], [r for r in b if r["id"] in ids], seed=seed,
                                          n_boot=n_boot, level=level, names=names) for g, ids in sorted(by.items())}
    return out
