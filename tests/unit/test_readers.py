"""Benchmark readers on the real annotation samples (tests/fixtures/data) and on malformed files."""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import pytest

from vseam.data.readers import AnnotationError, category_from_filename, read_benchmark, read_cocoqa, read_gqa, read_pope
from vseam.data.sample import Sample

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"
GQA_LEVELS = {"Action": "relation", "Animal": "object", "Color": "attribute", "Indoor": "object",
              "Material": "attribute", "Spatial": "relation", "Vehicle": "object"}


def test_gqa_dict_file_every_field():
    samples = read_gqa(DATA / "gqa" / "Color.sample.json", "/imgs")
    assert len(samples) == 40
    s = samples[0]
    assert isinstance(s, Sample)
    assert s.id == "09143711"  # dict key
    assert s.question == "Are the pants purple?"
    assert s.answer == "Yes"
    assert s.image_path == str(Path("/imgs") / "2377940.jpg")
    assert s.benchmark == "gqa"
    assert s.category == "Color"
    assert s.level == "attribute"
    assert s.image is None
    assert s.meta["imageId"] == "2377940"
    assert s.meta["semanticStr"] == "select: pants (715737)->query: color [0]"
    assert s.meta["semantic"][1] == {"operation": "query", "dependencies": [0], "argument": "color"}
    assert s.meta["types"] == {"detailed": "directWhich", "semantic": "attr", "structural": "query"}
    assert s.meta["involved_objects"] == ["pants"]
    assert s.meta["object_positions"] == [{"x": 123, "y": 181, "w": 95, "h": 66}]
    assert s.meta["fullAnswer"] == "The trousers are purple."
    assert "question" not in s.meta and "answer" not in s.meta
    assert Counter(x.answer for x in samples) == {"Yes": 20, "No": 20}
    assert len({x.id for x in samples}) == 40


def test_gqa_list_file_every_field():
    samples = read_gqa(DATA / "gqa" / "Material.sample.json", "imgs")
    assert len(samples) == 40
    s = samples[0]
    assert s.id == "1958363"  # question_id of a list record
    assert s.question == "Is the sidewalk made of Brick?"
    assert s.answer == "Yes"
    assert s.image_path == str(Path("imgs") / "2379240.jpg")
    assert (s.benchmark, s.category, s.level) == ("gqa", "Material", "attribute")
    assert s.meta["fullAnswer"] == "The sidewalk is made of brick."
    assert s.meta["object_positions"] == [{"x": 0, "y": 259, "w": 375, "h": 240}]
    assert "question_id" not in s.meta
    assert Counter(x.answer for x in samples) == {"Yes": 32, "No": 8}
    assert len({x.meta["imageId"] for x in samples}) == 37


@pytest.mark.parametrize("category", sorted(GQA_LEVELS))
def test_gqa_every_subset_matches_raw_file(category):
    path = DATA / "gqa" / f"{category}.sample.json"
    raw = json.loads(path.read_text())
    records = list(raw.items()) if isinstance(raw, dict) else [(r["question_id"], r) for r in raw]
    samples = read_benchmark("gqa", path, "/g")
    assert len(samples) == len(records) == 40
    for s, (rid, rec) in zip(samples, records):
        assert s.id == rid
        assert s.question == rec["question"]
        assert s.answer == rec["answer"]
        assert s.image_path == str(Path("/g") / f"{rec['imageId']}.jpg")
        assert s.category == category
        assert s.level == GQA_LEVELS[category]
        assert s.meta["object_positions"] == rec["object_positions"]
        assert s.meta["semantic"] == rec["semantic"]


def test_gqa_limit_category_and_pattern_override():
    samples = read_benchmark("gqa", DATA / "gqa" / "Animal.sample.json", "/x", image_pattern="img_{imageId}.png",
                             category="Vehicle", limit=3)
    assert [s.id for s in samples] == ["14903529", "19625432", "11606870"]
    assert samples[0].image_path == str(Path("/x") / "img_2337735.png")
    assert {s.category for s in samples} == {"Vehicle"}
    assert {s.level for s in samples} == {"object"}


def test_gqa_level_from_fields_and_types(tmp_path):
    recs = [
        {"question_id": "a", "question": "Is it red?", "answer": "yes", "imageId": "1", "level": "attribute",
         "category": "colour"},
        {"question_id": "b", "question": "Is it left?", "answer": "No", "imageId": "2",
         "types": {"semantic": "rel"}},
        {"question_id": "c", "question": "What?", "answer": "cube", "imageId": "3"},
    ]
    p = tmp_path / "mixed.json"
    p.write_text(json.dumps(recs))
    a, b, c = read_gqa(p, tmp_path)
    assert (a.category, a.level, a.answer) == ("colour", "attribute", "Yes")
    assert (b.category, b.level, b.answer) == (None, "relation", "No")
    assert (c.category, c.level, c.answer) == (None, None, "cube")


def test_organism_style_gqa_json(tmp_path):
    # what the organism writes: GQA-style records with images {imageId}.png
    recs = {"q0": {"imageId": "scene_0", "question": "Is the circle red?", "answer": "Yes",
                   "object_positions": [{"x": 4, "y": 5, "w": 10, "h": 12}], "category": "Color"}}
    p = tmp_path / "questions.json"
    p.write_text(json.dumps(recs))
    (s,) = read_benchmark("organism", p, tmp_path / "images")
    assert s.image_path == str(tmp_path / "images" / "scene_0.png")
    assert (s.id, s.benchmark, s.category, s.level) == ("q0", "organism", "Color", "attribute")
    (g,) = read_benchmark("gqa", p, tmp_path / "images", image_pattern="{imageId}.png")
    assert g.image_path == s.image_path and g.benchmark == "gqa"


def test_pope_every_field():
    samples = read_pope(DATA / "pope" / "coco_pope_random.sample.jsonl", "/coco/val2014")
    assert len(samples) == 60
    s = samples[0]
    assert s.id == "random/1"  # POPE numbers each split's file from 1: the split keeps the files' ids apart
    assert s.question == "Is there a snowboard in the image?"
    assert s.answer == "Yes"
    assert s.image_path == str(Path("/coco/val2014") / "COCO_val2014_000000310196.jpg")
    assert (s.benchmark, s.category, s.level) == ("pope", "random", None)
    assert s.meta == {"image": "COCO_val2014_000000310196.jpg", "question_id": 1,
                      "source": f"{DATA / 'pope' / 'coco_pope_random.sample.jsonl'}: line 1"}
    last = samples[-1]
    assert (last.id, last.question, last.answer) == ("random/60", "Is there an orange in the imange?", "Yes")
    assert Counter(x.answer for x in samples) == {"Yes": 32, "No": 28}
    assert len({x.image_path for x in samples}) == 11


@pytest.mark.parametrize("split,yes", [("random", 32), ("popular", 30), ("adversarial", 30)])
def test_pope_splits(split, yes):
    path = DATA / "pope" / f"coco_pope_{split}.sample.jsonl"
    samples = read_benchmark("pope", path, "/c")
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(samples) == len(raw) == 60
    assert sum(s.answer == "Yes" for s in samples) == yes
    assert all(s.category == split for s in samples)
    for s, r in zip(samples, raw):
        assert (s.id, s.question, s.answer.lower()) == (f"{split}/{r['question_id']}", r["text"], r["label"])


def test_cocoqa_every_field():
    samples = read_cocoqa(DATA / "cocoqa" / "color_coco_qa.sample.csv", "/coco/train2014")
    assert len(samples) == 60
    s = samples[0]
    assert s.id == "color/0"  # each type's file numbers its rows from 0: the type keeps the files' ids apart
    assert s.question == "what is the color of the horses"
    assert s.answer == "brown"
    assert s.image_path == str(Path("/coco/train2014") / "COCO_train2014_000000023004.jpg")
    assert (s.benchmark, s.category, s.level) == ("cocoqa", "color", None)
    assert s.meta == {"image_id": 23004, "source": f"{DATA / 'cocoqa' / 'color_coco_qa.sample.csv'}: line 2"}
    last = samples[-1]
    assert (last.id, last.question, last.answer, last.meta["image_id"]) == (
        "color/59", "what is the color of the carpet", "brown", 541067)


@pytest.mark.parametrize("qtype", ["color", "count", "location"])
def test_cocoqa_types_match_raw(qtype):
    path = DATA / "cocoqa" / f"{qtype}_coco_qa.sample.csv"
    rows = list(csv.reader(path.read_text().splitlines()))[1:]
    samples = read_benchmark("cocoqa", path, "/c", image_pattern="COCO_val2014_{image_id:012d}.jpg")
    assert len(samples) == len(rows) == 60
    for s, (idx, img, q, a) in zip(samples, rows):
        assert (s.id, s.question, s.answer, s.category) == (f"{qtype}/{idx}", q, a, qtype)
        assert s.image_path == str(Path("/c") / f"COCO_val2014_{int(img):012d}.jpg")


def test_cocoqa_category_from_header(tmp_path):
    p = tmp_path / "subset.csv"
    p.write_text(",train_image_id_count,question_count,answer_count\n0,12,how many cats,two\n")
    (s,) = read_cocoqa(p, None)
    assert s.category == "count" and s.image_path == "COCO_train2014_000000000012.jpg"


def test_category_from_filename():
    assert category_from_filename("x/Spatial.sample.json") == "Spatial"
    assert category_from_filename("coco_pope_popular.jsonl") == "popular"
    assert category_from_filename("color_coco_qa.csv") == "color"
    assert category_from_filename("questions.json") is None


# --- bad input: the error names the file and the record -----------------------------------------

def test_gqa_missing_field_names_key(tmp_path):
    p = tmp_path / "Color.json"
    p.write_text(json.dumps({"k1": {"question": "Q?", "answer": "Yes", "imageId": "1"},
                             "k2": {"question": "Q?", "imageId": "2"}}))
    with pytest.raises(AnnotationError, match=r"Color\.json: key 'k2': missing field\(s\) \['answer'\]"):
        read_gqa(p, tmp_path)


def test_gqa_list_record_without_id(tmp_path):
    p = tmp_path / "a.json"
    p.write_text(json.dumps([{"question": "Q?", "answer": "Yes", "imageId": "1"}]))
    with pytest.raises(AnnotationError, match=r"a\.json: record 0: .*question_id"):
        read_gqa(p, tmp_path)


def test_gqa_bad_box_and_bad_json(tmp_path):
    p = tmp_path / "b.json"
    p.write_text(json.dumps([{"question_id": 7, "question": "Q?", "answer": "Yes", "imageId": "1",
                              "object_positions": [{"x": 1, "y": 2, "w": 3}]}]))
    with pytest.raises(AnnotationError, match=r"record 0 \(id 7\): object_positions\[0\]"):
        read_gqa(p, tmp_path)
    p.write_text("[{")
    with pytest.raises(AnnotationError, match="not valid JSON"):
        read_gqa(p, tmp_path)
    with pytest.raises(AnnotationError, match="not found"):
        read_gqa(tmp_path / "nope.json", tmp_path)


def test_pope_bad_lines_name_the_line(tmp_path):
    p = tmp_path / "pope.jsonl"
    good = '{"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"}'
    p.write_text(good + "\n" + '{"question_id": 2, "image": "a.jpg", "text": "Is there a dog?", "label": "maybe"}\n')
    with pytest.raises(AnnotationError, match=r"pope\.jsonl: line 2: label must be yes or no"):
        read_pope(p, tmp_path)
    p.write_text(good + "\n\n{not json\n")
    with pytest.raises(AnnotationError, match=r"line 3: not valid JSON"):
        read_pope(p, tmp_path)
    p.write_text('{"question_id": 1, "text": "Q", "label": "no"}\n')
    with pytest.raises(AnnotationError, match=r"line 1: missing field\(s\) \['image'\]"):
        read_pope(p, tmp_path)


def test_cocoqa_bad_rows_name_the_line(tmp_path):
    p = tmp_path / "count_coco_qa.csv"
    p.write_text(",id,question,answer\n0,12,how many cats,two\n1,xx,how many dogs,one\n")
    with pytest.raises(AnnotationError, match=r"line 3: image id 'xx' is not an integer"):
        read_cocoqa(p, tmp_path)
    p.write_text("0,12,how many cats\n")
    with pytest.raises(AnnotationError, match=r"line 1: expected 4 columns"):
        read_cocoqa(p, tmp_path)


def test_pattern_needing_missing_field(tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"k": {"question": "Q?", "answer": "Yes", "imageId": "1"}}))
    with pytest.raises(AnnotationError, match=r"key 'k': image pattern '\{file_name\}' needs field 'file_name'"):
        read_gqa(p, tmp_path, image_pattern="{file_name}")


def test_unknown_format():
    with pytest.raises(ValueError, match="unknown benchmark format"):
        read_benchmark("vqa", DATA / "gqa" / "Color.sample.json", None)


def test_reads_what_the_organism_writes(tmp_path):
    from vseam.world.write import write_world

    summary = write_world(tmp_path, n_per_category=3, seed=0)
    for cat, level in summary["levels"].items():
        samples = read_benchmark("organism", tmp_path / f"{cat}.json", tmp_path / "images")
        raw = json.loads((tmp_path / f"{cat}.json").read_text())
        assert len(samples) == len(raw) == 3
        for s, r in zip(samples, raw):
            assert (s.id, s.question, s.answer) == (r["question_id"], r["question"], r["answer"])
            assert (s.benchmark, s.category, s.level) == ("organism", cat, level)
            assert s.image_path == str(tmp_path / "images" / f"{r['imageId']}.png")
            assert Path(s.image_path).exists()
            assert s.meta["object_positions"] == r["object_positions"]
