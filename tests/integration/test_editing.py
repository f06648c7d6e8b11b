"""Visual semantic editing: rules and masks (pure), the LLM writer interface, SAM refinement, inpainting
with a tiny random diffusers pipeline, the edit run (skips, resume) and the effective-edit filter."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from vseam.data.readers import read_benchmark
from vseam.data.sample import EditRecord, Sample
from vseam.editing.masks import (
    BoxOutsideImageError,
    box_mask,
    dilate_box,
    dilate_mask,
    paste_unmasked,
    rasterize,
    scale_box,
)
from vseam.editing.rules import SPATIAL_OPPOSITES, VOCAB, NotCovered, plan_edit
from vseam.editing.writers import LLMWriter, RuleWriter, few_shot_prompt
from vseam.utils.io import read_jsonl

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


def gqa(category: str) -> list[Sample]:
    return read_benchmark("gqa", DATA / "gqa" / f"{category}.sample.json", "/imgs")


# ------------------------------------------------------------------------------------------- rules

@pytest.mark.parametrize("category,covered,reasons", [
    ("Animal", 40, {}), ("Indoor", 40, {}), ("Vehicle", 39, {"object program has no 'exist' operation": 1}),
    ("Color", 40, {}), ("Material", 40, {}), ("Action", 40, {}),
    ("Spatial", 37, {"relation 'covered with' is in neither": 2, "relation 'covered by' is in neither": 1}),
])
def test_rules_cover_the_real_subsets(category, covered, reasons):
    ok, skipped = 0, {}
    for s in gqa(category):
        try:
            p = plan_edit(s, seed=0)
        except NotCovered as e:
            key = next((k for k in reasons if str(e).startswith(k)), str(e))
            skipped[key] = skipped.get(key, 0) + 1
            continue
        ok += 1
        assert p.level == s.level and p.id == s.id
        assert p.substitute and p.substitute != p.source and p.edit_prompt
        assert p.boxes and all(len(b) == 4 for b in p.boxes)
        assert p.cf_answer == "Yes"
        assert p.edited_answer in ("Yes", "No") and (p.edited_answer != s.answer)
    assert ok == covered
    assert skipped == reasons


def test_object_edit():
    s = gqa("Animal")[0]  # Is there a bird in this picture? Yes; one box
    p = plan_edit(s, seed=0)
    assert (p.level, p.kind, p.target, p.source) == ("object", "object", "bird", "bird")
    assert p.substitute in VOCAB["Animal"] and p.substitute != "bird"
    art = "an" if p.substitute[0] in "aeiou" else "a"
    assert p.edit_prompt == f"{art} {p.substitute}"
    assert p.edited_answer == "No"
    assert p.cf_question == f"Is there {art} {p.substitute} in this picture?"
    assert p.boxes == [[103, 297, 129, 61]] and p.objects == ["bird"]
    assert p.change() == {"kind": "object", "target": "bird", "from": "bird", "to": p.substitute,
                          "cf_question": p.cf_question, "cf_answer": "Yes", "objects": ["bird"]}


def test_object_edit_picks_the_named_box_and_keeps_plural():
    s = gqa("Animal")[1]  # cow + fence: the cow's box
    assert plan_edit(s).boxes == [[355, 109, 31, 49]]
    elephants = next(x for x in gqa("Animal") if x.question.startswith("Is there an elephants"))
    p = plan_edit(elephants)
    assert p.substitute.endswith("s") and p.edit_prompt == p.substitute  # "tigers", no article
    assert p.cf_question == f"Are there {p.substitute} in this picture?"


def test_rules_are_deterministic_by_seed_and_order_free():
    samples = gqa("Animal") + gqa("Color") + gqa("Action")
    a = [plan_edit(s, seed=3).to_dict() for s in samples]
    b = [plan_edit(s, seed=3).to_dict() for s in reversed(samples)][::-1]
    assert a == b
    c = [plan_edit(s, seed=4).substitute for s in samples]
    assert sum(x["substitute"] != y for x, y in zip(a, c)) > 10


def test_color_yes_changes_the_colour():
    s = gqa("Color")[0]  # Are the pants purple? Yes
    p = plan_edit(s, seed=0)
    assert (p.kind, p.target, p.source) == ("color", "pants", "purple")
    assert p.substitute in VOCAB["color"] and p.substitute != "purple"
    assert p.edit_prompt == f"{p.substitute} pants"  # plural: no article
    assert p.edited_answer == "No"
    assert p.cf_question == f"Are the pants {p.substitute}?" and p.cf_answer == "Yes"
    assert p.boxes == [[123, 181, 95, 66]]


def test_color_no_paints_the_asked_colour():
    s = gqa("Color")[1]  # Is the vest gray? No; full answer: cream coloured
    p = plan_edit(s, seed=0)
    assert (p.source, p.substitute, p.edited_answer) == ("white", "gray", "Yes")
    assert p.edit_prompt == "a gray vest"
    assert p.cf_question == "Is the vest gray?"


def test_material_edits():
    m = gqa("Material")
    p = plan_edit(m[0])  # Is the sidewalk made of Brick? Yes
    assert (p.kind, p.target, p.source, p.edited_answer) == ("material", "sidewalk", "brick", "No")
    assert p.substitute in VOCAB["material"] and p.substitute != "brick"
    assert p.edit_prompt == f"a sidewalk made of {p.substitute}"
    assert p.cf_question == f"Is the sidewalk made of {p.substitute}?"
    q = plan_edit(m[2])  # made of metallic? No -- and the full answer contradicts: actual unknown
    assert (q.source, q.substitute, q.edited_answer) == (None, "metal", "Yes")
    r = plan_edit(m[3])  # Is the door made of Metal? Yes: never to a synonym of metal
    assert r.substitute not in ("metal", "steel", "iron")


def test_open_attribute_question_changes_the_answer():
    s = Sample(id="q", question="What color is the car?", answer="red", category="Color", level="attribute",
               meta={"semantic": [{"operation": "select", "argument": "car (1)"},
                                  {"operation": "query", "argument": "color"}],
                     "object_positions": [{"x": 1, "y": 2, "w": 3, "h": 4}], "involved_objects": ["car"]})
    p = plan_edit(s)
    assert p.source == "red" and p.edited_answer == p.substitute == p.cf_answer != "red"
    assert p.edit_prompt == f"a {p.substitute} car".replace("a o", "an o")


def test_action_edit_boxes_and_prompt():
    s = gqa("Action")[0]  # Is the woman holding the skis? involved [skis, woman]
    p = plan_edit(s, seed=0)
    assert (p.kind, p.target, p.source) == ("action", "woman", "holding")
    assert p.substitute in VOCAB["action"] and " " not in p.substitute  # same (no) preposition
    assert p.edit_prompt == f"a woman {p.substitute} the skis"
    assert p.cf_question == f"Is the woman {p.substitute} the skis?" and p.edited_answer == "No"
    assert p.objects == ["woman", "skis"]
    assert p.boxes == [[60, 170, 85, 329], [86, 149, 134, 351]]
    walking = plan_edit(gqa("Action")[2])  # walking on -> another "... on"
    assert walking.source == "walking on" and walking.substitute.endswith(" on")
    assert plan_edit(s, relation_mask="subject").boxes == [[60, 170, 85, 329]]
    assert plan_edit(s, relation_mask="object").boxes == [[86, 149, 134, 351]]


def test_spatial_edits_use_opposites():
    sp = gqa("Spatial")
    p = plan_edit(sp[0])  # Is the woman in front of the statue?
    assert (p.kind, p.source, p.substitute) == ("spatial", "in front of", "behind")
    assert p.edit_prompt == "a woman behind the statue" and p.cf_question == "Is the woman behind the statue?"
    people = plan_edit(sp[1])
    assert people.edit_prompt == "people behind the building"
    standing = next(x for x in sp if "standing behind" in x.question)
    q = plan_edit(standing)
    assert q.substitute == "standing in front of" and q.kind == "spatial"
    r = plan_edit(sp[0], prefer_opposites=False, seed=1)
    assert r.substitute in VOCAB["spatial"] and r.substitute != "in front of"
    assert set(SPATIAL_OPPOSITES[v] for v in ("above", "below")) == {"below", "above"}


def test_not_covered_reasons():
    base = gqa("Action")[0]
    no = copy.deepcopy(base)
    no.answer = "No"
    with pytest.raises(NotCovered, match="relation does not hold"):
        plan_edit(no)
    nobox = copy.deepcopy(base)
    nobox.meta["object_positions"] = []
    with pytest.raises(NotCovered, match="no object_positions"):
        plan_edit(nobox)
    odd = copy.deepcopy(gqa("Animal")[0])
    odd.question = "How many birds are there?"
    with pytest.raises(NotCovered, match="object question form not covered"):
        plan_edit(odd)
    with pytest.raises(NotCovered, match="not in the Animal vocabulary"):
        plan_edit(next(x for x in gqa("Animal") if "cookies" in x.question), strict_vocabulary=True)
    lvl = copy.deepcopy(base)
    lvl.level = None
    with pytest.raises(NotCovered, match="unknown semantic level"):
        plan_edit(lvl)


# ------------------------------------------------------------------------------------------- masks

def test_scale_and_dilate_box():
    assert scale_box([10, 20, 30, 40], (100, 200), (50, 50)) == [5.0, 5.0, 15.0, 10.0]
    assert scale_box([1, 2, 3, 4], None, (9, 9)) == [1.0, 2.0, 3.0, 4.0]
    # 10% of (20, 10) + 2 px on each side
    assert dilate_box([10, 10, 20, 10], (100, 100), margin=0.1, margin_px=2) == [6, 7, 28, 16]
    # clipped at the border
    assert dilate_box([0, 0, 10, 10], (12, 12), margin=0.0, margin_px=4) == [0, 0, 12, 12]
    with pytest.raises(BoxOutsideImageError, match="outside the 50x40 image"):
        dilate_box([60, 5, 10, 10], (50, 40))
    with pytest.raises(BoxOutsideImageError, match="no area"):
        dilate_box([5, 5, 0, 10], (50, 40))


def test_box_mask_rasterizes_the_union():
    mask, dil = box_mask([[2, 2, 4, 4], [10, 0, 2, 2]], (16, 8), margin=0.0, margin_px=1)
    assert dil == [[1, 1, 6, 6], [9, 0, 4, 3]]
    assert mask.shape == (8, 16) and mask.dtype == bool
    assert mask.sum() == 36 + 12
    assert mask[1, 1] and mask[6, 6] and not mask[7, 7] and mask[0, 9] and not mask[3, 13]
    assert (rasterize(dil, (16, 8)) == mask).all()
    with pytest.raises(BoxOutsideImageError):
        box_mask([], (4, 4))


def test_dilate_mask_and_paste():
    m = np.zeros((7, 7), bool)
    m[3, 3] = True
    d = dilate_mask(m, 2)
    assert d.sum() == 25 and d[1:6, 1:6].all()
    a = np.zeros((4, 4, 3), np.uint8)
    b = np.full((4, 4, 3), 200, np.uint8)
    mm = np.zeros((4, 4), bool)
    mm[:2, :2] = True
    out = paste_unmasked(a, b, mm)
    assert (out[mm] == 200).all() and (out[~mm] == 0).all()


# ----------------------------------------------------------------------------------- LLM writer

def test_llm_writer_parses_reply_and_falls_back():
    s = gqa("Color")[0]
    prompt = few_shot_prompt(s)
    assert prompt.count("Edit: {") == 3 and prompt.endswith("Question: Are the pants purple?\nAnswer: Yes\n"
                                                            "Level: attribute\nObjects: pants\nEdit:")
    seen = []

    def generate(text):
        seen.append(text)
        return ('Sure. {"target": "pants", "from": "purple", "to": "orange", "edit_prompt": "a orange pants", '
                '"edited_answer": "No", "cf_question": "Are the pants orange?", "cf_answer": "Yes"} done')

    p = LLMWriter(generate)(s)
    assert seen == [prompt]
    assert (p.target, p.source, p.substitute, p.edited_answer) == ("pants", "purple", "orange", "No")
    assert p.edit_prompt == "an orange pants" and p.boxes == [[123, 181, 95, 66]]
    bad = LLMWriter(lambda t: "I cannot help")
    with pytest.raises(NotCovered, match="no JSON object"):
        bad(s)
    fb = LLMWriter(lambda t: '{"target": "pants"}', fallback=RuleWriter(seed=0))(s)
    assert fb.to_dict() == plan_edit(s, seed=0).to_dict()


# ---------------------------------------------------------------------------- tiny models / fixtures

@pytest.fixture(scope="module")
def tiny_pipe():
    from vseam.editing.tiny import build_tiny_inpaint_pipeline

    return build_tiny_inpaint_pipeline(seed=0)


def _image(w, h, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def test_inpainter_changes_only_the_mask(tiny_pipe):
    from vseam.editing.inpaint import Inpainter

    inp = Inpainter(tiny_pipe, steps=2, guidance=7.5, seed=0, resolution=16)
    imgs = [_image(40, 24, 1), _image(30, 30, 2)]
    masks = [np.zeros((24, 40), bool), np.zeros((30, 30), bool)]
    masks[0][4:14, 10:30] = True
    masks[1][0:8, 0:8] = True
    out = inp(imgs, masks, ["a cat", "a red car"], ["a", "b"])
    for im, m, o in zip(imgs, masks, out):
        assert o.size == im.size and o.mode == "RGB"
        a, b = np.asarray(im), np.asarray(o)
        assert (a[~m] == b[~m]).all()  # outside the mask: the original pixels
        assert (a[m] != b[m]).any()  # inside: repainted
    again = inp(imgs[:1], masks[:1], ["a cat"], ["a"])[0]  # per-sample seed: same output alone
    assert (np.asarray(again) == np.asarray(out[0])).all()
    other = inp(imgs[:1], masks[:1], ["a cat"], ["c"])[0]
    assert (np.asarray(other) != np.asarray(out[0])).any()


def test_tiny_sam_refines_inside_the_box():
    from vseam.editing.sam import SamRefiner
    from vseam.editing.tiny import build_tiny_sam

    model, proc = build_tiny_sam()
    img = _image(50, 40, 3)
    boxes = [[5, 5, 20, 15]]
    bm, _ = box_mask(boxes, img.size, margin=0.0, margin_px=2)
    ref = SamRefiner(model, proc, dilate_px=1, min_pixels=1)
    pred = ref.predict(img, boxes)
    assert pred.shape == (40, 50) and pred.dtype == bool
    mask, refined = ref.refine(img, boxes, bm)
    assert mask.shape == bm.shape and not (mask & ~bm).any()  # never outside the dilated box
    assert refined == bool((dilate_mask(pred, 1) & bm).sum() >= 1)
    box_again, refined2 = SamRefiner(model, proc, min_pixels=10**6).refine(img, boxes, bm)
    assert not refined2 and (box_again == bm).all()


# -------------------------------------------------------------------------------------- the run

def _write_world(tmp_path: Path) -> tuple[Path, Path, list[str]]:
    """A GQA-style file of 6 real records: 3 editable, 1 missing image, 1 box outside, 1 uncovered."""
    color = json.loads((DATA / "gqa" / "Color.sample.json").read_text())
    spatial = json.loads((DATA / "gqa" / "Spatial.sample.json").read_text())
    ids = list(color)[:5]
    recs = {k: dict(color[k]) for k in ids}
    recs[ids[4]]["object_positions"] = [{"x": 900, "y": 10, "w": 20, "h": 20}]  # outside a 500-px image
    cov = next(r for r in spatial if "covered" in r["semanticStr"] and "covered" in r["question"])
    recs[cov["question_id"]] = {k: v for k, v in cov.items() if k != "question_id"}
    for r in recs.values():
        r["category"] = "Color" if r is not recs.get(cov["question_id"]) else "Spatial"
    imgs = tmp_path / "images"
    imgs.mkdir()
    for i, (k, r) in enumerate(recs.items()):
        if k == ids[3]:
            continue  # missing image
        _image(50, 40, i).save(imgs / f"{r['imageId']}.jpg", quality=95)
    ann = tmp_path / "subset.json"
    ann.write_text(json.dumps(recs))
    return ann, imgs, ids


def _run_samples(ann, imgs, out, pipe, **kw):
    from vseam.editing.inpaint import Inpainter
    from vseam.editing.run import edit_samples

    samples = read_benchmark("gqa", ann, imgs)
    inp = Inpainter(pipe, steps=2, resolution=16, seed=0)
    return edit_samples(samples, out, inp, RuleWriter(seed=0), box_reference_size=[500, 500], batch_size=2,
                        progress=False, **kw)


def test_edit_run_writes_skips_and_resumes(tmp_path, tiny_pipe):
    ann, imgs, ids = _write_world(tmp_path)
    out = tmp_path / "out"
    rep = _run_samples(ann, imgs, out, tiny_pipe)
    assert rep["edited"] == 3 and rep["skipped"] == 3
    assert rep["skips_by_kind"] == {"missing_image": 1, "box_outside_image": 1, "not_covered": 1}
    assert rep["this_run"] == {"already_done": 0, "edited": 3, "skipped_missing_image": 1,
                               "skipped_box_outside_image": 1, "skipped_not_covered": 1}
    assert rep["categories"]["Color"]["edited"] == 3
    assert rep["categories"]["Spatial"]["skipped"]["not_covered"] == 1
    skips = {r["kind"]: r for r in read_jsonl(out / "skips.jsonl")}
    assert skips["missing_image"]["id"] == ids[3] and "image not found" in skips["missing_image"]["reason"]
    assert skips["box_outside_image"]["id"] == ids[4] and "outside" in skips["box_outside_image"]["reason"]
    assert "covered" in skips["not_covered"]["reason"]
    assert json.loads((out / "edit_report.json").read_text())["edited"] == 3

    lines = read_jsonl(out / "edits.jsonl")
    assert [r["id"] for r in lines] == ids[:3]
    color = json.loads((DATA / "gqa" / "Color.sample.json").read_text())
    for r in lines:
        rec = EditRecord.from_dict(r)  # the organism's manifest format
        src = color[rec.id]
        assert rec.question == src["question"] and rec.answer == src["answer"]
        assert rec.image == str((imgs / f"{src['imageId']}.jpg").resolve())
        assert rec.edited_image == str((out / "edited" / "Color" / f"{rec.id}.png").resolve())
        assert rec.level == "attribute" and rec.category == "Color" and rec.benchmark == "gqa"
        assert rec.edited_answer == ("No" if src["answer"] == "Yes" else "Yes")
        assert rec.change["kind"] == "color" and rec.edit_prompt.endswith(src["involved_objects"][0])
        # boxes scaled from 500 px to 50x40 and dilated; the mask PNG is that rectangle
        (x, y, w, h), = rec.mask
        m = np.asarray(Image.open(out / "masks" / "Color" / f"{rec.id}.png")) > 0
        assert m.sum() == w * h and m[int(y):int(y + h), int(x):int(x + w)].all()
        clean = np.asarray(Image.open(rec.image).convert("RGB"))
        edited = np.asarray(Image.open(rec.edited_image))
        assert edited.shape == clean.shape == (40, 50, 3)
        assert (clean[~m] == edited[~m]).all() and (clean[m] != edited[m]).any()

    # second run: nothing redone, nothing lost
    before = {p: p.stat().st_mtime_ns for p in (out / "edited").rglob("*.png")}
    rep2 = _run_samples(ann, imgs, out, tiny_pipe)
    assert rep2["this_run"] == {"already_done": 6} and rep2["edited"] == 3 and rep2["skipped"] == 3
    assert len(read_jsonl(out / "edits.jsonl")) == 3
    assert {p: p.stat().st_mtime_ns for p in (out / "edited").rglob("*.png")} == before

    # a run killed before its last batch was recorded: only that sample is redone
    (out / "edits.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines[:2]))
    rep3 = _run_samples(ann, imgs, out, tiny_pipe)
    assert rep3["this_run"] == {"already_done": 5, "edited": 1}
    assert [r["id"] for r in read_jsonl(out / "edits.jsonl")] == ids[:3]


# ------------------------------------------------------------------------------------------ filter

class FakeAdapter:
    """Answers correctly exactly on the image paths it is told to."""

    def __init__(self, correct_paths):
        self.correct_paths, self.calls = set(correct_paths), []

    def score(self, samples, batch_size=8, progress=False):
        self.calls.append([s.answer for s in samples])
        ok = [s.image_path in self.correct_paths for s in samples]
        return SimpleNamespace(prob=torch.tensor([0.9 if c else 0.1 for c in ok]), correct=torch.tensor(ok),
                               ids=[s.id for s in samples])


def _rec(i, cat, answer="Yes", edited_answer="No"):
    return EditRecord(id=str(i), question="Is it?", answer=answer, image=f"c{i}.png", edited_image=f"e{i}.png",
                      edit_prompt="x", edited_answer=edited_answer, category=cat, level="object")


def test_effective_filter_counts_per_category():
    from vseam.editing.filter import effective_edits, log_report

    recs = [_rec(0, "Animal"), _rec(1, "Animal"), _rec(2, "Animal"), _rec(3, "Color"), _rec(4, "Color")]
    # clean correct: 0, 1, 3, 4; edited still correct: 1, 4 -> kept 0 and 3
    ad = FakeAdapter({"c0.png", "c1.png", "c3.png", "c4.png", "e1.png", "e4.png", "e2.png"})
    kept, rep = effective_edits(recs, ad)
    assert [r.id for r in kept] == ["0", "3"]
    # the edited image is judged against the clean answer
    assert ad.calls == [["Yes"] * 5, ["Yes"] * 5]
    assert rep["total"] == {"pairs": 5, "clean_correct": 4, "edited_correct": 3, "kept": 2, "kept_rate": 0.4}
    assert rep["categories"]["Animal"] == {"pairs": 3, "clean_correct": 2, "edited_correct": 2, "kept": 1,
                                           "kept_rate": 1 / 3}
    assert rep["categories"]["Color"] == {"pairs": 2, "clean_correct": 2, "edited_correct": 1, "kept": 1,
                                          "kept_rate": 0.5}
    assert [d["kept"] for d in rep["pairs_detail"]] == [True, False, False, True, False]
    assert rep["pairs_detail"][0]["clean_prob"] == pytest.approx(0.9)
    logged = []
    flat = log_report(rep, logged.append)
    assert logged == [flat] and flat["edit/filter/Animal/kept"] == 1 and flat["edit/filter/total/pairs"] == 5
    assert effective_edits([], ad)[1]["total"]["pairs"] == 0


def test_run_edit_from_config_with_tiny_models(tmp_path, tiny_pipe):
    """analyze.py edit's function: config -> pipeline from a local folder -> edits -> filter (tiny LLaVA)."""
    from vseam.config import load_config
    from vseam.editing.run import run_edit
    from vseam.models import load_adapter

    ann, imgs, ids = _write_world(tmp_path)
    pipe_dir = tmp_path / "pipe"
    tiny_pipe.save_pretrained(pipe_dir)
    out = tmp_path / "run"
    cfg = load_config(["model=tiny-llava", "data=gqa", f"data.annotations=[{ann}]", f"data.image_dir={imgs}",
                       "data.categories=[Color]", f"edit.model={pipe_dir}", "edit.steps=2", "edit.resolution=16",
                       "edit.box_reference_size=[500,500]", "edit.progress=false", "edit.batch_size=3",
                       "logger=none", f"out_dir={out}"])
    res = run_edit(cfg)
    assert res["samples"] == 5 and res["edit"]["edited"] == 3
    assert res["edit"]["skips_by_kind"] == {"missing_image": 1, "box_outside_image": 1, "not_covered": 0}
    records = [EditRecord.from_dict(r) for r in read_jsonl(out / "edits.jsonl")]
    # the filter agrees with the adapter's own scores on the same pairs
    from vseam.editing.filter import edited_probe

    adapter = load_adapter(cfg.model)
    clean = adapter.score([r.clean_sample() for r in records])
    edited = adapter.score([edited_probe(r) for r in records])
    want = [r.id for r, a, b in zip(records, clean.correct.tolist(), edited.correct.tolist()) if a and not b]
    kept = [r["id"] for r in read_jsonl(out / "edits.effective.jsonl")]
    assert kept == want
    rep = json.loads((out / "filter_report.json").read_text())
    assert rep["total"]["pairs"] == 3 and rep["total"]["kept"] == len(want)
    assert rep["total"]["clean_correct"] == int(clean.correct.sum())
    assert res["filter"]["categories"]["Color"]["pairs"] == 3
    assert json.loads((out / "edit_summary.json").read_text())["edit"]["edited"] == 3


def test_edit_smoke_settings_load_the_tiny_models_by_name(tmp_path):
    """``edit=tiny``: the tiny pipeline and SAM by name (nothing passed in), 2 steps at 32 px, every
    step of the real run (SAM-refined masks, edits, the filter)."""
    from vseam.config import load_config
    from vseam.editing.run import run_edit

    ann, imgs, ids = _write_world(tmp_path)
    cfg = load_config(["model=tiny-llava", "data=gqa", f"data.annotations=[{ann}]", f"data.image_dir={imgs}",
                       "data.categories=[Color]", "edit=tiny", "edit.sam=true", "edit.box_reference_size=[500,500]",
                       "edit.progress=false", "logger=none", f"out_dir={tmp_path / 'run'}"])
    assert (cfg.edit.model, cfg.edit.sam_model, cfg.edit.steps, cfg.edit.resolution) == ("tiny", "tiny", 2, 32)
    res = run_edit(cfg)
    assert res["samples"] == 5 and res["edit"]["edited"] == 3 and res["filter"]["total"]["pairs"] == 3
    assert len(list((tmp_path / "run" / "edited").rglob("*.png"))) == 3


def test_run_edit_on_the_organism_filters_its_exact_edits(tmp_path):
    from vseam.config import load_config
    from vseam.editing.run import read_manifest, run_edit

    world = tmp_path / "world"
    cfg = load_config(["model=tiny-llava", "data=organism", f"data.root={world}", "data.n_per_category=2",
                       "data.categories=[Color,Shape]", "logger=none", "edit.progress=false",
                       f"out_dir={tmp_path / 'out'}"])
    res = run_edit(cfg)  # no inpainting pipeline is loaded: edit.model is never touched
    organism = read_manifest(world, effective=False)
    assert len(organism) == 18  # 9 categories x 2
    mine = read_manifest(tmp_path / "out", effective=False)
    assert [r.to_dict() for r in mine] == [r.to_dict() for r in organism if r.category in ("Color", "Shape")]
    assert res["edit"]["edited"] == 4 and res["filter"]["total"]["pairs"] == 4
    kept = read_manifest(tmp_path / "out")  # the effective subset
    assert len(kept) == res["filter"]["total"]["kept"]
    assert {r.id for r in kept} <= {r.id for r in mine}


def test_edit_run_with_a_refiner_gets_scaled_boxes_and_records_the_mask_png(tmp_path):
    from vseam.editing.run import edit_counts, edit_samples

    ann, imgs, ids = _write_world(tmp_path)
    seen = []

    class HalfRefiner:  # keeps the left half of the box mask, as a segmenter would keep the object
        def refine(self, image, boxes, box_mask):
            seen.append(boxes)
            m = box_mask.copy()
            cols = np.where(box_mask.any(0))[0]
            m[:, cols[len(cols) // 2]:] = False
            return m, True

    def paint_white(images, masks, prompts, ids_):
        return [Image.new("RGB", im.size, (255, 255, 255)) for im in images]

    samples = read_benchmark("gqa", ann, imgs)
    out = tmp_path / "out"
    rep = edit_samples(samples, out, paint_white, RuleWriter(seed=0), box_reference_size=[500, 500],
                       refiner=HalfRefiner(), batch_size=8, progress=False)
    assert rep["edited"] == 3
    color = json.loads((DATA / "gqa" / "Color.sample.json").read_text())
    b = color[ids[0]]["object_positions"][0]
    # annotation [0, 500)^2 -> the 50x40 image
    assert seen[0] == [pytest.approx([b["x"] * 0.1, b["y"] * 0.08, b["w"] * 0.1, b["h"] * 0.08])]
    for r in read_jsonl(out / "edits.jsonl"):
        assert r["mask"] == str((out / "masks" / "Color" / f"{r['id']}.png").resolve())
        m = np.asarray(Image.open(r["mask"])) > 0
        ed = np.asarray(Image.open(r["edited_image"]))
        clean = np.asarray(Image.open(r["image"]).convert("RGB"))
        assert (ed[m] == 255).all() and (ed[~m] == clean[~m]).all()
    flat = edit_counts(rep)
    assert flat == {"edit/edited": 3, "edit/skipped": 3, "edit/skipped/missing_image": 1,
                    "edit/skipped/box_outside_image": 1, "edit/skipped/not_covered": 1,
                    "edit/Color/edited": 3, "edit/Spatial/edited": 0}
