"""The organism world: determinism by seed, exact edits (pixels outside the mask unchanged, answer
flipped), balanced answers, and the GQA-style files on disk."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from vseam.data.sample import EditRecord, load_image
from vseam.world import CATEGORIES, answer_vocabulary, generate, render, write_world
from vseam.world.questions import CATEGORY_KINDS
from vseam.world.scene import ALL_SHAPES, shape_mask, texture_pattern

N = 48  # items per category: a multiple of every answer-vocabulary size x 2 kinds


@pytest.fixture(scope="module")
def items():
    return {c: generate(c, N, seed=7) for c in CATEGORIES}


def test_same_seed_same_world_other_seed_other_world(items):
    again = generate("Color", N, seed=7)
    assert [it.question for it in again] == [it.question for it in items["Color"]]
    assert all(np.array_equal(render(a.scene), render(b.scene)) for a, b in zip(again, items["Color"]))
    other = generate("Color", N, seed=8)
    assert sum(np.array_equal(render(a.scene), render(b.scene)) for a, b in zip(other, items["Color"])) == 0


def test_edit_changes_only_pixels_inside_mask_and_flips_answer(items):
    for cat, its in items.items():
        for it in its:
            clean, edited = render(it.scene), render(it.edited_scene)
            inside = np.zeros(clean.shape[:2], dtype=bool)
            for x, y, w, h in it.mask_boxes:
                inside[y:y + h, x:x + w] = True
            assert inside.sum() < inside.size / 2, f"{it.id}: the mask covers most of the image"
            assert np.array_equal(clean[~inside], edited[~inside]), f"{it.id}: pixels outside the mask changed"
            assert not np.array_equal(clean[inside], edited[inside]), f"{it.id}: the edit changed nothing"
            assert it.edited_answer != it.answer, f"{it.id}: the answer did not flip"


def test_edit_changes_only_the_queried_concept(items):
    for it in items["Color"] + items["Texture"]:
        diff = [(a, b) for a, b in zip(it.scene.objects, it.edited_scene.objects) if a != b]
        assert len(diff) == 1 and diff[0][0].shape == it.edited_scene.objects[it.involved[0]].shape
        attr = it.change["what"]
        a, b = diff[0]
        assert getattr(a, attr) != getattr(b, attr)
        assert {k for k in ("shape", "color", "texture", "row", "col") if getattr(a, k) != getattr(b, k)} == {attr}
    for it in items["Horizontal"]:  # a horizontal move keeps the row, so the vertical relation stays
        moved = [(a, b) for a, b in zip(it.scene.objects, it.edited_scene.objects) if a != b]
        assert len(moved) == 1 and moved[0][0].row == moved[0][1].row and moved[0][0].col != moved[0][1].col
    for it in items["Vertical"]:
        moved = [(a, b) for a, b in zip(it.scene.objects, it.edited_scene.objects) if a != b]
        assert len(moved) == 1 and moved[0][0].col == moved[0][1].col and moved[0][0].row != moved[0][1].row


def test_answers_are_true_of_the_scene(items):
    for it in items["Shape"] + items["Icon"]:
        if it.kind == "verify":
            target = it.question.split()[-1].rstrip("?")
            assert (it.scene.find(target) is not None) == (it.answer == "Yes")
            assert (it.edited_scene.find(target) is not None) == (it.edited_answer == "Yes")
    for it in items["Horizontal"]:
        a, b = (it.scene.objects[i] for i in it.involved)
        truth = "left" if a.col < b.col else "right"
        if it.kind == "query":
            assert it.answer == truth
        else:
            assert (it.answer == "Yes") == (f" {truth} of " in it.question)


def test_existence_answers_are_true_of_the_scene():
    its = generate("Existence", N, seed=7)
    assert Counter(it.answer for it in its) == {"Yes": N // 2, "No": N // 2} and {it.kind for it in its} == {"verify"}
    for it in its:
        clean, edited = render(it.scene), render(it.edited_scene)
        (x, y, w, h), = it.mask_boxes
        outside = np.ones(clean.shape[:2], dtype=bool)
        outside[y:y + h, x:x + w] = False
        assert np.array_equal(clean[outside], edited[outside]) and not np.array_equal(clean, edited)
        target = it.change["object"]
        assert it.question == f"Is there a {target} in the image?"
        assert (it.scene.find(target) is not None) == (it.answer == "Yes")
        assert (it.edited_scene.find(target) is not None) == (it.edited_answer == "Yes")


def test_categories_balanced(items):
    for cat, its in items.items():
        kinds = Counter(it.kind for it in its)
        assert set(kinds) == set(CATEGORY_KINDS[cat]) and max(kinds.values()) - min(kinds.values()) <= 1
        for kind in CATEGORY_KINDS[cat]:
            answers = Counter(it.answer for it in its if it.kind == kind)
            assert len(answers) >= 2, f"{cat}/{kind}: one answer only"
            assert max(answers.values()) - min(answers.values()) <= 1, f"{cat}/{kind}: unbalanced {answers}"
            assert set(answers) <= set(answer_vocabulary())


def test_shapes_and_textures_are_distinct_patterns():
    masks = {s: shape_mask(s, 16) for s in ALL_SHAPES}
    for s, m in masks.items():
        assert 40 < m.sum() < 200 and not m[0].any() and not m[:, 0].any()  # inside the cell, with margin
    assert len({m.tobytes() for m in masks.values()}) == len(masks)
    assert len({texture_pattern(t, 16).tobytes() for t in ("solid", "striped", "dotted", "checkered")}) == 4


def test_write_world_gqa_style(tmp_path):
    summary = write_world(tmp_path, n_per_category=6, seed=3)
    assert summary["counts"] == {c: 6 for c in CATEGORIES}
    records = json.loads((tmp_path / "Color.json").read_text())
    assert len(records) == 6
    r = records[0]
    for key in ("question_id", "imageId", "question", "answer", "object_positions", "types", "semantic",
                "category", "level"):
        assert key in r
    assert r["level"] == "attribute" and set(r["object_positions"][0]) == {"x", "y", "w", "h"}
    lines = (tmp_path / "edits.jsonl").read_text().splitlines()
    assert len(lines) == 6 * len(CATEGORIES)
    rec = EditRecord.from_dict(json.loads(lines[0]))
    assert rec.benchmark == "organism" and rec.edited_answer != rec.answer
    clean, edited = np.asarray(load_image(rec.image)), np.asarray(load_image(rec.edited_image))
    inside = np.zeros(clean.shape[:2], dtype=bool)
    for x, y, w, h in rec.mask:
        inside[y:y + h, x:x + w] = True
    assert np.array_equal(clean[~inside], edited[~inside]) and not np.array_equal(clean, edited)
    # the files are a pure function of the seed
    again = write_world(tmp_path / "again", n_per_category=6, seed=3)
    assert json.loads((tmp_path / "again" / "Color.json").read_text()) == records
    assert again["counts"] == summary["counts"]


def test_lead_reader_reads_the_world(tmp_path):
    readers = pytest.importorskip("vseam.data.readers")
    write_world(tmp_path, n_per_category=4, seed=0)
    samples = readers.read_benchmark("organism", tmp_path / "Vertical.json", image_dir=tmp_path / "images")
    assert len(samples) == 4 and all(s.level == "relation" and s.category == "Vertical" for s in samples)
    assert load_image(samples[0]).size == (48, 48)
