"""Unit and integration tests of the modulation package: head selection, splits, the embedding cache,
saved modulations, the LightningModule (training, frozen model, checkpoints, NaN stop, gradient
checkpointing, L1) and the peft baselines. Tiny random models, a few steps each."""

from __future__ import annotations

import json

import lightning as L
import pytest
import torch

from vseam.attribution import heads_of, load_head_scores, top_k
from vseam.attribution import scores_from_dict as head_scores_from_dict
from vseam.data import Sample
from vseam.interventions import HeadModulation, HeadShapeError, check_heads, intervene
from vseam.interventions.checkpoint import load_modulation, read_modulation, save_modulation
from vseam.models.cache import EmbeddingCache
from vseam.modulation.baselines import count_trainable, peft_copy
from vseam.modulation.data import ModulationDataModule, readable, split_samples
from vseam.modulation.heads import heuristic_scales, random_heads, select_key_heads
from vseam.modulation.module import FrozenVLMModule, NonFiniteLossError


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world_samples() -> list[Sample]:
    from vseam.world import CATEGORIES, generate

    out = []
    for cat in CATEGORIES:
        out += [it.sample() for it in generate(cat, 6, seed=3)]
    return out


def _trainer(tmp_path, **kw) -> L.Trainer:
    args = dict(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                num_sanity_val_steps=0, use_distributed_sampler=False, default_root_dir=str(tmp_path),
                enable_checkpointing=False)
    args.update(kw)
    return L.Trainer(**args)


def _dm(samples, bs=8):
    return ModulationDataModule(split_samples(samples, 0.2, 0.2, seed=0), batch_size=bs, seed=0)


# --------------------------------------------------------------------------------------------- heads
def test_top_k_orders_skips_nonpositive_and_excludes():
    m = torch.tensor([[0.1, 0.0, 0.5], [0.5, -0.2, 0.3]])
    assert heads_of(top_k(m, 2, positive_only=True)) == [(0, 2), (1, 0)]  # tie at 0.5 broken by index
    # zeros and negatives never fill K
    assert heads_of(top_k(m, 10, positive_only=True)) == [(0, 2), (1, 0), (1, 2), (0, 0)]
    assert heads_of(top_k(m, 2, exclude=[(0, 2)], positive_only=True)) == [(1, 0), (1, 2)]
    assert heads_of(top_k(m, 10)) == [(0, 2), (1, 0), (1, 2), (0, 0), (0, 1), (1, 1)]  # all heads without it


def test_select_key_heads_counts_a_shared_head_once():
    d = {"num_layers": 2, "num_heads": 2, "positive": [[0.3, 0.1], [0.0, 0.2]],
         "negative": [[0.4, 0.0], [0.1, 0.0]], "signed": [[0.1, 0.0], [-0.1, 0.2]]}
    key = select_key_heads(head_scores_from_dict(d), k_pos=2, k_neg=2)
    assert key["positive"] == [(0, 0), (1, 1)]
    assert key["negative"] == [(1, 0)]  # (0, 0) is already positive
    assert key["all"] == [(0, 0), (1, 1), (1, 0)]


def test_head_scores_file_schema_and_undefined_matrix(tmp_path):
    d = {"model": "m", "method": "exact", "num_layers": 2, "num_heads": 3, "positive": [[0, 1, 2], [3, 4, 5]],
         "negative": None, "signed": [[0, 0, 0], [0, 0, 1]], "n_correct": 4, "top_k": {"positive": []}}
    (tmp_path / "head_scores.json").write_text(json.dumps(d))
    s = load_head_scores(tmp_path)  # a folder is accepted too
    assert s.shape == (2, 3) and s.negative is None and s.positive[1, 2] == 5
    assert select_key_heads(s, 2, 2)["negative"] == []
    s.check_shape(2, 3)
    with pytest.raises(HeadShapeError, match="2 layers x 3 heads.*this model has 32 x 32"):
        s.check_shape(32, 32)
    bad = dict(d, positive=[[0, 1], [2, 3]])
    with pytest.raises(HeadShapeError, match="positive"):
        head_scores_from_dict(bad)


def test_reads_the_attribution_engines_result_file(tmp_path):
    from vseam.attribution.outputs import build_result
    from vseam.attribution.scores import head_scores

    g = torch.Generator().manual_seed(0)
    prob = torch.rand(6, generator=g)
    ablated = torch.rand(6, 2, 3, generator=g)
    correct = torch.tensor([True, False, True, True, False, False])
    theirs = head_scores(prob, correct, ablated)
    result = build_result(theirs, model_id="tiny", arch="llava", num_layers=2, num_heads=3, method="exact",
                          ablation="mean", dataset_id="d", n_total=6, skipped=[], prob=prob, correct=correct, k=2)
    (tmp_path / "head_scores.json").write_text(json.dumps(result))
    ours = load_head_scores(tmp_path / "head_scores.json")
    assert ours.model == "tiny" and ours.shape == (2, 3)
    torch.testing.assert_close(ours.positive, theirs.positive)
    torch.testing.assert_close(ours.signed, theirs.signed)
    want = [(d["layer"], d["head"]) for d in result["top_k"]["positive"] if d["score"] > 0]
    assert select_key_heads(ours, 2, 0)["positive"] == want


def test_random_heads_deterministic_distinct_and_avoid_key_heads():
    a = random_heads(4, 4, 5, seed=1, exclude=[(0, 0), (1, 1)])
    assert a == random_heads(4, 4, 5, seed=1, exclude=[(0, 0), (1, 1)])
    assert len(set(a)) == 5 and not {(0, 0), (1, 1)} & set(a)
    assert a != random_heads(4, 4, 5, seed=2, exclude=[(0, 0), (1, 1)])


def test_heuristic_scales_clip():
    s = torch.tensor([[-3.0, -0.5], [0.25, 4.0]])
    assert torch.equal(heuristic_scales(s, 1.0), torch.tensor([[0.0, 0.5], [1.25, 2.0]]))
    assert torch.equal(heuristic_scales(s, 0.0), torch.ones(2, 2))


def test_check_heads_names_the_bad_head():
    check_heads([(1, 3)], 2, 4)
    with pytest.raises(HeadShapeError, match=r"\(5, 0\).*2 layers x 4 heads"):
        check_heads([(0, 0), (5, 0)], 2, 4)


# --------------------------------------------------------------------------------------------- data
def test_split_is_stratified_disjoint_and_deterministic(world_samples):
    a = split_samples(world_samples, 0.2, 0.3, seed=0)
    b = split_samples(world_samples, 0.2, 0.3, seed=0)
    ids = {k: [s.id for s in v] for k, v in a.items()}
    assert ids == {k: [s.id for s in v] for k, v in b.items()}
    assert not set(ids["train"]) & set(ids["test"]) and not set(ids["val"]) & set(ids["test"])
    assert sum(map(len, ids.values())) == len(world_samples)
    cats = {s.category for s in world_samples}
    assert {s.category for s in a["test"]} == cats and {s.category for s in a["val"]} == cats
    c = split_samples(world_samples, 0.2, 0.3, seed=1)
    assert [s.id for s in c["test"]] != ids["test"]


def test_missing_image_is_a_counted_skip(tmp_path, world_samples):
    gone = Sample(id="gone", question="Is there a circle?", answer="Yes", image_path=str(tmp_path / "nope.png"))
    kept, skipped = readable([world_samples[0], gone])
    assert [s.id for s in kept] == [world_samples[0].id]
    assert len(skipped) == 1 and skipped[0]["id"] == "gone" and "nope.png" in skipped[0]["reason"]


# --------------------------------------------------------------------------------------------- cache
def test_cached_batches_give_the_full_model_logits(tiny_adapter, world_samples):
    samples = world_samples[:5]
    cache = EmbeddingCache(tiny_adapter)
    cache.batch(samples[:2])  # cache some rows in one padding context, then batch them with others
    batch = cache.batch(samples)
    ref = tiny_adapter.last_logits(tiny_adapter.encode(samples))
    torch.testing.assert_close(tiny_adapter.lm_logits(batch.emb), ref, atol=1e-5, rtol=1e-5)
    assert len(cache) == 5
    assert batch.target.tolist() == [tiny_adapter.answer_token_ids(s.answer)[1] for s in samples]


# --------------------------------------------------------------------------------------------- saved modulations
def _trained_mod(adapter, heads=((0, 1), (1, 2)), scale="vector"):
    mod = HeadModulation(list(heads), adapter.head_dim, scale=scale, offset=True)
    with torch.no_grad():
        mod.scale.uniform_(0.5, 1.5)
        mod.offset.normal_()
    return mod


def test_saved_modulation_roundtrip_is_small_and_applies(tmp_path, tiny_llava, world_samples):
    mod = _trained_mod(tiny_llava)
    path = save_modulation(tmp_path / "m.safetensors", mod, model=tiny_llava.name, num_layers=tiny_llava.num_layers,
                           num_heads=tiny_llava.num_heads, identity=tiny_llava.identity)
    assert path.stat().st_size < 10_000
    loaded = load_modulation(path, tiny_llava)
    assert loaded.heads == mod.heads and not any(p.requires_grad for p in loaded.parameters())
    enc = tiny_llava.encode(world_samples[:3])
    with intervene(tiny_llava, mod):
        a = tiny_llava.last_logits(enc)
    with intervene(tiny_llava, loaded):
        b = tiny_llava.last_logits(enc)
    assert torch.equal(a, b)
    assert not torch.allclose(a, tiny_llava.last_logits(enc))  # it does change the model
    _, info = read_modulation(path)
    assert info["model"] == tiny_llava.name and info["num_heads"] == tiny_llava.num_heads
    assert info["weights_sha256"] == tiny_llava.identity["weights_sha256"] and len(info["weights_sha256"]) == 64


def test_saved_modulation_on_another_shape_fails_clearly(tmp_path, tiny_llava):
    mod = _trained_mod(tiny_llava)
    path = save_modulation(tmp_path / "m.safetensors", mod, model="big", num_layers=32, num_heads=32)
    with pytest.raises(HeadShapeError, match="32 layers x 32 heads.*this model has 2 x 4"):
        load_modulation(path, tiny_llava)


# --------------------------------------------------------------------------------------------- the module
def test_training_moves_only_the_modulation_and_lowers_the_loss(tmp_path, tiny_adapter, world_samples):
    tiny_llava = tiny_adapter  # both architectures (the name keeps the body readable)
    torch.manual_seed(0)
    frozen = {k: v.clone() for k, v in tiny_llava.model.state_dict().items()}
    mod = HeadModulation([(0, 0), (1, 1), (1, 3)], tiny_llava.head_dim, scale="scalar", offset=True)
    module = FrozenVLMModule(tiny_llava, mod, lr=0.05)
    assert module.num_trainable() == 3 + 3 * tiny_llava.head_dim
    dm = _dm(world_samples)
    batch = dm.splits["train"][:16]

    def loss():
        with torch.no_grad():
            b = module.cache.batch(batch)
            return float(torch.nn.functional.cross_entropy(module.logits(b), b.target))

    before = loss()
    seen_modes = []
    module.on_train_batch_start = lambda *a: seen_modes.append(tiny_llava.model.training)
    _trainer(tmp_path, max_steps=15).fit(module, datamodule=dm)
    assert loss() < before - 0.05
    assert seen_modes and not any(seen_modes)  # the VLM stayed in eval mode during training
    for k, v in tiny_llava.model.state_dict().items():
        assert torch.equal(v, frozen[k]), k
    assert not torch.equal(mod.scale.detach(), torch.ones(3))


def test_checkpoint_holds_only_modulation_and_restores(tmp_path, tiny_llava, world_samples):
    from lightning.pytorch.callbacks import ModelCheckpoint

    mod = HeadModulation([(0, 2), (1, 0)], tiny_llava.head_dim, scale="vector")
    module = FrozenVLMModule(tiny_llava, mod, lr=0.05)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ck"), filename="best", monitor="learned/val/loss", save_top_k=1)
    _trainer(tmp_path, max_epochs=2, callbacks=[ckpt], enable_checkpointing=True).fit(module, datamodule=_dm(world_samples))
    state = torch.load(ckpt.best_model_path, weights_only=False)
    assert sorted(state["state_dict"]) == ["modulation.head_index", "modulation.layer_index", "modulation.offset",
                                           "modulation.scale"]
    assert state["vseam"]["heads"] == [(0, 2), (1, 0)]
    fresh = FrozenVLMModule(tiny_llava, HeadModulation([(0, 2), (1, 0)], tiny_llava.head_dim, scale="vector"))
    fresh.load_trained(ckpt.best_model_path)
    torch.testing.assert_close(fresh.modulation.scale, state["state_dict"]["modulation.scale"])
    other = FrozenVLMModule(tiny_llava, HeadModulation([(0, 1)], tiny_llava.head_dim))
    with pytest.raises(ValueError, match="other heads"):
        other.load_trained(ckpt.best_model_path)


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, tiny_llava, world_samples):
    from lightning.pytorch.callbacks import Callback, ModelCheckpoint

    class PoisonAt(Callback):  # a parameter turns NaN before step 3, as a diverging run would
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 3:
                with torch.no_grad():
                    pl_module.modulation.offset[0, 0] = float("nan")

    mod = HeadModulation([(0, 0)], tiny_llava.head_dim)
    module = FrozenVLMModule(tiny_llava, mod, lr=0.01)
    ckpt = ModelCheckpoint(dirpath=str(tmp_path / "ck"), save_last=True, every_n_train_steps=1, save_top_k=0)
    with pytest.raises(NonFiniteLossError, match="at step 3"):
        _trainer(tmp_path, max_steps=10, callbacks=[ckpt, PoisonAt()], enable_checkpointing=True).fit(
            module, datamodule=_dm(world_samples, bs=4))
    last = torch.load(tmp_path / "ck" / "last.ckpt", weights_only=False)
    assert last["global_step"] == 3
    assert torch.isfinite(last["state_dict"]["modulation.offset"]).all()


def test_gradient_checkpointing_gives_the_same_gradients(tiny_llava, world_samples):
    grads = []
    for gc in (False, True):
        mod = HeadModulation([(0, 1), (1, 2)], tiny_llava.head_dim, scale="vector")
        module = FrozenVLMModule(tiny_llava, mod, gradient_checkpointing=gc)
        module.train()
        b = module.cache.batch(world_samples[:6])
        torch.nn.functional.cross_entropy(module.logits(b, keep_hooks=True), b.target).backward()
        module.release_hooks()
        grads.append((mod.scale.grad.clone(), mod.offset.grad.clone()))
        if gc:
            assert tiny_llava.layers[0].gradient_checkpointing and tiny_llava.layers[0].training and not tiny_llava.model.model.vision_tower.training
            tiny_llava.model.gradient_checkpointing_disable()
            assert not tiny_llava.o_proj(0)._forward_pre_hooks
            module.eval()
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0][1].abs().sum() > 0


def test_l1_penalty_on_scale_minus_one(tiny_llava):
    mod = HeadModulation([(0, 0), (1, 1)], tiny_llava.head_dim, scale="scalar")
    with torch.no_grad():
        mod.scale.copy_(torch.tensor([1.5, 0.75]))
    module = FrozenVLMModule(tiny_llava, mod, l1=0.1)
    pen = module.l1_penalty()
    assert float(pen) == pytest.approx(0.1 * (0.5 + 0.25))
    pen.backward()
    assert mod.scale.grad.tolist() == pytest.approx([0.1, -0.1])
    assert float(FrozenVLMModule(tiny_llava, mod, l1=0.0).l1_penalty()) == 0.0


# --------------------------------------------------------------------------------------------- peft baselines
@pytest.mark.parametrize("kind", ["lora", "ia3"])
def test_peft_baseline_trains_only_its_adapter_and_leaves_the_shared_model(kind, tmp_path, tiny_llava, world_samples):
    before = {k: v.clone() for k, v in tiny_llava.model.state_dict().items()}
    copy = peft_copy(tiny_llava, kind, r=2)
    n = count_trainable(copy.model)
    names = [k for k, p in copy.model.named_parameters() if p.requires_grad]
    assert n > 0 and all(("lora_" in k or "ia3_" in k) and "language_model" in k for k in names)
    module = FrozenVLMModule(copy, None, lr=0.01, method=kind)
    _trainer(tmp_path, max_steps=3).fit(module, datamodule=_dm(world_samples))
    assert set(module.trainable_keys) == {f"vlm.{k}" for k in names}
    assert count_trainable(tiny_llava.model) == 0
    for k, v in tiny_llava.model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bf16_mixed_training_then_float32_evaluation(tmp_path, tiny_llava, world_samples):
    """bf16-mixed (the 7B GPU setting) runs here on the CPU; embeddings cached under autocast still serve
    a float32 evaluation afterwards."""
    from vseam.evaluation import evaluate

    mod = HeadModulation([(0, 1), (1, 2)], tiny_llava.head_dim, scale="vector")
    module = FrozenVLMModule(tiny_llava, mod, lr=0.05)
    _trainer(tmp_path, max_steps=3, precision="bf16-mixed").fit(module, datamodule=_dm(world_samples))
    assert mod.scale.dtype == torch.float32 and not torch.equal(mod.scale.detach(), torch.ones_like(mod.scale))
    res = evaluate(tiny_llava, world_samples[:8], mod, cache=module.cache)
    assert len(res.records) == 8 and all(0.0 <= r["prob"] <= 1.0 for r in res.records)


def test_rank_heads_orders_by_scale_change():
    from vseam.modulation.methods import rank_heads

    mod = HeadModulation([(0, 0), (0, 1), (1, 0)], 4, scale="scalar")
    with torch.no_grad():
        mod.scale.copy_(torch.tensor([1.1, 0.5, 1.0]))
        mod.offset[2].fill_(1.0)
    r = rank_heads(mod)
    assert [(x["layer"], x["head"]) for x in r] == [(0, 1), (0, 0), (1, 0)]
    assert r[0]["scale_dev"] == pytest.approx(0.5) and r[2]["offset_norm"] == pytest.approx(2.0)


def test_every_configurable_method_has_one_runner():
    """``modulation.methods`` accepts exactly the methods ``train.py`` can run (one registry entry each)."""
    from typing import get_args

    from vseam.config import ModulationMethod
    from vseam.modulation.methods import RUNNERS

    assert list(RUNNERS) == list(get_args(ModulationMethod))
    assert all(callable(f) for f in RUNNERS.values())


def test_a_train_split_not_divisible_by_the_processes_is_said(samples, capsys):
    """DDP pads the training samples to a multiple of the processes: said, since it changes the run."""
    from types import SimpleNamespace

    splits = {"train": list(samples[:3]), "val": list(samples[3:]), "test": list(samples[3:])}
    dm = ModulationDataModule(splits, batch_size=2, seed=0)
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)
    assert len(list(dm.train_dataloader())) == 2  # 3 samples padded to 4: one of them twice
    assert "3 training samples over 2 processes: the DistributedSampler pads them to 4" in capsys.readouterr().out
    dm.trainer = SimpleNamespace(world_size=1, global_rank=0)
    dm.train_dataloader()
    dm.splits["train"] = list(samples[:2])
    dm.trainer = SimpleNamespace(world_size=2, global_rank=0)
    dm.train_dataloader()
    assert "note:" not in capsys.readouterr().out
