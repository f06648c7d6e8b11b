"""The controls train.py compares the key heads with, and the statistics it computes: the random-heads
control as a distribution of draws trained together (equal to training each draw alone), the bias-only
baseline (it recovers a planted yes-bias), the statistics in summary.json (equal to ``vseam.stats`` on
the per-question rows it wrote), and a stopped run that keeps its finished methods."""

from __future__ import annotations

import json
from contextlib import nullcontext
from types import SimpleNamespace

import lightning as L
import pytest
import torch
from torch import nn

import vseam.stats as stats
from vseam.config import load_config
from vseam.interventions import GroupedHeadModulation, HeadModulation, LogitBias, intervene
from vseam.modulation.heads import random_head_sets

from conftest import draws_args


# ------------------------------------------------------------------------------------- the draws
def test_random_head_sets_are_seeded_uniform_draws_or_every_set():
    sets, exact = random_head_sets(6, 8, 6, 99, seed=0)
    assert not exact and len(sets) == 99 and all(len(set(s)) == 6 == len(s) and s == sorted(s) for s in sets)
    assert random_head_sets(6, 8, 6, 99, seed=0)[0] == sets  # seeded
    assert random_head_sets(6, 8, 6, 10, seed=0)[0] == sets[:10]  # draw i depends on the seed and i only
    assert random_head_sets(6, 8, 6, 10, seed=1)[0] != sets[:10]
    # uniform over all heads: every one of the 48 heads appears, none far from 99 * 6 / 48 = 12.4 times
    counts = torch.zeros(6, 8)
    for s in sets:
        for l, h in s:
            counts[l, h] += 1
    assert counts.min() >= 2 and counts.max() <= 28 and counts.sum() == 594
    # few possible sets: every one of them but the key heads' (the exact null), not a sample
    key = [(0, 1), (1, 2)]
    every, exact = random_head_sets(2, 4, 2, 99, seed=0, key=key)
    assert exact and len(every) == 27 and key not in every and len({tuple(s) for s in every}) == 27


def test_a_group_of_the_grouped_modulation_is_that_modulation_alone(tiny_llava, samples):
    """Row r of a grouped batch is draw r % G: its logits equal the draw's own ``HeadModulation``."""
    sets = [[(0, 1), (1, 2)], [(1, 0), (1, 3)], [(0, 0), (0, 3)]]
    grouped = GroupedHeadModulation(sets, tiny_llava.head_dim, scale="vector")
    with torch.no_grad():
        grouped.scale.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
        grouped.offset.normal_(generator=torch.Generator().manual_seed(1))
    emb = tiny_llava.embed(tiny_llava.encode(samples[:2]))
    with intervene(tiny_llava, grouped):
        together = tiny_llava.lm_logits(emb.repeat(3)).reshape(2, 3, -1)
    for g in range(3):
        with intervene(tiny_llava, grouped.group(g)):
            alone = tiny_llava.lm_logits(emb)
        torch.testing.assert_close(together[:, g], alone, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(together[:, 0], together[:, 1])
    with pytest.raises(ValueError, match="one or more head sets of one size"):
        GroupedHeadModulation([[(0, 1)], [(0, 1), (1, 1)]], tiny_llava.head_dim)


@pytest.mark.parametrize("extra", [[], ["trainer.gradient_clip_val=0.01"]], ids=["plain", "clipped"])
def test_draws_trained_together_equal_each_draw_trained_alone(tmp_path, world_root, tiny_llava, extra):
    """Three draws trained in one batch end (after 2 epochs, model selection per draw on validation) with
    the parameters each gets from the learned method's own training on its heads alone, within 1e-5; with
    gradient clipping by norm, each draw is clipped by its own norm."""
    from vseam.data.load import load_samples
    from vseam.models.cache import EmbeddingCache
    from vseam.modulation.data import ModulationDataModule, split_samples
    from vseam.modulation.draws import fit_draws
    from vseam.modulation.job import fit

    cfg = load_config(draws_args(world_root, tmp_path, "trainer.max_epochs=2", "modulation.lr=0.05", *extra))
    splits = split_samples(load_samples(cfg.data), 0.15, 0.3, seed=0)
    dm = ModulationDataModule(splits, batch_size=8)
    cache = EmbeddingCache(tiny_llava)
    sets = [[(0, 0), (1, 0), (1, 3)], [(0, 1), (1, 1), (1, 3)], [(0, 2), (1, 1), (1, 2)]]
    L.seed_everything(0)
    grouped, info = fit_draws(cfg, "draws", tiny_llava, sets, dm, tmp_path, None, cache, 0.05)
    assert info["steps"] == 2 * -(-len(splits["train"]) // 8) and len(info["best_epoch"]) == 3
    for g, heads in enumerate(sets):
        L.seed_everything(0)
        module, one = fit(cfg, f"alone{g}", tiny_llava, HeadModulation(heads, tiny_llava.head_dim), dm, tmp_path,
                          None, cache, 0.05)
        alone = module.modulation
        assert float(alone.offset.abs().max()) > 0.01  # training moved it
        assert one["best_checkpoint"].endswith("best.ckpt")
        best_epoch = torch.load(one["best_checkpoint"], weights_only=False)["epoch"]
        assert info["best_epoch"][g] == best_epoch
        torch.testing.assert_close(grouped.scale[g], alone.scale, atol=1e-5, rtol=0)
        torch.testing.assert_close(grouped.offset[g], alone.offset, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llava", "instructblip", "qwen2-vl", "gemma3", "paligemma"])
def test_the_last_position_forward_gives_the_models_logits_and_gradients(arch, samples):
    """``last_position_only``: the last layer computes its MLP (and o_proj, and the attention query) at the
    last position only, yet the logits and the modulation's gradients equal the plain forward's (sdpa or the
    model's own attention) within 1e-5, on each architecture family; a crop at the wrong position is caught
    by the check."""
    from vseam.interventions import block_modules, check_last_position, last_position_only
    from vseam.interventions import lean as lean_mod
    from vseam.models import load_adapter
    from vseam.models.cache import EmbeddingCache

    a = load_adapter({"arch": arch, "path": f"tiny:{arch}", "dtype": "float32", "device": "cpu", "seed": 0})
    a.model.requires_grad_(False)
    emb = EmbeddingCache(a).batch(samples).emb.repeat(2)
    L = a.num_layers
    grouped = GroupedHeadModulation([[(0, 0), (L - 1, 1)], [(L - 1, 0), (0, 1)]], a.head_dim, scale="vector")
    with torch.no_grad():
        grouped.scale.uniform_(0.5, 1.5, generator=torch.Generator().manual_seed(0))
        grouped.offset.normal_(generator=torch.Generator().manual_seed(1))
    seen = []
    mlp = block_modules(a, L - 1)["mlp_out"]
    handle = mlp.register_forward_hook(lambda m, args, out: seen.append(out.shape[1]))
    before = a.decoder.config._attn_implementation
    results = {}
    try:
        for lean in (False, True):
            grouped.zero_grad()
            with last_position_only(a, "eager") if lean else nullcontext(), intervene(a, grouped):
                logits = a.lm_logits(emb)
            logits.logsumexp(-1).sum().backward()
            results[lean] = (logits.detach(), grouped.scale.grad.clone(), grouped.offset.grad.clone())
    finally:
        handle.remove()
    assert seen == [emb.inputs_embeds.shape[1], 1]  # the last layer's MLP: every position, then the last only
    assert a.decoder.config._attn_implementation == before  # restored
    for x, y in zip(results[False], results[True]):
        torch.testing.assert_close(y, x, atol=1e-5, rtol=1e-5)
    assert float(results[True][2].abs().max()) > 0  # the gradients reach the modulation
    ok, detail = check_last_position(a, emb, grouped, attention="eager")
    assert ok, detail
    wrong = lambda module, args: (args[0][:, :1],) + tuple(args[1:])  # noqa: E731  the first position
    orig = lean_mod._crop
    lean_mod._crop = wrong
    try:
        ok, detail = check_last_position(a, emb, grouped, attention="eager")
    finally:
        lean_mod._crop = orig
    assert not ok and "max |difference|" in detail


def test_draws_on_two_worker_processes_equal_one_process(tmp_path, world_root, capfd):
    """``modulation.draws_workers=2``: the groups of draws trained in two forked processes end with the
    parameters and results of the same groups trained one after another in one process; a failure in a
    worker reaches the caller."""
    from vseam.modulation import draws as draws_mod
    from vseam.modulation.run import run_train

    common = ("modulation.methods=[learned,random]", "modulation.random_draws=5", "modulation.draws_together=2",
              "trainer.max_epochs=1", "modulation.lr=0.05")
    runs = {}
    for w in (1, 2):
        runs[w] = run_train(load_config(draws_args(world_root, tmp_path / f"w{w}", *common, f"modulation.draws_workers={w}")))
        printed = capfd.readouterr().out  # the workers print to the file descriptor
        assert printed.count("training draws") == 3  # every group said, from whichever process trained it
        if w == 2:  # started beside the learned method, before it trained
            assert printed.index("3 groups of draws on 2 worker processes") < printed.index("[learned] trainable")
        else:
            assert "worker processes" not in printed
    strip = lambda m: {k: v for k, v in m.items() if k not in ("fit_seconds", "best_checkpoint")}  # noqa: E731
    assert strip(runs[1]["methods"]["learned"]) == strip(runs[2]["methods"]["learned"])
    one, two = (json.loads((tmp_path / f"w{w}" / "random_draws.json").read_text()) for w in (1, 2))
    unscored = lambda d: {k: v for k, v in d.items() if k != "best_score"}  # noqa: E731
    assert [unscored(d) for d in one["draws"]] == [unscored(d) for d in two["draws"]]
    for a, b in zip(one["draws"], two["draws"]):
        assert a["best_score"] == pytest.approx(b["best_score"], abs=1e-6)
    for f in sorted((tmp_path / "w1" / "methods").glob("random-draws*.safetensors")):
        p1 = draws_mod.read_draw_parameters(f)
        p2 = draws_mod.read_draw_parameters(tmp_path / "w2" / "methods" / f.name)
        assert p1.head_sets == p2.head_sets
        torch.testing.assert_close(p1.offset, p2.offset, atol=1e-6, rtol=0)
        torch.testing.assert_close(p1.scale, p2.scale, atol=1e-6, rtol=0)
        fit = json.loads(f.with_suffix(".json").read_text())["fit"]
        assert fit["last_position_forward"] == "eager"  # the draws ran the checked last-position forward
    assert runs[1]["methods"]["random"] == runs[2]["methods"]["random"]
    assert runs[1]["stats"]["random_heads"] == runs[2]["stats"]["random_heads"]

    real = draws_mod.fit_draws

    def fail_second_group(cfg, label, *a, **kw):
        if label.endswith("draws002-003"):
            raise RuntimeError(f"planted failure in {label}")
        return real(cfg, label, *a, **kw)

    draws_mod.fit_draws = fail_second_group  # inherited by the forked workers
    try:
        with pytest.raises(RuntimeError, match="planted failure in random/draws002-003"):
            run_train(load_config(draws_args(world_root, tmp_path / "fail", *common, "modulation.draws_workers=2")))
    finally:
        draws_mod.fit_draws = real


def test_random_control_ranks_the_key_heads_among_the_draws():
    """rank / p are ``monte_carlo_p`` on the draws' test accuracies; McNemar per draw counts wins."""
    from vseam.evaluation.score import EvalResult
    from vseam.modulation.draws import random_control

    learned = EvalResult([{"id": str(i), "correct": i < 9} for i in range(10)])  # 0.9
    bits = ["1111111110", "1111111111", "0000000000", "1110000000"]  # 0.9, 1.0, 0.0, 0.3
    draws = [{"heads": [[0, 0], [0, 1]], "test_accuracy": b.count("1") / 10, "correct": b} for b in bits]
    rc = random_control(learned, draws)
    mc = stats.monte_carlo_p(0.9, [0.9, 1.0, 0.0, 0.3])
    assert (rc["rank"], rc["p"], rc["p_floor"]) == (mc["rank"], mc["p"], mc["floor"]) == (2, 0.6, 0.2)
    assert rc["n_at_least"] == 2 and rc["mean"] == pytest.approx(0.55) and rc["k"] == 2
    # against the all-wrong draw: 9 fixed, 0 broken, p = 2/2^9 < 0.05; the 0.3 draw: 6 vs 0, p = 0.031
    assert (rc["learned_better"], rc["learned_worse"]) == (2, 0)


# ------------------------------------------------------------------------------------- the bias baseline
def test_the_bias_baseline_recovers_a_planted_yes_bias():
    """Fixed logits of a model that knows the answer (margin s, "yes" iff s > 0) but leans yes by c = 1.5:
    its margin is s + c, so 9 of the 20 "no" questions (-1.5 < s < 0) are answered "yes". The bias-only baseline, trained
    through the one intervention mechanism (a hook on the LM head), learns margin -c: the threshold is back
    at 0 and every question is answered right."""
    yes, no = 0, 1  # and token 2, a third answer
    s = torch.cat([torch.linspace(0.2, 3.0, 20), -torch.linspace(0.2, 3.0, 20)])  # symmetric: the optimum is -c
    c = 1.5
    logits = torch.stack([(s + c) / 2, -(s + c) / 2, torch.full_like(s, -4.0)], 1)
    target = torch.where(s > 0, yes, no)
    assert int((logits.argmax(1) != target).sum()) == 9  # the planted errors
    head = nn.Identity()
    model = SimpleNamespace(num_layers=1, num_heads=1, lm_head=head)  # the hook point is the LM head's output
    bias = LogitBias([yes], [no], [])
    opt = torch.optim.Adam(bias.parameters(), lr=0.05)
    for _ in range(400):
        with intervene(model, bias):
            loss = nn.functional.cross_entropy(head(logits), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(bias.margin) == pytest.approx(-c, abs=0.02)
    with intervene(model, bias):
        fixed = head(logits)
    assert torch.equal(fixed.argmax(1), target)
    torch.testing.assert_close(fixed[:, yes] - fixed[:, no], s + c + bias.margin.detach())  # the margin moved by b
    torch.testing.assert_close(fixed[:, yes] + fixed[:, no], logits[:, yes] + logits[:, no])  # their sum did not
    assert torch.equal(head(logits), logits)  # hooks gone after the context


def test_the_bias_baseline_of_a_split_biases_its_answers(tiny_llava):
    """One scalar for the yes/no margin (all yes / no probability ids of the gold answers) plus one per
    other answer word (its gold first token)."""
    from vseam.data import Sample
    from vseam.modulation.baselines import logit_bias_for

    answers = ["Yes", "no", "Yes", "red", "blue", "red"]
    bias = logit_bias_for(tiny_llava, [Sample(id=str(i), question="q?", answer=a) for i, a in enumerate(answers)])
    assert sum(p.numel() for p in bias.parameters()) == 1 + 2
    assert set(bias.yes_index.tolist()) >= {tiny_llava.answer_tokens("Yes")[1]}
    assert set(bias.no_index.tolist()) >= {tiny_llava.answer_tokens("no")[1]}
    assert set(bias.class_index.tolist()) == {tiny_llava.answer_tokens(a)[1] for a in ("red", "blue")}
    with pytest.raises(ValueError, match="nothing to bias"):
        LogitBias([1], [], [])


# ------------------------------------------------------------------------------------- train.py
def test_train_writes_the_controls_and_statistics_it_computed(tmp_path, world_root, capsys):
    """The random control (draws in two batches), the bias row and the statistics of summary.json equal
    ``vseam.stats`` recomputed from predictions.jsonl and random_draws.json."""
    from vseam.modulation.run import run_train

    out = tmp_path / "run"
    summary = run_train(load_config(draws_args(world_root, out, "modulation.methods=[none,learned,random,bias]",
                                          "modulation.random_draws=3", "modulation.draws_together=2",
                                          "trainer.max_epochs=1", "modulation.lr=0.05")))
    printed = capsys.readouterr().out
    m, st = summary["methods"], summary["stats"]
    assert m["random"]["mean_of_draws"] == 3 and m["bias"]["trainable_params"] >= 1
    assert m["random"]["trainable_params"] == m["learned"]["trainable_params"]
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    rows = {k: [p for p in preds if p["method"] == k] for k in ("none", "learned", "bias")}
    assert {p["method"] for p in preds} == set(rows)  # the draws' rows are in random_draws.json
    for k, rr in rows.items():
        assert st["accuracy"][k] == stats.bootstrap_ci([p["correct"] for p in rr], seed=0)
    for k in ("none", "bias"):
        a, b = [p["correct"] for p in rows["learned"]], [p["correct"] for p in rows[k]]
        assert [p["id"] for p in rows["learned"]] == [p["id"] for p in rows[k]]
        assert {x: st["vs_learned"][k][x] for x in ("n", "a_only", "b_only", "p")} == stats.mcnemar(a, b)
        boot = stats.paired_bootstrap_ci(a, b, seed=0)
        assert (st["vs_learned"][k]["diff"], st["vs_learned"][k]["ci"]) == (boot["diff"], boot["ci"])
    draws = json.loads((out / "random_draws.json").read_text())
    assert len(draws["draws"]) == 3 and draws["test_ids"] == [p["id"] for p in rows["learned"]]
    accs = [d["correct"].count("1") / len(d["correct"]) for d in draws["draws"]]
    assert accs == pytest.approx([d["test_accuracy"] for d in draws["draws"]])
    learned_bits = [p["correct"] for p in rows["learned"]]
    mc = stats.monte_carlo_p(sum(learned_bits) / len(learned_bits), accs)
    assert (st["random_heads"]["rank"], st["random_heads"]["p"]) == (mc["rank"], mc["p"])
    assert len(list((out / "methods").glob("random-draws*.json"))) == 2  # two batches of draws
    for line in ("learned vs", "95% CI", "permutation p", "of 3 draws"):
        assert line in printed or line in (out / "table.txt").read_text(), line
    # the hand case: a 2x2 table of the learned row against the frozen model, read off the rows
    fixed = sum(a["correct"] and not b["correct"] for a, b in zip(rows["learned"], rows["none"]))
    assert st["vs_learned"]["none"]["a_only"] == fixed


def test_a_resumed_train_keeps_the_methods_it_had_finished(tmp_path, world_root, monkeypatch, capsys):
    """A run stopped in the second batch of random draws: the same command reuses the finished methods and
    the first batch from the run folder (no training step for them) and ends with an uninterrupted run's
    summary."""
    from vseam.modulation import draws as draws_mod
    from vseam.modulation.module import FrozenVLMModule
    from vseam.modulation.run import run_train

    extra = ("modulation.methods=[none,learned,bias,random]", "modulation.random_draws=4",
             "modulation.draws_together=2", "modulation.draws_workers=1", "trainer.max_epochs=1")
    full = run_train(load_config(draws_args(world_root, tmp_path / "full", *extra)))

    class Killed(RuntimeError):
        pass

    real = draws_mod.fit_draws
    calls = []

    def die_in_the_second_batch(cfg, label, *a, **kw):
        calls.append(label)
        if len(calls) == 2:
            raise Killed(label)
        return real(cfg, label, *a, **kw)

    args = draws_args(world_root, tmp_path / "stopped", *extra)
    monkeypatch.setattr(draws_mod, "fit_draws", die_in_the_second_batch)
    with pytest.raises(Killed):
        run_train(load_config(args))
    monkeypatch.undo()
    capsys.readouterr()
    steps = []
    step, dstep = FrozenVLMModule.training_step, draws_mod.DrawsModule.training_step
    monkeypatch.setattr(FrozenVLMModule, "training_step", lambda self, *a: steps.append(self.method) or step(self, *a))
    monkeypatch.setattr(draws_mod.DrawsModule, "training_step",
                        lambda self, *a: steps.append(self.method) or dstep(self, *a))
    again = run_train(load_config(args))
    printed = capsys.readouterr().out
    assert set(steps) == {"random/draws002-003"}, set(steps)  # only the unfinished batch trained
    for method in ("none", "learned", "bias"):
        assert f"[{method}] reusing its result" in printed
    assert "[random/draws000-001] reusing the finished draws" in printed
    strip = lambda m: {k: v for k, v in m.items() if k not in ("fit_seconds", "best_checkpoint")}  # noqa: E731
    assert {k: strip(v) for k, v in again["methods"].items()} == {k: strip(v) for k, v in full["methods"].items()}
    assert again["stats"] == full["stats"]


def test_the_tracker_comparison_table_has_the_printed_columns_and_statistics():
    """The W&B / CSV comparison table: the accuracy interval, the POPE-split columns, the paired statistics
    against the learned row and each POPE split's metrics (AUROC, accuracy at a yes-ratio of 0.5)."""
    from vseam.modulation.outputs import comparison_rows, format_table

    pope = {"random": {"accuracy": 0.9, "f1": 0.8, "yes_ratio": 0.6, "auroc": 0.95, "acc_at_balanced": 0.85}}
    row = lambda acc: {"test": {"accuracy": acc, "n": 10, "by_level": {"object": acc},  # noqa: E731
                                "by_category": {"random": acc}, "pope": pope},
                       "val_accuracy": acc, "trainable_params": 5}
    results = {"none": row(0.5), "learned": row(0.9)}
    st = {"accuracy": {"none": {"mean": 0.5, "ci": [0.2, 0.8]}, "learned": {"mean": 0.9, "ci": [0.7, 1.0]}},
          "vs_learned": {"none": {"n": 10, "a_only": 4, "b_only": 0, "p": 0.125, "diff": 0.4, "se": 0.16,
                                  "ci": [0.1, 0.7]}}}
    cols, rows = comparison_rows(results, st)
    table = dict(zip(cols, rows[0]))
    assert table["test_acc_ci_low"] == 0.2 and table["pope_random"] == 0.5 and table["vs_learned_fixed"] == 4
    assert table["vs_learned_mcnemar_p"] == 0.125 and table["vs_learned_diff_ci_high"] == 0.7
    assert table["pope_random_auroc"] == 0.95 and table["pope_random_acc_at_balanced"] == 0.85
    assert dict(zip(cols, rows[1]))["vs_learned_fixed"] is None  # the learned row itself
    printed = format_table(results, 1000, st)
    assert "0.200-0.800" in printed and "+0.400 (+0.100, +0.700)" in printed and "0.12" in printed
    assert "auroc-r" in printed and "0.950" in printed
