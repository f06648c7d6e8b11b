"""Cross-level overlap of head sets (SPEC section 2, "Cross-level overlap"): Jaccard overlap of the
top-K positive (and negative) heads between every pair of categories, mean overlap within a semantic
level vs across levels, two permutation tests, and one plain sentence per claim of the paper.

Pure functions over score matrices and head sets, so they are tested on hand-made sets with known
answers. The two tests:

- *random head sets*: each category's set is replaced by a uniformly random set of the same size from
  the same pool of heads; the p-value is how often the mean overlap (within level, across levels)
  is at least the observed one. "Shared" then means "more shared than chance".
- *label permutation*: the categories' level labels are permuted (every distinct assignment when there
  are few, else a seeded sample); the p-value is how often ``within - across`` is at least the
  observed difference. With 6 categories in 3 levels of 2 there are only 15 distinct groupings, so
  the smallest possible p-value is 1/15 = 0.067: such a test can never reach 0.05, and the verdict
  says so ("undecided") instead of pretending.

A head enters a top-K set only with a score > 0 (a head whose ablation never moved the answer is not a
"positive head"); ties at zero would otherwise be broken by index and fake an overlap. Sets can
therefore be smaller than K; the random sets keep each category's actual size.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

Head = tuple[int, int]


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


# ------------------------------------------------------------------------------------- tests
def _p_at_least(null: np.ndarray, observed: float) -> float:
    """One-sided permutation p-value with the observed arrangement counted: (1 + #{null >= obs}) / (1 + n).

    A tolerance of 1e-12 keeps an arrangement equal to the observed one from being lost to rounding.
    """
    null = null[~np.isnan(null)]
    return float((1 + np.sum(null >= observed - 1e-12)) / (1 + len(null)))


def random_set_test(sets: Mapping[str, frozenset], levels: Sequence[str], pool: Sequence[Head],
                    n_perm: int = 10000, seed: int = 0) -> dict:
    """Observed within- and across-level mean Jaccard against random sets of the same sizes from ``pool``.

    Returns ``within``, ``across`` (observed), ``null_within`` / ``null_across`` (mean of the null),
    ``p_within`` / ``p_across`` (P(null >= observed), one-sided) and ``n_perm``.
    """
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
    with np.errstate(invalid="ignore"), _quiet():
        null_w = np.nanmean(pairs[:, same], 1) if same.any() else np.full(n_perm, np.nan)
        null_a = np.nanmean(pairs[:, ~same], 1) if (~same).any() else np.full(n_perm, np.nan)
    return {"within": within, "across": across,
            "null_within": _nanmean(null_w), "null_across": _nanmean(null_a),
            "p_within": _p_at_least(null_w, within) if not math.isnan(within) else None,
            "p_across": _p_at_least(null_a, across) if not math.isnan(across) else None,
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
    """Is within-level overlap larger than across-level overlap by more than a regrouping of the
    categories gives? Statistic ``within - across``; p = P(permuted >= observed), one-sided.

    Also returns ``min_p``: the smallest p-value the test can give (1 / number of arrangements when
    exact): if it is above the significance level, the test cannot decide whatever the data.

    Under the null the category labels are exchangeable, so all distinct groupings of the categories
    into levels of the same sizes count; a grouping and its relabelling give the same statistic.
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
    if exact:
        # every arrangement is in ``null`` already, the observed one included
        finite = null[~np.isnan(null)]
        p = float(np.mean(finite >= obs - 1e-12)) if len(finite) and not math.isnan(obs) else None
        # distinct groupings (arrangements up to relabelling of the levels) give the smallest step
        n_groupings = _n_groupings(levels)
        min_p = 1.0 / n_groupings
    else:
        p = _p_at_least(null, obs) if not math.isnan(obs) else None
        min_p = 1.0 / (1 + len(null))
    return {"within": w, "across": a, "difference": obs, "p": p, "min_p": min_p, "exact": exact,
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


# ------------------------------------------------------------------------------------- analysis
@dataclass
class Claim:
    """One claim of the paper, its test at each K and the verdict in words."""

    key: str
    text: str  # the claim, as the paper puts it
    verdict: str  # holds | does not hold | undecided
    sentence: str  # one plain sentence with the numbers and p-values
    per_k: list[dict]

    def to_dict(self) -> dict:
        return {"key": self.key, "claim": self.text, "verdict": self.verdict, "sentence": self.sentence,
                "per_k": self.per_k}


def verdict(p: float | None, effect: float | None, min_p: float, alpha: float) -> str:
    """holds: p < alpha with a positive effect; does not hold: the effect is zero or the wrong way
    (the data point against the claim) while the test could have reached alpha; undecided otherwise
    (p >= alpha with a positive effect, or a test that cannot reach alpha at this sample size)."""
    if p is None or effect is None or math.isnan(effect):
        return "undecided"
    if min_p >= alpha:
        return "undecided"
    if p < alpha and effect > 0:
        return "holds"
    if effect <= 0:
        return "does not hold"
    return "undecided"


def overlap_analysis(matrices: Mapping[str, Mapping[str, object]], levels: Mapping[str, str],
                     ks: Sequence[int], n_perm: int = 10000, alpha: float = 0.05, seed: int = 0) -> dict:
    """The whole analysis from per-category score matrices.

    ``matrices``: kind (positive | negative) -> category -> [L, H] matrix (None = undefined: that
    category is left out of that kind and named in ``excluded``). ``levels``: category -> level.
    Returns a JSON-able dict: per kind and K the sets, the Jaccard matrix, both tests; and ``claims``.
    """
    out: dict = {"ks": [int(k) for k in ks], "alpha": alpha, "n_perm": int(n_perm), "seed": int(seed),
                 "kinds": {}, "excluded": {}}
    for kind, per_cat in matrices.items():
        cats = [c for c, m in per_cat.items() if m is not None]
        out["excluded"][kind] = [c for c, m in per_cat.items() if m is None]
        if not cats:
            continue
        shape = np.asarray(per_cat[cats[0]]).shape
        pool = [(l, h) for l in range(shape[0]) for h in range(shape[1])]
        lv = [levels[c] for c in cats]
        per_k = []
        for k in ks:
            sets = {c: top_heads(per_cat[c], k) for c in cats}
            jm = jaccard_matrix(sets)
            rnd = random_set_test(sets, lv, pool, n_perm=n_perm, seed=seed + int(k))
            lab = label_permutation_test(jm, lv, seed=seed + int(k))
            per_k.append({"k": int(k), "categories": cats, "levels": lv,
                          "sets": {c: sorted([list(h) for h in s]) for c, s in sets.items()},
                          "jaccard": _nan_to_none(jm.tolist()), "random_sets": _clean(rnd),
                          "label_permutation": _clean(lab)})
        out["kinds"][kind] = {"num_heads": len(pool), "shape": list(shape), "per_k": per_k}
    out["claims"] = [c.to_dict() for c in claims(out, alpha)]
    return out


CLAIMS = {
    "positive_within": "positive heads are shared within a semantic level",
    "positive_across": "positive heads vary across semantic levels (less shared across levels than within)",
    "negative_across": "negative heads generalise across semantic levels",
}


def claims(analysis: dict, alpha: float = 0.05) -> list[Claim]:
    """One Claim per paper claim, decided at each K; the overall verdict is the per-K verdict when all
    K agree, else "undecided"."""
    out = []
    for key, text in CLAIMS.items():
        kind = key.split("_")[0]
        block = analysis["kinds"].get(kind)
        if block is None:
            out.append(Claim(key, text, "undecided",
                             f"Claim '{text}': undecided; no category has a defined {kind} score matrix.", []))
            continue
        per_k = []
        for entry in block["per_k"]:
            rnd, lab = entry["random_sets"], entry["label_permutation"]
            if key == "positive_within":
                obs, null, p, min_p = rnd["within"], rnd["null_within"], rnd["p_within"], 1 / (1 + rnd["n_perm"])
                effect = None if obs is None or null is None else obs - null
                desc = (f"K={entry['k']}: within-level Jaccard {_f(obs)} vs {_f(null)} for random sets, "
                        f"p={_p(p)}")
            elif key == "positive_across":
                obs, p, min_p = lab["difference"], lab["p"], lab["min_p"]
                effect = obs
                desc = (f"K={entry['k']}: within {_f(lab['within'])} vs across {_f(lab['across'])}, "
                        f"label-permutation p={_p(p)} (smallest possible {_p(min_p)})")
            else:
                obs, null, p, min_p = rnd["across"], rnd["null_across"], rnd["p_across"], 1 / (1 + rnd["n_perm"])
                effect = None if obs is None or null is None else obs - null
                desc = (f"K={entry['k']}: across-level Jaccard {_f(obs)} vs {_f(null)} for random sets, "
                        f"p={_p(p)}")
            v = verdict(p, effect, min_p, alpha)
            per_k.append({"k": entry["k"], "verdict": v, "p": p, "effect": effect, "min_p": min_p, "text": desc})
        verdicts = {d["verdict"] for d in per_k}
        overall = verdicts.pop() if len(verdicts) == 1 else "undecided"
        n_cat = len(block["per_k"][0]["categories"]) if block["per_k"] else 0
        sentence = (f"Claim '{text}' {overall} on {n_cat} categories ({block['num_heads']} heads, "
                    f"alpha {alpha}): " + "; ".join(f"{d['text']} -> {d['verdict']}" for d in per_k) + ".")
        out.append(Claim(key, text, overall, sentence, per_k))
    return out


# ------------------------------------------------------------------------------------- helpers
class _quiet:
    """Silence numpy's 'mean of empty slice' warnings inside a block."""

    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _nanmean(x: np.ndarray) -> float:
    x = x[~np.isnan(x)]
    return float(x.mean()) if len(x) else float("nan")


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
