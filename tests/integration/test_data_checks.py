"""Data that would give a silently wrong number: a question id twice, POPE / COCO-QA files that number
their questions alike, a prompt longer than the model's positions, degenerate images, a POPE file whose
split is unknown, head scores computed on the run's own evaluation samples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from vseam.config import load_config

DATA = Path(__file__).resolve().parents[1] / "fixtures" / "data"


@pytest.fixture(scope="module")
def pope(tmp_path_factory):
    """The organism's POPE analog, 12 questions per split, in POPE's own format (images included)."""
    from vseam.world.pope import write_pope

    root = tmp_path_factory.mktemp("pope")
    write_pope(root, n_per_split=12, seed=0)
    return root


def _copy(src: Path, dst: Path, lines: list[str] | None = None) -> Path:
    dst.write_text("\n".join(lines if lines is not None else src.read_text().splitlines()) + "\n")
    return dst


def _pope_cfg(files, images, *extra):
    return load_config(["model=tiny-llava", "logger=none", "data=pope", f"data.annotations=[{','.join(map(str, files))}]",
                        f"data.image_dir={images}", *extra])


# ---------------------------------------------------------------------------------- duplicate ids
def test_a_duplicate_id_in_a_file_is_named_with_file_line_and_id(pope, tmp_path):
    from vseam.data.load import load_samples
    from vseam.data.readers import AnnotationError

    lines = (pope / "organism_pope_random.json").read_text().splitlines()
    f = _copy(pope / "organism_pope_random.json", tmp_path / "organism_pope_random.json", lines + [lines[3]])
    qid = json.loads(lines[3])["question_id"]  # POPE's files count from 1
    want = (rf"{re.escape(str(f))}: line {len(lines) + 1}: question id 'random/{qid}' is already at "
            rf"{re.escape(str(f))}: line 4.*data.duplicate_ids=drop")
    with pytest.raises(AnnotationError, match=want):
        load_samples(_pope_cfg([f], pope / "images").data)


def test_a_duplicate_id_across_files_is_named(tmp_path):
    from vseam.data.load import load_samples
    from vseam.data.readers import AnnotationError

    rec = {"question_id": "q7", "question": "Is it red?", "answer": "yes", "imageId": "1"}
    a, b = tmp_path / "Color.json", tmp_path / "Material.json"
    a.write_text(json.dumps([rec]))
    b.write_text(json.dumps([{**rec, "question": "Is it wood?"}]))
    cfg = load_config(["data=gqa", f"data.annotations=[{a},{b}]", f"data.image_dir={tmp_path}"])
    with pytest.raises(AnnotationError, match=r"Material.json: record 0 .*question id 'q7' is already at .*Color.json"):
        load_samples(cfg.data)


def test_pope_and_cocoqa_files_that_number_alike_stay_apart():
    """POPE's three split files all count from 1, COCO-QA's type files from 0: their samples keep
    distinct ids (``<split>/<id>``), so caches, splits and per-sample tables keyed on ids stay right."""
    from vseam.data.load import load_samples

    for fmt, files, n in (("pope", sorted((DATA / "pope").glob("*.jsonl")), 180),
                          ("cocoqa", sorted((DATA / "cocoqa").glob("*.csv")), 180)):
        cfg = load_config([f"data={fmt}", f"data.annotations=[{','.join(map(str, files))}]"])
        samples = load_samples(cfg.data)
        assert len(samples) == n and len({s.id for s in samples}) == n, fmt
        assert {s.id.split("/")[0] for s in samples} == {s.category for s in samples} and len({s.category for s in samples}) == 3


def test_dropped_duplicates_are_counted_and_every_figure_is_over_the_same_samples(pope, tmp_path):
    from vseam.evaluation.run import run_eval

    lines = (pope / "organism_pope_random.json").read_text().splitlines()
    f = _copy(pope / "organism_pope_random.json", tmp_path / "organism_pope_random.json", lines + [lines[0], lines[5]])
    res = run_eval(_pope_cfg([f], pope / "images", "data.duplicate_ids=drop", "data.max_skip_fraction=0.5",
                             f"out_dir={tmp_path / 'e'}"))["results"]["base"]
    assert res["n"] == len(lines) == res["pope"]["random"]["n"]
    dup = [s for s in res["skipped_samples"] if "duplicate id" in s["reason"]]
    ids = [f"random/{json.loads(lines[i])['question_id']}" for i in (0, 5)]
    assert [s["id"] for s in dup] == ids and res["skipped"] == 2
    assert f"{f}: line {len(lines) + 1}: duplicate id '{ids[0]}' of {f}: line 1" in dup[0]["reason"]


def test_an_empty_annotation_file_is_named(tmp_path):
    from vseam.data.readers import AnnotationError, read_benchmark

    for fmt, name, text in (("pope", "coco_pope_random.json", ""), ("gqa", "Color.json", "\n"),
                            ("gqa", "Animal.json", "[]"), ("cocoqa", "color_coco_qa.csv", ",a,b,c\n")):
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(AnnotationError, match=rf"{re.escape(str(p))}: the annotation file (is empty|holds no record)"):
            read_benchmark(fmt, p)


# ----------------------------------------------------------------------------- the POPE split
def test_a_nameless_pope_file_takes_its_split_from_the_records_or_the_key_and_says_when_unknown(
        pope, tmp_path, monkeypatch, capsys):
    import vseam.models
    from vseam.data.load import load_samples
    from vseam.data.readers import AnnotationError
    from vseam.evaluation.run import run_eval

    records = _copy(pope / "organism_pope_adversarial.json", tmp_path / "questions.jsonl")  # records say "negative"
    assert {s.category for s in load_samples(_pope_cfg([records], pope / "images").data)} == {"adversarial"}
    bare = tmp_path / "answers.jsonl"  # as COCO's files: no split anywhere but in their names
    bare.write_text("".join(json.dumps({k: json.loads(x)[k] for k in ("question_id", "image", "text", "label")}) + "\n"
                            for x in (pope / "organism_pope_popular.json").read_text().splitlines()))
    keyed = load_samples(_pope_cfg([bare], pope / "images", "data.pope_split=popular").data)
    assert {s.category for s in keyed} == {"popular"} and keyed[0].id.startswith("popular/")
    # unknown: scored, its POPE metrics under split "unknown" (not "None"), and said before the model loads
    res = run_eval(_pope_cfg([bare], pope / "images", f"out_dir={tmp_path / 'scored'}"))["results"]["base"]
    assert list(res["pope"]) == ["unknown"] and res["pope"]["unknown"]["n"] == 12
    capsys.readouterr()
    monkeypatch.setattr(vseam.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded"))
    monkeypatch.setattr("vseam.evaluation.run.load_adapter", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        run_eval(_pope_cfg([bare], pope / "images", f"out_dir={tmp_path / 'e'}"))
    out = capsys.readouterr().out
    assert f"the POPE split of {bare} (12 questions) is unknown" in out and "data.pope_split" in out
    # a key that contradicts the file's name
    with pytest.raises(AnnotationError, match="the file name says POPE split 'random' but data.pope_split='popular'"):
        load_samples(_pope_cfg([pope / "organism_pope_random.json"], pope / "images", "data.pope_split=popular").data)


# ------------------------------------------------------------------- what only the model can tell
def test_an_over_length_prompt_and_a_one_pixel_image_are_named_skips(tiny_adapter, samples):
    from vseam.data.sample import Sample
    from vseam.data.skips import model_skips

    long_q = "Is the " + "very " * 600 + "big square red?"
    tiny = Sample(id="dot", question="Is it red?", answer="Yes", image=Image.new("RGB", (1, 1)))
    gray = Sample(id="gray", question="Is it red?", answer="Yes", image=Image.new("L", (32, 32)))
    rgba = Sample(id="rgba", question="Is it red?", answer="Yes", image=Image.new("RGBA", (32, 32)))
    screen = model_skips(tiny_adapter, [samples[0], Sample(id="long", question=long_q, answer="Yes",
                                                           image=samples[0].image), tiny, gray, rgba])
    assert [s.id for s in screen.kept] == [samples[0].id, "gray", "rgba"]
    reasons = {s["id"]: s["reason"] for s in screen.skipped}
    n = tiny_adapter.position_limits(long_q)[0][1]
    assert n > 600 and f"its prompt takes {n} positions of the language model, which has 512" in reasons["long"]
    patch = tiny_adapter.patch_size
    assert f"image 1x1 is smaller than the vision tower's {patch}x{patch} patch" in reasons["dot"]
    assert screen.converted == {"L": 1, "RGBA": 1}


def test_eval_reports_skipped_prompts_and_images_and_converted_modes(pope, tmp_path):
    from vseam.evaluation.run import run_eval

    images = tmp_path / "images"
    images.mkdir()
    lines = [json.loads(x) for x in (pope / "organism_pope_random.json").read_text().splitlines()]
    for r in lines:
        Image.open(pope / "images" / r["image"]).save(images / r["image"])
    # the POPE analog asks six questions of each image: these three get images of their own
    Image.new("RGB", (1, 1)).save(images / "tiny.png")
    Image.open(pope / "images" / lines[1]["image"]).convert("L").save(images / "grey.png")
    Image.open(pope / "images" / lines[2]["image"]).convert("CMYK").save(images / "cmyk.jpg")
    lines[0]["image"], lines[1]["image"], lines[2]["image"] = "tiny.png", "grey.png", "cmyk.jpg"
    lines[3]["text"] = "Is there a " + "very " * 600 + "big star in the image?"
    f = tmp_path / "organism_pope_random.json"
    f.write_text("".join(json.dumps(r) + "\n" for r in lines))
    run_eval(_pope_cfg([f], images, "data.max_skip_fraction=0.5", f"out_dir={tmp_path / 'e'}"))
    saved = json.loads((tmp_path / "e" / "eval_results.json").read_text())
    base = saved["results"]["base"]
    assert base["n"] == len(lines) - 2 and base["skipped"] == 2
    reasons = {s["id"]: s["reason"] for s in base["skipped_samples"]}
    assert "smaller than the vision tower's" in reasons[f"random/{lines[0]['question_id']}"]
    assert re.search(r"its prompt takes \d+ positions of the language model, which has 512",
                     reasons[f"random/{lines[3]['question_id']}"])
    assert saved["images_converted_to_rgb"] == {"CMYK": 1, "L": 1}


# ----------------------------------------------------------- head scores computed on other data
def test_head_scores_say_where_they_came_from_and_warn_on_overlap(capsys):
    import torch

    from vseam.attribution.scores import HeadScores
    from vseam.data.sample import Sample, sample_key
    from vseam.modulation.run import scores_provenance

    made = [Sample(id=f"s{i}", question=f"Q{i}?", answer="Yes", image_path=f"/img/{i}.png") for i in range(6)]
    scores = HeadScores(torch.zeros(2, 2), torch.zeros(2, 2), torch.zeros(2, 2), 3, 3, 2, 2,
                        meta={"dataset_id": "organism", "dataset": {"root": "data/organism/test-s0"}, "n": 6,
                              "sample_keys": [sample_key(s) for s in made]})
    splits = {"train": made[:2], "val": made[2:3], "test": made[3:4] + [Sample(id="t", question="Other?", answer="No",
                                                                              image_path="/img/t.png")]}
    info = scores_provenance(scores, "runs/heads/x", splits)
    assert info["overlap"] == {"val": 1, "test": 1} and info["file"] == "runs/heads/x"
    assert info["data_root"] == "data/organism/test-s0"
    out = capsys.readouterr().out
    assert "head scores from runs/heads/x (data organism, 6 samples)" in out
    assert "WARNING: modulation.head_scores=runs/heads/x was computed on 1 of this run's 2 test" in out
    clean = scores_provenance(scores, "f", {"train": made, "val": [splits["test"][-1]], "test": [splits["test"][-1]]})
    assert clean["overlap"] == {"val": 0, "test": 0} and "WARNING" not in capsys.readouterr().out


def test_head_score_files_record_the_samples_they_scored(world, tmp_path):
    from vseam.attribution.run import run_heads
    from vseam.data.load import load_samples
    from vseam.data.sample import sample_key

    from conftest import heads_cfg

    cfg = heads_cfg(world, tmp_path / "h")
    res = run_heads(cfg)
    saved = json.loads((tmp_path / "h" / "head_scores.json").read_text())
    assert saved["sample_keys"] == res["sample_keys"] and len(saved["sample_keys"]) == res["n"]
    assert set(saved["sample_keys"]) <= {sample_key(s) for s in load_samples(cfg.data)}
