"""Cross-level overlap of head sets (docs/method.md#cross-level-overlap) and the paper's two claims
about them, each decided by a test that can fail.

Sets: for each category the top-K positive heads (mean over its baseline-correct samples of
max(0, p - p_ablated)) and the top-K negative heads (mean over its baseline-incorrect samples of
max(0, p_ablated - p)); a head enters only with a score > 0 (ties broken by (layer, head)), so a set can
be smaller than K. Jaccard overlap between every pair of categories; "within" = the mean over pairs of
the same semantic level, "across" = over pairs of different levels.

Claims (``CLAIMS``):

- ``positive_level_specific``: positive heads are shared within a level and differ across levels.
  Effect = within - across of the positive sets.
- ``negative_generalise``: negative heads are shared across levels more than positive heads are.
  Effect = across(negative sets) - across(positive sets).

Tests, all from the per-sample ablation values the attribution sweep keeps (``head_scores.safetensors``;
no forward pass):

- *sample-level permutation null*: the category labels are shuffled across samples (among the
  baseline-correct samples for the positive sets, among the baseline-incorrect ones for the negative
  sets, so every category keeps the count its score averages over), the per-category scores, the top-K
  sets and the statistic recomputed. It keeps the heads' global importance (a head every category needs
  stays in every set) and the score noise of each category's sample count. p = the Monte Carlo p
  ``(1 + #{null at least as extreme}) / (1 + n)``, never below its floor ``1 / (1 + n)``.
- *regrouping test* (level specificity only): the observed sets with the categories' level labels
  permuted over every distinct grouping into levels of the same sizes (``label_permutation_test``).
  Categories that differ from each other in a way unrelated to their levels pass the sample-level
  null by chance in the level direction; this test asks whether the true grouping beats the other
  groupings of the same categories. The claim's p is the larger of the two (both must reject), its floor
  the larger floor: with 6 categories in 3 levels of 2 there are only 15 groupings (floor 0.067, the
  claim cannot be decided at alpha 0.05); with 9 in 3 levels of 3, 280 (floor 0.0036).
- *bootstrap CI* of the effect: samples resampled with replacement within each category (and
  correctness), sets and statistic recomputed, percentile interval.
- *sample-size guard*: a category enters a kind's sets only with at least ``min_samples`` samples behind
  its scores (baseline-correct for positive, baseline-incorrect for negative); a claim whose categories
  do not reach the levels it compares reads "insufficient data" and names the counts.
- *verdicts* (per K; overall the one every K gives, else undecided): ``holds`` (p < alpha, effect in the
  claim's direction), ``contradicted`` (the one-sided test in the opposite direction rejects, effect
  against the claim), ``undecided`` (neither), ``insufficient data`` (the guard). An effect of 0 alone
  is never a verdict against the claim.

Noise: the split-half Jaccard of each category's top-K set (its samples split at random in two halves,
mean over ``SPLITS`` splits), so a reader sees how stable the sets are (half the samples: a lower bound
on the stability of the full-sample set).

Context, not a verdict: ``random_set_test`` compares the within- / across-level overlap with that of
uniformly random head sets of the same sizes. It shows that the top heads are not random heads
(globally important heads pass it for within- and across-level pairs alike), not that sharing is
specific to a level; it is kept as ``beyond_random`` beside each K.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

Head = tuple[int, int]
KINDS = ("positive", "negative")
STRATUM = {"positive": "baseline-correct", "negative": "baseline-incorrect"}
SPLITS = 20  # random half splits per category for the split-half Jaccard
CLAIMS = {
    "positive_level_specific": "positive heads are shared within a semantic level and differ across levels "
                               "(within-level minus across-level overlap > 0)",
    "negative_generalise": "negative heads generalise across semantic levels more than positive heads "
                           "(across-level overlap of negative minus positive sets > 0)",
}
VERDICTS = ("holds", "contradicted", "undecided", "insufficient data")


# ------------------------------------------------------------------------------------- sets
def top_heads(matrix, k: int) -> frozenset[Head]:
    """The (up to) ``k`` heads with the highest score > 0 of an [L, H] matrix (NaN never selected; ties
    by (layer, head)): ``vseam.attribution.scores.top_k(..., positive_only=True)`` as a set."""
    import torch

    from vseam.attribution.scores import heads_of, top_k

    m = torch.as_tensor(np.asarray(matrix, dtype=np.float64))
    if m.dim() != 2:
        raise ValueError(f"top_heads: expected an [L, H] matrix, got shape {tuple(m.shape)}")
    return frozenset(heads_of(top_k(m, int(k), positive_only=True)))


def jaccard(a: set | frozenset, b: set | frozenset) -> float:
    """|a & b| / |a | b|; two empty sets have nothing in common to measure and give NaN."""
    union = len(a | b)
    return len(a & b) / union if union else float("nan")


def jaccard_matrix(sets: Mapping[str, frozenset]) -> np.ndarray:
    """Pairwise Jaccard of the sets, in the mapping's order (diagonal 1 for a non-empty set)."""
    names = list(sets)
    n = len(names)
    out = np.empty((n, n))
    for i, j in itertools.product(range(n), range(n)):
        out[i, j] = jaccard(sets[names[i]], sets[names[j]])
    return out


def pair_means(jmat: np.ndarray, levels: Sequence[str]) -> tuple[float, float]:
    """Mean Jaccard over pairs of distinct categories (i < j) of the same level, and of different
    levels; NaN where there is no such pair (or only pairs of two empty sets)."""
    within, across = [], []
    n = len(levels)
    for i in range(n):
        for j in range(i + 1, n):
            v = jmat[i, j]
            if np.isnan(v):
                continue
            (within if levels[i] == levels[j] else across).append(v)
    return (float(np.mean(within)) if within else float("nan"),
            float(np.mean(across)) if across else float("nan"))


# ------------------------------------------------------------------------------------- per-sample values
@dataclass
class KindValues:
    """The per-sample values one kind of score averages: for ``positive`` each baseline-correct sample's
    max(0, p - p_ablated), for ``negative`` each baseline-incorrect sample's max(0, p_ablated - p), of the
    categories that pass the sample-size guard."""

    kind: str
    contrib: np.ndarray  # [n, L*H] float64
    label: np.ndarray  # [n] index into ``categories``
    categories: list[str]
    levels: list[str]  # the level of each category
    shape: tuple[int, int]
    valid: np.ndarray  # [L*H] bool: heads with a finite value in every row (the others are never selected)

    @property
    def n(self) -> int:
        return int(len(self.label))

    def counts(self) -> dict[str, int]:
        return {c: int(np.sum(self.label == i)) for i, c in enumerate(self.categories)}


def kind_values(prob, correct, ablated, categories: Sequence[str | None], level_of: Mapping[str, str], kind: str,
                keep: Sequence[str] | None = None) -> KindValues:
    """``KindValues`` of ``kind`` from a sweep's per-sample values (``prob`` [N], ``correct`` [N],
    ``ablated`` [N, L, H], each sample's category), keeping the categories ``keep`` (default: all, in order
    of first appearance). Samples of no category are left out."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    p = _np(prob)
    ok = _np(correct).astype(bool)
    abl = _np(ablated)
    N = len(p)
    if abl.ndim != 3 or abl.shape[0] != N or ok.shape != (N,) or len(categories) != N:
        raise ValueError(f"per-sample values do not fit: prob {p.shape}, correct {ok.shape}, ablated {abl.shape}, "
                         f"{len(categories)} categories (expected [N], [N], [N, L, H], N)")
    L, H = abl.shape[1:]
    cats = list(dict.fromkeys(c for c in categories if c is not None)) if keep is None else list(keep)
    index = {c: i for i, c in enumerate(cats)}
    in_stratum = ok if kind == "positive" else ~ok
    rows = np.array([i for i, c in enumerate(categories) if in_stratum[i] and c in index], dtype=np.int64)
    drop = p[rows, None] - abl[rows].reshape(len(rows), L * H)
    contrib = np.clip(drop if kind == "positive" else -drop, 0.0, None)
    valid = np.isfinite(contrib).all(0) if len(rows) else np.ones(L * H, dtype=bool)
    contrib = np.where(np.isfinite(contrib), contrib, 0.0)
    label = np.array([index[categories[i]] for i in rows], dtype=np.int64)
    return KindValues(kind, contrib, label, cats, [level_of[c] for c in cats], (int(L), int(H)), valid)


def weights(label: np.ndarray, n_cat: int, rows: np.ndarray | None = None, labels: np.ndarray | None = None,
            ) -> np.ndarray:
    """[R, C, n] counts: replicate r puts row ``rows[r, i]`` into category ``labels[r, i]`` (default: the
    rows as they are, each in its own category ``label``)."""
    n = len(label)
    if rows is None and labels is None:
        rows, labels = np.arange(n)[None], label[None]
    elif rows is None:
        rows = np.broadcast_to(np.arange(n), labels.shape)
    elif labels is None:
        labels = label[rows]
    R = rows.shape[0]
    flat = ((np.arange(R)[:, None] * n_cat + labels) * n + rows).reshape(-1)
    return np.bincount(flat, minlength=R * n_cat * n).reshape(R, n_cat, n).astype(np.float64)


def category_scores(kv: KindValues, w: np.ndarray) -> np.ndarray:
    """[R, C, L*H] mean score of each category under weights ``w`` [R, C, n], rounded to float32 as the
    stored matrices are (NaN for a category without samples and for invalid heads)."""
    sums = w @ kv.contrib
    cnt = w.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (sums / cnt).astype(np.float32)
    out[..., ~kv.valid] = np.nan
    return out


def top_members(scores: np.ndarray, k: int) -> np.ndarray:
    """[..., L*H] bool: the top-``k`` heads with a score > 0 of each row (NaN never; ties by index), the
    vectorised ``top_heads``."""
    order = np.argsort(np.where(np.isnan(scores), np.inf, -scores), axis=-1, kind="stable")[..., :int(k)]
    member = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(member, order, np.take_along_axis(scores, order, -1) > 0, axis=-1)
    return member


def within_across(member: np.ndarray, levels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Mean Jaccard over same-level and different-level pairs of categories, per replicate ([R, C, L*H]
    membership in, two [R] arrays out; NaN where there is no such pair with a non-empty union)."""
    m = member.astype(np.float64)
    inter = m @ np.swapaxes(m, -1, -2)
    size = m.sum(-1)
    union = size[..., :, None] + size[..., None, :] - inter
    iu, ju = np.triu_indices(member.shape[-2], 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        jac = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)[..., iu, ju]
    code = {lv: i for i, lv in enumerate(dict.fromkeys(levels))}
    lv = np.array([code[x] for x in levels])
    same = lv[iu] == lv[ju]
    return _pair_mean(jac, same), _pair_mean(jac, ~same)


def _pair_mean(jac: np.ndarray, pick: np.ndarray) -> np.ndarray:
    v = jac[..., pick]
    ok = ~np.isnan(v)
    cnt = ok.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, np.where(ok, v, 0.0).sum(-1) / np.maximum(cnt, 1), np.nan)


def replicate_stats(kv: KindValues, ks: Sequence[int], rows: np.ndarray | None = None,
                    labels: np.ndarray | None = None, budget: int = 5_000_000) -> dict[int, np.ndarray]:
    """{K: [R, 2] (within, across)} of the replicates (``weights``' ``rows`` / ``labels``; default the
    observed data, R = 1), computed in blocks of replicates of bounded memory."""
    R = 1 if rows is None and labels is None else (rows if rows is not None else labels).shape[0]
    C = len(kv.categories)
    block = max(1, budget // max(1, C * max(kv.n, kv.contrib.shape[1])))
    out = {int(k): np.empty((R, 2)) for k in ks}
    for r0 in range(0, R, block):
        r1 = min(R, r0 + block)
        w = weights(kv.label, C, None if rows is None else rows[r0:r1], None if labels is None else labels[r0:r1])
        sc = category_scores(kv, w)
        for k in ks:
            wi, ac = within_across(top_members(sc, k), kv.levels)
            out[int(k)][r0:r1, 0], out[int(k)][r0:r1, 1] = wi, ac
    return out


def split_half(kv: KindValues, ks: Sequence[int], seed: int, splits: int = SPLITS) -> dict[int, dict[str, float | None]]:
    """{K: {category: mean Jaccard of its top-K sets from two random halves of its samples}} (None for a
    category with fewer than 2 samples, or two empty sets)."""
    rng = np.random.default_rng(seed)
    C = len(kv.categories)
    half = np.zeros((splits, kv.n), dtype=bool)  # True: half A
    for c in range(C):
        pos = np.flatnonzero(kv.label == c)
        for s in range(splits):
            half[s, rng.permutation(pos)[: len(pos) // 2]] = True
    one = np.eye(C)[kv.label].T  # [C, n]
    out = {}
    for k in ks:
        sa = top_members(category_scores(kv, one[None] * half[:, None]), k)
        sb = top_members(category_scores(kv, one[None] * ~half[:, None]), k)
        inter, union = (sa & sb).sum(-1), (sa | sb).sum(-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            jac = np.where(union > 0, inter / np.maximum(union, 1), np.nan)  # [splits, C]
        counts = np.bincount(kv.label, minlength=C)
        out[int(k)] = {c: (None if counts[i] < 2 or np.isnan(jac[:, i]).all() else float(np.nanmean(jac[:, i])))
                       for i, c in enumerate(kv.categories)}
    return out


# ------------------------------------------------------------------------------------- older tests (context)
def random_set_test(sets: Mapping[str, frozenset], levels: Sequence[str], pool: Sequence[Head],
                    n_perm: int = 10000, seed: int = 0) -> dict:
    """Observed within- and across-level mean Jaccard against random sets of the same sizes from ``pool``:
    "top heads are not random heads" (globally important heads pass it within and across levels alike;
    it does not test level specificity).

    Returns ``within``, ``across`` (observed), ``null_within`` / ``null_across`` (mean of the null),
    ``p_within`` / ``p_across`` (Monte Carlo P(null >= observed), one-sided), ``floor`` and ``n_perm``.
    """
    from vseam.stats import monte_carlo_p

    names = list(sets)
    sizes = [len(sets[n]) for n in names]
    pool = list(pool)
    if any(s > len(pool) for s in sizes):
        raise ValueError(f"a head set is larger than the pool of {len(pool)} heads: sizes {sizes}")
    within, across = pair_means(jaccard_matrix(sets), levels)
    rng = np.random.default_rng(seed)
    P = len(pool)
    size = np.asarray(sizes)
    iu, ju = np.triu_indices(len(names), 1)
    same = np.array([levels[i] == levels[j] for i, j in zip(iu, ju)], dtype=bool)
    pairs = np.empty((n_perm, len(iu)))
    block = max(1, 2_000_000 // max(1, len(names) * P))  # draws per block: bounded memory for 1,024-head models
    for r0 in range(0, n_perm, block):
        r1 = min(n_perm, r0 + block)
        # one-hot [draws, categories, pool]: a random size-s subset per category and draw
        ranks = rng.random((r1 - r0, len(names), P)).argsort(-1).argsort(-1)
        member = (ranks < size[None, :, None]).astype(np.int32)
        inter = np.einsum("rip,rjp->rij", member, member)
        union = size[:, None] + size[None, :] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            jac = np.where(union > 0, inter / np.maximum(union, 1), np.nan)
        pairs[r0:r1] = jac[:, iu, ju]
    null_w, null_a = _pair_mean(pairs, same), _pair_mean(pairs, ~same)
    # 1e-12: an arrangement equal to the observed one is not lost to rounding
    p = lambda obs, null: None if math.isnan(obs) else monte_carlo_p(obs - 1e-12, null)["p"]  # noqa: E731
    return {"within": within, "across": across,
            "null_within": _nanmean(null_w), "null_across": _nanmean(null_a),
            "p_within": p(within, null_w), "p_across": p(across, null_a), "floor": 1 / (1 + n_perm),
            "n_perm": int(n_perm), "sizes": dict(zip(names, sizes)), "pool": P}


def level_arrangements(levels: Sequence[str], max_exact: int = 50000, n_sample: int = 10000,
                       seed: int = 0) -> tuple[list[tuple[str, ...]], bool]:
    """The distinct orderings of the multiset of ``levels`` (exact when there are at most ``max_exact``),
    else ``n_sample`` seeded random permutations. Returns (arrangements, exact)."""
    levels = tuple(levels)
    counts = {lv: levels.count(lv) for lv in dict.fromkeys(levels)}
    n_distinct = math.factorial(len(levels))
    for c in counts.values():
        n_distinct //= math.factorial(c)
    if n_distinct <= max_exact:
        return list(_multiset_permutations(sorted(levels))), True
    rng = np.random.default_rng(seed)
    return [tuple(levels[i] for i in rng.permutation(len(levels))) for _ in range(n_sample)], False


def _multiset_permutations(items: list):
    """Each distinct ordering of ``items`` once (sorted input), without enumerating all n! orderings."""
    if not items:
        yield ()
        return
    for i, first in enumerate(items):
        if i and items[i - 1] == first:
            continue
        for rest in _multiset_permutations(items[:i] + items[i + 1:]):
            yield (first, *rest)


def label_permutation_test(jmat: np.ndarray, levels: Sequence[str], **kw) -> dict:
    """Is within-level overlap larger than across-level overlap by more than another grouping of the same
    categories into levels of the same sizes gives? Statistic ``within - across`` of the given sets;
    ``p`` = P(regrouped >= observed), ``p_less`` = P(regrouped <= observed), one-sided each.

    Also returns ``min_p``: the smallest p-value the test can give (1 / number of distinct groupings when
    exact): if it is above the significance level, the test cannot decide whatever the data.
    """
    w, a = pair_means(jmat, levels)
    obs = w - a
    arrangements, exact = level_arrangements(levels, **kw)
    # vectorised pair_means over all arrangements: [A, pairs] same-level masks against the pair values
    iu, ju = np.triu_indices(len(levels), 1)
    vals = np.asarray(jmat, dtype=np.float64)[iu, ju]
    ok = ~np.isnan(vals)
    code = {lv: i for i, lv in enumerate(dict.fromkeys(levels))}
    codes = np.array([[code[x] for x in arr] for arr in arrangements])
    same = (codes[:, iu] == codes[:, ju]) & ok
    diff = (codes[:, iu] != codes[:, ju]) & ok
    v = np.where(ok, vals, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        null = (same * v).sum(1) / same.sum(1) - (diff * v).sum(1) / diff.sum(1)
    finite = null[~np.isnan(null)]
    if math.isnan(obs) or not len(finite):
        p = p_less = None
    elif exact:  # every arrangement is in ``null`` already, the observed one included
        p, p_less = float(np.mean(finite >= obs - 1e-12)), float(np.mean(finite <= obs + 1e-12))
    else:
        from vseam.stats import monte_carlo_p

        p, p_less = monte_carlo_p(obs - 1e-12, finite)["p"], monte_carlo_p(obs + 1e-12, finite, "less")["p"]
    # distinct groupings (arrangements up to relabelling of the levels) give the smallest step
    min_p = 1.0 / _n_groupings(levels) if exact else 1.0 / (1 + len(null))
    return {"within": w, "across": a, "difference": obs, "p": p, "p_less": p_less, "min_p": min_p, "exact": exact,
            "n_arrangements": len(arrangements)}


def _n_groupings(levels: Sequence[str]) -> int:
    """Number of ways to split the categories into unlabeled groups of the levels' sizes."""
    sizes = [list(levels).count(lv) for lv in dict.fromkeys(levels)]
    n = math.factorial(len(levels))
    for s in sizes:
        n //= math.factorial(s)
    for s in set(sizes):
        n //= math.factorial(sizes.count(s))
    return n


# ------------------------------------------------------------------------------------- verdicts
def verdict(p: float | None, p_opposite: float | None, effect: float | None, alpha: float) -> str:
    """holds: p < alpha with the effect in the claim's direction (> 0); contradicted: the one-sided test
    the other way rejects (p_opposite < alpha) with the effect against the claim (< 0); undecided
    otherwise, an effect of exactly 0 included."""
    if effect is None or math.isnan(effect):
        return "undecided"
    if p is not None and p < alpha and effect > 0:
        return "holds"
    if p_opposite is not None and p_opposite < alpha and effect < 0:
        return "contradicted"
    return "undecided"


def _levels_ok(levels: Sequence[str], need_within: bool) -> bool:
    """Enough categories to compare: two levels (across pairs) and, for a within-level mean, a level with
    two categories."""
    counts = {lv: list(levels).count(lv) for lv in set(levels)}
    return len(counts) >= 2 and (not need_within or max(counts.values()) >= 2)


# ------------------------------------------------------------------------------------- analysis
def overlap_analysis(prob, correct, ablated, categories: Sequence[str | None], level_of: Mapping[str, str],
                     ks: Sequence[int], *, min_samples: int = 30, n_perm: int = 10000, n_boot: int = 1000,
                     alpha: float = 0.05, seed: int = 0) -> dict:
    """The whole analysis from a sweep's per-sample values (``load_per_sample``): per kind and K the
    sets, the Jaccard matrix, within / across, split-half stability and the random-set context; and the
    claims with effect, bootstrap CI, p (with its floor), n per category and verdict. JSON-able."""
    from vseam.stats import percentile_interval, stratified_bootstrap_indices, stratified_permutations

    ks = [int(k) for k in ks]
    all_cats = list(dict.fromkeys(c for c in categories if c is not None))
    if len(all_cats) < 2:
        raise ValueError(f"the per-sample values name {len(all_cats)} categories; the overlap analysis needs at least 2")
    out: dict = {"ks": ks, "alpha": alpha, "min_samples": int(min_samples), "n_permutations": int(n_perm),
                 "n_bootstrap": int(n_boot), "seed": int(seed), "splits": SPLITS,
                 "null": "category labels shuffled across samples (within the baseline-correct samples for positive "
                         "sets, within the baseline-incorrect ones for negative sets), scores, top-K sets and "
                         "statistic recomputed", "kinds": {}}
    values, obs, null, boot = {}, {}, {}, {}
    for i, kind in enumerate(KINDS):
        every = kind_values(prob, correct, ablated, categories, level_of, kind, keep=all_cats)
        counts = every.counts()
        keep = [c for c in all_cats if counts[c] >= min_samples]
        kv = kind_values(prob, correct, ablated, categories, level_of, kind, keep=keep)
        values[kind] = kv
        block = {"stratum": STRATUM[kind], "counts": counts, "categories": keep,
                 "levels": [level_of[c] for c in keep],
                 "excluded": {c: f"{counts[c]} {STRATUM[kind]} samples (< {min_samples})" for c in all_cats
                              if c not in keep},
                 "num_heads": kv.shape[0] * kv.shape[1], "shape": list(kv.shape), "per_k": []}
        out["kinds"][kind] = block
        if len(keep) < 2:
            continue
        obs[kind] = replicate_stats(kv, ks)
        perm = stratified_permutations(np.zeros(kv.n), n_perm, seed * 7919 + 1 + i)
        null[kind] = replicate_stats(kv, ks, labels=kv.label[perm])
        boot[kind] = replicate_stats(kv, ks, rows=stratified_bootstrap_indices(kv.label, n_boot, seed * 7919 + 11 + i))
        sc = category_scores(kv, weights(kv.label, len(keep)))[0]
        halves = split_half(kv, ks, seed * 7919 + 21 + i)
        pool = [(l, h) for l in range(kv.shape[0]) for h in range(kv.shape[1])]
        for k in ks:
            member = top_members(sc, k)
            sets = {c: frozenset(divmod(int(j), kv.shape[1]) for j in np.flatnonzero(member[ci]))
                    for ci, c in enumerate(keep)}
            jm = jaccard_matrix(sets)
            entry = {"k": k, "categories": keep, "levels": block["levels"],
                     "sets": {c: sorted([list(h) for h in s]) for c, s in sets.items()},
                     "jaccard": _nan_to_none(jm.tolist()),
                     "within": _num(obs[kind][k][0, 0]), "across": _num(obs[kind][k][0, 1]),
                     "split_half": halves[k],
                     "beyond_random": _clean(random_set_test(sets, block["levels"], pool, n_perm=n_perm,
                                                             seed=seed + k))}
            if kind == "positive":
                entry["regrouping"] = _clean(label_permutation_test(jm, block["levels"], seed=seed + k))
            block["per_k"].append(entry)

    claims = []
    for key, text in CLAIMS.items():
        kinds = ("positive",) if key == "positive_level_specific" else ("positive", "negative")
        short = [kd for kd in kinds if not _levels_ok(out["kinds"][kd]["levels"], key == "positive_level_specific")]
        n = {kd: {c: out["kinds"][kd]["counts"][c] for c in all_cats} for kd in kinds}
        base = {"key": key, "claim": text, "n": n, "min_samples": int(min_samples)}
        if short:
            need = ("categories in at least 2 levels, one level with 2 of them" if key == "positive_level_specific"
                    else "categories in at least 2 levels")
            why = "; ".join(f"{kd} sets need >= {min_samples} {STRATUM[kd]} samples in {need}; counts: "
                            + ", ".join(f"{c} {v}" for c, v in n[kd].items()) for kd in short)
            claims.append({**base, "verdict": "insufficient data", "per_k": [],
                           "sentence": f"Claim '{text}': insufficient data: {why}."})
            continue
        per_k = []
        for k in ks:
            if key == "positive_level_specific":
                stat = lambda d, k=k: d["positive"][k][:, 0] - d["positive"][k][:, 1]  # noqa: E731
            else:
                stat = lambda d, k=k: d["negative"][k][:, 1] - d["positive"][k][:, 1]  # noqa: E731
            per_k.append(_decide(float(stat(obs)[0]), stat(null), stat(boot), alpha, percentile_interval,
                                 out["kinds"]["positive"]["per_k"][ks.index(k)].get("regrouping")
                                 if key == "positive_level_specific" else None) | {"k": k})
        verdicts = {d["verdict"] for d in per_k}
        overall = verdicts.pop() if len(verdicts) == 1 else "undecided"
        claims.append({**base, "verdict": overall, "per_k": per_k, "sentence": _sentence(text, overall, per_k, n)})
    out["claims"] = claims
    return out


def _decide(effect: float, null: np.ndarray, boot: np.ndarray, alpha: float, interval, regroup: dict | None) -> dict:
    """Effect, CI, p both ways (the sample-level null; with ``regroup`` also the regrouping test, the larger
    p of the two) and the verdict of one claim at one K."""
    from vseam.stats import monte_carlo_p

    d: dict = {"effect": _num(effect), "ci": None, "null_mean": _nanmean(null)}
    ci = interval(boot)
    d["ci"] = None if any(math.isnan(x) for x in ci) else [float(x) for x in ci]
    if math.isnan(effect):
        return {**d, "p": None, "p_opposite": None, "floor": None, "verdict": "undecided"}
    g, le = monte_carlo_p(effect, null, "greater"), monte_carlo_p(effect, null, "less")
    d.update(p_sample=g["p"], p_sample_opposite=le["p"], floor_sample=g["floor"], n_null=g["n_null"])
    p, p_opp, floor = g["p"], le["p"], g["floor"]
    if regroup is not None:
        d.update(p_regrouping=regroup.get("p"), p_regrouping_opposite=regroup.get("p_less"),
                 floor_regrouping=regroup["min_p"])
        p = None if regroup.get("p") is None else max(p, regroup["p"])
        p_opp = None if regroup.get("p_less") is None else max(p_opp, regroup["p_less"])
        floor = max(floor, regroup["min_p"])
    d.update(p=p, p_opposite=p_opp, floor=floor, verdict=verdict(p, p_opp, effect, alpha))
    if d["verdict"] == "undecided" and floor >= alpha:
        d["note"] = f"the test cannot reach alpha {alpha}: its smallest p is {floor:.3g}"
    return d


def _sentence(text: str, overall: str, per_k: list[dict], n: dict) -> str:
    parts = []
    for d in per_k:
        ci = "n/a" if d["ci"] is None else f"[{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]"
        s = (f"K={d['k']}: effect {_f(d['effect'])} (95% CI {ci}; null mean {_f(d['null_mean'])}), "
             f"p={_p(d['p'])} (floor {_p(d['floor'])}")
        if "p_regrouping" in d:
            s += f"; sample-level {_p(d['p_sample'])}, regrouping {_p(d['p_regrouping'])}"
        s += f") -> {d['verdict']}"
        if d.get("note"):
            s += f" ({d['note']})"
        parts.append(s)
    counts = "; ".join(f"{kd}: " + ", ".join(f"{c} {v}" for c, v in cs.items()) for kd, cs in n.items())
    return f"Claim '{text}': {overall}. " + "; ".join(parts) + f". n per category: {counts}."


# ------------------------------------------------------------------------------------- helpers
def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy() if x.dtype.is_floating_point else x.detach().cpu().numpy()
    return np.asarray(x)


def _num(x) -> float | None:
    x = float(x)
    return None if math.isnan(x) else x


def _nanmean(x: np.ndarray) -> float | None:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else None


def _nan_to_none(x):
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _clean(d: dict) -> dict:
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _f(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _p(p) -> str:
    return "n/a" if p is None else (f"{p:.2g}" if p >= 0.001 else f"{p:.1e}")
