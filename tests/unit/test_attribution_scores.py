"""Unit tier of head attribution: the score math, top-K lists and agreement measures (no model)."""

from __future__ import annotations

import json

import pytest
import torch

from vseam.attribution.outputs import build_result
from vseam.attribution.scores import head_scores, top_k, top_k_overlap
from vseam.stats import spearman


def test_scores_by_hand():
    prob = torch.tensor([0.8, 0.6, 0.3])
    correct = torch.tensor([True, True, False])
    # one layer, two heads: head 0 hurts sample 0, helps sample 2; head 1 raises sample 1
    ablated = torch.tensor([[[0.5, 0.8]], [[0.6, 0.9]], [[0.5, 0.1]]])
    s = head_scores(prob, correct, ablated)
    assert (s.n_correct, s.n_incorrect) == (2, 1)
    # pos = mean over correct of max(0, p - p_abl): head0 (0.3 + 0) / 2, head1 (0 + 0) / 2
    torch.testing.assert_close(s.positive, torch.tensor([[0.15, 0.0]]))
    # neg = mean over incorrect of max(0, p_abl - p): head0 0.2, head1 0
    torch.testing.assert_close(s.negative, torch.tensor([[0.2, 0.0]]))
    # signed = mean over all of p - p_abl: head0 (0.3 + 0 - 0.2) / 3, head1 (0 - 0.3 + 0.2) / 3
    torch.testing.assert_close(s.signed, torch.tensor([[0.1 / 3, -0.1 / 3]]))


@pytest.mark.parametrize("all_correct", [True, False])
def test_missing_side_is_undefined_not_zero(all_correct):
    prob = torch.tensor([0.5, 0.4])
    correct = torch.tensor([all_correct, all_correct])
    s = head_scores(prob, correct, torch.full((2, 2, 3), 0.45))
    missing, present = ("negative", "positive") if all_correct else ("positive", "negative")
    assert getattr(s, missing) is None
    assert getattr(s, present) is not None
    res = build_result(s, model_id="m", arch="llava", num_layers=2, num_heads=3, method="exact", ablation="mean",
                       dataset_id="d", n_total=2, skipped=[], prob=prob, correct=correct, k=3)
    back = json.loads(json.dumps(res))
    assert back[missing] is None and back["top_k"][missing] is None
    assert missing in back["undefined"]
    assert back["n_correct"] == (2 if all_correct else 0)


def test_empty_sample_set_is_all_undefined():
    s = head_scores(torch.zeros(0), torch.zeros(0, dtype=torch.bool), torch.zeros(0, 2, 2))
    assert s.positive is None and s.negative is None and s.signed is None


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="shapes"):
        head_scores(torch.zeros(3), torch.zeros(3, dtype=torch.bool), torch.zeros(2, 1, 1))


def test_top_k_order_ties_and_nan():
    m = torch.tensor([[0.1, 0.5, float("nan")], [0.5, 0.2, 0.9]])
    got = top_k(m, 3)
    assert [(d["layer"], d["head"]) for d in got] == [(1, 2), (0, 1), (1, 0)]  # tie 0.5: (0,1) before (1,0)
    assert got[0]["score"] == pytest.approx(0.9)
    assert len(top_k(m, 100)) == 5  # the NaN head is never listed
    assert top_k(None, 3) is None


def test_spearman_matches_scipy_with_ties():
    from scipy.stats import spearmanr

    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (4, 6), generator=g).float()  # many ties
    b = a + torch.randn(4, 6, generator=g)
    assert spearman(a, b) == pytest.approx(spearmanr(a.flatten(), b.flatten()).statistic, abs=1e-12)
    assert spearman(a, a) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(None, a) is None


def test_top_k_overlap():
    a = torch.arange(12.0).reshape(3, 4)
    b = a.clone()
    b[2, 3] = -1  # drop a's best head from b's top list
    assert top_k_overlap(a, a, 3) == 3
    assert top_k_overlap(a, b, 3) == 2
    assert top_k_overlap(a, None, 3) is None
