"""Unit tier of the cross-level overlap analysis: hand-made head sets with answers known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vseam.study.overlap import (jaccard, jaccard_matrix, label_permutation_test, level_arrangements,
                                 overlap_analysis, pair_means, random_set_test, top_heads, verdict)


def test_jaccard_and_pair_means_by_hand():
    assert jaccard({(0, 0), (0, 1)}, {(0, 1), (1, 1)}) == pytest.approx(1 / 3)
    assert jaccard(set(), {(0, 0)}) == 0.0
    assert math.isnan(jaccard(set(), set()))
    sets = {"a": frozenset({(0, 0), (0, 1)}), "b": frozenset({(0, 1)}), "c": frozenset({(2, 2)})}
    jm = jaccard_matrix(sets)
    assert jm.tolist() == [[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]]
    within, across = pair_means(jm, ["x", "x", "y"])
    assert (within, across) == (0.5, 0.0)
    assert math.isnan(pair_means(jm, ["x", "y", "z"])[0])  # no within-level pair at all


def test_top_heads_skip_zero_and_nan_and_break_ties_by_index():
    m = np.array([[0.0, 0.3, np.nan], [0.3, 0.0, 0.1]])
    assert top_heads(m, 2) == {(0, 1), (1, 0)}  # the tie at 0.3: both, (0, 1) first
    assert top_heads(m, 10) == {(0, 1), (1, 0), (1, 2)}  # zeros and NaN never enter, so fewer than K
    assert top_heads(np.zeros((3, 4)), 3) == frozenset()


def test_random_set_test_against_the_analytic_null():
    # two categories of one level with the same single head out of 10: by chance they match with p 1/10
    pool = [(0, h) for h in range(10)]
    sets = {"a": frozenset({(0, 3)}), "b": frozenset({(0, 3)})}
    r = random_set_test(sets, ["x", "x"], pool, n_perm=20000, seed=1)
    assert r["within"] == 1.0 and r["null_within"] == pytest.approx(0.1, abs=0.01)
    assert r["p_within"] == pytest.approx(0.1, abs=0.01)
    assert r["p_across"] is None  # no across-level pair
    # E[Jaccard] of two random 2-sets of 4: P(|A & B| = 0, 1, 2) = 1/6, 4/6, 1/6 -> J = 0, 1/3, 1
    pool4 = [(0, h) for h in range(4)]
    r = random_set_test({"a": frozenset(pool4[:2]), "b": frozenset(pool4[2:])}, ["x", "y"], pool4, n_perm=20000)
    assert r["null_across"] == pytest.approx(4 / 6 / 3 + 1 / 6, abs=0.01)
    assert r["across"] == 0.0 and r["p_across"] == 1.0  # nothing is less than a disjoint pair
    with pytest.raises(ValueError, match="larger than the pool"):
        random_set_test({"a": frozenset(pool4)}, ["x"], pool4[:2])


def test_label_permutation_exact_p_and_its_floor():
    # 4 categories, levels A A B B: within pairs overlap fully, across not at all. Of the 3 groupings
    # into two pairs only the true one has within - across = 1, so p = 1/3 exactly, also its floor.
    jm = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=float)
    r = label_permutation_test(jm, ["A", "A", "B", "B"])
    assert r["exact"] and r["difference"] == 1.0
    assert r["p"] == pytest.approx(1 / 3) and r["min_p"] == pytest.approx(1 / 3)
    # 6 categories in 3 levels of 2: 15 groupings, so p can never be below 1/15 = 0.067
    arr, exact = level_arrangements(["o", "o", "a", "a", "r", "r"])
    assert exact and len(arr) == 90 and len(set(arr)) == 90
    jm6 = np.kron(np.eye(3), np.ones((2, 2)))
    r6 = label_permutation_test(jm6, ["o", "o", "a", "a", "r", "r"])
    assert r6["p"] == pytest.approx(1 / 15) and r6["min_p"] == pytest.approx(1 / 15)
    assert verdict(r6["p"], r6["difference"], r6["min_p"], 0.05) == "undecided"  # cannot reach 0.05


def _matrices(n_levels: int, per_level: int, L: int = 6, H: int = 8, k: int = 3):
    """Positive: the categories of a level share k heads, levels disjoint. Negative: one k-set for all."""
    levels, pos, neg = {}, {}, {}
    for lv in range(n_levels):
        for c in range(per_level):
            name = f"L{lv}C{c}"
            levels[name] = f"level{lv}"
            p = np.zeros((L, H))
            for j in range(k):
                p[lv, j] = 1.0 + j  # level lv's heads live in layer lv
            pos[name] = p
            n = np.zeros((L, H))
            n[L - 1, :k] = 1.0
            neg[name] = n
    return {"positive": pos, "negative": neg}, levels


def test_overlap_analysis_decides_the_claims_on_known_structure():
    mats, levels = _matrices(3, 4)  # 12 categories: the label test has 5775 groupings, so it can decide
    res = overlap_analysis(mats, levels, ks=[3], n_perm=2000, seed=0)
    by = {c["key"]: c for c in res["claims"]}
    assert by["positive_within"]["verdict"] == "holds"
    assert by["positive_across"]["verdict"] == "holds"
    assert by["negative_across"]["verdict"] == "holds"
    lab = res["kinds"]["positive"]["per_k"][0]["label_permutation"]
    assert lab["within"] == 1.0 and lab["across"] == 0.0 and lab["p"] == pytest.approx(1 / 5775)
    for c in res["claims"]:
        assert c["verdict"] in c["sentence"] and "p=" in c["sentence"]

    # 6 categories: the same structure, but the across-level claim cannot be decided by its test
    mats6, levels6 = _matrices(3, 2)
    by6 = {c["key"]: c for c in overlap_analysis(mats6, levels6, ks=[3], n_perm=2000)["claims"]}
    assert by6["positive_within"]["verdict"] == "holds"
    assert by6["positive_across"]["verdict"] == "undecided" and "smallest possible 0.067" in by6["positive_across"]["sentence"]


def test_overlap_analysis_says_does_not_hold_and_names_undefined_categories():
    mats, levels = _matrices(3, 4)
    # negative heads: every category its own disjoint set -> across-level overlap 0, below chance
    for i, name in enumerate(mats["negative"]):
        n = np.zeros((6, 8))
        n.reshape(-1)[i * 3:(i + 1) * 3] = 1.0
        mats["negative"][name] = n
    # positive: the same heads everywhere -> within == across, no difference between levels
    for name in mats["positive"]:
        p = np.zeros((6, 8))
        p[0, :3] = 1.0
        mats["positive"][name] = p
    mats["negative"]["L0C0"] = None  # no baseline-incorrect sample in that category
    res = overlap_analysis(mats, levels, ks=[3, 5], n_perm=1000)
    by = {c["key"]: c for c in res["claims"]}
    assert by["negative_across"]["verdict"] == "does not hold"
    assert by["positive_across"]["verdict"] == "does not hold"
    assert by["positive_within"]["verdict"] == "holds"  # identical sets are shared beyond chance
    assert res["excluded"]["negative"] == ["L0C0"]
    assert len(res["kinds"]["negative"]["per_k"][0]["categories"]) == 11
