"""The effective-edit filter: keep a (clean, edited) pair only when the model answers the clean image
correctly and the edited image not (docs/method.md#effective-edit-filter).

"Not correct on the edited image" is judged against the *clean* gold answer: the pair is kept when the
edit moved the model off the answer that causal tracing later restores (its corrupt run must score
the clean answer low). Counts per category go to a report dict (and to W&B through ``log_fn``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from vseam.data.sample import EditRecord, Sample


def edited_probe(rec: EditRecord) -> Sample:
    """The edited image asked the original question, scored against the *clean* answer."""
    return Sample(id=f"{rec.id}@edit", question=rec.question, answer=rec.answer, image_path=rec.edited_image,
                  benchmark=rec.benchmark, category=rec.category, level=rec.level)


def _as_list(x) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def effective_edits(records: Sequence[EditRecord], adapter: Any, batch_size: int = 8,
                    progress: bool = False) -> tuple[list[EditRecord], dict]:
    """Score clean and edited images with ``adapter.score`` and keep the effective pairs.

    Returns (kept records, report). The report has totals and, per category, ``pairs``,
    ``clean_correct``, ``edited_correct``, ``kept`` and ``kept_rate`` (kept / pairs), plus per-pair
    probabilities under ``pairs_detail`` for inspection.
    """
    records = list(records)
    if not records:
        return [], summarize([], [], [], [], [])
    clean = adapter.score([r.clean_sample() for r in records], batch_size=batch_size, progress=progress)
    edited = adapter.score([edited_probe(r) for r in records], batch_size=batch_size, progress=progress)
    c_ok, e_ok = [bool(v) for v in _as_list(clean.correct)], [bool(v) for v in _as_list(edited.correct)]
    c_p, e_p = [float(v) for v in _as_list(clean.prob)], [float(v) for v in _as_list(edited.prob)]
    if not (len(c_ok) == len(e_ok) == len(records)):
        raise ValueError(f"adapter returned {len(c_ok)}/{len(e_ok)} scores for {len(records)} pairs")
    kept = [r for r, a, b in zip(records, c_ok, e_ok) if a and not b]
    return kept, summarize(records, c_ok, e_ok, c_p, e_p)


def summarize(records: Sequence[EditRecord], clean_correct: Sequence[bool], edited_correct: Sequence[bool],
              clean_prob: Sequence[float], edited_prob: Sequence[float]) -> dict:
    """Counts per category (and in total) of the filter's decisions; a pure function of the scores."""
    per: dict[str, dict[str, int]] = defaultdict(lambda: {"pairs": 0, "clean_correct": 0, "edited_correct": 0,
                                                          "kept": 0})
    detail = []
    for r, a, b, pa, pb in zip(records, clean_correct, edited_correct, clean_prob, edited_prob):
        for key in (r.category or "unknown", "_total"):
            d = per[key]
            d["pairs"] += 1
            d["clean_correct"] += int(a)
            d["edited_correct"] += int(b)
            d["kept"] += int(a and not b)
        detail.append({"id": r.id, "category": r.category, "clean_correct": a, "edited_correct": b,
                       "clean_prob": pa, "edited_prob": pb, "kept": a and not b})
    total = per.pop("_total", {"pairs": 0, "clean_correct": 0, "edited_correct": 0, "kept": 0})
    cats = {}
    for k in sorted(per):
        cats[k] = {**per[k], "kept_rate": per[k]["kept"] / per[k]["pairs"] if per[k]["pairs"] else 0.0}
    total["kept_rate"] = total["kept"] / total["pairs"] if total["pairs"] else 0.0
    return {"total": total, "categories": cats, "pairs_detail": detail}


def log_report(report: dict, log_fn: Callable[[dict], None] | None, prefix: str = "edit/filter") -> dict:
    """Flatten the counts to ``{prefix}/{category}/{count}`` and hand them to ``log_fn`` (e.g. wandb.log)."""
    flat = {f"{prefix}/total/{k}": v for k, v in report["total"].items()}
    for cat, d in report["categories"].items():
        flat.update({f"{prefix}/{cat}/{k}": v for k, v in d.items()})
    if log_fn is not None:
        log_fn(flat)
    return flat
