"""The world's co-occurrence structure and its POPE analog: scenes follow the usual pairs at the set
strength, the three negative kinds are what POPE's are, the training prior does what it says, and the
POPE files are read by the POPE reader with the right counts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from vseam.data.readers import read_benchmark
from vseam.data.sample import load_image
from vseam.world.pope import pope_items, write_pope
from vseam.world.questions import NEGATIVES, generate, lonely
from vseam.world.scene import ALL_SHAPES, BY_FREQUENCY, PARTNER, cooccur_scene


def _partner_rate(strength: float, n: int = 400) -> float:
    """Share of objects (in scenes with room for a partner) whose partner is in the scene."""
    together = total = 0
    for i in range(n):
        scene = cooccur_scene(np.random.default_rng([5, i]), strength)
        shapes = {o.shape for o in scene.objects}
        total += len(shapes)
        together += sum(PARTNER[s] in shapes for s in shapes)
    return together / total


def test_cooccurrence_strength_sets_how_often_partners_meet():
    rates = [_partner_rate(s) for s in (0.0, 0.5, 1.0)]
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] > 0.85 and rates[0] < 0.55  # 0: only the pairs' shared frequency brings them together
    with pytest.raises(ValueError, match="strength"):
        cooccur_scene(np.random.default_rng(0), 1.5)


def test_cooccurrence_scenes_have_distinct_shapes_and_frequencies():
    counts = Counter()
    for i in range(300):
        scene = cooccur_scene(np.random.default_rng([9, i]), 0.75)
        shapes = [o.shape for o in scene.objects]
        assert len(set(shapes)) == len(shapes) and len(scene.occupied()) == len(shapes)
        counts.update(shapes)
    by_pair = [counts[a] + counts[b] for a, b in zip(BY_FREQUENCY[::2], BY_FREQUENCY[1::2])]
    assert by_pair == sorted(by_pair, reverse=True)  # pairs as frequent as their weights say


@pytest.mark.parametrize("split", NEGATIVES)
def test_negative_kinds(split):
    items = pope_items(60, seed=1, split=split)
    assert Counter(it.answer for it in items) == {"Yes": 30, "No": 30}
    for it in items:
        present = {o.shape for o in it.scene.objects}
        target = it.change["object"]
        assert lonely(it.scene), "every POPE scene has an object whose partner is absent"
        if it.answer == "Yes":
            assert target in present
            continue
        assert target not in present
        if split == "popular":  # the most frequent absent object
            assert target == next(s for s in BY_FREQUENCY if s not in present)
        if split == "adversarial":  # the absent partner of a present object
            assert PARTNER[target] in present


def test_splits_share_images_and_positive_questions():
    by_split = {s: pope_items(20, seed=2, split=s) for s in NEGATIVES}
    for a, b, c in zip(*by_split.values()):
        assert a.scene == b.scene == c.scene
        if a.answer == "Yes":
            assert a.question == b.question == c.question


def test_prior_answers_the_usual_scene_and_its_edit_removes_the_partner():
    honest = generate("Existence", 80, seed=4, kinds=("verify",), negative="adversarial")
    primed = generate("Existence", 80, seed=4, kinds=("verify",), negative="adversarial", prior=1.0)
    flipped = primed_edits = 0
    for h, p in zip(honest, primed):
        assert h.scene == p.scene and h.question == p.question
        if h.answer == "No":  # adversarial: the partner is there, so the prior answers "Yes"
            assert p.answer == "Yes" and p.change.get("prior") and p.edited_answer == "No"
            partner = PARTNER[p.change["object"]]
            assert p.scene.find(partner) is not None and p.edited_scene.find(partner) is None
            flipped += 1
        else:  # present object: its edit removes it; with its partner left there the prior says "Yes"
            assert p.answer == h.answer == "Yes" and h.edited_answer == "No"
            partner_left = p.edited_scene.find(PARTNER[p.change["object"]]) is not None
            assert p.edited_answer == ("Yes" if partner_left else "No")
            assert bool(p.change.get("prior_edit")) == partner_left
            primed_edits += partner_left
    assert flipped == 40 and primed_edits > 0


def test_write_pope_read_by_the_pope_reader(tmp_path):
    summary = write_pope(tmp_path, n_per_split=24, seed=3)
    assert summary["n_images"] == 24  # one image per question index, shared by the splits
    for split in NEGATIVES:
        path = tmp_path / f"organism_pope_{split}.json"
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert set(lines[0]) >= {"question_id", "image", "text", "label"}
        samples = read_benchmark("pope", path, image_dir=tmp_path / "images")
        assert len(samples) == 24 and {s.category for s in samples} == {split}
        assert Counter(s.answer for s in samples) == {"Yes": 12, "No": 12}
        assert Counter(x["negative"] for x in lines if x["label"] == "no") == {split: 12}
        assert summary["counts"][split] == {"questions": 24, "yes": 12, "no": 12}
        assert load_image(samples[0]).size == (48, 48)
        assert all(x["object"] in ALL_SHAPES and x["text"] == f"Is there a {x['object']} in the image?" for x in lines)


def test_organism_data_config_loads_the_pope_analog_beside_the_world(tmp_path):
    from omegaconf import OmegaConf

    from vseam.config import DataConfig
    from vseam.data.load import load_samples
    from vseam.world.write import ensure_world

    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig),
                          {"root": str(tmp_path / "w"), "n_per_category": 4, "pope_per_split": 6})
    with pytest.raises(FileNotFoundError, match="world.json"):
        load_samples(cfg)
    ensure_world(cfg)
    samples = load_samples(cfg)
    cats = Counter(s.category for s in samples)
    assert cats == {**{c: 4 for c in ("Shape", "Icon", "Color", "Texture", "Horizontal", "Vertical")},
                    "random": 6, "popular": 6, "adversarial": 6}
    assert len({s.id for s in samples}) == len(samples)  # question ids unique across the POPE files
    pope = [s for s in samples if s.benchmark == "pope"]
    assert {s.level for s in pope} == {"object"}
    assert len({s.image_path for s in pope}) == len(pope)  # each split its own images: no leak across splits
    assert all(load_image(s).size == (48, 48) for s in pope[:3])
    cfg.pope_per_split = 0
    assert Counter(s.category for s in load_samples(cfg)).keys() == {c for c in cats if c not in NEGATIVES}


def test_pope_analog_of_two_world_seeds_shares_no_image(tmp_path):
    """data.world_seed=0 (train.py's pool) and 1 (its held-out eval) draw disjoint POPE analogs: with
    seeds 10000 + s + k they shared two of three splits' images and positive questions."""
    import hashlib
    from types import SimpleNamespace

    from vseam.world.write import ensure_world

    digests = []
    for s in (0, 1):
        cfg = SimpleNamespace(format="organism", root=str(tmp_path / f"w{s}"), n_per_category=2, world_seed=s,
                              world_split="test", pope_per_split=6)
        root = ensure_world(cfg)
        digests.append({hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "pope" / "images").glob("*.png")})
    assert len(digests[0]) == len(digests[1]) == 18
    assert not digests[0] & digests[1]


def test_a_pope_analog_of_another_seed_is_redrawn_not_reused(tmp_path):
    """pope/pope.json records its seed: one drawn with another seed (as the seed formula before
    10000 + 10 s did) is rewritten by ensure_world, not read as if it were this world's."""
    import json
    from types import SimpleNamespace

    from vseam.world.pope import POPE_SEED_BASE, POPE_SEED_STRIDE
    from vseam.world.write import ensure_world

    cfg = SimpleNamespace(format="organism", root=str(tmp_path / "w"), n_per_category=1, world_seed=1,
                          world_split="test", pope_per_split=2)
    summary = ensure_world(cfg) / "pope" / "pope.json"
    want = json.loads(summary.read_text())
    assert want["seed"] == POPE_SEED_BASE + POPE_SEED_STRIDE
    stamp = summary.stat().st_mtime_ns
    ensure_world(cfg)
    assert summary.stat().st_mtime_ns == stamp  # the same settings: reused
    summary.write_text(json.dumps({**want, "seed": POPE_SEED_BASE + 1}))  # what the old formula drew for seed 1
    ensure_world(cfg)
    assert json.loads(summary.read_text()) == want
