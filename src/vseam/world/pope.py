"""The POPE analog of the organism world, built as POPE builds it and written in POPE's own format.

POPE (Li et al., 2023; github.com/RUCAIBox/POPE, ``utils.py``) samples images with at least three
annotated objects and asks, per image, about three objects that are there ("yes") and three that are
not ("no"), one negative after each positive, the negatives drawn three ways:

- ``random``: any object of the vocabulary that is neither in the image nor asked about yet;
- ``popular``: the most frequent objects over the sampled images (their annotation counts), in order,
  skipping those in the image or asked about;
- ``adversarial``: for each positive object, the objects that co-occur most often with it over the
  sampled images, in order, skipping the same; when none is left, a random one as above.

The three splits of one seed ask about the same images with the same positive questions and differ only
in their negatives, as POPE's do. Here the images are co-occurrence scenes of the organism world (objects
come in usual groups, ``vseam.world.scene.GROUPS``), with the world's difficulty (faint and small
objects, noise), so the weak evidence for some objects meets the co-occurrence prior.

Layout under ``root``: ``organism_pope_{random,popular,adversarial}.json`` (JSON lines ``question_id``,
``image``, ``text``, ``label``, plus our own ``object`` and ``negative``), ``images/{image}`` and
``pope.json`` (counts and settings). ``vseam.data.readers.read_pope`` reads it as it reads COCO's.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vseam.utils.io import atomic_path, write_json, write_text
from vseam.world.questions import EXISTENCE, EXISTENCE_STRENGTH, NEGATIVES, WorldItem, existence_draft, split_code
from vseam.world.scene import ALL_SHAPES, BY_FREQUENCY, DIFFICULTY, Difficulty, Scene, random_scene, render_pil

POPE_FILE = "organism_pope_{split}.json"
POPE_SEED_BASE = 10_000  # the POPE analog of data.world_seed s is drawn with seeds 10_000 + 10 s + 1, 2, 3
POPE_SEED_STRIDE = 10  # world seeds s and s + 1 share no POPE-analog split (with + s they shared two)
QUESTION_ID_STRIDE = 1_000_000  # split k numbers its questions from k * stride: ids unique across the files
SAMPLE_NUM = 3  # POPE's sample_num: positive (and negative) questions per image
MIN_OBJECTS, MAX_OBJECTS = 3, 5  # objects in a POPE scene (POPE keeps images with >= sample_num objects)


def check_objects(objects: Sequence[str] | None) -> tuple[str, ...]:
    """The vocabulary the analog asks about (None or empty: every object), validated."""
    objects = tuple(objects or ())
    unknown = [o for o in objects if o not in ALL_SHAPES]
    if unknown:
        raise ValueError(f"POPE objects {unknown}: not objects of the world; known: {list(ALL_SHAPES)}")
    if objects and len(objects) < 2 * SAMPLE_NUM:
        raise ValueError(f"POPE objects {list(objects)}: at least {2 * SAMPLE_NUM} are needed (3 present + 3 absent "
                         f"per image)")
    return objects or ALL_SHAPES


def pope_scenes(n_images: int, seed: int, split: str = "pope", strength: float = EXISTENCE_STRENGTH,
                grid: int = 3, cell: int = 16, difficulty: Difficulty = DIFFICULTY,
                objects: Sequence[str] | None = None) -> list[Scene]:
    """``n_images`` co-occurrence scenes with at least ``SAMPLE_NUM`` objects of ``objects`` (POPE samples
    images with at least that many annotated objects) and at least ``SAMPLE_NUM`` of them absent (to ask
    about); scene j is keyed by (split, seed, j)."""
    vocab = set(check_objects(objects))
    scenes = []
    for j in range(n_images):
        rng = np.random.default_rng([split_code(split), int(seed), 0xB0BE, j])
        for _ in range(10_000):
            scene = random_scene(rng, grid, cell, n_min=MIN_OBJECTS, n_max=MAX_OBJECTS, cooccur=strength,
                                 difficulty=difficulty)
            if SAMPLE_NUM <= sum(o.shape in vocab for o in scene.objects) <= len(vocab) - SAMPLE_NUM:
                break
        else:
            raise RuntimeError(f"no scene with {SAMPLE_NUM} objects of {sorted(vocab)} in 10,000 draws")
        scenes.append(scene)
    return scenes


def _ordered(counts: Counter) -> list[str]:
    """Objects by count, most first; ties in the world's frequency order (deterministic)."""
    return sorted(counts, key=lambda o: (-counts[o], BY_FREQUENCY.index(o)))


def pope_questions(scenes: Sequence[Scene], negative: str, seed: int = 0, objects: Sequence[str] | None = None
                   ) -> list[list[tuple[str, bool]]]:
    """Per image, POPE's six questions in POPE's order (positive, negative, positive, ...): a list of
    ``(object, present)``. Frequencies and co-occurrences are counted over ``scenes`` (the sampled
    images), restricted to ``objects``; the random choices are seeded by (seed, image)."""
    if negative not in NEGATIVES:
        raise ValueError(f"POPE split {negative!r}: expected one of {NEGATIVES}")
    vocab = check_objects(objects)
    listed = [[o.shape for o in s.objects if o.shape in vocab] for s in scenes]  # the "annotations"
    frequency = Counter(o for objs in listed for o in objs)
    cooccur: dict[str, Counter] = {o: Counter() for o in vocab}
    for objs in listed:
        for o in objs:
            cooccur[o].update(p for p in objs if p != o)
    popular, by_cooccur = _ordered(frequency), {o: _ordered(c) for o, c in cooccur.items()}
    pool = [o for o in vocab if frequency[o] > 0] or list(vocab)  # POPE's gt_objects_list: objects seen
    out = []
    for j, objs in enumerate(listed):
        rng = np.random.default_rng([int(seed), 0x90BE, j, NEGATIVES.index(negative)])
        asked: list[str] = []
        questions = []

        def free(o: str, asked=asked, objs=objs) -> bool:
            return o not in asked and o not in objs

        for pos in objs[:SAMPLE_NUM]:
            asked.append(pos)
            questions.append((pos, True))
            ranked = {"random": [], "popular": popular, "adversarial": by_cooccur[pos]}[negative]
            neg = next((o for o in ranked if free(o)), None)
            if neg is None:  # random, or nothing left in the ranking: a random object, as POPE falls back to
                options = [o for o in pool if free(o)] or [o for o in vocab if free(o)]
                neg = options[int(rng.integers(len(options)))]
            asked.append(neg)
            questions.append((neg, False))
        out.append(questions)
    return out


def pope_items(n: int, seed: int = 0, split: str = "random", strength: float = EXISTENCE_STRENGTH, grid: int = 3,
               cell: int = 16, purpose: str = "pope", difficulty: Difficulty = DIFFICULTY,
               objects: Sequence[str] | None = None) -> list[WorldItem]:
    """The first ``n`` questions of POPE split ``split`` on ``ceil(n / 6)`` images (``pope_scenes``,
    keyed by ``purpose`` and ``seed``), as world items (half "yes" when ``n`` is a multiple of 6): each
    with its exact edit (a present object removed, an absent one added). The positive questions and
    their edits are the same in every split."""
    per_image = 2 * SAMPLE_NUM
    scenes = pope_scenes(-(-n // per_image), seed, purpose, strength, grid, cell, difficulty, objects)
    items = []
    for j, (scene, questions) in enumerate(zip(scenes, pope_questions(scenes, split, seed, objects))):
        for q, (obj, present) in enumerate(questions):
            # the edit's randomness (where an added object goes, its look) is the question's own
            sub = np.random.default_rng([split_code(purpose), int(seed), j, ALL_SHAPES.index(obj), 0xED17])
            d = existence_draft(scene, obj, sub, None if present else split, difficulty)
            items.append(WorldItem(id=f"{purpose}-{seed}-{split}-{j:06d}-{q}", category=EXISTENCE, kind="verify",
                                   **vars(d)))
    return items[:n]


def write_pope(root: str | Path, n_per_split: int = 300, seed: int = 0, strength: float = EXISTENCE_STRENGTH,
               splits: tuple[str, ...] = NEGATIVES, grid: int = 3, cell: int = 16, shared_images: bool = True,
               purpose: str = "pope", difficulty: Difficulty = DIFFICULTY, objects: Sequence[str] | None = None) -> dict:
    """Write one POPE file per split and its images; return the summary written to ``pope.json``.

    ``n_per_split``: questions per split, a multiple of 6 (three present and three absent objects per
    image). ``shared_images=True``: the splits ask about the same images (POPE's design). False: split k
    draws its own images (seed + k + 1), so a pool that is split into train and test for training
    (``train.py``) holds no (image, question) twice. ``objects``: ask only about these objects (the
    transfer test's disjoint object sets); None = all.
    """
    if n_per_split <= 0 or n_per_split % (2 * SAMPLE_NUM):
        raise ValueError(f"POPE analog: {n_per_split} questions per split; expected a positive multiple of "
                         f"{2 * SAMPLE_NUM} ({SAMPLE_NUM} present and {SAMPLE_NUM} absent objects per image)")
    vocab = check_objects(objects)
    root = Path(root).resolve()
    counts, files, written, seeds = {}, {}, set(), {}
    for split in splits:
        lines, yes = [], 0
        split_seed = seed if shared_images else seed + NEGATIVES.index(split) + 1
        seeds[split] = split_seed
        for k, it in enumerate(pope_items(n_per_split, split_seed, split, strength, grid, cell, purpose, difficulty,
                                          objects)):
            image = f"{purpose}-{split_seed}-{it.id.split('-')[-2]}.png"
            if image not in written:
                with atomic_path(root / "images" / image) as tmp:
                    render_pil(it.scene).save(tmp, format="PNG")
                written.add(image)
            yes += it.answer == "Yes"
            lines.append(json.dumps({"question_id": NEGATIVES.index(split) * QUESTION_ID_STRIDE + k + 1, "image": image,
                                     "text": it.question, "label": it.answer.lower(), "object": it.change["object"],
                                     "negative": it.change["negative"]}))
        name = POPE_FILE.format(split=split)
        write_text(root / name, "\n".join(lines) + "\n")
        counts[split] = {"questions": len(lines), "yes": yes, "no": len(lines) - yes}
        files[split] = name
    summary = {"benchmark": "pope", "world": "organism", "purpose": purpose, "seed": seed, "seeds": seeds,
               "strength": strength, "shared_images": shared_images, "n_per_split": n_per_split,
               "objects": list(objects) if objects else None, "grid": grid, "cell": cell,
               "difficulty": difficulty.to_dict(), "counts": counts, "files": files, "images": "images",
               "n_images": len(written), "vocabulary": list(vocab)}
    write_json(root / "pope.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="write the organism's POPE analog (POPE JSON lines + images)")
    ap.add_argument("root")
    ap.add_argument("--n", type=int, default=300, help="questions per split (a multiple of 6: 3 yes + 3 no per image)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--strength", type=float, default=EXISTENCE_STRENGTH, help="co-occurrence strength of the scenes")
    ap.add_argument("--objects", default="", help="comma-separated objects to ask about (default: all)")
    a = ap.parse_args(argv)
    objects = [o for o in a.objects.split(",") if o] or None
    print(json.dumps(write_pope(a.root, a.n, a.seed, a.strength, objects=objects), indent=1))


if __name__ == "__main__":
    main()
