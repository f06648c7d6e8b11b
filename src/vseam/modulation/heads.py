"""Which heads to modulate: pick the key heads (top-K positive and negative) of a head-attribution
result (``vseam.attribution.HeadScores``), draw random heads and random head sets for the controls, and
turn signed scores into heuristic scales.

Pure functions over [L, H] matrices, so they are tested without a model.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from vseam.attribution.scores import HeadScores, exact_cells, heads_of, only_exact, rescored_per_matrix, top_k


class MixedRankingError(ValueError):
    """More key heads asked for than an estimate-plus-exact result scored exactly."""


def select_key_heads(scores: HeadScores, k_pos: int, k_neg: int) -> dict[str, list[tuple[int, int]]]:
    """Top-``k_pos`` positive and top-``k_neg`` negative heads (a head in both lists counts once, as positive).

    A result of ``atp+exact_topk`` holds exact values at its re-scored heads and first-order estimates
    elsewhere; ranking both together lets an estimate outrank an exact value it only approximates. So
    there the key heads are ranked among the exactly scored heads only, by their exact scores, and a K
    above ``rescore_top_k`` (the heads re-scored per matrix) is refused rather than filled with estimates.
    """
    mask = exact_cells(scores)
    k_exact = rescored_per_matrix(scores)
    if k_exact is not None and max(k_pos, k_neg) > k_exact:
        raise MixedRankingError(
            f"the head scores ({scores.method}) are exact at {int(mask.sum())} heads, the estimate's top "
            f"{k_exact} per matrix re-scored, and estimates elsewhere; modulation.k_pos={k_pos} / "
            f"modulation.k_neg={k_neg} would rank estimates against exact values: set "
            f"attribution.rescore_top_k >= {max(k_pos, k_neg)} (or attribution.method=exact)")
    pos = heads_of(top_k(only_exact(scores.positive, mask), k_pos, positive_only=True)) if k_pos > 0 else []
    neg = (heads_of(top_k(only_exact(scores.negative, mask), k_neg, exclude=pos, positive_only=True))
           if k_neg > 0 else [])
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


def random_head_sets(num_layers: int, num_heads: int, k: int, n: int, seed: int,
                     key: Sequence[tuple[int, int]] = ()) -> tuple[list[list[tuple[int, int]]], bool]:
    """The null distribution of "a set of ``k`` heads": ``n`` independent draws, each ``k`` distinct heads
    uniform over all heads (seeded; draw i depends only on ``seed`` and i, so the first draws of a longer
    run are those of a shorter one). A draw may share heads with the ``key`` set, or be it: the key heads'
    rank among the draws is then a valid Monte Carlo p (``vseam.stats.monte_carlo_p``).

    When the model has at most ``n + 1`` sets of ``k`` heads, every set except ``key`` is returned instead
    (the exact null by enumeration) and the flag is True. Returns ``(sets, exact)``; each set sorted."""
    total = num_layers * num_heads
    if not 0 < k <= total:
        raise ValueError(f"cannot draw sets of {k} heads from a model with {total} heads")
    heads = [(l, h) for l in range(num_layers) for h in range(num_heads)]
    if math.comb(total, k) <= n + 1:
        skip = sorted(map(tuple, key))
        return [list(c) for c in itertools.combinations(heads, k) if sorted(c) != skip], True
    g = torch.Generator().manual_seed(int(seed))
    return [sorted(heads[i] for i in torch.randperm(total, generator=g)[:k].tolist()) for _ in range(n)], False


def heuristic_scales(signed: torch.Tensor, lam: float = 1.0) -> torch.Tensor:
    """The original V-SEAM rescaling: ``clip(1 + lambda * s, 0, 2)`` for every head."""
    return (1.0 + lam * signed.float()).clamp(0.0, 2.0)
