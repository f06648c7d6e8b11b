"""The POPE analog of the organism world, written in POPE's own format.

POPE asks "Is there a {object} in the image?" about objects that are there ("yes") and objects that
are not ("no"), the absent ones drawn three ways: ``random``, ``popular`` (the most frequent objects)
and ``adversarial`` (the objects that co-occur most with those present). Here the scenes follow the
world's co-occurrence structure (``vseam.world.scene.GROUPS``); the three splits of one seed ask about
the same images with the same positive questions and differ only in their negatives, as POPE's do.

Layout under ``root``: ``organism_pope_{random,popular,adversarial}.json`` (JSON lines ``question_id``,
``image``, ``text``, ``label``, plus our own ``object`` and ``negative``), ``images/{image}`` and
``pope.json`` (counts and settings). ``vseam.data.readers.read_pope`` reads it as it reads COCO's.
"""

from __future__ import annotations

import json
from pathlib import Path

from vseam.utils.io import atomic_path, write_json, write_text
from vseam.world.questions import EXISTENCE_STRENGTH, NEGATIVES, generate
from vseam.world.scene import render_pil

POPE_FILE = "organism_pope_{split}.json"
POPE_SEED_BASE = 10_000  # the POPE analog of data.world_seed s is drawn with seeds 10_000 + 10 s + 1, 2, 3
POPE_SEED_STRIDE = 10  # world seeds s and s + 1 share no POPE-analog split (with + s they shared two)
QUESTION_ID_STRIDE = 1_000_000  # split k numbers its questions from k * stride: ids unique across the files


def pope_items(n: int, seed: int = 0, split: str = "random", strength: float = EXISTENCE_STRENGTH,
               grid: int = 3, cell: int = 16, prior: float = 0.0):
    """``n`` Existence items (half "Yes") with negatives of kind ``split``; item j is drawn on the
    same scene for every split."""
    if split not in NEGATIVES:
        raise ValueError(f"POPE split {split!r}: expected one of {NEGATIVES}")
    return generate("Existence", n, seed=seed, kinds=("verify",), grid=grid, cell=cell, split=f"pope{seed}-{split}",
                    cooccur=strength, negative=split, prior=prior)


def write_pope(root: str | Path, n_per_split: int = 300, seed: int = 0, strength: float = EXISTENCE_STRENGTH,
               splits: tuple[str, ...] = NEGATIVES, grid: int = 3, cell: int = 16, shared_images: bool = True) -> dict:
    """Write one POPE file per split and its images; return the summary written to ``pope.json``.

    ``shared_images=True``: the splits ask about the same images (POPE's design). False: split k
    draws its own images (seed + k + 1), so a pool that is split into train and test for training
    (``train.py``) holds no (image, question) twice.
    """
    root = Path(root).resolve()
    counts, files, written, seeds = {}, {}, set(), {}
    for k, split in enumerate(splits):
        lines, yes = [], 0
        split_seed = seed if shared_images else seed + NEGATIVES.index(split) + 1
        seeds[split] = split_seed
        for j, it in enumerate(pope_items(n_per_split, split_seed, split, strength, grid, cell)):
            image = f"pope-{split_seed}-{j:06d}.png"
            if image not in written:
                with atomic_path(root / "images" / image) as tmp:
                    render_pil(it.scene).save(tmp, format="PNG")
                written.add(image)
            yes += it.answer == "Yes"
            lines.append(json.dumps({"question_id": NEGATIVES.index(split) * QUESTION_ID_STRIDE + j, "image": image, "text": it.question,
                                     "label": it.answer.lower(), "object": it.change["object"],
                                     "negative": it.change["negative"]}))
        name = POPE_FILE.format(split=split)
        write_text(root / name, "\n".join(lines) + "\n")
        counts[split] = {"questions": len(lines), "yes": yes, "no": len(lines) - yes}
        files[split] = name
    summary = {"benchmark": "pope", "world": "organism", "seed": seed, "seeds": seeds, "strength": strength,
               "shared_images": shared_images, "n_per_split": n_per_split, "grid": grid, "cell": cell,
               "counts": counts, "files": files, "images": "images", "n_images": len(written)}
    write_json(root / "pope.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="write the organism's POPE analog (POPE JSON lines + images)")
    ap.add_argument("root")
    ap.add_argument("--n", type=int, default=300, help="questions per split (half yes)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strength", type=float, default=EXISTENCE_STRENGTH, help="co-occurrence strength of the scenes")
    a = ap.parse_args(argv)
    print(json.dumps(write_pope(a.root, a.n, a.seed, a.strength), indent=1))


if __name__ == "__main__":
    main()
