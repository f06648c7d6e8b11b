"""Unit tier of the cross-level overlap analysis: hand-made head sets with answers known by hand, and
synthetic per-sample ablation values with planted heads (known truth) for the claims' tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vseam.study.overlap import (
    jaccard,
    jaccard_matrix,
    label_permutation_test,
    level_arrangements,
    overlap_analysis,
    pair_means,
    random_set_test,
    top_heads,
    top_members,
    verdict,
)


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


def test_vectorised_top_members_equal_top_heads():
    rng = np.random.default_rng(0)
    for _ in range(50):
        m = rng.choice([0.0, 0.1, 0.2, 0.3, np.nan, -0.1], size=(3, 4)).astype(np.float32)  # many ties
        for k in (1, 3, 5, 12):
            got = top_members(m.reshape(1, -1), k)[0]
            assert {divmod(int(j), 4) for j in np.flatnonzero(got)} == top_heads(m, k)


def test_random_set_test_against_the_analytic_null():
    # two categories of one level with the same single head out of 10: by chance they match with p 1/10
    pool = [(0, h) for h in range(10)]
    sets = {"a": frozenset({(0, 3)}), "b": frozenset({(0, 3)})}
    r = random_set_test(sets, ["x", "x"], pool, n_perm=20000, seed=1)
    assert r["within"] == 1.0 and r["null_within"] == pytest.approx(0.1, abs=0.01)
    assert r["p_within"] == pytest.approx(0.1, abs=0.01) and r["floor"] == pytest.approx(1 / 20001)
    assert r["p_across"] is None  # no across-level pair
    # E[Jaccard] of two random 2-sets of 4: P(|A & B| = 0, 1, 2) = 1/6, 4/6, 1/6 -> J = 0, 1/3, 1
    pool4 = [(0, h) for h in range(4)]
    r = random_set_test({"a": frozenset(pool4[:2]), "b": frozenset(pool4[2:])}, ["x", "y"], pool4, n_perm=20000)
    assert r["null_across"] == pytest.approx(4 / 6 / 3 + 1 / 6, abs=0.01)
    assert r["across"] == 0.0 and r["p_across"] == 1.0  # nothing is less than a disjoint pair
    with pytest.raises(ValueError, match="larger than the pool"):
        random_set_test({"a": frozenset(pool4)}, ["x"], pool4[:2])


def test_label_permutation_exact_p_both_ways_and_its_floor():
    # 4 categories, levels A A B B: within pairs overlap fully, across not at all. Of the 3 groupings
    # into two pairs only the true one has within - across = 1, so p = 1/3 exactly, also its floor.
    jm = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], dtype=float)
    r = label_permutation_test(jm, ["A", "A", "B", "B"])
    assert r["exact"] and r["difference"] == 1.0
    assert r["p"] == pytest.approx(1 / 3) and r["min_p"] == pytest.approx(1 / 3) and r["p_less"] == 1.0
    # 6 categories in 3 levels of 2: 15 groupings, so p can never be below 1/15 = 0.067
    arr, exact = level_arrangements(["o", "o", "a", "a", "r", "r"])
    assert exact and len(arr) == 90 and len(set(arr)) == 90
    jm6 = np.kron(np.eye(3), np.ones((2, 2)))
    r6 = label_permutation_test(jm6, ["o", "o", "a", "a", "r", "r"])
    assert r6["p"] == pytest.approx(1 / 15) and r6["min_p"] == pytest.approx(1 / 15)
    # 9 in 3 levels of 3: 280 groupings
    assert label_permutation_test(np.kron(np.eye(3), np.ones((3, 3))), list("ooobbbccc"))["p"] == pytest.approx(1 / 280)


def test_verdicts_need_the_test_and_the_direction():
    assert verdict(0.01, 0.99, 0.2, 0.05) == "holds"
    assert verdict(0.99, 0.01, -0.2, 0.05) == "contradicted"
    assert verdict(0.3, 0.7, 0.2, 0.05) == "undecided"
    assert verdict(0.01, 0.01, 0.0, 0.05) == "undecided"  # an effect of 0 is never a verdict either way
    assert verdict(0.01, 0.99, -0.1, 0.05) == "undecided"  # rejects, but the effect points the other way
    assert verdict(None, None, float("nan"), 0.05) == "undecided"


# ----------------------------------------------------------------------------------- planted per-sample values
LEVELS = ("object", "attribute", "relation")


def planted(pos_heads, neg_heads, n_correct=40, n_incorrect=40, L=8, H=8, seed=0):
    """Per-sample values of 9 categories (3 per level) with known truth: ablating a category's planted
    positive heads drops the answer probability of its baseline-correct samples by ~0.2, ablating its
    planted negative heads raises that of its incorrect samples by ~0.2; every other head moves it by
    noise of +-0.01. ``pos_heads(level_index, category_index)`` / ``neg_heads(...)`` give the heads."""
    rng = np.random.default_rng(seed)
    prob, correct, ablated, cats, level_of = [], [], [], [], {}
    for li, lv in enumerate(LEVELS):
        for j in range(3):
            c = f"{lv[:3]}{j}"
            level_of[c] = lv
            ci = 3 * li + j
            for ok, n, heads, sign in ((True, n_correct, pos_heads(li, ci), -1), (False, n_incorrect, neg_heads(li, ci), 1)):
                for _ in range(n):
                    p = 0.8 if ok else 0.3
                    a = p + rng.uniform(-0.01, 0.01, size=(L, H))
                    for l, h in heads:
                        a[l, h] = p + sign * (0.2 + rng.uniform(-0.05, 0.05))
                    prob.append(p)
                    correct.append(ok)
                    ablated.append(a)
                    cats.append(c)
    return (torch.tensor(prob), torch.tensor(correct), torch.tensor(np.array(ablated), dtype=torch.float32), cats,
            level_of)


def level_heads(li, ci):  # the categories of a level share 3 heads of their own, in layer li
    return [(li, 0), (li, 1), (li, 2)]


def everywhere(li, ci):  # one set for every category
    return [(7, 5), (7, 6), (7, 7)]


def own(li, ci):  # each category its own 3 heads (layers 4-7)
    return [divmod(32 + 3 * ci + t, 8) for t in range(3)]


def analyse(values, ks=(3,), **kw):
    kw = {"min_samples": 30, "n_perm": 999, "n_boot": 200, "seed": 0, **kw}
    res = overlap_analysis(*values, list(ks), **kw)
    return res, {c["key"]: c for c in res["claims"]}


def test_level_specific_planted_heads_make_the_contrast_hold():
    res, claims = analyse(planted(level_heads, everywhere), ks=(3,))
    c = claims["positive_level_specific"]
    d = c["per_k"][0]
    assert c["verdict"] == "holds", c["sentence"]
    assert d["effect"] == pytest.approx(1.0) and d["ci"][0] > 0.5  # within 1, across 0; the CI is clear of 0
    assert d["p_sample"] == pytest.approx(1 / 1000) and d["floor_sample"] == pytest.approx(1 / 1000)
    assert d["p_regrouping"] == pytest.approx(1 / 280) and d["p"] == pytest.approx(1 / 280)  # the larger p
    assert abs(d["null_mean"]) < 0.2
    block = res["kinds"]["positive"]["per_k"][0]
    assert block["sets"]["obj0"] == [[0, 0], [0, 1], [0, 2]] and block["within"] == 1.0 and block["across"] == 0.0
    assert all(v == 1.0 for v in block["split_half"].values())  # planted far above noise: stable halves
    assert "n per category" in c["sentence"] and "obj0 40" in c["sentence"]


def test_the_same_heads_in_every_category_do_not_make_it_hold_though_the_random_set_test_says_so():
    """Regression: the old test (within-level overlap against uniformly random head sets) said "holds"
    here; the contrast against the sample-level null does not."""
    res, claims = analyse(planted(everywhere, everywhere), ks=(3, 5))
    assert claims["positive_level_specific"]["verdict"] in ("undecided", "contradicted")
    assert claims["positive_level_specific"]["per_k"][0]["effect"] == 0.0  # within = across = 1 at K=3
    for e in res["kinds"]["positive"]["per_k"]:
        old = e["beyond_random"]
        assert old["p_within"] < 0.05 and old["p_across"] < 0.05  # the old test's false positive, kept as context


def test_negative_heads_shared_everywhere_generalise_more_than_level_specific_positive_ones():
    _, claims = analyse(planted(level_heads, everywhere))
    c = claims["negative_generalise"]
    assert c["verdict"] == "holds", c["sentence"]
    assert c["per_k"][0]["effect"] == pytest.approx(1.0) and c["per_k"][0]["p"] == pytest.approx(1 / 1000)


def test_category_specific_negative_heads_contradict_the_generalisation_claim():
    _, claims = analyse(planted(everywhere, own))
    c = claims["negative_generalise"]
    assert c["verdict"] == "contradicted", c["sentence"]
    d = c["per_k"][0]
    assert d["effect"] == pytest.approx(-1.0) and d["p_opposite"] < 0.05 and d["p"] == 1.0
    assert d["null_mean"] > -1.0  # shuffled labels mix the categories' own heads: some overlap by chance


def test_one_incorrect_sample_per_category_is_insufficient_data():
    res, claims = analyse(planted(level_heads, everywhere, n_incorrect=1))
    c = claims["negative_generalise"]
    assert c["verdict"] == "insufficient data" and c["per_k"] == []
    assert "obj0 1" in c["sentence"] and ">= 30 baseline-incorrect" in c["sentence"]
    assert res["kinds"]["negative"]["categories"] == [] and res["kinds"]["negative"]["excluded"]["obj0"].startswith("1 ")
    assert claims["positive_level_specific"]["verdict"] == "holds"  # the other claim is unaffected
    # the guard's boundary: exactly min_samples enters, one fewer does not
    _, at = analyse(planted(level_heads, everywhere, n_incorrect=30))
    assert at["negative_generalise"]["verdict"] == "holds"
    _, below = analyse(planted(level_heads, everywhere, n_incorrect=30), min_samples=31)
    assert below["negative_generalise"]["verdict"] == "insufficient data"


def test_a_single_level_or_single_categories_per_level_are_insufficient_for_the_contrast():
    prob, correct, ablated, cats, level_of = planted(level_heads, everywhere)
    one_level = {c: "object" for c in level_of}
    _, claims = analyse((prob, correct, ablated, cats, one_level))
    assert claims["positive_level_specific"]["verdict"] == "insufficient data"
    keep = [i for i, c in enumerate(cats) if c.endswith("0")]  # one category per level: no within-level pair
    sub = (prob[keep], correct[keep], ablated[keep], [cats[i] for i in keep], level_of)
    _, claims = analyse(sub)
    assert claims["positive_level_specific"]["verdict"] == "insufficient data"
    assert claims["negative_generalise"]["verdict"] != "insufficient data"  # across-level pairs are enough there


def test_null_and_bootstrap_are_reproducible_by_seed():
    values = planted(level_heads, own, n_correct=12, n_incorrect=12, seed=3)  # few samples: noisy sets
    a, _ = analyse(values, ks=(3, 5), min_samples=10, n_boot=100)
    b, _ = analyse(values, ks=(3, 5), min_samples=10, n_boot=100)
    assert a == b
    c, _ = analyse(values, ks=(3, 5), min_samples=10, n_boot=100, seed=1)
    ci = lambda r: [d["ci"] for cl in r["claims"] for d in cl["per_k"]]  # noqa: E731
    assert ci(a) != ci(c)


def test_observed_sets_are_the_stored_per_category_scores_top_k():
    """The sets the claims are tested on are those of the per-category matrices ``head_scores.json``
    stores (``grouped_head_scores`` over the same per-sample values)."""
    from vseam.attribution.scores import grouped_head_scores

    prob, correct, ablated, cats, level_of = planted(level_heads, own, n_correct=35, n_incorrect=31, seed=5)
    res, _ = analyse((prob, correct, ablated, cats, level_of), ks=(1, 3, 5))
    blocks = grouped_head_scores(prob, correct, ablated, cats)
    for kind in ("positive", "negative"):
        for e in res["kinds"][kind]["per_k"]:
            for c, s in e["sets"].items():
                assert {tuple(h) for h in s} == top_heads(blocks[c].matrices()[kind].numpy(), e["k"]), (kind, c)
            assert e["within"] == pytest.approx(pair_means(np.array(
                [[np.nan if v is None else v for v in row] for row in e["jaccard"]]), e["levels"])[0])
