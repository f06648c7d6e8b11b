"""Mechanism ground truth on the shipped organism (docs/organism.md): the POPE-analog hallucination, the
absence probe, the attention mass on the queried object's image tokens, and the planted defect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vseam.world.questions import CATEGORIES, WorldItem, generate
from vseam.world.scene import Obj, Scene

CKPT = Path(__file__).resolve().parents[2] / "checkpoints" / "organism"  # the shipped (48-head) organism


@pytest.fixture(scope="module")
def llava():
    from vseam.models import load_adapter

    path = CKPT / "llava"
    if not (path / "model.safetensors").exists():
        pytest.fail(f"{path} is missing: rebuild with `python scripts/build_organism.py`")
    return load_adapter({"arch": "llava", "path": str(path), "device": "cpu", "local_files_only": True})


def test_absence_probe_decodes_what_the_model_gets_wrong(llava):
    """The image tokens at the LM input say an absent object is absent more often than the model does:
    on the POPE-adversarial questions about absent objects the linear absence probe is right at least 10
    points more often than the model's answers; on clearly visible present objects it is nearly always
    right. (v3: where the present object is faint or small its evidence is weak at the input too, the
    probe well below that; the hallucination is a ranking failure, not missing features alone.)"""
    from vseam.organism.mechanism import absence_probe
    from vseam.world.pope import pope_items

    train = pope_items(600, 501, "random", purpose="mech") + pope_items(600, 502, "adversarial", purpose="mech")
    test = pope_items(200, 503, "adversarial", purpose="mech")
    res = absence_probe(llava, train, test)
    assert res.accuracy >= 0.7, res.to_dict()

    def model_accuracy(items):
        return float(llava.score([it.sample() for it in items], batch_size=64).correct.float().mean())

    absent = [it for it in test if it.scene.find(it.change["object"]) is None]
    clear = [it for it in test if (i := it.scene.find(it.change["object"])) is not None and not it.scene.objects[i].weak]
    assert len(absent) == 100 and len(clear) >= 30
    on_absent = absence_probe(llava, train, absent)
    assert model_accuracy(absent) < 0.8, "the model hallucinates some absent objects"
    assert on_absent.accuracy >= model_accuracy(absent) + 0.1, (on_absent.to_dict(), model_accuracy(absent))
    assert absence_probe(llava, train, clear).accuracy >= 0.9


def _hand_item(question: str, answer: str, involved: list[int], scene: Scene, category: str) -> WorldItem:
    return WorldItem(id=f"hand-{category}", category=category, kind="query", question=question, answer=answer,
                     scene=scene, edited_scene=scene, edited_answer=answer, involved=involved, mask_cells=[],
                     change={}, edit_prompt="")


def _lens_at_image_tokens(adapter, item) -> list[str]:
    """The trained read-out of every image token (final hidden state through the LM head)."""
    enc = adapter.encode([item.sample()])
    emb = adapter.embed(enc)
    with torch.no_grad():
        hidden = adapter.decoder(inputs_embeds=emb.inputs_embeds, attention_mask=emb.attention_mask,
                                 position_ids=emb.position_ids, use_cache=False).last_hidden_state
    visual = adapter.visual_token_mask(enc.inputs["input_ids"])[0]
    ids = adapter.lm_head(hidden[0, visual]).argmax(-1).tolist()
    return [t.lstrip("▁") for t in adapter.tokenizer.convert_ids_to_tokens(ids)]


def test_attention_mass_on_a_hand_built_scene(llava):
    """The circle sits in cell (0, 2) = image token 2: its mass is the attention the HF model itself
    returns from the last position to that token, and the model's own read-out names the circle
    there (and the square in cell (2, 0) = token 6); moved to cell (1, 1), both follow it to token 4."""
    from vseam.organism.mechanism import attention_mass, eager_attention, object_cells

    scene = Scene(objects=(Obj("circle", "red", "solid", 0, 2), Obj("square", "blue", "striped", 2, 0)),
                  background=(230, 228, 225))
    item = _hand_item("What color is the circle?", "red", [0], scene, "Color")
    assert object_cells(item) == [2]
    mass, keep = attention_mass(llava, [item])
    assert keep == [0] and mass.shape == (1, llava.num_layers, llava.num_heads)
    enc = llava.encode([item.sample()])
    with eager_attention(llava.model), torch.no_grad():
        out = llava.model(**llava.model_inputs(enc), output_attentions=True, use_cache=False)
    visual = llava.visual_token_mask(enc.inputs["input_ids"])[0].nonzero().squeeze(1)
    direct = torch.stack([a[0, :, -1, visual[2]] for a in out.attentions])  # [L, H]
    assert torch.allclose(mass[0], direct, atol=1e-5)
    assert not torch.allclose(mass[0], torch.stack([a[0, :, -1, visual[6]] for a in out.attentions]), atol=1e-3)
    named = _lens_at_image_tokens(llava, item)
    assert named[2] == "circle" and named[6] == "square", named

    moved = _hand_item("What color is the circle?", "red", [0], scene.with_object(0, row=1, col=1), "Color")
    assert object_cells(moved) == [4]
    named = _lens_at_image_tokens(llava, moved)
    assert named[4] == "circle" and named[6] == "square", named
    assert not torch.allclose(attention_mass(llava, [moved])[0], mass, atol=1e-4)


def test_attention_mass_tracks_positive_scores_per_category(llava):
    from vseam.study.ground_truth import mass_score_correlation

    items = [it for c in CATEGORIES for it in generate(c, 24, seed=611, split="mech")]
    corr = mass_score_correlation(llava, items)
    assert set(corr) == set(CATEGORIES)
    for cat, entry in corr.items():
        assert entry["n_with_object_tokens"] == entry["n"] == 24
        assert entry["spearman"] is not None and -1 <= entry["spearman"] <= 1, (cat, entry)


def test_planted_defect_is_found_first_and_undone_by_learned_modulation(llava):
    from vseam.organism.mechanism import PLANTED_DEFECT
    from vseam.study.ground_truth import defect_experiment

    # yes/no questions of every category, answers balanced: the "Yes" bias breaks the "No" half
    train = [it.sample() for c in CATEGORIES for it in generate(c, 16, seed=621, kinds=("verify",), split="mech")]
    test = [it.sample() for c in CATEGORIES for it in generate(c, 24, seed=622, kinds=("verify",), split="mech")]
    layer, head, strength = PLANTED_DEFECT["llava"]
    res = defect_experiment(llava, train, test, layer, head, strength=strength, epochs=6)
    acc = res["accuracy"]
    assert acc["clean"] - acc["defect"] >= 0.2, res  # the defect costs accuracy
    assert res["negative_rank"] == 1, res  # head attribution names the planted head first
    assert res["recovered"] >= 0.6, res  # learned modulation on it undoes most of the cost



# ----------------------------------------------------------------------------- planted heads
def test_planted_checkpoint_is_the_organism_with_only_the_planted_values_scaled():
    """checkpoints/organism/llava-planted = llava with each planted head's v_proj rows times the
    factor (planted.json), every other weight bit-identical: the defect is exactly what it says."""
    from safetensors.torch import load_file

    from vseam.organism.mechanism import PLANTED_HEADS, PlantedHeads

    planted_dir = CKPT / "llava-planted"
    spec = PlantedHeads.from_dict(json.loads((planted_dir / "planted.json").read_text()))
    assert spec == PLANTED_HEADS["llava"]
    src, dst = load_file(CKPT / "llava" / "model.safetensors"), load_file(planted_dir / "model.safetensors")
    assert src.keys() == dst.keys()
    d = json.loads((CKPT / "llava" / "config.json").read_text())["text_config"]
    head_dim = d["hidden_size"] // d["num_attention_heads"]
    import re

    changed = {k for k in src if not torch.equal(src[k], dst[k])}
    layer_of = lambda key: int(re.search(r"layers\.(\d+)\.", key).group(1))  # noqa: E731
    layers = {l for l, _ in spec.heads}
    assert changed == {k for k in src if k.endswith("v_proj.weight") and "language_model" in k and layer_of(k) in layers}
    for key in changed:
        layer = layer_of(key)
        rows = torch.zeros(src[key].shape[0], dtype=torch.bool)
        for l, h in spec.heads:
            if l == layer:
                rows[h * head_dim:(h + 1) * head_dim] = True
        assert torch.equal(dst[key][rows], src[key][rows] * spec.factor) and torch.equal(dst[key][~rows], src[key][~rows])


def test_planted_heads_are_found_and_only_modulating_them_undoes_the_defect():
    """The mechanism the random-head control must miss: with learned modulation of the planted heads
    the planted model recovers its accuracy; with as many random heads that leave them out it does not;
    and exact attribution ranks the planted heads first among the negative heads."""
    from vseam.models import load_adapter
    from vseam.organism.mechanism import PLANTED_HEADS
    from vseam.study.ground_truth import planted_heads_experiment

    spec = PLANTED_HEADS["llava"]
    train = [it.sample() for c in CATEGORIES for it in generate(c, 16, seed=631, split="mech")]
    test = [it.sample() for c in CATEGORIES for it in generate(c, 24, seed=632, split="mech")]
    clean = load_adapter({"arch": "llava", "path": str(CKPT / "llava"), "device": "cpu", "local_files_only": True})
    clean_acc = float(clean.score(test, batch_size=64).correct.float().mean())
    planted = load_adapter({"arch": "llava", "path": str(CKPT / "llava-planted"), "device": "cpu",
                            "local_files_only": True})
    res = planted_heads_experiment(planted, clean_acc, spec.heads, train, test, k=len(spec.heads), n_random=2, epochs=4)
    acc = res["accuracy"]
    assert acc["clean"] - acc["planted"] >= 0.15, res
    assert sorted(res["negative_ranks"].values()) == list(range(1, len(spec.heads) + 1)), res
    mod = res["modulated"]
    assert mod["planted_plus_random"]["recovered"] >= 0.6, res
    assert all(r["recovered"] < 0.4 for r in mod["random_without_planted"]), res
