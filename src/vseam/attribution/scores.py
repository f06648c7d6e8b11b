"""Pure score math of head attribution (docs/method.md#head-scores): positive / negative / signed matrices, top-K
lists, and the agreement measures (Spearman, top-K overlap) between two score matrices.

Everything here works on tensors of per-sample probabilities, so it is tested without a model. A
matrix that has no sample to average over (no baseline-correct sample for ``pos``, no incorrect one
for ``neg``) is *undefined*: it is returned as ``None``, never as zeros.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vseam.interventions.hooks import HeadShapeError

MATRICES = ("positive", "negative", "signed")


@dataclass
class HeadScores:
    """Per-head attribution scores of one model (docs/method.md#head-scores): the three L x H matrices, the counts
    they were averaged over, and where they came from. A matrix is None when undefined.

    This is the one score type of the project: the sweep (``score_heads``), ``head_scores.json``
    (``load_head_scores`` / ``to_dict``), head selection for ``train.py`` and the study all use it.
    Further blocks of scores of the same model (per category, per level) are added as fields that
    hold more ``HeadScores``, so every block has the same fields and the same reader.
    """

    positive: torch.Tensor | None  # [L, H] mean over correct samples of max(0, p - p_abl); None if n_correct == 0
    negative: torch.Tensor | None  # [L, H] mean over incorrect samples of max(0, p_abl - p); None if n_incorrect == 0
    signed: torch.Tensor | None  # [L, H] mean over all samples of (p - p_abl); None if N == 0
    n_correct: int = 0
    n_incorrect: int = 0
    num_layers: int | None = None  # None = read from the matrices
    num_heads: int | None = None
    model: str = ""  # the model's id (``head_scores.json``: ``model_id``)
    method: str = ""  # exact | atp | atp+exact_topk
    meta: dict[str, Any] = field(default_factory=dict)  # everything else a result file says (ablation, dataset, ...)
    per_sample: Any = None  # the sweep's per-sample values these were averaged from (a ``ChunkResult``), if kept
    by_category: dict[str, HeadScores] = field(default_factory=dict)  # the same scores of each category's samples
    by_level: dict[str, HeadScores] = field(default_factory=dict)  # ... and of each semantic level's

    def __post_init__(self):
        first = next((m for m in self.matrices().values() if m is not None), None)
        if first is not None and (self.num_layers is None or self.num_heads is None):
            self.num_layers, self.num_heads = int(first.shape[0]), int(first.shape[1])
        for name, m in self.matrices().items():
            if m is not None and tuple(m.shape) != self.shape:
                raise HeadShapeError(f"head scores: matrix {name!r} has shape {tuple(m.shape)}, expected {self.shape}")

    @property
    def n(self) -> int:
        return self.n_correct + self.n_incorrect

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.num_layers or 0), int(self.num_heads or 0)

    def matrices(self) -> dict[str, torch.Tensor | None]:
        return {"positive": self.positive, "negative": self.negative, "signed": self.signed}

    def check_shape(self, num_layers: int, num_heads: int, where: str = "head scores") -> None:
        """Refuse scores of a model of another shape, or of the vision tower's heads (``attribution.tower``):
        every user of head lists (modulation, the study) works on the language model's."""
        tower = self.meta.get("tower", "language")
        if tower != "language":
            raise HeadShapeError(f"{where} score the {tower} tower's heads (attribution.tower={tower}); this needs the "
                                 f"language model's (attribution.tower=language)")
        if (num_layers, num_heads) != self.shape:
            raise HeadShapeError(
                f"{where} were made for a model with {self.num_layers} layers x {self.num_heads} heads "
                f"(model {self.model or '?'}); this model has {num_layers} x {num_heads}")


def head_scores(prob: torch.Tensor, correct: torch.Tensor, ablated: torch.Tensor) -> HeadScores:
    """Scores from baseline probabilities ``prob`` [N], correctness ``correct`` [N] (bool) and the
    ablated probabilities ``ablated`` [N, L, H] (``ablated[i, l, h]`` = p_i with head (l, h) ablated).

    Sums run in float64 over samples in index order, so the result depends only on the per-sample
    values, not on how they were batched or sharded.
    """
    if ablated.dim() != 3 or prob.shape != ablated.shape[:1] or correct.shape != prob.shape:
        raise ValueError(f"shapes do not fit: prob {tuple(prob.shape)}, correct {tuple(correct.shape)}, "
                         f"ablated {tuple(ablated.shape)} (expected [N], [N], [N, L, H])")
    correct = correct.bool()
    drop = prob.double()[:, None, None] - ablated.double()  # p - p_abl: > 0 when the head helped
    n_c, n_i = int(correct.sum()), int((~correct).sum())
    pos = drop[correct].clamp(min=0).sum(0) / n_c if n_c else None
    neg = (-drop[~correct]).clamp(min=0).sum(0) / n_i if n_i else None
    signed = drop.sum(0) / len(prob) if len(prob) else None
    as32 = lambda m: None if m is None else m.float()  # noqa: E731
    return HeadScores(as32(pos), as32(neg), as32(signed), n_c, n_i, int(ablated.shape[1]), int(ablated.shape[2]))


def top_k(matrix: torch.Tensor | None, k: int, *, exclude: Sequence[tuple[int, int]] = (),
          positive_only: bool = False) -> list[dict] | None:
    """The ``k`` highest entries as ``[{"layer", "head", "score"}]``, best first.

    Ties break by (layer, head) ascending so the list is deterministic. NaN entries (heads that were
    not scored) and heads in ``exclude`` are never selected; with ``positive_only`` neither is a score
    <= 0 (a head that did nothing measurable is not picked just to fill K). ``None`` in, ``None`` out
    (an undefined matrix has no top-K).
    """
    if matrix is None:
        return None
    L, H = matrix.shape
    flat = matrix.detach().double().reshape(-1).cpu()
    skip = {(int(l), int(h)) for l, h in exclude}
    valid = [i for i in (~flat.isnan()).nonzero().squeeze(1).tolist()
             if (i // H, i % H) not in skip and (not positive_only or float(flat[i]) > 0)]
    # sort by score descending, then by flat index ascending (stable tie-break)
    order = sorted(valid, key=lambda i: (-float(flat[i]), i))[: max(0, k)]
    return [{"layer": i // H, "head": i % H, "score": float(flat[i])} for i in order]


def exact_cells(scores: HeadScores, heads: Sequence[Sequence[int]] | None = None) -> torch.Tensor | None:
    """For a result of ``atp+exact_topk``: the [L, H] bool mask of the heads whose values are exact
    (``heads``, by default ``meta["exact_heads"]``), the rest being first-order estimates; None when every
    cell is of one kind."""
    heads = scores.meta.get("exact_heads") if heads is None else heads
    if not heads:
        return None
    mask = torch.zeros(scores.shape, dtype=torch.bool)
    for l, h in heads:
        mask[int(l), int(h)] = True
    return mask


def rescored_per_matrix(scores: HeadScores) -> int | None:
    """For a result of ``atp+exact_topk``: how many heads were re-scored exactly per matrix
    (``attribution.rescore_top_k``); a ranking of more heads than this would set estimates against exact
    values. None for a result of one kind of value (or one that does not say)."""
    if exact_cells(scores) is None:
        return None
    k = scores.meta.get("rescore_top_k") or ((scores.meta.get("config") or {}).get("attribution") or {}).get(
        "rescore_top_k")
    return None if k is None else int(k)


def only_exact(matrix: torch.Tensor | None, mask: torch.Tensor | None) -> torch.Tensor | None:
    """``matrix`` with every cell outside ``mask`` set to NaN (``top_k`` never picks a NaN): so a ranking
    compares exact values with exact values only. ``mask=None`` (one kind of value): unchanged."""
    if matrix is None or mask is None:
        return matrix
    return matrix.masked_fill(~mask.to(matrix.device), float("nan"))


def heads_of(entries: list[dict] | None) -> list[tuple[int, int]]:
    """The (layer, head) pairs of a ``top_k`` list, in its order (``None`` = no heads)."""
    return [(d["layer"], d["head"]) for d in entries or []]


def top_k_set(matrix: torch.Tensor | None, k: int) -> set[tuple[int, int]]:
    return set(heads_of(top_k(matrix, k)))


def top_k_overlap(a: torch.Tensor | None, b: torch.Tensor | None, k: int) -> int | None:
    """How many of ``a``'s top-``k`` heads are among ``b``'s top-``k``; None if either is undefined."""
    if a is None or b is None:
        return None
    return len(top_k_set(a, k) & top_k_set(b, k))


def grouped_head_scores(prob: torch.Tensor, correct: torch.Tensor, ablated: torch.Tensor,
                        labels: list[str | None]) -> dict[str, HeadScores]:
    """``head_scores`` of each group of samples (``labels[i]`` names sample i's group, e.g. its category
    or semantic level; None = in no group), from the same per-sample values: no second pass over the
    model. Groups come in order of first appearance; each one's ``meta`` holds ``n`` and ``baseline``
    (``accuracy``, ``mean_prob``)."""
    if len(labels) != len(prob):
        raise ValueError(f"{len(labels)} group labels for {len(prob)} samples")
    out: dict[str, HeadScores] = {}
    for name in dict.fromkeys(lb for lb in labels if lb is not None):
        idx = torch.tensor([i for i, lb in enumerate(labels) if lb == name], dtype=torch.long)
        sc = head_scores(prob[idx], correct[idx], ablated[idx])
        sc.meta = {"n": len(idx), "baseline": {"accuracy": float(correct[idx].float().mean()),
                                               "mean_prob": float(prob[idx].float().mean())}}
        out[name] = sc
    return out
