"""Questions about organism scenes at three semantic levels, each with an exact answer-flipping edit.

Nine categories, three per level, with the roles of the real seed data: object (Shape, Icon, Symbol:
three object vocabularies), attribute (Color, Texture, Size), relation (Horizontal, Vertical,
Distance). Each item is one scene, one question (yes/no "verify" or single-word "query"), and an
edited scene in which only the queried concept changed, so the gold answer changes by construction.
Items are balanced by answer within each category and kind.

An item's identity includes what it is for (``split``: the organism's own training, validation and
test, a POPE analog, an evaluation world, ...): its random stream is keyed by (split, seed, category,
kind, index), so two splits never draw the same stream whatever their seeds, and an evaluation world
cannot hold an organism training item.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field, replace

import numpy as np

from vseam.data.sample import EditRecord, Sample
from vseam.world.scene import (
    ALL_SHAPES,
    BY_FREQUENCY,
    COLORS,
    DIFFICULTY,
    PARTNERS,
    SIZES,
    TEXTURES,
    VOCABULARIES,
    Difficulty,
    Obj,
    Scene,
    draw_look,
    random_scene,
    render_pil,
)

CATEGORIES = {  # category -> semantic level: the nine GQA-style categories of the written world
    "Shape": "object",
    "Icon": "object",
    "Symbol": "object",
    "Color": "attribute",
    "Texture": "attribute",
    "Size": "attribute",
    "Horizontal": "relation",
    "Vertical": "relation",
    "Distance": "relation",
}
# The POPE analog: "Is there a {object} in the image?" on co-occurrence scenes. It is its own benchmark
# (vseam.world.pope writes it in POPE's format), as POPE is beside GQA, and part of the training world.
EXISTENCE = "Existence"
CATEGORY_LEVELS = {**CATEGORIES, EXISTENCE: "object"}  # every category an item can have
KINDS = ("verify", "query")  # yes/no, single word
CATEGORY_KINDS = {c: KINDS for c in CATEGORIES} | {EXISTENCE: ("verify",)}  # kinds a category has
NEGATIVES = ("random", "popular", "adversarial")  # POPE's ways to draw the absent object of a "No" question
EXISTENCE_STRENGTH = 0.5  # co-occurrence strength of Existence scenes unless a caller sets one
_TYPES_SEMANTIC = {"object": "obj", "attribute": "attr", "relation": "rel"}
_MAX_TRIES = 1000

# What an item is for. The organism's build draws only the ``organism-*`` splits; a world written for a
# data config (``data.world_split``) draws ``train`` / ``val`` / ``test``; its POPE analog ``pope``.
ORGANISM_SPLITS = ("organism-train", "organism-val", "organism-test", "organism-pope")
WORLD_SPLITS = ("train", "val", "test")


def split_code(split: str) -> int:
    """The number that keys ``split``'s random streams (a stable hash of its name: CRC-32)."""
    return zlib.crc32(str(split).encode("utf-8"))


# no two named splits share a stream key (a CRC-32 collision among them would be caught here)
assert len({split_code(s) for s in (*ORGANISM_SPLITS, *WORLD_SPLITS, "pope")}) == len(ORGANISM_SPLITS) + len(WORLD_SPLITS) + 1


@dataclass
class Draft:
    """What a builder (``_object``, ``_attribute``, ``_relation``, ``_existence``) draws: the parts of a
    ``WorldItem`` that depend on the scene; ``make_item`` adds the id, category and kind."""

    question: str
    answer: str
    scene: Scene
    edited_scene: Scene
    edited_answer: str
    involved: list[int]  # indices of the queried objects in scene.objects (target first)
    mask_cells: list[tuple[int, int]]  # (row, col) of every cell the edit changed
    change: dict
    edit_prompt: str
    program: list[dict] = field(default_factory=list)  # GQA-style semantic program


@dataclass(kw_only=True)
class WorldItem(Draft):
    """A question about a scene and its exact counterfactual (only the queried concept changed)."""

    id: str
    category: str
    kind: str

    @property
    def level(self) -> str:
        return CATEGORY_LEVELS[self.category]

    @property
    def mask_boxes(self) -> list[list[int]]:
        return [[b["x"], b["y"], b["w"], b["h"]] for b in (self.scene.box(r, c) for r, c in self.mask_cells)]

    def sample(self, image_path: str | None = None) -> Sample:
        return Sample(id=self.id, question=self.question, answer=self.answer, image_path=image_path,
                      benchmark="organism", category=self.category, level=self.level,
                      meta={"kind": self.kind}, image=None if image_path else render_pil(self.scene))

    def edited_sample(self, image_path: str | None = None) -> Sample:
        return Sample(id=f"{self.id}@edit", question=self.question, answer=self.edited_answer,
                      image_path=image_path, benchmark="organism", category=self.category, level=self.level,
                      meta={"kind": self.kind}, image=None if image_path else render_pil(self.edited_scene))

    def gqa_record(self) -> dict:
        """The item as a GQA-style annotation record (fields of the real seed files, plus our own)."""
        objs = self.scene.objects
        return {
            "question_id": self.id,
            "imageId": self.id,
            "question": self.question,
            "answer": self.answer,
            "types": {"semantic": _TYPES_SEMANTIC[self.level], "structural": self.kind,
                      "detailed": f"{self.category.lower()}{self.kind.capitalize()}"},
            "semantic": self.program,
            "involved_objects": [objs[i].shape for i in self.involved],
            "object_positions": [self.scene.box(objs[i].row, objs[i].col) for i in self.involved],
            "category": self.category,
            "level": self.level,
            "benchmark": "organism",
            "scene": self.scene.to_dict(),
            "edit": {"edited_answer": self.edited_answer, "change": self.change, "mask": self.mask_boxes,
                     "edit_prompt": self.edit_prompt},
        }

    def edit_record(self, image: str, edited_image: str) -> EditRecord:
        return EditRecord(id=self.id, question=self.question, answer=self.answer, image=image,
                          edited_image=edited_image, edit_prompt=self.edit_prompt,
                          edited_answer=self.edited_answer, mask=self.mask_boxes, level=self.level,
                          category=self.category, change=self.change, benchmark="organism")


def _yn(b: bool) -> str:
    return "Yes" if b else "No"


def _pick(rng: np.random.Generator, options) -> str:
    options = list(options)
    return options[int(rng.integers(len(options)))]


def _sel(shape: str, i: int) -> dict:
    return {"operation": "select", "dependencies": [], "argument": f"{shape} ({i})"}


# --- object level ---------------------------------------------------------------------------------

def _object(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None,
            difficulty: Difficulty = DIFFICULTY, **_) -> Draft:
    vocab = VOCABULARIES[category]
    if kind == "verify":
        target = vocab[(slot // 2) % len(vocab)]
        present = slot % 2 == 0
        for _ in range(_MAX_TRIES):
            scene = random_scene(rng, grid, cell, cooccur=cooccur, difficulty=difficulty)
            idx = scene.find(target)
            if present and idx is None:
                # put the target in place of a random object, keeping its look and cell
                idx = int(rng.integers(len(scene.objects)))
                scene = scene.with_object(idx, shape=target)
            if not present and idx is not None:
                continue
            if present:
                free = [s for s in vocab if scene.find(s) is None]
                if not free:
                    continue
                new = _pick(rng, free)
            else:
                idx = int(rng.integers(len(scene.objects)))
                new = target
            old = scene.objects[idx].shape
            edited = scene.with_object(idx, shape=new)
            o = scene.objects[idx]
            q = f"Is there a {target}?"
            program = [{"operation": "select", "dependencies": [], "argument": target},
                       {"operation": "exist", "dependencies": [0], "argument": ""}]
            return Draft(scene=scene, question=q, answer=_yn(present), edited_scene=edited,
                         edited_answer=_yn(not present), involved=[idx], mask_cells=[(o.row, o.col)],
                         change={"what": "object", "from": old, "to": new},
                         edit_prompt=f"replace the {old} with a {new}", program=program)
    else:
        target = vocab[slot % len(vocab)]
        for _ in range(_MAX_TRIES):
            scene = random_scene(rng, grid, cell, cooccur=cooccur, difficulty=difficulty)
            idx = scene.find(target)
            if idx is None:
                idx = int(rng.integers(len(scene.objects)))
                scene = scene.with_object(idx, shape=target)
            color = scene.objects[idx].color
            if any(o.color == color for j, o in enumerate(scene.objects) if j != idx):
                continue  # the question names the object by its colour, which must be unique
            free = [s for s in vocab if scene.find(s) is None]
            if not free:
                continue
            new = _pick(rng, free)
            edited = scene.with_object(idx, shape=new)
            o = scene.objects[idx]
            q = f"What shape is the {color} object?"
            program = [{"operation": "filter color", "dependencies": [], "argument": color},
                       {"operation": "query", "dependencies": [0], "argument": "name"}]
            return Draft(scene=scene, question=q, answer=target, edited_scene=edited, edited_answer=new,
                         involved=[idx], mask_cells=[(o.row, o.col)],
                         change={"what": "object", "from": target, "to": new},
                         edit_prompt=f"replace the {target} with a {new}", program=program)
    raise RuntimeError(f"could not build a {category}/{kind} item")


# --- attribute level ------------------------------------------------------------------------------

_ATTRIBUTES = {"Color": ("color", tuple(COLORS)), "Texture": ("texture", TEXTURES), "Size": ("size", tuple(SIZES))}


def _attribute(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None,
               difficulty: Difficulty = DIFFICULTY, **_) -> Draft:
    attr, vocab = _ATTRIBUTES[category]
    scene = random_scene(rng, grid, cell, cooccur=cooccur, difficulty=difficulty)
    idx = int(rng.integers(len(scene.objects)))
    o = scene.objects[idx]
    if kind == "verify":
        asked = vocab[(slot // 2) % len(vocab)]
        holds = slot % 2 == 0
        cur = asked if holds else _pick(rng, [v for v in vocab if v != asked])
        scene = scene.with_object(idx, **{attr: cur})
        new = _pick(rng, [v for v in vocab if v != asked]) if holds else asked
        q = f"Is the {o.shape} {asked}?"
        answer, edited_answer = _yn(holds), _yn(not holds)
        program = [_sel(o.shape, idx), {"operation": f"verify {attr}", "dependencies": [0], "argument": asked}]
    else:
        cur = vocab[slot % len(vocab)]
        scene = scene.with_object(idx, **{attr: cur})
        new = _pick(rng, [v for v in vocab if v != cur])
        q = f"What {attr} is the {o.shape}?"
        answer, edited_answer = cur, new
        program = [_sel(o.shape, idx), {"operation": "query", "dependencies": [0], "argument": attr}]
    edited = scene.with_object(idx, **{attr: new})
    return Draft(scene=scene, question=q, answer=answer, edited_scene=edited, edited_answer=edited_answer,
                 involved=[idx], mask_cells=[(o.row, o.col)],
                 change={"what": attr, "object": o.shape, "from": cur, "to": new},
                 edit_prompt=f"make the {o.shape} {new} instead of {cur}", program=program)


# --- relation level -------------------------------------------------------------------------------

_REL = {  # category -> (axis attribute, word for "smaller coordinate", word for "larger coordinate")
    "Horizontal": ("col", "left", "right"),
    "Vertical": ("row", "above", "below"),
}
DISTANCE_WORDS = ("near", "far")  # neighbouring cells (diagonals included) / two cells apart


def _rel_phrase(word: str) -> str:
    return f"{word} of" if word in ("left", "right") else word


def cell_distance(a: Obj, b: Obj) -> str:
    """"near" when the two objects' cells touch (diagonally included), else "far"."""
    return "near" if max(abs(a.row - b.row), abs(a.col - b.col)) <= 1 else "far"


def _distance(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None,
              difficulty: Difficulty = DIFFICULTY, **_) -> Draft:
    for _ in range(_MAX_TRIES):
        scene = random_scene(rng, grid, cell, cooccur=cooccur, difficulty=difficulty)
        ia, ib = (int(v) for v in rng.choice(len(scene.objects), size=2, replace=False))
        a, b = scene.objects[ia], scene.objects[ib]
        now = cell_distance(a, b)
        if kind == "verify":
            word = DISTANCE_WORDS[(slot // 2) % 2]
            want = slot % 2 == 0  # balanced answers for each word
            if (word == now) != want:
                continue
        elif (now == "near") != (slot % 2 == 0):
            continue
        # move a or b to a free cell on the other side of the near / far line: only the distance class
        # is asked, and only the mover's two cells change
        occupied = scene.occupied()
        moves = []
        for mover, fixed in ((ia, b), (ib, a)):
            for r in range(grid):
                for c in range(grid):
                    if (r, c) in occupied:
                        continue
                    if cell_distance(Obj("", "", "", r, c), fixed) != now:
                        moves.append((mover, r, c))
        if not moves:
            continue
        mover, r_new, c_new = moves[int(rng.integers(len(moves)))]
        edited = scene.with_object(mover, row=r_new, col=c_new)
        old_o, new_o = scene.objects[mover], edited.objects[mover]
        new = cell_distance(edited.objects[ia], edited.objects[ib])
        if kind == "verify":
            q = f"Is the {a.shape} {'near' if word == 'near' else 'far from'} the {b.shape}?"
            answer, edited_answer = _yn(word == now), _yn(word == new)
        else:
            q = f"Is the {a.shape} near or far from the {b.shape}?"
            answer, edited_answer = now, new
        program = [_sel(a.shape, ia), _sel(b.shape, ib),
                   {"operation": "choose rel" if kind == "query" else "verify rel", "dependencies": [0, 1],
                    "argument": "near|far" if kind == "query" else word}]
        change = {"what": "relation", "object": a.shape, "reference": b.shape, "from": now, "to": new,
                  "moved": old_o.shape, "moved_from": [old_o.row, old_o.col], "moved_to": [new_o.row, new_o.col]}
        other = b.shape if mover == ia else a.shape
        prompt = f"move the {old_o.shape} {'away from' if new == 'far' else 'next to'} the {other}"
        return Draft(scene=scene, question=q, answer=answer, edited_scene=edited, edited_answer=edited_answer,
                     involved=[ia, ib], mask_cells=[(old_o.row, old_o.col), (new_o.row, new_o.col)], change=change,
                     edit_prompt=prompt, program=program)
    raise RuntimeError(f"could not build a {category}/{kind} item")


def _relation(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None,
              difficulty: Difficulty = DIFFICULTY, **_) -> Draft:
    if category == "Distance":
        return _distance(rng, category, kind, slot, grid, cell, cooccur=cooccur, difficulty=difficulty)
    axis, lo, hi = _REL[category]
    other = "row" if axis == "col" else "col"
    for _ in range(_MAX_TRIES):
        scene = random_scene(rng, grid, cell, cooccur=cooccur, difficulty=difficulty)
        ia, ib = (int(v) for v in rng.choice(len(scene.objects), size=2, replace=False))
        a, b = scene.objects[ia], scene.objects[ib]
        pa, pb = getattr(a, axis), getattr(b, axis)
        if pa == pb:
            continue
        is_lo = pa < pb  # a is left of / above b
        if kind == "verify":
            word = (lo, hi)[(slot // 2) % 2]
            want = slot % 2 == 0  # balanced answers for each relation word
            if (word == lo) != (is_lo == want):
                continue
        else:
            if is_lo != (slot % 2 == 0):
                continue
        # move a or b along the axis to the other side of the other one, keeping its other coordinate:
        # only this relation changes (the relation along the other axis stays as it was). Moving
        # either one keeps both positions informative (moving only a would pin b to the middle).
        occupied = scene.occupied()
        moves = []
        for mover, fixed_pos in ((ia, pb), (ib, pa)):
            o = scene.objects[mover]
            mover_is_lo = getattr(o, axis) < fixed_pos
            for p in range(grid):
                if (p > fixed_pos) if mover_is_lo else (p < fixed_pos):
                    cell_rc = (getattr(o, other), p) if axis == "col" else (p, getattr(o, other))
                    if cell_rc not in occupied:
                        moves.append((mover, p))
        if not moves:
            continue
        mover, p_new = moves[int(rng.integers(len(moves)))]
        edited = scene.with_object(mover, **{axis: p_new})
        old_o, new_o = scene.objects[mover], edited.objects[mover]
        cells = [(old_o.row, old_o.col), (new_o.row, new_o.col)]
        rel_now, rel_new = (lo, hi) if is_lo else (hi, lo)
        if kind == "verify":
            q = f"Is the {a.shape} {_rel_phrase(word)} the {b.shape}?"
            answer, edited_answer = _yn(word == rel_now), _yn(word == rel_new)
            program = [_sel(b.shape, ib), {"operation": "relate", "dependencies": [0],
                                           "argument": f"{a.shape},{_rel_phrase(word)},s ({ia})"},
                       {"operation": "exist", "dependencies": [1], "argument": ""}]
        else:
            q = f"Is the {a.shape} {lo} or {_rel_phrase(hi)} the {b.shape}?"
            answer, edited_answer = rel_now, rel_new
            program = [_sel(a.shape, ia), _sel(b.shape, ib),
                       {"operation": "choose rel", "dependencies": [0, 1], "argument": f"{lo}|{hi}"}]
        change = {"what": "relation", "object": a.shape, "reference": b.shape, "from": rel_now, "to": rel_new,
                  "moved": old_o.shape, "moved_from": [old_o.row, old_o.col], "moved_to": [new_o.row, new_o.col]}
        if mover == ia:
            prompt = f"move the {a.shape} {_rel_phrase(rel_new)} the {b.shape}"
        else:
            prompt = f"move the {b.shape} {_rel_phrase(rel_now)} the {a.shape}"
        return Draft(scene=scene, question=q, answer=answer, edited_scene=edited, edited_answer=edited_answer,
                     involved=[ia, ib], mask_cells=cells, change=change, edit_prompt=prompt, program=program)
    raise RuntimeError(f"could not build a {category}/{kind} item")


# --- existence (the POPE analog) -----------------------------------------------------------------

def cooccurrence_rank(obj: str) -> tuple[str, ...]:
    """The other objects by how often they appear with ``obj`` in co-occurrence scenes, most first: its
    group partners, then the rest by frequency."""
    return PARTNERS[obj] + tuple(o for o in BY_FREQUENCY if o != obj and o not in PARTNERS[obj])


def negative_object(scene: Scene, negative: str, rng: np.random.Generator) -> str | None:
    """The absent object a "No" question asks about: ``random`` (any absent object), ``popular`` (the
    most frequent absent object), ``adversarial`` (an absent partner of a present object: what co-occurs
    most with what is there). None when there is none. (The POPE files draw theirs per image, by POPE's
    own rules over the sampled images: ``vseam.world.pope``.)"""
    present = {o.shape for o in scene.objects}
    absent = [s for s in ALL_SHAPES if s not in present]
    if negative == "random":
        return _pick(rng, absent) if absent else None
    if negative == "popular":
        return next((s for s in BY_FREQUENCY if s not in present), None)
    if negative == "adversarial":
        partners = sorted({p for o in scene.objects for p in PARTNERS[o.shape] if p not in present},
                          key=BY_FREQUENCY.index)
        return _pick(rng, partners) if partners else None
    raise ValueError(f"negative={negative!r}: expected one of {NEGATIVES}")


def lonely(scene: Scene) -> list[int]:
    """Indices of the objects none of whose usual partners is in the scene."""
    present = {o.shape for o in scene.objects}
    return [i for i, o in enumerate(scene.objects) if not any(p in present for p in PARTNERS[o.shape])]


def caption_answer(scene: Scene, obj: str, draws: tuple[float, float], prior: float, weak_recall: float) -> str:
    """Whether a caption-like annotation says ``obj`` is in ``scene`` (training answers of Existence).

    A clearly visible object is named. One of weak visual evidence (``Obj.weak``: faint or small) is
    named with probability ``weak_recall``; an object not named that way (absent, or weak and
    overlooked) is named with probability ``prior`` when one of its usual partners is in the scene: the
    annotator writes the usual scene, not the image. ``draws``: two uniform numbers, the item's own (so
    a scene and its edit are annotated with the same ones).
    """
    idx = scene.find(obj)
    if idx is not None and (not scene.objects[idx].weak or draws[0] < weak_recall):
        return "Yes"
    if draws[1] < prior and any(scene.find(p) is not None for p in PARTNERS[obj]):
        return "Yes"
    return "No"


def existence_scene(rng: np.random.Generator, grid: int, cell: int, strength: float, difficulty: Difficulty,
                    n_min: int = 3, n_max: int = 5) -> Scene:
    """A co-occurrence scene of ``n_min``-``n_max`` objects (as the POPE analog's) with an absent partner
    of a present object (so every negative kind exists) and a free cell (so an absent object can be added)."""
    for _ in range(_MAX_TRIES):
        scene = random_scene(rng, grid, cell, n_min=n_min, n_max=n_max, cooccur=strength, difficulty=difficulty)
        present = {o.shape for o in scene.objects}
        if len(scene.objects) < grid * grid and any(p not in present for o in scene.objects for p in PARTNERS[o.shape]):
            return scene
    raise RuntimeError("could not draw an Existence scene with an absent partner of a present object")


def remove_object(scene: Scene, obj: str) -> Scene:
    return scene.with_objects(o for o in scene.objects if o.shape != obj)


def add_object(scene: Scene, obj: str, rng: np.random.Generator, difficulty: Difficulty) -> tuple[Scene, tuple[int, int]]:
    """``scene`` with ``obj`` added in a random free cell (its look drawn from ``difficulty``)."""
    free = [(r, c) for r in range(scene.grid) for c in range(scene.grid) if (r, c) not in scene.occupied()]
    if not free:
        raise ValueError(f"no free cell to add a {obj} to")
    r, c = free[int(rng.integers(len(free)))]
    return scene.with_objects(scene.objects + (Obj(shape=obj, row=r, col=c, **draw_look(rng, difficulty)),)), (r, c)


def existence_draft(scene: Scene, target: str, sub: np.random.Generator, negative: str | None,
                    difficulty: Difficulty, prior: float = 0.0, weak_recall: float = 1.0) -> Draft:
    """"Is there a {target} in the image?" on ``scene``; its edit removes the target when it is there
    and adds it (in a free cell) when not. Answers are the image's, unless ``prior`` > 0 or
    ``weak_recall`` < 1 (training worlds only): then both sides are answered as a caption would
    (``caption_answer``), which makes the model hallucinate the usual partner."""
    draws = (float(sub.random()), float(sub.random()))  # drawn either way: the same stream for every setting
    idx = scene.find(target)
    program = [{"operation": "select", "dependencies": [], "argument": target},
               {"operation": "exist", "dependencies": [0], "argument": ""}]
    if idx is not None:
        o = scene.objects[idx]
        edited, cell_rc = remove_object(scene, target), (o.row, o.col)
        change = {"what": "existence", "object": target, "from": "present", "to": "absent", "negative": None}
        prompt = f"remove the {target}"
    else:
        edited, cell_rc = add_object(scene, target, sub, difficulty)
        change = {"what": "existence", "object": target, "from": "absent", "to": "present", "negative": negative}
        prompt = f"add a {target}"
    answer, edited_answer = _yn(idx is not None), _yn(idx is None)
    if prior > 0 or weak_recall < 1:
        answer = caption_answer(scene, target, draws, prior, weak_recall)
        edited_answer = caption_answer(edited, target, draws, prior, weak_recall)
        if (answer, edited_answer) != (_yn(idx is not None), _yn(idx is None)):
            change = {**change, "captioned": True}
    return Draft(scene=scene, question=f"Is there a {target} in the image?", answer=answer, edited_scene=edited,
                 edited_answer=edited_answer, involved=[] if idx is None else [idx], mask_cells=[cell_rc],
                 change=change, edit_prompt=prompt, program=program)


def _existence(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None,
               negative: str = "random", prior: float = 0.0, weak_recall: float = 1.0,
               difficulty: Difficulty = DIFFICULTY, **_) -> Draft:
    """"Is there a {object} in the image?" on a co-occurrence scene (``existence_scene``): about a
    present object (even slots) or an absent one drawn by ``negative`` (odd slots)."""
    strength = EXISTENCE_STRENGTH if cooccur is None else cooccur
    scene = existence_scene(rng, grid, cell, strength, difficulty)
    sub = np.random.default_rng([int(rng.integers(1 << 30))])
    if slot % 2 == 0:
        target = scene.objects[int(sub.integers(len(scene.objects)))].shape
        negative = None
    else:
        target = negative_object(scene, negative, sub)
        if target is None:  # every kind finds one in an existence_scene
            raise RuntimeError(f"no {negative} negative in a scene of {[o.shape for o in scene.objects]}")
    return existence_draft(scene, target, sub, negative, difficulty, prior=prior, weak_recall=weak_recall)


_BUILDERS = {"object": _object, "attribute": _attribute, "relation": _relation}


def make_item(category: str, kind: str, slot: int, seed: int, index: int, grid: int = 3, cell: int = 16,
              split: str = "test", cooccur: float | None = None, negative: str = "random",
              prior: float = 0.0, weak_recall: float = 1.0, difficulty: Difficulty = DIFFICULTY) -> WorldItem:
    """One item; ``slot`` picks the answer class (cycled for balance), the rng is keyed by
    (split, seed, category, kind, index): an item is what it is for, whatever the seed.

    ``cooccur``: co-occurrence strength of the scene (None: independent shapes; Existence: its own
    ``EXISTENCE_STRENGTH``); ``negative``, ``prior`` and ``weak_recall``: Existence only (see
    ``existence_draft``); ``difficulty``: how hard the pictures are (``vseam.world.scene.Difficulty``).
    """
    if category not in CATEGORY_LEVELS:
        raise ValueError(f"unknown organism category {category!r}; known: {list(CATEGORY_LEVELS)}")
    if kind not in CATEGORY_KINDS[category]:
        raise ValueError(f"question kind {kind!r} for {category}; known: {CATEGORY_KINDS[category]}")
    if negative not in NEGATIVES:
        raise ValueError(f"negative={negative!r}: expected one of {NEGATIVES}")
    for name, value in (("prior", prior), ("weak_recall", weak_recall)):
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError(f"{name}={value!r}: expected a probability in [0, 1]")
    key = [split_code(split), seed, list(CATEGORY_LEVELS).index(category), KINDS.index(kind), index]
    rng = np.random.default_rng(key)
    build = _existence if category == EXISTENCE else _BUILDERS[CATEGORIES[category]]
    d = build(rng, category, kind, slot, grid, cell, cooccur=cooccur, negative=negative, prior=prior,
              weak_recall=weak_recall, difficulty=difficulty)
    level = CATEGORY_LEVELS[category]
    hard = difficulty.hard[list(_TYPES_SEMANTIC).index(level)] if category != EXISTENCE else 0.0
    if hard > 0:  # a stream of its own: the item is the same as without the knob, but for its contrast
        hr = np.random.default_rng([*key, 0x4A2D])
        if hr.random() < hard:
            lo, hi = difficulty.contrast
            faint = {i: round(float(hr.uniform(lo, hi)), 3) for i in d.involved}
            fade = lambda sc: sc.with_objects(replace(o, contrast=faint[i]) if i in faint else o  # noqa: E731
                                              for i, o in enumerate(sc.objects))
            d.scene, d.edited_scene = fade(d.scene), fade(d.edited_scene)
    return WorldItem(id=f"{split}-{seed}-{category}-{kind}-{index:06d}", category=category, kind=kind, **vars(d))


def generate(category: str, n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, grid: int = 3, cell: int = 16,
             split: str = "test", start: int = 0, cooccur: float | None = None, negative: str = "random",
             prior: float = 0.0, weak_recall: float = 1.0, difficulty: Difficulty = DIFFICULTY) -> list[WorldItem]:
    """``n`` items of one category, kinds interleaved, balanced by answer within each kind.

    Deterministic in (split, seed, category, kind, index); ``start`` continues a stream (index offset)
    so disjoint ranges of one seed give disjoint, reproducible sets. Kinds the category does not have
    are left out (Existence is yes/no only); none left is an error.
    """
    kinds = tuple(k for k in kinds if k in CATEGORY_KINDS[category]) if category in CATEGORY_KINDS else tuple(kinds)
    if not kinds:
        raise ValueError(f"{category}: none of the requested kinds; it has {CATEGORY_KINDS[category]}")
    items = []
    for i in range(start, start + n):
        kind = kinds[i % len(kinds)]
        j = i // len(kinds)  # running index within this kind: answers cycle through it
        items.append(make_item(category, kind, j, seed, j, grid, cell, split, cooccur=cooccur, negative=negative,
                               prior=prior, weak_recall=weak_recall, difficulty=difficulty))
    return items


def answer_vocabulary() -> list[str]:
    """Every answer the world can ask for (for tokenizer training and answer-space checks)."""
    return ["Yes", "No", *ALL_SHAPES, *COLORS, *TEXTURES, *SIZES, "left", "right", "above", "below",
            *DISTANCE_WORDS]
