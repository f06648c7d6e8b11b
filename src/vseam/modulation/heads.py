"""Which heads to modulate: read a head-attribution result, pick the key heads (top-K positive and
negative), draw random heads for the control, and turn signed scores into heuristic scales.

Pure functions over [L, H] matrices, so they are tested without a model. The result file is the one
the attribution engine writes (``head_scores.json``: ``num_layers``, ``num_heads``, ``positive``,
``negative``, ``signed`` as L x H nested lists, a matrix may be ``null`` when undefined).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

MATRICES = ("positive", "negative", "signed")


class HeadShapeError(ValueError):
    """A head list or score matrix made for a model of another shape."""


@dataclass
class HeadScores:
    """Per-head attribution scores of one model (SPEC section 2); a matrix is None when undefined."""

    num_layers: int
    num_heads: int
    positive: torch.Tensor | None
    negative: torch.Tensor | None
    signed: torch.Tensor | None
    model: str = ""
    method: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.num_layers, self.num_heads

    def check_shape(self, num_layers: int, num_heads: int, where: str = "head scores") -> None:
        if (num_layers, num_heads) != self.shape:
            raise HeadShapeError(
                f"{where} were made for a model with {self.num_layers} layers x {self.num_heads} heads "
                f"(model {self.model or '?'}); this model has {num_layers} x {num_heads}")

    def to_dict(self) -> dict:
        def mat(t):
            return None if t is None else t.tolist()

        return {"model": self.model, "method": self.method, "num_layers": self.num_layers,
                "num_heads": self.num_heads, "positive": mat(self.positive), "negative": mat(self.negative),
                "signed": mat(self.signed), **self.meta}


def _matrix(value: Any, shape: tuple[int, int], name: str, where: str) -> torch.Tensor | None:
    if value is None:
        return None
    t = torch.as_tensor(value, dtype=torch.float32)
    if tuple(t.shape) != shape:
        raise HeadShapeError(f"{where}: matrix {name!r} has shape {tuple(t.shape)}, the file says {shape}")
    return t


def head_scores_from_dict(d: dict, where: str = "head scores") -> HeadScores:
    """Validate a ``head_scores.json`` mapping (shape from ``num_layers``/``num_heads`` or the matrices)."""
    mats = {k: d.get(k) for k in MATRICES}
    if all(v is None for v in mats.values()):
        raise ValueError(f"{where}: none of {MATRICES} is present")
    first = next(torch.as_tensor(v) for v in mats.values() if v is not None)
    L = int(d.get("num_layers", first.shape[0]))
    H = int(d.get("num_heads", first.shape[1] if first.dim() > 1 else 0))
    parsed = {k: _matrix(v, (L, H), k, where) for k, v in mats.items()}
    meta = {k: v for k, v in d.items() if k not in (*MATRICES, "num_layers", "num_heads", "model", "method")}
    return HeadScores(L, H, parsed["positive"], parsed["negative"], parsed["signed"],
                      model=str(d.get("model", d.get("model_id", "")) or ""), method=str(d.get("method", "") or ""),
                      meta=meta)


def load_head_scores(path: str | Path) -> HeadScores:
    """Read a ``head_scores.json`` file (or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "head_scores.json"
    if not path.exists():
        raise FileNotFoundError(f"modulation.head_scores: {path} does not exist (run `python analyze.py heads`)")
    return head_scores_from_dict(json.loads(path.read_text()), where=str(path))


def top_k(matrix: torch.Tensor, k: int, exclude: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """The ``k`` (layer, head) pairs with the largest scores, strictly positive only, best first.

    A head with score 0 did nothing measurable, so it is never picked just to fill K (stable order by
    index on ties, so the choice is deterministic).
    """
    L, H = matrix.shape
    flat = matrix.reshape(-1).float()
    order = sorted(range(flat.numel()), key=lambda i: (-float(flat[i]), i))
    skip = set(map(tuple, exclude))
    out = []
    for i in order:
        if len(out) >= k or not float(flat[i]) > 0:
            break
        lh = (i // H, i % H)
        if lh not in skip:
            out.append(lh)
    return out


def select_key_heads(scores: HeadScores, k_pos: int, k_neg: int) -> dict[str, list[tuple[int, int]]]:
    """Top-``k_pos`` positive and top-``k_neg`` negative heads (a head in both lists counts once, as positive)."""
    pos = top_k(scores.positive, k_pos) if scores.positive is not None and k_pos > 0 else []
    neg = top_k(scores.negative, k_neg, exclude=pos) if scores.negative is not None and k_neg > 0 else []
    return {"positive": pos, "negative": neg, "all": pos + neg}


def random_heads(num_layers: int, num_heads: int, k: int, seed: int,
                 exclude: Sequence[tuple[int, int]] = ()) -> list[tuple[int, int]]:
    """``k`` distinct heads drawn uniformly (seeded), avoiding ``exclude`` when enough heads remain."""
    skip = set(map(tuple, exclude))
    pool = [(l, h) for l in range(num_layers) for h in range(num_heads) if (l, h) not in skip]
    if len(pool) < k:  # a tiny model may not have K heads outside the key set: allow overlap then
        pool = [(l, h) for l in range(num_layers) for h in range(num_heads)]
    if k > len(pool):
        raise ValueError(f"cannot draw {k} random heads from a model with {len(pool)} heads")
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(len(pool), generator=g)[:k].tolist()
    return sorted(pool[i] for i in idx)


def heuristic_scales(signed: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """The original V-SEAM rescaling: ``clip(1 + lambda * s, 0, 2)`` for every head."""
    return (1.0 + lam * signed.float()).clamp(0.0, 2.0)


def check_heads(heads: Sequence[tuple[int, int]], num_layers: int, num_heads: int, where: str = "head list") -> None:
    """Raise ``HeadShapeError`` naming the first head that does not exist in an L x H model."""
    for l, h in heads:
        if not (0 <= int(l) < num_layers and 0 <= int(h) < num_heads):
            raise HeadShapeError(f"{where} names head ({l}, {h}), but the model has {num_layers} layers x "
                                 f"{num_heads} heads: it was made for a model of another shape")
