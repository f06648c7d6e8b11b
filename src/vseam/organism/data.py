"""DataModule of the organism world: train / val items drawn by seed, encoded once, served as tensors.

Each training batch holds minimal pairs: a question on its clean scene and the same question on the
edited scene (only the queried concept changed, the answer flipped), so every gradient step contrasts
exactly the visual difference that decides the answer.
"""

from __future__ import annotations

import random

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from vseam.organism.encode import encode_samples
from vseam.organism.module import LEVELS
from vseam.world.questions import CATEGORIES, EXISTENCE, KINDS, NEGATIVES, cell_distance, generate
from vseam.world.scene import DIFFICULTY, Difficulty

TRAINING_CATEGORIES = (*CATEGORIES, EXISTENCE)  # the organism learns the world's nine categories and existence
TRAIN_SPLIT, VAL_SPLIT = "organism-train", "organism-val"  # what the build's items are for (part of their identity)


class TensorRows(Dataset):
    """Rows of a dict of equally long tensors; an index may select several rows (a minimal pair)."""

    def __init__(self, tensors: dict[str, torch.Tensor], groups: list[list[int]]):
        self.tensors, self.groups = tensors, groups

    def __len__(self) -> int:
        return len(self.groups)

    def __getitem__(self, i: int) -> list[int]:
        return self.groups[i]

    def collate(self, items: list[list[int]]) -> dict[str, torch.Tensor]:
        idx = torch.tensor([j for group in items for j in group])
        return {k: v[idx] for k, v in self.tensors.items()}


class CurriculumBatches(Sampler):
    """Batches of item indices; before step ``starts[l]`` no item of level ``l`` is drawn, and before
    step ``hard_from`` no item flagged in ``hard`` (one whose queried objects are of weak visual
    evidence: ``weak_item``).

    Object questions are learned first (find one object), then attributes (find it and read it), then
    relations (find two): from scratch, all three at once sit at chance far longer. Clear pictures come
    before faint and small objects for the same reason.
    """

    def __init__(self, levels: list[str], starts: dict[str, int], batch_items: int, seed: int, steps: int,
                 hard: list[bool] | None = None, hard_from: int = 0):
        hard = hard if hard is not None else [False] * len(levels)
        self.groups = [(starts.get(lv, 0) if not h else max(starts.get(lv, 0), hard_from),
                        torch.tensor([i for i, (x, y) in enumerate(zip(levels, hard)) if x == lv and y == h]))
                       for lv in LEVELS for h in (False, True)]
        self.batch_items, self.seed, self.steps = batch_items, seed, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for step in range(self.steps):
            pool = torch.cat([ix for start, ix in self.groups if step >= start and len(ix)])
            yield pool[torch.randint(len(pool), (self.batch_items,), generator=g)].tolist()


def weak_item(item) -> bool:
    """Whether a question is about an object of weak visual evidence (faint or small, on either side of
    its edit): what the curriculum holds back until ``hard_from``."""
    objs = [item.scene.objects[i] for i in item.involved]
    if item.category == EXISTENCE:
        for scene in (item.scene, item.edited_scene):
            idx = scene.find(item.change["object"])
            if idx is not None:
                objs.append(scene.objects[idx])
    return any(o.weak for o in objs)


def cell_targets(tokenizer, scenes) -> torch.Tensor:
    """[N, grid*grid] token ids: the shape word of each cell in row-major (patch) order, <pad> if empty."""
    out = torch.full((len(scenes), scenes[0].grid ** 2), tokenizer.pad_token_id, dtype=torch.long)
    ids = {}
    for n, scene in enumerate(scenes):
        for o in scene.objects:
            if o.shape not in ids:
                ids[o.shape] = tokenizer(o.shape, add_special_tokens=False)["input_ids"][0]
            out[n, o.row * scene.grid + o.col] = ids[o.shape]
    return out


def cell_attributes(scenes) -> torch.Tensor:
    """[N, grid*grid, 3]: colour, texture and size index of each cell's object (row-major), -100 if empty."""
    from vseam.world.scene import COLORS, SIZES, TEXTURES

    colors, sizes = list(COLORS), list(SIZES)
    out = torch.full((len(scenes), scenes[0].grid ** 2, 3), -100, dtype=torch.long)
    for n, scene in enumerate(scenes):
        for o in scene.objects:
            out[n, o.row * scene.grid + o.col] = torch.tensor([colors.index(o.color), TEXTURES.index(o.texture),
                                                               sizes.index(o.size)])
    return out


AXIS_WORDS = {"Horizontal": ("left", "middle", "right"), "Vertical": ("top", "middle", "bottom")}


def key_words_and_targets(item, edited: bool = False) -> list[tuple[str, str]]:
    """The question words where lookups happen, and what each lookup should find in the scene.

    Attribute: at the shape word, its colour / texture / size, and (verify) at the asked value, the
    answer. Object: at the shape word, whether it is
    there (verify); at the colour word, the shape of that colour (query). Relation: at the first shape
    word, where it is (its column / row); at the second, where the first is relative to it (Distance:
    near or far). For query questions the last lookup is the answer itself; for verify questions the
    last position still has to compare it with the asked value.
    """
    scene = item.edited_scene if edited else item.scene
    objs = scene.objects
    if item.category == EXISTENCE:  # at the object word, the answer (a training prior included)
        return [(item.change["object"], item.edited_answer if edited else item.answer)]
    if item.level == "object":
        if item.kind == "verify":
            word = item.question.split()[-1].rstrip("?")
            return [(word, "Yes" if scene.find(word) is not None else "No")]
        color = item.question.split()[-2]
        return [(color, next(o.shape for o in objs if o.color == color))]
    if item.level == "attribute":
        o = objs[item.involved[0]]
        found = (o.shape, {"Color": o.color, "Texture": o.texture, "Size": o.size}[item.category])
        if item.kind == "verify":  # the asked value comes last ("Is the heart red?"): the comparison there
            return [found, (item.question.split()[-1].rstrip("?"), item.edited_answer if edited else item.answer)]
        return [found]
    a, b = objs[item.involved[0]], objs[item.involved[1]]
    if item.category == "Distance":
        return [(a.shape, AXIS_WORDS["Horizontal"][a.col * 2 // max(1, scene.grid - 1)]),
                (b.shape, cell_distance(a, b))]
    axis = "col" if item.category == "Horizontal" else "row"
    where = AXIS_WORDS[item.category][getattr(a, axis) * 2 // max(1, scene.grid - 1)]  # 3 bins along the axis
    if item.category == "Horizontal":
        return [(a.shape, where), (b.shape, "left" if a.col < b.col else "right")]
    return [(a.shape, where), (b.shape, "above" if a.row < b.row else "below")]


MAX_KEYS = 2


def key_targets(tokenizer, input_ids: torch.Tensor, keys: list[list[tuple[str, str]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, MAX_KEYS] columns of the key words in each row (their last occurrence) and the target token
    ids there; unused slots have target -100 (ignored by the loss)."""
    first = {}

    def tid(w: str) -> int:
        if w not in first:
            first[w] = tokenizer(w, add_special_tokens=False)["input_ids"][0]
        return first[w]

    pos = torch.zeros(len(keys), MAX_KEYS, dtype=torch.long)
    tgt = torch.full((len(keys), MAX_KEYS), -100, dtype=torch.long)
    for n, pairs in enumerate(keys):
        for k, (word, target) in enumerate(pairs):
            hits = (input_ids[n] == tid(word)).nonzero()
            if len(hits) == 0:
                raise ValueError(f"row {n}: the key word {word!r} is not a token of the question")
            pos[n, k], tgt[n, k] = hits[-1, 0], tid(target)
    return pos, tgt


def draw_items(n_per_category: int, seed: int, split: str, kinds=KINDS, categories=None, grid: int = 3,
               cell: int = 16, cooccur: float | None = None, existence_prior: float = 0.0, weak_recall: float = 1.0,
               difficulty: Difficulty = DIFFICULTY, existence_weight: int = 1):
    """World items of every category. ``cooccur``: co-occurrence strength of every scene (None: shapes
    independent; Existence scenes always follow their own strength unless this is set). Existence
    items take their negatives from each of POPE's kinds in turn (random, popular, adversarial, in
    disjoint index ranges), ``existence_weight`` times as many as the other categories, and
    ``existence_prior`` / ``weak_recall`` make their answers a caption's (see
    ``vseam.world.questions.caption_answer``)."""
    items = []
    for c in (categories or TRAINING_CATEGORIES):
        if c == EXISTENCE:
            n_exist = n_per_category * existence_weight
            parts = [n_exist // len(NEGATIVES) + (i < n_exist % len(NEGATIVES)) for i in range(len(NEGATIVES))]
            start = 0
            for neg, n in zip(NEGATIVES, parts):
                items += generate(c, n, seed=seed, kinds=tuple(kinds), grid=grid, cell=cell, split=split,
                                  start=start, cooccur=cooccur, negative=neg, prior=existence_prior,
                                  weak_recall=weak_recall, difficulty=difficulty)
                start += n
            continue
        items += generate(c, n_per_category, seed=seed, kinds=tuple(kinds), grid=grid, cell=cell, split=split,
                          cooccur=cooccur, difficulty=difficulty)
    random.Random(seed).shuffle(items)  # mix categories so any prefix of the stream is balanced
    return items


class OrganismDataModule(L.LightningDataModule):
    def __init__(self, adapter, n_train_per_category: int = 1000, n_val_per_category: int = 50,
                 seed: int = 0, kinds=KINDS, with_edits: bool = True, batch_size: int = 64,
                 grid: int = 3, cell: int = 16, curriculum: dict[str, int] | None = None, steps: int = 10_000,
                 cooccur: float | None = None, existence_prior: float = 0.0, weak_recall: float = 1.0,
                 difficulty: Difficulty = DIFFICULTY, hard_from: int = 0, existence_weight: int = 1):
        super().__init__()
        self.hard_from, self.existence_weight = hard_from, existence_weight
        self.cooccur, self.existence_prior, self.weak_recall = cooccur, existence_prior, weak_recall
        self.difficulty = difficulty
        self.curriculum, self.steps = dict(curriculum or {}), steps
        self.adapter = adapter
        self.n_train, self.n_val = n_train_per_category, n_val_per_category
        self.seed, self.kinds, self.with_edits = seed, tuple(kinds), with_edits
        self.batch_size, self.grid, self.cell = batch_size, grid, cell
        self.train_set: TensorRows | None = None
        self.val_set: TensorRows | None = None

    def worlds(self) -> list[dict]:
        """What the build trains and selects on (``training.json``): split, seed and size of each world,
        enough to regenerate every item (``draw_items`` with these settings)."""
        common = {"categories": list(TRAINING_CATEGORIES), "kinds": list(self.kinds), "grid": self.grid,
                  "cell": self.cell, "cooccur": self.cooccur, "difficulty": self.difficulty.to_dict(),
                  "with_edits": self.with_edits}
        return [{"split": TRAIN_SPLIT, "seed": self.seed * 1000 + 1, "n_per_category": self.n_train,
                 "existence_prior": self.existence_prior, "weak_recall": self.weak_recall,
                 "existence_weight": self.existence_weight, **common},
                {"split": VAL_SPLIT, "seed": self.seed * 1000 + 2, "n_per_category": self.n_val,
                 "existence_prior": 0.0, "weak_recall": 1.0, "existence_weight": 1, **common}]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train_world, val_world = self.worlds()
        # train and val come from different splits and seeds: no scene is shared
        train = draw_items(self.n_train, train_world["seed"], TRAIN_SPLIT, self.kinds, grid=self.grid, cell=self.cell,
                           cooccur=self.cooccur, existence_prior=self.existence_prior, weak_recall=self.weak_recall,
                           difficulty=self.difficulty, existence_weight=self.existence_weight)
        # validation answers are the image's (no caption prior): model selection sees what the test measures
        val = draw_items(self.n_val, val_world["seed"], VAL_SPLIT, self.kinds, grid=self.grid, cell=self.cell,
                         cooccur=self.cooccur, difficulty=self.difficulty)
        samples = [it.sample() for it in train]
        groups = [[i] for i in range(len(train))]
        if self.with_edits:
            samples += [it.edited_sample() for it in train]
            groups = [[i, i + len(train)] for i in range(len(train))]
        tensors = encode_samples(self.adapter, samples)
        scenes = [it.scene for it in train] + ([it.edited_scene for it in train] if self.with_edits else [])
        tensors["cell_target"] = cell_targets(self.adapter.tokenizer, scenes)
        tensors["cell_attr"] = cell_attributes(scenes)
        pairs = [key_words_and_targets(it) for it in train]
        if self.with_edits:
            pairs += [key_words_and_targets(it, edited=True) for it in train]
        tensors["key_pos"], tensors["key_target"] = key_targets(self.adapter.tokenizer, tensors["input_ids"], pairs)
        self.train_set = TensorRows(tensors, groups)
        self.train_levels = [it.level for it in train]
        self.train_hard = [weak_item(it) for it in train]
        vt = encode_samples(self.adapter, [it.sample() for it in val])
        vt["level_index"] = torch.tensor([LEVELS.index(it.level) for it in val])
        self.val_set = TensorRows(vt, [[i] for i in range(len(val))])

    def train_dataloader(self) -> DataLoader:
        per_item = 2 if self.with_edits else 1
        sampler = CurriculumBatches(self.train_levels, self.curriculum, max(1, self.batch_size // per_item),
                                    self.seed, self.steps, hard=self.train_hard, hard_from=self.hard_from)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=self.train_set.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256, shuffle=False, collate_fn=self.val_set.collate)
