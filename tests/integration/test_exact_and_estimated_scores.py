"""Exact and estimated (AtP) head scores are kept apart: key heads are ranked on exact scores only, and train
refuses more key heads than were rescored."""

from __future__ import annotations

import json

import pytest

from vseam.config import load_config

from conftest import heads_cfg


def test_exact_and_estimated_cells_are_kept_apart(world, tmp_path):
    import torch

    from vseam.attribution.run import run_heads

    mixed = run_heads(heads_cfg(world, tmp_path / "mixed", "attribution.method=atp", "attribution.rescore_top_k=2"))
    pure = run_heads(heads_cfg(world, tmp_path / "pure", "attribution.method=atp"))
    exact = {tuple(h) for h in mixed["exact_heads"]}
    cells = [(l, h) for l, row in enumerate(mixed["cell_method"]) for h, m in enumerate(row) if m == "exact"]
    assert set(cells) == exact and sum(r.count("estimate") for r in mixed["cell_method"]) == 8 - len(exact)
    for name in ("signed", "positive"):
        if mixed[name] is None:
            continue
        for d in mixed["top_k"][name]:  # every entry says which kind of value it is
            assert d["method"] == ("exact" if (d["layer"], d["head"]) in exact else "estimate")
        ranked = mixed["top_k_exact"][name]
        assert {(d["layer"], d["head"]) for d in ranked} <= exact and len(ranked) == min(10, len(exact))
        assert [d["score"] for d in ranked] == sorted((d["score"] for d in ranked), reverse=True)
        # the pure estimate is kept as it was, beside the mixed matrix
        torch.testing.assert_close(torch.tensor(mixed["estimate"][name]), torch.tensor(pure[name]))
    # every per-category and per-level block is marked the same way, with its own pure estimate
    assert mixed["by_category"] and mixed["by_level"] and mixed["rescore_top_k"] == 2
    for group in ("by_category", "by_level"):
        for g, block in mixed[group].items():
            assert block["cell_method"] == mixed["cell_method"] and block["exact_heads"] == mixed["exact_heads"]
            for name in ("positive", "negative", "signed"):
                if block[name] is None:
                    assert block["estimate"][name] is None and block["top_k_exact"][name] is None
                    continue
                assert all(d["method"] == ("exact" if (d["layer"], d["head"]) in exact else "estimate")
                           for d in block["top_k"][name])
                assert {(d["layer"], d["head"]) for d in block["top_k_exact"][name]} <= exact
                torch.testing.assert_close(torch.tensor(block["estimate"][name]), torch.tensor(pure[group][g][name]))
    from safetensors.torch import load_file

    t = load_file(tmp_path / "mixed" / "head_scores.safetensors")
    assert {(l, h) for l, h in t["exact_cells"].nonzero().tolist()} == exact
    torch.testing.assert_close(t["estimate/signed"], torch.tensor(pure["signed"]))
    cat = next(iter(mixed["by_category"]))
    torch.testing.assert_close(t[f"category/{cat}/estimate/signed"], torch.tensor(pure["by_category"][cat]["signed"]))


def test_key_heads_of_a_mixed_result_are_ranked_on_exact_scores_only():
    """An estimate that overshoots must not outrank exactly scored heads when train.py picks key heads."""
    import torch

    from vseam.attribution.scores import HeadScores
    from vseam.modulation.heads import MixedRankingError, select_key_heads

    # head (1, 1) is an estimate (0.9) above the exact values of the re-scored heads (0, 0), (0, 1), (1, 0)
    pos = torch.tensor([[0.5, 0.3], [0.2, 0.9]])
    neg = torch.tensor([[0.0, 0.1], [0.4, 0.8]])
    meta = {"exact_heads": [[0, 0], [0, 1], [1, 0]], "rescore_top_k": 2}
    mixed = HeadScores(pos, neg, pos - neg, 3, 3, method="atp+exact_topk", meta=meta)
    key = select_key_heads(mixed, 2, 1)
    assert key["positive"] == [(0, 0), (0, 1)] and key["negative"] == [(1, 0)]
    one_kind = HeadScores(pos, neg, pos - neg, 3, 3, method="atp")  # all estimates: ranked as they are
    assert select_key_heads(one_kind, 2, 1)["positive"] == [(1, 1), (0, 0)]
    with pytest.raises(MixedRankingError, match="attribution.rescore_top_k >= 3"):
        select_key_heads(mixed, 3, 1)
    # an older file without rescore_top_k takes it from its recorded config
    old = HeadScores(pos, neg, pos - neg, 3, 3, method="atp+exact_topk",
                     meta={"exact_heads": meta["exact_heads"], "config": {"attribution": {"rescore_top_k": 1}}})
    with pytest.raises(MixedRankingError, match="modulation.k_pos=2"):
        select_key_heads(old, 2, 1)


def test_train_refuses_more_key_heads_than_were_rescored(tmp_path):
    from vseam.config import ConfigError
    from vseam.validate import validate

    cfg = load_config(["model=tiny-llava", "attribution.method=atp", "attribution.rescore_top_k=2",
                       "modulation.k_pos=3", "modulation.k_neg=1", f"out_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="attribution.rescore_top_k=2 .*modulation.k_pos=3"):
        validate(cfg, "train")
    validate(load_config(["model=tiny-llava", "attribution.method=atp", "attribution.rescore_top_k=3",
                          "modulation.k_pos=3", "modulation.k_neg=1"]), "train")


def test_train_on_atp_with_rescoring_picks_exactly_scored_key_heads(trained, tmp_path):
    from vseam.modulation.run import run_train

    root, _, _ = trained
    out = tmp_path / "atp"
    run_train(load_config(["model=tiny-llava", "logger=none", f"data.root={root}", "data.world_seed=3", "modulation.methods=[learned]",
                           "modulation.k_pos=1", "modulation.k_neg=1", "trainer.max_steps=1",
                           "attribution.method=atp", "attribution.rescore_top_k=1",
                           "modulation.attribution_limit=12", f"out_dir={out}"]))
    summary = json.loads((out / "summary.json").read_text())
    exact = summary["head_scores"]["exact_heads"]
    assert summary["head_scores"]["method"] == "atp+exact_topk" and summary["key_heads"]["all"]
    assert all(h in exact for h in summary["key_heads"]["all"])
    assert summary["key_heads_ranked_on"] == f"the exact scores of the {len(exact)} re-scored heads only"
    used = json.loads((out / "head_scores_used.json").read_text())
    assert sum(r.count("exact") for r in used["cell_method"]) == len(exact)
