"""Write the organism world to disk in the format of the real data (GQA-style JSON, PNGs, edit manifest).

Layout under ``root``: ``<Category>.json`` (a list of GQA-style records), ``images/{imageId}.png``,
``edited/{imageId}.png``, ``edits.jsonl`` (one ``EditRecord`` per question) and ``world.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vseam.utils.io import atomic_path, write_json, write_text
from vseam.world.questions import CATEGORIES, KINDS, ORGANISM_SPLITS, generate
from vseam.world.scene import DIFFICULTY, Difficulty, render_pil

# The world's version, recorded in world.json: 3 = nine categories, items keyed by their split, the
# difficulty knob. A folder written by another version is redrawn by ensure_world (its questions differ).
WORLD_VERSION = 3


def _save_png(path: Path, scene) -> None:
    with atomic_path(path) as tmp:
        render_pil(scene).save(tmp, format="PNG")


def write_world(root: str | Path, n_per_category: int = 200, seed: int = 0,
                categories: tuple[str, ...] | list[str] | None = None, kinds: tuple[str, ...] = KINDS,
                grid: int = 3, cell: int = 16, split: str = "test", difficulty: Difficulty = DIFFICULTY) -> dict:
    """Render and write ``n_per_category`` questions per category; return the summary written to world.json.

    ``split`` is part of every item's identity (``vseam.world.questions.split_code``); the organism's own
    splits (``organism-train``, ...) are not written as worlds, so no written world holds its training items.
    """
    if split in ORGANISM_SPLITS:
        raise ValueError(f"split={split!r} is the organism's own; a written world draws one of train / val / test")
    root = Path(root).resolve()
    categories = list(categories or CATEGORIES)
    manifest_lines = []
    counts = {}
    for cat in categories:
        items = generate(cat, n_per_category, seed=seed, kinds=tuple(kinds), grid=grid, cell=cell, split=split,
                         difficulty=difficulty)
        records = []
        for it in items:
            img, edited = root / "images" / f"{it.id}.png", root / "edited" / f"{it.id}.png"
            _save_png(img, it.scene)
            _save_png(edited, it.edited_scene)
            records.append(it.gqa_record())
            manifest_lines.append(json.dumps(it.edit_record(str(img), str(edited)).to_dict()))
        write_json(root / f"{cat}.json", records, indent=1)
        counts[cat] = len(records)
    write_text(root / "edits.jsonl", "\n".join(manifest_lines) + "\n")
    summary = {"benchmark": "organism", "version": WORLD_VERSION, "seed": seed, "split": split, "grid": grid, "cell": cell,
               "image_size": grid * cell, "kinds": list(kinds), "difficulty": difficulty.to_dict(), "counts": counts,
               "levels": {c: CATEGORIES[c] for c in categories},
               "files": {"annotations": [f"{c}.json" for c in categories], "images": "images",
                         "edited_images": "edited", "edit_manifest": "edits.jsonl"}}
    write_json(root / "world.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="write the organism world (GQA-style) to a folder")
    ap.add_argument("root")
    ap.add_argument("--n", type=int, default=200, help="questions per category")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kinds", default=",".join(KINDS), help="comma-separated: verify (yes/no), query (one word)")
    a = ap.parse_args(argv)
    print(json.dumps(write_world(a.root, a.n, a.seed, kinds=tuple(a.kinds.split(","))), indent=1))


if __name__ == "__main__":
    main()


class WorldMismatchError(ValueError):
    """``data.root`` holds a world drawn with other settings than the run's ``data.*`` keys ask for."""


def check_world(root: Path, data_cfg: Any) -> None:
    """Refuse the world under ``root`` when its ``world.json`` records another seed or split than
    ``data.world_seed`` / ``data.world_split``: using it would score other questions than asked, without
    a word. Its size is not checked: ``data.n_per_category`` sizes a world when one is built."""
    try:
        written = json.loads((root / "world.json").read_text())
    except json.JSONDecodeError as e:
        raise WorldMismatchError(f"{root / 'world.json'}: not valid JSON (truncated?): {e}") from None
    seed, split = int(data_cfg.world_seed), str(data_cfg.world_split)
    differ = [f"data.{key}={want!r} but the world there was drawn with {field}={written[field]!r}"
              for key, field, want in (("world_seed", "seed", seed), ("world_split", "split", split))
              if field in written and written[field] != want]
    if differ:
        raise WorldMismatchError(
            f"data.root={data_cfg.root} ({root / 'world.json'}): {'; '.join(differ)}. Give this world a folder of "
            f"its own (e.g. data.root={root.parent / f'{split}-s{seed}'}), or use the folder's own settings")


def ensure_world(data_cfg: Any) -> Path | None:
    """For ``data.format=organism``: write the world under ``data.root`` unless it is already there,
    and refuse one drawn with another ``data.world_seed`` / ``data.world_split`` (``check_world``);
    return the root (None for other formats, which read files that exist)."""
    if str(data_cfg.format) != "organism":
        return None
    root = Path(data_cfg.root)
    stale = None
    if (root / "world.json").exists():
        check_world(root, data_cfg)
        stale = json.loads((root / "world.json").read_text()).get("version")
        if stale != WORLD_VERSION:
            import warnings

            warnings.warn(f"data.root={data_cfg.root}: a world of version {stale} (this code draws version "
                          f"{WORLD_VERSION}: other categories and questions); redrawing it there", stacklevel=2)
    if not (root / "world.json").exists() or stale != WORLD_VERSION:
        write_world(root, n_per_category=int(data_cfg.n_per_category), seed=int(data_cfg.world_seed),
                    split=str(data_cfg.world_split))
    n_pope = int(getattr(data_cfg, "pope_per_split", 0) or 0)
    if n_pope:  # the POPE analog beside it, rewritten when its size, seed, objects or image sharing differ
        from vseam.world.pope import POPE_SEED_BASE, POPE_SEED_STRIDE, write_pope

        summary = root / "pope" / "pope.json"
        # each split its own images: a pool that train.py splits into train / val / test must not
        # hold one (image, question) twice, as POPE's shared positives would
        objects = list(getattr(data_cfg, "pope_objects", None) or []) or None
        want = {"n_per_split": n_pope, "seed": POPE_SEED_BASE + POPE_SEED_STRIDE * int(data_cfg.world_seed),
                "shared_images": False, "objects": objects}
        written = json.loads(summary.read_text()) if summary.exists() else {}
        if any(written.get(k) != v for k, v in want.items()) or written.get("purpose") != "pope":
            try:
                write_pope(root / "pope", **want)
            except ValueError as e:
                raise ValueError(f"data.pope_per_split={n_pope} / data.pope_objects={objects}: {e}") from None
    return root
