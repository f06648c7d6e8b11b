"""The organism's models: the training path learns (loss falls, deterministic by seed), the curriculum
holds levels back, and the shipped checkpoints load offline and reach their recorded accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vseam.organism.build import OrganismTrainConfig, build_model, make_adapter, train_config
from vseam.organism.data import (
    CurriculumBatches,
    TensorRows,
    cell_targets,
    draw_items,
    key_targets,
    key_words_and_targets,
)
from vseam.organism.encode import encode_samples
from vseam.organism.module import OrganismModule

CKPT = Path(__file__).resolve().parents[2] / "checkpoints" / "organism"
VARIANTS = ["llava", "llava-undertrained", "instructblip", "instructblip-undertrained"]
TINY = dict(vision_hidden_size=32, hidden_size=32, intermediate_size=64, num_layers=2, qformer_hidden_size=32,
            vocab_size=400)


def _tiny_training(arch: str, steps: int, seed: int = 0):
    torch.manual_seed(seed)
    cfg = OrganismTrainConfig(arch=arch, seed=seed, **TINY)
    model, processor = build_model(cfg)
    adapter = make_adapter(model, processor, arch)
    items = draw_items(2, seed=seed, split="train")
    tensors = encode_samples(adapter, [it.sample() for it in items] + [it.edited_sample() for it in items])
    tensors["cell_target"] = cell_targets(adapter.tokenizer, [it.scene for it in items] +
                                          [it.edited_scene for it in items])
    pairs = [key_words_and_targets(it) for it in items] + [key_words_and_targets(it, edited=True) for it in items]
    tensors["key_pos"], tensors["key_target"] = key_targets(adapter.tokenizer, tensors["input_ids"], pairs)
    batch = {k: v for k, v in tensors.items()}
    module = OrganismModule(adapter, lr=3e-3, warmup_steps=1, max_steps=steps, dense_loss_weight=1.0)
    opt = module.configure_optimizers()["optimizer"]
    losses = []  # the model stays in eval mode, as in build_organism (no dropout)
    for _ in range(steps):
        logits, cell_logits, key_logits = module.dense_logits(batch)
        assert torch.allclose(logits, module(batch), atol=1e-5)  # the training read-out is the scoring one
        ce = torch.nn.functional.cross_entropy
        loss = ce(logits, batch["target"]) + ce(cell_logits.flatten(0, 1), batch["cell_target"].flatten()) + ce(
            key_logits.flatten(0, 1), batch["key_target"].flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses, model


@pytest.mark.parametrize("arch", ["llava", "instructblip"])
def test_a_few_training_steps_reduce_the_loss(arch):
    losses, _ = _tiny_training(arch, steps=15)
    assert losses[-1] < 0.7 * losses[0], losses


def test_training_is_deterministic_by_seed():
    la, ma = _tiny_training("llava", steps=2, seed=1)
    lb, mb = _tiny_training("llava", steps=2, seed=1)
    assert la == lb
    assert all(torch.equal(a, b) for a, b in zip(ma.state_dict().values(), mb.state_dict().values()))


def test_a_build_is_bit_reproducible(tmp_path):
    """``build_organism`` twice with the same recipe and seed writes the same weights, byte for byte (a short
    build of a small model: the path of the full one, data, curriculum, Lightning and the snapshot alike),
    and another seed other weights; training.json records how the build was started."""
    from vseam.organism.build import build_organism

    small = dict(TINY, max_steps=6, val_every=3, n_train_per_category=3, n_val_per_category=2, n_test_per_category=2,
                 n_pope_per_split=6, attribute_from=1, relation_from=2, hard_from=3, undertrained_at=0.0)
    threads = torch.get_num_threads()
    try:
        for name, seed in (("a", 0), ("b", 0), ("c", 1)):
            build_organism(OrganismTrainConfig(arch="llava", seed=seed, **small), tmp_path / name, log=lambda m: None)
    finally:
        torch.set_num_threads(threads)
    weights = {n: (tmp_path / n / "llava" / "model.safetensors").read_bytes() for n in "abc"}
    assert weights["a"] == weights["b"] and weights["a"] != weights["c"]
    assert (tmp_path / "a" / "llava-undertrained" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "llava-undertrained" / "model.safetensors").read_bytes()
    record = json.loads((tmp_path / "a" / "llava" / "training.json").read_text())
    assert record["build"]["command"] and record["build"]["torch"] == torch.__version__
    assert {w["split"] for w in record["training_worlds"]} == {"organism-train", "organism-val"}


def test_curriculum_holds_levels_back():
    levels = ["object"] * 10 + ["attribute"] * 10 + ["relation"] * 10
    batches = list(CurriculumBatches(levels, {"object": 0, "attribute": 2, "relation": 4}, 16, seed=0, steps=6))
    assert len(batches) == 6
    for step, b in enumerate(batches):
        seen = {levels[i] for i in b}
        assert "attribute" not in seen or step >= 2
        assert "relation" not in seen or step >= 4
    assert {levels[i] for i in batches[5]} == {"object", "attribute", "relation"}


def test_cell_targets_name_the_shape_of_each_patch():
    from vseam.organism.build import build_organism_tokenizer

    tok = build_organism_tokenizer()
    item = draw_items(1, seed=0, split="train")[0]
    t = cell_targets(tok, [item.scene])[0]
    for o in item.scene.objects:
        assert tok.convert_ids_to_tokens(int(t[o.row * 3 + o.col])) == "▁" + o.shape
    assert (t == tok.pad_token_id).sum() == 9 - len(item.scene.objects)
    # "?" is split off, so a shape is one token in the question and as an answer
    assert tok.tokenize("What color is the moon?")[-2:] == ["▁moon", "?"]


def test_key_word_targets_follow_the_scene():
    from vseam.organism.build import build_organism_tokenizer

    tok = build_organism_tokenizer()
    items = draw_items(4, seed=1, split="train")
    for it in items:
        keys = key_words_and_targets(it)
        assert all(word in it.question for word, _ in keys)
        # relation: where the first object is, and the relation at the second; attribute verify: the value
        # at the shape word and the answer at the asked value
        assert len(keys) == (2 if it.level == "relation" or (it.level == "attribute" and it.kind == "verify") else 1)
        if it.kind == "query":  # the last lookup finds the answer itself (on the edited scene, the edited one)
            assert keys[-1][1] == it.answer and key_words_and_targets(it, edited=True)[-1][1] == it.edited_answer
    ids = tok(["What color is the moon?", "Is the moon left of the star?"], padding=True,
              return_tensors="pt")["input_ids"]
    pos, tgt = key_targets(tok, ids, [[("moon", "red")], [("moon", "middle"), ("star", "left")]])
    assert tok.convert_ids_to_tokens(ids[0, pos[0, 0]].item()) == "▁moon" and tgt[0, 1] == -100
    assert [tok.convert_ids_to_tokens(ids[1, p].item()) for p in pos[1]] == ["▁moon", "▁star"]
    assert tok.convert_ids_to_tokens(tgt[1].tolist()) == ["▁middle", "▁left"]


def test_pair_rows_keep_clean_and_edited_together():
    rows = TensorRows({"x": torch.arange(6)}, [[0, 3], [1, 4], [2, 5]])
    assert rows.collate([rows[2], rows[0]])["x"].tolist() == [2, 5, 0, 3]


def test_train_config_overrides_are_typed():
    cfg = train_config("instructblip", {"max_steps": "12", "lr": "0.01", "with_edits": "false"})
    assert (cfg.max_steps, cfg.lr, cfg.with_edits, cfg.arch) == (12, 0.01, False, "instructblip")
    with pytest.raises(ValueError, match="unknown organism training key"):
        train_config("llava", {"nope": "1"})


# ----------------------------------------------------------------------------- shipped checkpoints

def _shipped(variant: str) -> Path:
    path = CKPT / variant
    if not (path / "model.safetensors").exists():
        pytest.fail(f"{path} is missing: rebuild with `python scripts/build_organism.py`")
    return path


def test_shipped_checkpoints_are_small():
    total = sum(f.stat().st_size for f in CKPT.rglob("*") if f.is_file())
    assert total < 20e6, f"the organism checkpoints take {total / 1e6:.1f} MB"


@pytest.mark.parametrize("arch", ["llava", "instructblip"])
def test_shipped_checkpoints_were_built_by_the_recipe_in_the_code(arch):
    """``python scripts/build_organism.py`` rebuilds what is shipped: the recorded settings of each
    checkpoint equal today's recipe for its architecture, it has 6 x 8 = 48 heads, and its pictures are
    the world's (the recipe's difficulty is ``vseam.world.scene.DIFFICULTY``, which every evaluation
    world draws)."""
    import dataclasses

    from vseam.organism.build import train_config
    from vseam.world.scene import DIFFICULTY

    assert train_config(arch).difficulty() == DIFFICULTY
    for variant in (arch, f"{arch}-undertrained"):
        recorded = json.loads((CKPT / variant / "training.json").read_text())["settings"]
        assert recorded == dataclasses.asdict(train_config(arch)), variant
        assert (recorded["num_layers"], recorded["num_heads"]) == (6, 8)


@pytest.mark.parametrize("variant", VARIANTS)
def test_shipped_checkpoint_loads_offline_and_reaches_its_recorded_accuracy(variant, monkeypatch):
    from vseam.models import load_adapter
    from vseam.organism.evaluate import accuracy_report
    from vseam.world.questions import CATEGORIES, generate

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = _shipped(variant)
    recorded = json.loads((path / "accuracy.json").read_text())
    arch = variant.split("-")[0]
    adapter = load_adapter({"arch": arch, "path": str(path), "device": "cpu", "local_files_only": True})
    # a fresh held-out sample: a split and seed used neither in training, validation nor accuracy.json
    items = [it for c in CATEGORIES for it in generate(c, 40, seed=424242, split="fresh")]
    got = accuracy_report(adapter, items)
    assert abs(got["overall"] - recorded["overall"]) <= 0.07, (got, recorded)
    for level, acc in recorded["level"].items():
        assert abs(got["level"][level] - acc) <= 0.12, (level, got["level"], recorded["level"])
    if not variant.endswith("undertrained"):  # the 85 % target, measured here on fresh questions (120 per level)
        assert got["overall"] >= 0.85 and recorded["overall"] >= 0.85, (got, recorded)
        # ... with errors in every category (the head study's negative scores need them)
        assert recorded["category"] and max(recorded["category"].values()) < 1.0, recorded["category"]
    if variant.endswith("undertrained"):  # headroom for modulation, yet well above chance
        trained = json.loads((CKPT / arch / "accuracy.json").read_text())
        assert recorded["overall"] < trained["overall"] and got["overall"] >= 0.6, (got, trained)
        # visibly short of the trained model: overall >= 5 points lower
        assert recorded["overall"] <= trained["overall"] - 0.05, (recorded, trained)


@pytest.mark.parametrize("arch", ["llava", "instructblip"])
def test_shipped_hallucination_is_a_ranking_failure(arch):
    """The frozen model's yes-vs-no margin on the POPE-analog adversarial split (accuracy.json, measured
    on the build's own POPE split) does not separate present from absent objects: AUROC <= 0.90, and no
    single threshold reaches 95 % (a bias shift cannot fix it)."""
    pope = json.loads((_shipped(arch) / "accuracy.json").read_text())["pope"]
    adv = pope["adversarial"]
    assert adv["auroc"] <= 0.90 and adv["best_threshold_accuracy"] < 0.95, adv
    assert adv["accuracy"] < pope["random"]["accuracy"] or adv["auroc"] < pope["random"]["auroc"], pope


def test_vision_position_embeddings_can_be_scaled_at_init():
    from vseam.organism.build import scale_vision_position_embeddings

    cfg = OrganismTrainConfig(arch="instructblip", **TINY)
    model, _ = build_model(cfg)
    before = model.vision_model.embeddings.position_embedding.detach().clone()
    assert scale_vision_position_embeddings(model, 3.0) == 1
    assert torch.allclose(model.vision_model.embeddings.position_embedding, 3 * before)


@pytest.mark.parametrize("arch", ["llava", "instructblip"])
def test_position_loss_trains_heads_outside_the_saved_model(arch):
    from vseam.organism.build import train_config

    torch.manual_seed(0)
    recipe = train_config(arch)  # the shipped recipe: LM input for LLaVA, LM input + vision patches for InstructBLIP
    assert recipe.position_loss_weight > 0
    assert recipe.position_loss_layers == {"llava": "0", "instructblip": "0,vision"}[arch]
    cfg = OrganismTrainConfig(arch=arch, **TINY)
    model, processor = build_model(cfg)
    adapter = make_adapter(model, processor, arch)
    from vseam.world.scene import Difficulty

    # crisp pictures (no noise or faint objects): 20 steps of a random tiny model show the read-out learning
    items = draw_items(2, seed=0, split="train", difficulty=Difficulty.crisp())
    batch = encode_samples(adapter, [it.sample() for it in items])
    batch["cell_target"] = cell_targets(adapter.tokenizer, [it.scene for it in items])
    batch["key_pos"], batch["key_target"] = key_targets(adapter.tokenizer, batch["input_ids"],
                                                        [key_words_and_targets(it) for it in items])
    module = OrganismModule(adapter, lr=3e-3, warmup_steps=1, max_steps=20, dense_loss_weight=1.0,
                            position_loss_weight=1.0, position_loss_layers=recipe.position_loss_layers)
    assert module.position_layers == [0] and module.position_vision == (arch == "instructblip")
    assert set(module.position_heads) == ({"0", "vision"} if arch == "instructblip" else {"0"})
    opt = module.configure_optimizers()["optimizer"]
    trained = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in trained for p in module.position_heads.parameters())
    assert not any(k.startswith("position_heads") for k in model.state_dict())  # the HF model is unchanged
    losses = []
    for _ in range(20):
        module.dense_logits(batch)
        assert [name for name, _ in module._position_states] == list(module.position_heads)
        loss, _ = module.position_loss(batch["cell_target"].shape[1])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.9 * losses[0], losses
