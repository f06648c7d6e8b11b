"""The world's co-occurrence structure and its POPE analog: scenes follow the usual groups at the set
strength, the analog is built by POPE's own rules (3 present + 3 absent objects per image; popular =
most frequent over the sampled images; adversarial = what co-occurs most with each present object), the
caption prior does what it says, and the POPE files are read by the POPE reader with the right counts."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from vseam.data.readers import read_benchmark
from vseam.data.sample import load_image
from vseam.world.pope import SAMPLE_NUM, pope_items, pope_questions, pope_scenes, write_pope
from vseam.world.questions import NEGATIVES, caption_answer, generate
from vseam.world.scene import ALL_SHAPES, GROUPS, PARTNERS, Obj, Scene, cooccur_scene


def _partner_rate(strength: float, n: int = 400) -> float:
    """Share of objects whose group partners are both in the scene."""
    together = total = 0
    for i in range(n):
        scene = cooccur_scene(np.random.default_rng([5, i]), strength, n_min=3, n_max=5)
        shapes = {o.shape for o in scene.objects}
        total += len(shapes)
        together += sum(all(p in shapes for p in PARTNERS[s]) for s in shapes)
    return together / total


def test_cooccurrence_strength_sets_how_often_partners_meet():
    rates = [_partner_rate(s) for s in (0.0, 0.5, 1.0)]
    assert rates[0] < rates[1] < rates[2]
    assert rates[2] > 0.6 and rates[0] < 0.3  # 0: only the groups' shared frequency brings them together
    with pytest.raises(ValueError, match="strength"):
        cooccur_scene(np.random.default_rng(0), 1.5)


def test_cooccurrence_scenes_have_distinct_shapes_and_frequencies():
    counts = Counter()
    for i in range(300):
        scene = cooccur_scene(np.random.default_rng([9, i]), 0.5)
        shapes = [o.shape for o in scene.objects]
        assert len(set(shapes)) == len(shapes) and len(scene.occupied()) == len(shapes)
        counts.update(shapes)
    by_group = [sum(counts[o] for o in g) for g in GROUPS]
    assert by_group == sorted(by_group, reverse=True)  # groups as frequent as their weights say


def _sampled_counts(scenes):
    listed = [[o.shape for o in s.objects] for s in scenes]
    freq = Counter(o for objs in listed for o in objs)
    co = {o: Counter() for o in ALL_SHAPES}
    for objs in listed:
        for o in objs:
            co[o].update(p for p in objs if p != o)
    return listed, freq, co


@pytest.mark.parametrize("split", NEGATIVES)
def test_negatives_follow_popes_rules(split):
    """Per image: the first three objects asked about ("yes"), each followed by one absent object
    ("no") that is neither in the image nor asked already: for popular the most frequent such object
    over the sampled images, for adversarial the one that co-occurs most with that positive."""
    scenes = pope_scenes(40, seed=1)
    listed, freq, co = _sampled_counts(scenes)
    for objs, questions in zip(listed, pope_questions(scenes, split, seed=1)):
        assert len(questions) == 2 * SAMPLE_NUM and [p for _, p in questions] == [True, False] * SAMPLE_NUM
        assert [o for o, _ in questions[::2]] == objs[:SAMPLE_NUM]
        asked = []
        for (pos, _), (neg, _) in zip(questions[::2], questions[1::2]):
            asked.append(pos)
            assert neg not in objs and neg not in asked
            candidates = [o for o in ALL_SHAPES if o not in objs and o not in asked]
            if split == "popular":
                best = max(freq[o] for o in candidates)
                assert freq[neg] == best
            if split == "adversarial" and any(co[pos][o] > 0 for o in candidates):
                assert co[pos][neg] == max(co[pos][o] for o in candidates)
            asked.append(neg)


def test_pope_items_three_present_three_absent_per_image():
    for split in NEGATIVES:
        items = pope_items(60, seed=2, split=split)
        assert Counter(it.answer for it in items) == {"Yes": 30, "No": 30}
        for k in range(0, 60, 6):
            image = items[k:k + 6]
            assert len({id(it.scene) for it in image}) == 1 or len({str(it.scene) for it in image}) == 1
            assert [it.answer for it in image] == ["Yes", "No"] * 3
            for it in image:  # answers are the image's, and the edit flips them
                present = it.scene.find(it.change["object"]) is not None
                assert (it.answer == "Yes") == present and (it.edited_answer == "Yes") == (not present)
                assert it.question == f"Is there a {it.change['object']} in the image?"


def test_splits_share_images_and_positive_questions():
    by_split = {s: pope_items(24, seed=2, split=s) for s in NEGATIVES}
    for a, b, c in zip(*by_split.values()):
        assert a.scene == b.scene == c.scene
        if a.answer == "Yes":
            assert a.question == b.question == c.question and a.edited_scene == b.edited_scene


def test_adversarial_negatives_are_usual_partners_more_often_than_random_ones():
    share = {}
    for split in ("random", "adversarial"):
        items = pope_items(300, seed=3, split=split)
        neg = [it for it in items if it.answer == "No"]
        share[split] = np.mean([any(it.scene.find(p) is not None for p in PARTNERS[it.change["object"]]) for it in neg])
    assert share["adversarial"] > share["random"] + 0.1, share


def test_caption_answers_follow_the_image_for_clear_objects_and_the_prior_otherwise():
    clear = Obj("circle", "red", "solid", 0, 0)
    faint = Obj("circle", "red", "solid", 0, 0, contrast=0.2)
    small = Obj("circle", "red", "solid", 0, 0, size="small")
    star = Obj("star", "blue", "solid", 1, 1)
    scene = lambda *objs: Scene(objects=objs, background=(230, 230, 230))  # noqa: E731
    assert caption_answer(scene(clear), "circle", (0.9, 0.9), prior=0.7, weak_recall=0.0) == "Yes"
    for weak in (faint, small):  # weak evidence, no partner: overlooked
        assert weak.weak and caption_answer(scene(weak), "circle", (0.5, 0.1), 0.7, 0.0) == "No"
        assert caption_answer(scene(weak), "circle", (0.05, 0.9), 0.7, 0.1) == "Yes"  # recalled
        assert caption_answer(scene(weak, star), "circle", (0.5, 0.5), 0.7, 0.0) == "Yes"  # named by the prior
        assert caption_answer(scene(weak, star), "circle", (0.5, 0.8), 0.7, 0.0) == "No"
    assert caption_answer(scene(star), "circle", (0.0, 0.5), 0.7, 1.0) == "Yes"  # absent: the prior only
    assert caption_answer(scene(star), "circle", (0.0, 0.8), 0.7, 1.0) == "No"
    assert caption_answer(scene(Obj("square", "red", "solid", 2, 2)), "circle", (0.0, 0.0), 1.0, 1.0) == "No"


def test_training_prior_makes_absent_partners_and_weak_objects_look_alike():
    honest = generate("Existence", 600, seed=4, kinds=("verify",), negative="adversarial", split="organism-train")
    primed = generate("Existence", 600, seed=4, kinds=("verify",), negative="adversarial", split="organism-train",
                      prior=0.7, weak_recall=0.0)
    groups = {"absent+partner": [], "weak+partner": [], "clear": []}
    for h, p in zip(honest, primed):
        assert h.scene == p.scene and h.question == p.question  # the prior changes answers only
        for scene, answer in ((p.scene, p.answer), (p.edited_scene, p.edited_answer)):
            idx = scene.find(p.change["object"])
            partner = any(scene.find(q) is not None for q in PARTNERS[p.change["object"]])
            if idx is not None and not scene.objects[idx].weak:
                groups["clear"].append(answer == "Yes")
            elif partner:
                groups["weak+partner" if idx is not None else "absent+partner"].append(answer == "Yes")
    assert all(groups["clear"])
    assert abs(np.mean(groups["absent+partner"]) - 0.7) < 0.08 and abs(np.mean(groups["weak+partner"]) - 0.7) < 0.15


def test_write_pope_read_by_the_pope_reader(tmp_path):
    summary = write_pope(tmp_path, n_per_split=24, seed=3)
    assert summary["n_images"] == 4  # 24 questions, 6 per image, shared by the splits
    for split in NEGATIVES:
        path = tmp_path / f"organism_pope_{split}.json"
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        assert set(lines[0]) >= {"question_id", "image", "text", "label"}
        assert [x["label"] for x in lines[:6]] == ["yes", "no"] * 3 and len({x["image"] for x in lines[:6]}) == 1
        samples = read_benchmark("pope", path, image_dir=tmp_path / "images")
        assert len(samples) == 24 and {s.category for s in samples} == {split}
        assert Counter(s.answer for s in samples) == {"Yes": 12, "No": 12}
        assert Counter(x["negative"] for x in lines if x["label"] == "no") == {split: 12}
        assert summary["counts"][split] == {"questions": 24, "yes": 12, "no": 12}
        assert load_image(samples[0]).size == (48, 48)
        assert all(x["object"] in ALL_SHAPES and x["text"] == f"Is there a {x['object']} in the image?" for x in lines)
    with pytest.raises(ValueError, match="multiple of 6"):
        write_pope(tmp_path / "bad", n_per_split=20)


def test_pope_objects_restrict_what_is_asked(tmp_path):
    objects = ["triangle", "cross", "hourglass", "diamond", "moon", "frame"]
    items = pope_items(60, seed=5, split="adversarial", objects=objects)
    assert {it.change["object"] for it in items} <= set(objects)
    assert Counter(it.answer for it in items) == {"Yes": 30, "No": 30}
    with pytest.raises(ValueError, match="not objects of the world"):
        pope_items(6, objects=["circle", "dog", "star", "ring", "heart", "moon"])
    with pytest.raises(ValueError, match="at least 6"):
        pope_items(6, objects=["circle", "star"])


def test_organism_data_config_loads_the_pope_analog_beside_the_world(tmp_path):
    from omegaconf import OmegaConf

    from vseam.config import DataConfig
    from vseam.data.load import load_samples
    from vseam.world.questions import CATEGORIES
    from vseam.world.write import ensure_world

    cfg = OmegaConf.merge(OmegaConf.structured(DataConfig),
                          {"root": str(tmp_path / "w"), "n_per_category": 4, "pope_per_split": 6})
    with pytest.raises(FileNotFoundError, match="world.json"):
        load_samples(cfg)
    ensure_world(cfg)
    samples = load_samples(cfg)
    cats = Counter(s.category for s in samples)
    assert cats == {**{c: 4 for c in CATEGORIES}, "random": 6, "popular": 6, "adversarial": 6}
    assert len({s.id for s in samples}) == len(samples)  # question ids unique across the POPE files
    pope = [s for s in samples if s.benchmark == "pope"]
    assert {s.level for s in pope} == {"object"}
    assert len({s.image_path for s in pope}) == 3  # each split its own image: no leak across splits
    assert all(load_image(s).size == (48, 48) for s in pope[:3])
    cfg.pope_per_split = 0
    assert Counter(s.category for s in load_samples(cfg)).keys() == {c for c in cats if c not in NEGATIVES}
    cfg.pope_per_split, cfg.pope_objects = 6, ["circle"]
    with pytest.raises(ValueError, match="data.pope_objects"):
        ensure_world(cfg)


def test_pope_analog_of_two_world_seeds_shares_no_image(tmp_path):
    """data.world_seed=0 (train.py's pool) and 1 (its held-out eval) draw disjoint POPE analogs: with
    seeds 10000 + s + k they shared two of three splits' images and positive questions."""
    import hashlib
    from types import SimpleNamespace

    from vseam.world.write import ensure_world

    digests = []
    for s in (0, 1):
        cfg = SimpleNamespace(format="organism", root=str(tmp_path / f"w{s}"), n_per_category=2, world_seed=s,
                              world_split="test", pope_per_split=12)
        root = ensure_world(cfg)
        digests.append({hashlib.sha256(p.read_bytes()).hexdigest() for p in (root / "pope" / "images").glob("*.png")})
    assert len(digests[0]) == len(digests[1]) == 6
    assert not digests[0] & digests[1]


def test_a_pope_analog_of_another_seed_is_redrawn_not_reused(tmp_path):
    """pope/pope.json records its seed: one drawn with another seed (as the seed formula before
    10000 + 10 s did) is rewritten by ensure_world, not read as if it were this world's."""
    from types import SimpleNamespace

    from vseam.world.pope import POPE_SEED_BASE, POPE_SEED_STRIDE
    from vseam.world.write import ensure_world

    cfg = SimpleNamespace(format="organism", root=str(tmp_path / "w"), n_per_category=1, world_seed=1,
                          world_split="test", pope_per_split=6)
    summary = ensure_world(cfg) / "pope" / "pope.json"
    want = json.loads(summary.read_text())
    assert want["seed"] == POPE_SEED_BASE + POPE_SEED_STRIDE
    stamp = summary.stat().st_mtime_ns
    ensure_world(cfg)
    assert summary.stat().st_mtime_ns == stamp  # the same settings: reused
    summary.write_text(json.dumps({**want, "seed": POPE_SEED_BASE + 1}))  # what the old formula drew for seed 1
    ensure_world(cfg)
    assert json.loads(summary.read_text()) == want


def test_a_world_of_another_version_is_redrawn(tmp_path):
    from types import SimpleNamespace

    from vseam.world.write import WORLD_VERSION, ensure_world

    cfg = SimpleNamespace(format="organism", root=str(tmp_path / "w"), n_per_category=1, world_seed=0,
                          world_split="test", pope_per_split=0)
    path = ensure_world(cfg) / "world.json"
    old = {**json.loads(path.read_text()), "version": None, "counts": {"Shape": 1}}
    path.write_text(json.dumps(old))
    with pytest.warns(UserWarning, match="redrawing"):
        ensure_world(cfg)
    assert json.loads(path.read_text())["version"] == WORLD_VERSION


def test_transfer_configs_ask_disjoint_whole_groups_of_fresh_worlds():
    """data=organism-pope-transfer-train asks the POPE analog about two of the world's co-occurrence groups
    only, data=organism-pope-transfer-eval about the other two, on another world seed: a modulation trained
    on the first has seen no label about an object the second asks about (nor its image)."""
    from vseam.config import load_config

    train = load_config(["data=organism-pope-transfer-train"]).data
    evl = load_config(["data=organism-pope-transfer-eval"]).data
    a, b = set(train.pope_objects), set(evl.pope_objects)
    assert a and b and not a & b
    for objs in (a, b):  # whole groups: no object's usual partner is on the other side
        assert objs == set().union(*(set(g) for g in GROUPS if set(g) & objs))
    assert a | b == set().union(*(set(g) for g in GROUPS))
    assert int(train.pope_per_split) > 0 and int(evl.pope_per_split) > 0
    assert int(train.world_seed) != int(evl.world_seed) and train.root != evl.root
    default = load_config(["data=organism-pope"]).data  # the transfer pool is train.py's default pool but for the objects
    assert (int(train.world_seed), int(train.n_per_category), int(train.pope_per_split)) == (
        int(default.world_seed), int(default.n_per_category), int(default.pope_per_split))
