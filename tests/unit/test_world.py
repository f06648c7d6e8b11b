"""The organism world: determinism by seed, exact edits (pixels outside the mask unchanged, answer
flipped), balanced answers, and the GQA-style files on disk."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from vseam.data.sample import EditRecord, load_image
from vseam.world import CATEGORIES, answer_vocabulary, generate, render, write_world
from vseam.world.questions import CATEGORY_KINDS, ORGANISM_SPLITS, cell_distance
from vseam.world.scene import ALL_SHAPES, SIZES, TEXTURES, Difficulty, shape_mask, texture_pattern

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
    for its in items.values():
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
    fields = ("shape", "color", "texture", "size", "contrast", "row", "col")
    for it in items["Color"] + items["Texture"] + items["Size"]:
        diff = [(a, b) for a, b in zip(it.scene.objects, it.edited_scene.objects) if a != b]
        assert len(diff) == 1 and diff[0][0].shape == it.edited_scene.objects[it.involved[0]].shape
        attr = it.change["what"]
        a, b = diff[0]
        assert getattr(a, attr) != getattr(b, attr)
        assert {k for k in fields if getattr(a, k) != getattr(b, k)} == {attr}
    for it in items["Distance"]:  # one object moves, to the other side of the near / far line
        moved = [(a, b) for a, b in zip(it.scene.objects, it.edited_scene.objects) if a != b]
        assert len(moved) == 1 and {k for k in fields if getattr(moved[0][0], k) != getattr(moved[0][1], k)} <= {"row", "col"}
        a, b = (it.scene.objects[i] for i in it.involved)
        ea, eb = (it.edited_scene.objects[i] for i in it.involved)
        assert cell_distance(a, b) != cell_distance(ea, eb)
    for it in items["Horizontal"]:  # a horizontal move keeps the row, so the vertical relation stays
        moved = [(a, b) for a, b in zip(it.scene.objects, it.edited_scene.objects) if a != b]
        assert len(moved) == 1 and moved[0][0].row == moved[0][1].row and moved[0][0].col != moved[0][1].col
    for it in items["Vertical"]:
        moved = [(a, b) for a, b in zip(it.scene.objects, it.edited_scene.objects) if a != b]
        assert len(moved) == 1 and moved[0][0].col == moved[0][1].col and moved[0][0].row != moved[0][1].row


def test_answers_are_true_of_the_scene(items):
    for it in items["Shape"] + items["Icon"] + items["Symbol"]:
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
    for it in items["Distance"]:
        a, b = (it.scene.objects[i] for i in it.involved)
        truth = cell_distance(a, b)
        assert it.answer == truth if it.kind == "query" else (it.answer == "Yes") == (f" {truth} " in it.question)
    for it in items["Size"]:
        size = it.scene.objects[it.involved[0]].size
        assert it.answer == size if it.kind == "query" else (it.answer == "Yes") == it.question.endswith(f" {size}?")


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
    for size in SIZES:
        masks = {s: shape_mask(s, 16, size) for s in ALL_SHAPES}
        for s, m in masks.items():
            assert 12 < m.sum() < 200 and not m[0].any() and not m[:, 0].any(), (s, size)  # inside, with margin
        assert len({m.tobytes() for m in masks.values()}) == len(masks), size
    areas = [sum(shape_mask(s, 16, size).sum() for s in ALL_SHAPES) for size in SIZES]
    assert areas == sorted(areas)  # small < medium < large
    assert len({texture_pattern(t, 16).tobytes() for t in TEXTURES}) == 4


def test_split_is_part_of_an_items_identity():
    """Same seed, category and index, another split: another scene (the split keys the random stream),
    so a world written for evaluation cannot draw the organism's training items whatever the seeds."""
    a = generate("Color", 30, seed=5, split="test")
    b = generate("Color", 30, seed=5, split="organism-train")
    assert [x.id for x in a] != [x.id for x in b]
    assert not {render(x.scene).tobytes() for x in a} & {render(x.scene).tobytes() for x in b}
    for split in ORGANISM_SPLITS:
        with pytest.raises(ValueError, match="organism's own"):
            write_world("/nonexistent", n_per_category=1, split=split)


def test_difficulty_knob():
    crisp = [o for it in generate("Shape", 60, seed=2, difficulty=Difficulty.crisp()) for o in it.scene.objects]
    assert all(o.contrast == 1.0 and o.size == "large" and not o.weak for o in crisp)
    hard = Difficulty(faint=0.5, contrast=(0.1, 0.2), sizes=(0.5, 0.0, 0.5), noise=10.0)
    its = generate("Shape", 200, seed=2, difficulty=hard)
    objs = [o for it in its for o in it.scene.objects]
    faint = [o for o in objs if o.faint]
    assert 0.4 < len(faint) / len(objs) < 0.6 and all(0.1 <= o.contrast <= 0.2 for o in faint)
    assert {o.size for o in objs} == {"small", "large"}
    assert all(it.scene.noise == 10.0 for it in its)
    # noise: a blank cell of a noisy scene varies around the background tint, a crisp one does not
    blank = lambda img: img[:16, :16].reshape(-1, 3).astype(float).std(0).max()  # noqa: E731
    empty = [it for it in its if (0, 0) not in it.scene.occupied()][0]
    assert blank(render(empty.scene)) > 5
    crisp_empty = [it for it in generate("Shape", 20, seed=2, difficulty=Difficulty.crisp())
                   if (0, 0) not in it.scene.occupied()][0]
    assert blank(render(crisp_empty.scene)) == 0
    with pytest.raises(ValueError, match="faint"):
        Difficulty(faint=1.5)


def test_clutter_is_drawn_only_where_no_object_is_and_edits_keep_it():
    cluttered = Difficulty(faint=0.0, contrast=(0.5, 0.5), sizes=(0.0, 0.0, 1.0), noise=0.0, clutter=1.0)
    for it in generate("Horizontal", 30, seed=3, difficulty=cluttered):
        scene = it.scene
        assert {(r, c) for r, c, *_ in scene.clutter} == {(r, c) for r in range(3) for c in range(3)} - scene.occupied()
        assert it.edited_scene.clutter == scene.clutter
        img, bg = render(scene), np.asarray(scene.background)
        for r, c, *_ in scene.clutter:  # a visible smudge in every empty cell
            assert (img[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] != bg).any()
        # the mover's new cell held a smudge; the object covers it there (the smudge record stays)
        _, (r1, c1) = it.mask_cells
        assert (r1, c1) in {(r, c) for r, c, *_ in scene.clutter}
        moved = next(o for o in it.edited_scene.objects if (o.row, o.col) == (r1, c1))
        from vseam.world.scene import render_cell

        cell = render(it.edited_scene)[r1 * 16:(r1 + 1) * 16, c1 * 16:(c1 + 1) * 16]
        assert np.array_equal(cell, render_cell(moved, scene.background, 16).round().astype(np.uint8))
    assert generate("Color", 1, seed=3, difficulty=Difficulty.crisp())[0].scene.clutter == ()


def test_write_world_gqa_style(tmp_path):
    summary = write_world(tmp_path, n_per_category=6, seed=3)
    assert summary["counts"] == {c: 6 for c in CATEGORIES} and len(CATEGORIES) == 9
    assert summary["version"] == 3 and summary["split"] == "test" and summary["seed"] == 3
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
