"""Questions about organism scenes at three semantic levels, each with an exact answer-flipping edit.

Six categories, two per level, with the roles of the real seed data: object (Shape, Icon), attribute
(Color, Texture), relation (Horizontal, Vertical). Each item is one scene, one question (yes/no
"verify" or single-word "query"), and an edited scene in which only the queried concept changed, so
the gold answer changes by construction. Items are balanced by answer within each category and kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vseam.data.sample import EditRecord, Sample
from vseam.world.scene import (
    ALL_SHAPES, BY_FREQUENCY, COLORS, ICONS, PARTNER, SHAPES, TEXTURES, Obj, Scene, random_scene, render_pil,
)

CATEGORIES = {  # category -> semantic level: the six GQA-style categories of the written world
    "Shape": "object",
    "Icon": "object",
    "Color": "attribute",
    "Texture": "attribute",
    "Horizontal": "relation",
    "Vertical": "relation",
}
# The POPE analog: "Is there a {object} in the image?" on co-occurrence scenes. It is its own benchmark
# (vseam.world.pope writes it in POPE's format), as POPE is beside GQA, and part of the training world.
EXISTENCE = "Existence"
CATEGORY_LEVELS = {**CATEGORIES, EXISTENCE: "object"}  # every category an item can have
KINDS = ("verify", "query")  # yes/no, single word
CATEGORY_KINDS = {c: KINDS for c in CATEGORIES} | {EXISTENCE: ("verify",)}  # kinds a category has
NEGATIVES = ("random", "popular", "adversarial")  # POPE's ways to draw the absent object of a "No" question
EXISTENCE_STRENGTH = 0.75  # co-occurrence strength of Existence scenes unless a caller sets one
_TYPES_SEMANTIC = {"object": "obj", "attribute": "attr", "relation": "rel"}
_MAX_TRIES = 1000


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

def _object(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None, **_) -> Draft:
    vocab = SHAPES if category == "Shape" else ICONS
    if kind == "verify":
        target = vocab[(slot // 2) % len(vocab)]
        present = slot % 2 == 0
        for _ in range(_MAX_TRIES):
            scene = random_scene(rng, grid, cell, cooccur=cooccur)
            idx = scene.find(target)
            if present and idx is None:
                # put the target in place of a random object, keeping its colour, texture and cell
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
            scene = random_scene(rng, grid, cell, cooccur=cooccur)
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

def _attribute(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None, **_) -> Draft:
    attr, vocab = ("color", tuple(COLORS)) if category == "Color" else ("texture", TEXTURES)
    scene = random_scene(rng, grid, cell, cooccur=cooccur)
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


def _rel_phrase(word: str) -> str:
    return f"{word} of" if word in ("left", "right") else word


def _relation(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None, **_) -> Draft:
    axis, lo, hi = _REL[category]
    other = "row" if axis == "col" else "col"
    for _ in range(_MAX_TRIES):
        scene = random_scene(rng, grid, cell, cooccur=cooccur)
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

def negative_object(scene: Scene, negative: str, rng: np.random.Generator) -> str | None:
    """The absent object a "No" question asks about, drawn as POPE does: ``random`` (any absent
    object), ``popular`` (the most frequent absent object), ``adversarial`` (the absent partner of a
    present object: the object that co-occurs most with what is there). None when there is none."""
    present = {o.shape for o in scene.objects}
    absent = [s for s in ALL_SHAPES if s not in present]
    if negative == "random":
        return _pick(rng, absent) if absent else None
    if negative == "popular":
        return next((s for s in BY_FREQUENCY if s not in present), None)
    if negative == "adversarial":
        partners = [PARTNER[o.shape] for o in scene.objects if PARTNER[o.shape] not in present]
        return _pick(rng, partners) if partners else None
    raise ValueError(f"negative={negative!r}: expected one of {NEGATIVES}")


def lonely(scene: Scene) -> list[int]:
    """Indices of the objects whose usual partner is not in the scene."""
    present = {o.shape for o in scene.objects}
    return [i for i, o in enumerate(scene.objects) if PARTNER[o.shape] not in present]


def _existence(rng, category: str, kind: str, slot: int, grid: int, cell: int, cooccur=None,
               negative: str = "random", prior: float = 0.0, **_) -> Draft:
    """"Is there a {object} in the image?" on a co-occurrence scene with at least one object whose
    partner is absent (so every negative kind exists); the scene does not depend on ``negative``, so
    the three POPE splits of one seed ask about the same images, as POPE's do.

    ``prior`` > 0 (training worlds only): with this probability a question about the absent partner of
    a present object is answered "Yes", the usual scene rather than the image (as answers written from
    captions and co-occurrence statistics are); its edit then removes the present partner (-> "No").
    """
    strength = EXISTENCE_STRENGTH if cooccur is None else cooccur
    for _ in range(_MAX_TRIES):
        scene = random_scene(rng, grid, cell, cooccur=strength)
        if lonely(scene) and len(scene.objects) < grid * grid:
            break
    else:
        raise RuntimeError("could not draw an Existence scene with an object whose partner is absent")
    present = slot % 2 == 0
    pick = rng.integers(1 << 30)  # one draw either way: the scene stream is the same for every split
    sub = np.random.default_rng([int(pick)])
    program_for = lambda t: [{"operation": "select", "dependencies": [], "argument": t},  # noqa: E731
                             {"operation": "exist", "dependencies": [0], "argument": ""}]
    if present:
        idx = int(sub.integers(len(scene.objects)))
        o = scene.objects[idx]
        target = o.shape
        edited = replace_objects(scene, [j for j in range(len(scene.objects)) if j != idx])
        change = {"what": "existence", "object": target, "from": "present", "to": "absent", "negative": None}
        edited_answer = "No"
        # the prior labels every training question whose object is absent and whose partner is there,
        # the edited side of a pair included: otherwise these edits ("remove the star" next to its circle
        # -> "No") outnumber the primed questions and the model learns no co-occurrence bias at all
        if prior > 0 and edited.find(PARTNER[target]) is not None and sub.random() < prior:
            edited_answer, change = "Yes", {**change, "prior_edit": True}
        return Draft(scene=scene, question=f"Is there a {target} in the image?", answer="Yes", edited_scene=edited,
                     edited_answer=edited_answer, involved=[idx], mask_cells=[(o.row, o.col)], change=change,
                     edit_prompt=f"remove the {target}", program=program_for(target))
    target = negative_object(scene, negative, sub)
    if target is None:  # popular / random always find one (at most 4 of 8 objects are present)
        raise RuntimeError(f"no {negative} negative in a scene of {[o.shape for o in scene.objects]}")
    partner_idx = scene.find(PARTNER[target])
    if prior > 0 and partner_idx is not None and sub.random() < prior:
        p = scene.objects[partner_idx]
        edited = replace_objects(scene, [j for j in range(len(scene.objects)) if j != partner_idx])
        return Draft(scene=scene, question=f"Is there a {target} in the image?", answer="Yes", edited_scene=edited,
                     edited_answer="No", involved=[partner_idx], mask_cells=[(p.row, p.col)],
                     change={"what": "existence", "object": target, "from": "prior", "to": "absent",
                             "negative": negative, "prior": True},
                     edit_prompt=f"remove the {p.shape}", program=program_for(target))
    free = [(r, c) for r in range(grid) for c in range(grid) if (r, c) not in scene.occupied()]
    r, c = free[int(sub.integers(len(free)))]
    colors = list(COLORS)
    new = Obj(shape=target, color=colors[int(sub.integers(len(colors)))],
              texture=TEXTURES[int(sub.integers(len(TEXTURES)))], row=r, col=c)
    edited = Scene(objects=scene.objects + (new,), background=scene.background, grid=grid, cell=cell)
    return Draft(scene=scene, question=f"Is there a {target} in the image?", answer="No", edited_scene=edited,
                 edited_answer="Yes", involved=[], mask_cells=[(r, c)],
                 change={"what": "existence", "object": target, "from": "absent", "to": "present",
                         "negative": negative},
                 edit_prompt=f"add a {target}", program=program_for(target))


def replace_objects(scene: Scene, keep: list[int]) -> Scene:
    return Scene(objects=tuple(scene.objects[j] for j in keep), background=scene.background, grid=scene.grid,
                 cell=scene.cell)


_BUILDERS = {"object": _object, "attribute": _attribute, "relation": _relation}


def make_item(category: str, kind: str, slot: int, seed: int, index: int, grid: int = 3, cell: int = 16,
              split: str = "all", cooccur: float | None = None, negative: str = "random",
              prior: float = 0.0) -> WorldItem:
    """One item; ``slot`` picks the answer class (cycled for balance), the rng is keyed by (seed, ...).

    ``cooccur``: co-occurrence strength of the scene (None: independent shapes; Existence: its own
    ``EXISTENCE_STRENGTH``); ``negative`` and ``prior``: Existence only (see ``_existence``).
    """
    if category not in CATEGORY_LEVELS:
        raise ValueError(f"unknown organism category {category!r}; known: {list(CATEGORY_LEVELS)}")
    if kind not in CATEGORY_KINDS[category]:
        raise ValueError(f"question kind {kind!r} for {category}; known: {CATEGORY_KINDS[category]}")
    if negative not in NEGATIVES:
        raise ValueError(f"negative={negative!r}: expected one of {NEGATIVES}")
    if not 0.0 <= float(prior) <= 1.0:
        raise ValueError(f"prior={prior!r}: expected a probability in [0, 1]")
    key = [seed, list(CATEGORY_LEVELS).index(category), KINDS.index(kind), index]
    rng = np.random.default_rng(key)
    build = _existence if category == EXISTENCE else _BUILDERS[CATEGORIES[category]]
    d = build(rng, category, kind, slot, grid, cell, cooccur=cooccur, negative=negative, prior=prior)
    return WorldItem(id=f"{split}-{seed}-{category}-{kind}-{index:06d}", category=category, kind=kind, **vars(d))


def generate(category: str, n: int, seed: int = 0, kinds: tuple[str, ...] = KINDS, grid: int = 3, cell: int = 16,
             split: str = "all", start: int = 0, cooccur: float | None = None, negative: str = "random",
             prior: float = 0.0) -> list[WorldItem]:
    """``n`` items of one category, kinds interleaved, balanced by answer within each kind.

    Deterministic in (seed, category, kind, index); ``start`` continues a stream (index offset) so
    disjoint ranges of one seed give disjoint, reproducible sets. Kinds the category does not have
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
                               prior=prior))
    return items


def answer_vocabulary() -> list[str]:
    """Every answer the world can ask for (for tokenizer training and answer-space checks)."""
    return ["Yes", "No", *ALL_SHAPES, *COLORS, *TEXTURES, "left", "right", "above", "below"]
