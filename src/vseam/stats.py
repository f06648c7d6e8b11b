"""The statistics every finding of the project carries, as pure functions over per-sample values.

One home for: the exact McNemar test of two methods scored on the same questions, percentile bootstrap
intervals (of a mean, of a paired difference, of any statistic of resampled samples; stratified resamples
and permutations that keep each group's size), the Monte Carlo p-value of an observed statistic against a
null distribution (a random-draw control, a permutation test) with its floor, the exact p of a complete
enumeration, the threshold-free AUROC of a score against binary labels, the accuracy of one threshold on a
score (balanced at a yes-ratio of 0.5, or the best any threshold reaches), and Spearman's rank correlation.

Everything takes array-likes (lists, numpy arrays, tensors) and returns plain floats / dicts, so a
result file stores them as they are; tests compare them with scipy on fixed inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def _array(x, dtype=np.float64) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype).reshape(-1)


# ------------------------------------------------------------------------------- paired tests
def mcnemar(a_correct, b_correct) -> dict:
    """Exact (binomial) two-sided McNemar test of two methods on the same questions.

    ``a_correct`` / ``b_correct``: per question, whether each method answered it correctly (same order).
    Returns ``{"n", "a_only", "b_only", "p"}``: ``a_only`` questions only A gets right (A "fixes" them
    relative to B), ``b_only`` the reverse, and the two-sided exact p of ``a_only`` among the discordant
    pairs under Binomial(a_only + b_only, 1/2) (1.0 when there is no discordant pair).
    """
    a, b = _array(a_correct, bool), _array(b_correct, bool)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: the two methods were scored on {a.size} and {b.size} questions; a paired "
                         "test needs the same questions")
    a_only, b_only = int(np.sum(a & ~b)), int(np.sum(~a & b))
    m = a_only + b_only
    if m == 0:
        p = 1.0
    else:
        from scipy.stats import binomtest

        p = float(binomtest(a_only, m, 0.5, alternative="two-sided").pvalue)
    return {"n": int(a.size), "a_only": a_only, "b_only": b_only, "p": min(1.0, p)}


def paired_difference(a, b) -> dict:
    """Mean of ``a - b`` over the same questions with its paired standard error ``sd(a - b) / sqrt(n)``
    (not one arm's unpaired SE). ``{"n", "diff", "se"}``; se is None below two questions."""
    a, b = _array(a), _array(b)
    if a.shape != b.shape:
        raise ValueError(f"paired_difference: {a.size} vs {b.size} values; a paired difference needs the same questions")
    d = a - b
    n = int(d.size)
    se = float(d.std(ddof=1) / np.sqrt(n)) if n >= 2 else None
    return {"n": n, "diff": float(d.mean()) if n else None, "se": se}


# ------------------------------------------------------------------------------- bootstrap
def bootstrap_indices(n: int, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] indices of ``n_boot`` resamples (with replacement) of ``n`` samples, seeded."""
    if n <= 0:
        raise ValueError("bootstrap: no sample to resample")
    return np.random.default_rng(seed).integers(0, n, size=(int(n_boot), int(n)))


def stratified_bootstrap_indices(strata, n_boot: int, seed: int) -> np.ndarray:
    """[n_boot, n] indices of ``n_boot`` resamples that draw, for each position, a sample of the same stratum
    (with replacement within the stratum): every stratum keeps its size and its positions, so a statistic
    of per-group means never sees a group shrink below its count. ``strata``: a label per sample."""
    lab = np.asarray(strata)
    if lab.ndim != 1 or lab.size == 0:
        raise ValueError("stratified bootstrap: expected a non-empty 1-D array of stratum labels")
    rng = np.random.default_rng(seed)
    out = np.empty((int(n_boot), lab.size), dtype=np.int64)
    for value in dict.fromkeys(lab.tolist()):
        pos = np.flatnonzero(lab == value)
        out[:, pos] = pos[rng.integers(0, pos.size, size=(int(n_boot), pos.size))]
    return out


def stratified_permutations(strata, n_perm: int, seed: int) -> np.ndarray:
    """[n_perm, n] index arrays, each a random permutation of the samples within every stratum (position i
    takes the sample of another position of its stratum): shuffling labels along it keeps each stratum's
    label counts. ``strata``: a label per sample."""
    lab = np.asarray(strata)
    if lab.ndim != 1:
        raise ValueError("stratified permutations: expected a 1-D array of stratum labels")
    rng = np.random.default_rng(seed)
    out = np.tile(np.arange(lab.size), (int(n_perm), 1))
    for value in dict.fromkeys(lab.tolist()):
        pos = np.flatnonzero(lab == value)
        out[:, pos] = pos[rng.permuted(np.tile(np.arange(pos.size), (int(n_perm), 1)), axis=1)]
    return out


def percentile_interval(values, level: float = 0.95) -> tuple[float, float]:
    """The central ``level`` percentile interval of bootstrap replicates (NaN replicates dropped)."""
    v = _array(values)
    v = v[~np.isnan(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def bootstrap_ci(values, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of ``values`` and its percentile bootstrap interval over samples: ``{"n", "mean", "ci"}``
    (``ci`` None for no sample). For a 0/1 vector this is an accuracy's interval."""
    v = _array(values)
    if v.size == 0:
        return {"n": 0, "mean": None, "ci": None}
    reps = v[bootstrap_indices(v.size, n_boot, seed)].mean(axis=1)
    return {"n": int(v.size), "mean": float(v.mean()), "ci": list(percentile_interval(reps, level))}


def paired_bootstrap_ci(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean of ``a - b`` over the same questions and its bootstrap interval (questions resampled
    together, so the pairing is kept): ``{"n", "diff", "se", "ci"}`` (se: the paired SE)."""
    out = paired_difference(a, b)
    if out["n"] == 0:
        return {**out, "ci": None}
    d = _array(a) - _array(b)
    reps = d[bootstrap_indices(d.size, n_boot, seed)].mean(axis=1)
    return {**out, "ci": list(percentile_interval(reps, level))}


def bootstrap_statistic(stat: Callable[[np.ndarray], float], n: int, *, n_boot: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict:
    """Percentile interval of any statistic of resampled sample indices: ``stat(idx)`` gets an int array of
    ``n`` indices drawn with replacement and returns a float (NaN allowed: dropped). ``{"ci", "n_boot",
    "n_valid"}``."""
    reps = np.array([stat(idx) for idx in bootstrap_indices(n, n_boot, seed)], dtype=np.float64)
    return {"ci": list(percentile_interval(reps, level)), "n_boot": int(n_boot),
            "n_valid": int(np.sum(~np.isnan(reps)))}


# ------------------------------------------------------------------------------- nulls
def monte_carlo_p(observed: float, null: Sequence[float], alternative: str = "greater") -> dict:
    """p of ``observed`` against ``len(null)`` draws of the statistic under the null, counting the
    observation itself (``(1 + #{null at least as extreme}) / (1 + n)``, never 0), with the floor
    ``1 / (1 + n)`` the test cannot go below. ``alternative``: "greater" (large is extreme) or "less".

    Returns ``{"p", "floor", "n_null", "rank"}``; ``rank`` = 1 + the number of null draws strictly more
    extreme than the observation (1 = the observation beats every draw)."""
    v = _array(null)
    v = v[~np.isnan(v)]
    if alternative not in ("greater", "less"):
        raise ValueError(f"monte_carlo_p: alternative={alternative!r}, expected 'greater' or 'less'")
    obs = float(observed)
    if alternative == "greater":
        at_least, beyond = np.sum(v >= obs), np.sum(v > obs)
    else:
        at_least, beyond = np.sum(v <= obs), np.sum(v < obs)
    n = int(v.size)
    return {"p": float((1 + at_least) / (1 + n)), "floor": 1.0 / (1 + n), "n_null": n, "rank": int(1 + beyond)}


def enumeration_p(observed: float, population: Sequence[float], alternative: str = "greater") -> dict:
    """Exact p of ``observed`` against the statistic of *every* arrangement under the null, the observed one
    among them (e.g. all K-head sets when there are no more than the trials): ``#{at least as extreme} / n``,
    floor ``1 / n``. Same keys as ``monte_carlo_p`` (``n_null`` = the arrangements enumerated)."""
    v = _array(population)
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise ValueError("enumeration_p: an empty population")
    rank = monte_carlo_p(observed, v, alternative)["rank"]
    at_least = int(np.sum(v >= float(observed)) if alternative == "greater" else np.sum(v <= float(observed)))
    if at_least < 1:
        raise ValueError(f"enumeration_p: the observed value {observed} is not among the enumerated ones (none is "
                         f"as extreme); use monte_carlo_p for an observation outside the population")
    return {"p": at_least / v.size, "floor": 1.0 / v.size, "n_null": int(v.size), "rank": rank}


# ------------------------------------------------------------------------------- scores vs labels
def auroc(score, positive) -> float | None:
    """Area under the ROC curve of ``score`` for the binary labels ``positive`` (Mann-Whitney U / (n+ n-),
    ties counted half): the chance that a random positive outscores a random negative. None when either
    class is empty. Threshold-free: a shift of every score leaves it unchanged."""
    s, y = _array(score), _array(positive, bool)
    if s.shape != y.shape:
        raise ValueError(f"auroc: {s.size} scores for {y.size} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    from scipy.stats import rankdata

    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def accuracy_at_yes_ratio(score, positive, yes_ratio: float = 0.5) -> float | None:
    """Accuracy of calling the top ``yes_ratio`` share of ``score`` positive: one threshold chosen so that
    exactly ``k = round(yes_ratio * n)`` calls are "yes". Samples tied at the threshold share the remaining
    "yes" calls at random, counted by their expectation (so no order of the inputs can favour the labels).
    POPE's ``acc_at_balanced`` is ``yes_ratio=0.5``."""
    s, y = _array(score), _array(positive, bool)
    if s.shape != y.shape:
        raise ValueError(f"accuracy_at_yes_ratio: {s.size} scores for {y.size} labels")
    if s.size == 0:
        return None
    k = int(round(float(yes_ratio) * s.size))
    if k == 0:
        return float(np.mean(~y))
    t = np.sort(s)[::-1][k - 1]  # the k-th largest score
    above, tied = s > t, s == t
    share = (k - int(above.sum())) / int(tied.sum())  # the share of tied samples called "yes"
    correct = np.sum(above & y) + np.sum((s < t) & ~y) + share * np.sum(tied & y) + (1 - share) * np.sum(tied & ~y)
    return float(correct / s.size)


def best_threshold_accuracy(score, positive) -> dict:
    """The best accuracy any single threshold on ``score`` reaches ("yes" when score > t), and that t:
    ``{"accuracy", "threshold"}`` (None for no sample). An upper bound on what a bias shift can do."""
    s, y = _array(score), _array(positive, bool)
    if s.shape != y.shape:
        raise ValueError(f"best_threshold_accuracy: {s.size} scores for {y.size} labels")
    if s.size == 0:
        return {"accuracy": None, "threshold": None}
    order = np.argsort(s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # threshold below index i: samples [0, i) say "no", [i, n) say "yes"; only cut between distinct scores
    neg_below = np.concatenate([[0], np.cumsum(~y_sorted)])
    pos_above = np.concatenate([np.cumsum(y_sorted[::-1])[::-1], [0]])
    correct = neg_below + pos_above
    cut_ok = np.concatenate([[True], s_sorted[1:] > s_sorted[:-1], [True]])
    correct = np.where(cut_ok, correct, -1)
    i = int(np.argmax(correct))
    if i == 0:
        t = float(s_sorted[0]) - 1.0
    elif i == s.size:
        t = float(s_sorted[-1])
    else:
        t = float((s_sorted[i - 1] + s_sorted[i]) / 2)
    return {"accuracy": float(correct[i] / s.size), "threshold": t}


# ------------------------------------------------------------------------------- correlation
def spearman(a, b) -> float | None:
    """Spearman rank correlation of two equally shaped arrays (matrices: over their entries), with tied
    values given their average rank and entries where either is NaN left out (as ``scipy.stats.spearmanr``
    with ``nan_policy="omit"`` on the pairs). None when either is None (an undefined score matrix); NaN when
    either is constant (no ranking to compare)."""
    from scipy.stats import rankdata

    if a is None or b is None:
        return None
    x, y = _array(a), _array(b)
    if x.shape != y.shape:
        raise ValueError(f"spearman: {x.size} values against {y.size}")
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = rankdata(x[keep]), rankdata(y[keep])
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")
