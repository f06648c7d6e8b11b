"""vseam.stats against scipy and brute force on fixed inputs (no model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats as sps

from vseam import stats


def test_mcnemar_equals_exact_binomial_formula():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = rng.random(200) < 0.8, rng.random(200) < 0.7
        out = stats.mcnemar(a, b)
        n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
        assert (out["a_only"], out["b_only"], out["n"]) == (n01, n10, 200)
        # two-sided exact McNemar at p = 1/2: twice the smaller tail, capped at 1
        expected = min(1.0, 2 * sps.binom.cdf(min(n01, n10), n01 + n10, 0.5))
        assert out["p"] == pytest.approx(expected, rel=1e-9)


def test_mcnemar_known_case_and_no_discordance():
    # 32 fixed, 1 broken: p = 2 * P(X <= 1), X ~ Bin(33, 1/2) = 2 * 34 / 2**33 = 7.9e-9
    a = np.r_[np.ones(32, bool), np.zeros(1, bool), np.ones(10, bool)]
    b = np.r_[np.zeros(32, bool), np.ones(1, bool), np.ones(10, bool)]
    assert stats.mcnemar(a, b)["p"] == pytest.approx(2 * 34 / 2 ** 33, rel=1e-9)
    assert stats.mcnemar([True, False], [True, False])["p"] == 1.0
    with pytest.raises(ValueError, match="same questions"):
        stats.mcnemar([True], [True, False])


def test_paired_se_is_not_an_arms_unpaired_se():
    a = torch.tensor([1, 1, 1, 0, 1, 1, 0, 1], dtype=torch.bool)
    b = torch.tensor([1, 0, 1, 0, 1, 0, 0, 1], dtype=torch.bool)
    out = stats.paired_difference(a, b)
    d = a.double() - b.double()
    assert out["diff"] == pytest.approx(float(d.mean()))
    assert out["se"] == pytest.approx(float(d.std(unbiased=True) / np.sqrt(8)))


def test_bootstrap_mean_interval_matches_scipy_percentile_bootstrap():
    x = np.random.default_rng(1).random(300)
    ours = stats.bootstrap_ci(x, n_boot=4000, seed=0)
    ref = sps.bootstrap((x,), np.mean, n_resamples=4000, method="percentile", random_state=0).confidence_interval
    assert ours["mean"] == pytest.approx(x.mean())
    assert ours["ci"][0] == pytest.approx(ref.low, abs=0.006)
    assert ours["ci"][1] == pytest.approx(ref.high, abs=0.006)
    # paired: resampling pairs keeps the correlation, so the interval of a - b is far narrower than unpaired
    y = x + np.random.default_rng(2).normal(0, 0.01, 300)
    paired = stats.paired_bootstrap_ci(y, x, n_boot=2000, seed=0)
    assert paired["ci"][1] - paired["ci"][0] < 0.01
    assert paired["ci"][0] <= paired["diff"] <= paired["ci"][1]


def test_bootstrap_statistic_drops_nan_replicates():
    out = stats.bootstrap_statistic(lambda idx: float("nan") if idx[0] == 0 else float(idx.mean()), 5,
                                    n_boot=200, seed=0)
    assert 0 < out["n_valid"] < 200
    assert out["ci"][0] <= out["ci"][1]


def test_monte_carlo_p_counts_the_observation_and_states_its_floor():
    null = np.arange(99, dtype=float)  # 0..98
    top = stats.monte_carlo_p(1000.0, null)
    assert top == {"p": pytest.approx(0.01), "floor": pytest.approx(0.01), "n_null": 99, "rank": 1}
    mid = stats.monte_carlo_p(49.0, null)  # 50 draws >= 49 (49..98)
    assert mid["p"] == pytest.approx(51 / 100) and mid["rank"] == 50
    assert stats.monte_carlo_p(-1.0, null, alternative="less")["p"] == pytest.approx(0.01)
    with pytest.raises(ValueError):
        stats.monte_carlo_p(0.0, null, alternative="two")


def test_enumeration_p_is_the_share_of_the_whole_population():
    pop = np.array([0.2, 0.5, 0.5, 0.9, 1.0])  # every arrangement, the observed one (0.5) among them
    out = stats.enumeration_p(0.5, pop, alternative="less")
    assert out == {"p": pytest.approx(3 / 5), "floor": pytest.approx(1 / 5), "n_null": 5, "rank": 2}
    assert stats.enumeration_p(0.2, pop, "less")["p"] == pytest.approx(1 / 5)  # the floor: the lowest of all
    assert stats.enumeration_p(1.0, pop)["p"] == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="not among"):
        stats.enumeration_p(0.1, pop, "less")


def test_stratified_resamples_and_permutations_keep_each_stratum():
    strata = np.array(["a", "b", "a", "c", "b", "a"])
    idx = stats.stratified_bootstrap_indices(strata, 500, seed=1)
    assert idx.shape == (500, 6) and (strata[idx] == strata[None]).all()  # each position draws from its stratum
    a = np.flatnonzero(strata == "a")
    assert set(np.unique(idx[:, a])) == set(a)  # with replacement: every member of "a" is drawn somewhere
    assert np.array_equal(idx, stats.stratified_bootstrap_indices(strata, 500, seed=1))  # seeded
    perm = stats.stratified_permutations(strata, 300, seed=2)
    assert (strata[perm] == strata[None]).all()
    assert all(sorted(row) == list(range(6)) for row in perm.tolist())  # a permutation: each sample once
    assert len({tuple(r) for r in perm[:, a].tolist()}) == 6  # all 3! orders of stratum "a" turn up
    assert np.array_equal(perm, stats.stratified_permutations(strata, 300, seed=2))


def test_auroc_equals_mann_whitney_u_with_ties():
    rng = np.random.default_rng(3)
    s = rng.integers(0, 6, 80).astype(float)  # many ties
    y = rng.random(80) < 0.4
    u = sps.mannwhitneyu(s[y], s[~y]).statistic
    assert stats.auroc(s, y) == pytest.approx(u / (y.sum() * (~y).sum()))
    assert stats.auroc(s + 5.0, y) == stats.auroc(s, y)  # threshold-free
    assert stats.auroc([1.0, 2.0], [True, True]) is None


def test_threshold_accuracies_against_brute_force():
    rng = np.random.default_rng(4)
    s = np.round(rng.normal(size=60), 1)
    y = (s + rng.normal(0, 0.8, 60)) > 0.3
    best = max(np.mean((s > t) == y) for t in np.r_[s.min() - 1, np.unique(s)])
    out = stats.best_threshold_accuracy(s, y)
    assert out["accuracy"] == pytest.approx(best)
    assert np.mean((s > out["threshold"]) == y) == pytest.approx(best)
    # a perfectly separating margin shifted by a bias: threshold accuracy 1.0, AUROC 1.0, balanced 1.0
    m = np.r_[np.linspace(1, 2, 10), np.linspace(3, 4, 10)]
    lab = np.r_[np.zeros(10, bool), np.ones(10, bool)]
    assert stats.best_threshold_accuracy(m + 100, lab)["accuracy"] == 1.0
    assert stats.auroc(m, lab) == 1.0
    assert stats.accuracy_at_yes_ratio(m + 100, lab, 0.5) == 1.0
    # balanced at 0.5 calls exactly half "yes"
    assert stats.accuracy_at_yes_ratio([0.0, 0.0, 0.0, 0.0], [True, True, False, False]) == 0.5
