"""Held-out data is held out: every shipped organism data config draws a world that shares no image
(pixel hash) and no (question, image) pair with the items the shipped organisms were trained and
selected on, regenerated from their ``training.json``; and the organism's own test and POPE splits
(``accuracy.json``) are disjoint from its training items too.

The default run checks the first ``PREFIX`` items per category of every world (the split keys every
item's random stream, so a shared item would be a shared stream, visible in any prefix); the slow tier
checks every item.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from vseam.world.scene import Difficulty, render

ROOT = Path(__file__).resolve().parents[2]
CKPT = ROOT / "checkpoints" / "organism"
PREFIX = 40


def _digest(pixels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes()).hexdigest()


def training_items(limit: int | None):
    """(image digest, question) of every image the shipped organisms trained and selected on (clean and
    edited scenes), regenerated from ``training.json``'s ``training_worlds``."""
    from vseam.organism.data import draw_items

    seen, worlds = set(), []
    for arch in ("llava", "instructblip"):
        record = json.loads((CKPT / arch / "training.json").read_text())
        worlds += [w for w in record["training_worlds"] if w not in worlds]
    assert {w["split"] for w in worlds} == {"organism-train", "organism-val"}
    out = []
    for w in worlds:
        n = w["n_per_category"] if limit is None else min(limit, w["n_per_category"])
        items = draw_items(n, w["seed"], w["split"], tuple(w["kinds"]), w["categories"], w["grid"], w["cell"],
                           w["cooccur"], w["existence_prior"], w["weak_recall"], Difficulty.from_dict(w["difficulty"]),
                           w.get("existence_weight", 1))
        for it in items:
            for scene in (it.scene, it.edited_scene) if w["with_edits"] or w["split"] == "organism-val" else (it.scene,):
                key = (_digest(render(scene)), it.question)
                if key not in seen:
                    seen.add(key)
                    out.append(key)
    return out


def data_config_items(name: str, tmp_path: Path, limit: int | None):
    """(image digest, question) of every image of the world data config ``name`` draws (built by
    ``ensure_world`` into ``tmp_path``, ``limit`` questions per category when given), clean, edited
    and POPE-analog images alike, read back from the written PNG files."""
    from PIL import Image

    from vseam.config import load_config
    from vseam.world.write import ensure_world

    overrides = [f"data={name}", f"data.root={tmp_path / name}"]
    cfg = load_config(overrides).data
    if limit is not None:
        cfg.n_per_category = min(int(cfg.n_per_category), limit)
        if int(cfg.pope_per_split):
            cfg.pope_per_split = min(int(cfg.pope_per_split), 6 * max(1, limit // 6))
    root = ensure_world(cfg)
    pixels = lambda p: _digest(np.asarray(Image.open(p).convert("RGB")))  # noqa: E731
    out = []
    for f in json.loads((root / "world.json").read_text())["files"]["annotations"]:
        for r in json.loads((root / f).read_text()):
            out.append((pixels(root / "images" / f"{r['imageId']}.png"), r["question"]))
            out.append((pixels(root / "edited" / f"{r['imageId']}.png"), r["question"]))
    if int(cfg.pope_per_split):
        pope = json.loads((root / "pope" / "pope.json").read_text())
        for f in pope["files"].values():
            for line in (root / "pope" / f).read_text().splitlines():
                r = json.loads(line)
                out.append((pixels(root / "pope" / "images" / r["image"]), r["text"]))
    return out


def organism_heldout_items():
    """(image digest, question) of the organism's own test and POPE splits (its accuracy.json)."""
    from vseam.organism.build import train_config
    from vseam.organism.evaluate import POPE_SEED_OFFSET, POPE_SPLIT, heldout_items
    from vseam.world.pope import pope_items
    from vseam.world.questions import NEGATIVES

    cfg = train_config("llava")
    items = heldout_items(cfg.n_test_per_category, cfg.seed, difficulty=cfg.difficulty())
    items += [it for s in NEGATIVES for it in pope_items(cfg.n_pope_per_split, cfg.seed * 1000 + POPE_SEED_OFFSET, s,
                                                          purpose=POPE_SPLIT, difficulty=cfg.difficulty())]
    return [(_digest(render(it.scene)), it.question) for it in items]


def _shipped_world_configs() -> list[str]:
    names = sorted(p.stem for p in (ROOT / "configs" / "data").glob("organism*.yaml"))
    assert {"organism", "organism-heldout", "organism-pope", "organism-pope-heldout",
            "organism-pope-transfer-train", "organism-pope-transfer-eval"} <= set(names)
    return names


def _check(limit, tmp_path):
    train = training_items(limit)
    train_images = {d for d, _ in train}
    train_pairs = set(train)
    assert len(train_images) > 100
    report = {}
    for name in _shipped_world_configs():
        items = data_config_items(name, tmp_path, limit)
        shared_images = {d for d, _ in items} & train_images
        shared_pairs = set(items) & train_pairs
        report[name] = (len(items), len(shared_images), len(shared_pairs))
    own = organism_heldout_items()
    report["accuracy.json"] = (len(own), len({d for d, _ in own} & train_images), len(set(own) & train_pairs))
    assert all(n > 0 and img == 0 and pair == 0 for n, img, pair in report.values()), report


def test_no_eval_world_shares_an_image_or_question_with_the_organisms_training_items(tmp_path):
    _check(PREFIX, tmp_path)


@pytest.mark.slow
def test_no_eval_world_shares_anything_with_the_full_training_set(tmp_path):
    _check(None, tmp_path)


def test_the_check_can_fail(tmp_path):
    """The same comparison finds the overlap when a world is drawn from the training split itself."""
    from vseam.organism.data import draw_items

    w = json.loads((CKPT / "llava" / "training.json").read_text())["training_worlds"][0]
    items = draw_items(3, w["seed"], w["split"], tuple(w["kinds"]), w["categories"], w["grid"], w["cell"],
                       w["cooccur"], w["existence_prior"], w["weak_recall"], Difficulty.from_dict(w["difficulty"]),
                       w.get("existence_weight", 1))
    train = set(training_items(3))
    assert {(_digest(render(it.scene)), it.question) for it in items} <= train
