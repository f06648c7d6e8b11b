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
from vseam.world.questions import CATEGORIES, KINDS, generate


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
    """Batches of item indices; before step ``starts[l]`` no item of level ``l`` is drawn.

    Object questions are learned first (find one object), then attributes (find it and read it), then
    relations (find two): from scratch, all three at once sit at chance far longer.
    """

    def __init__(self, levels: list[str], starts: dict[str, int], batch_items: int, seed: int, steps: int):
        self.by_level = {lv: torch.tensor([i for i, x in enumerate(levels) if x == lv]) for lv in LEVELS}
        self.starts, self.batch_items, self.seed, self.steps = starts, batch_items, seed, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        for step in range(self.steps):
            pool = torch.cat([ix for lv, ix in self.by_level.items() if step >= self.starts.get(lv, 0) and len(ix)])
            yield pool[torch.randint(len(pool), (self.batch_items,), generator=g)].tolist()


def draw_items(n_per_category: int, seed: int, split: str, kinds=KINDS, categories=None, grid: int = 3,
               cell: int = 16):
    items = [it for c in (categories or CATEGORIES)
             for it in generate(c, n_per_category, seed=seed, kinds=tuple(kinds), grid=grid, cell=cell, split=split)]
    random.Random(seed).shuffle(items)  # mix categories so any prefix of the stream is balanced
    return items


class OrganismDataModule(L.LightningDataModule):
    def __init__(self, adapter, n_train_per_category: int = 1000, n_val_per_category: int = 50,
                 seed: int = 0, kinds=KINDS, with_edits: bool = True, batch_size: int = 64,
                 grid: int = 3, cell: int = 16, curriculum: dict[str, int] | None = None, steps: int = 10_000):
        super().__init__()
        self.curriculum, self.steps = dict(curriculum or {}), steps
        self.adapter = adapter
        self.n_train, self.n_val = n_train_per_category, n_val_per_category
        self.seed, self.kinds, self.with_edits = seed, tuple(kinds), with_edits
        self.batch_size, self.grid, self.cell = batch_size, grid, cell
        self.train_set: TensorRows | None = None
        self.val_set: TensorRows | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        # train and val come from different world seeds (and split labels): no scene is shared
        train = draw_items(self.n_train, self.seed * 1000 + 1, "train", self.kinds, grid=self.grid, cell=self.cell)
        val = draw_items(self.n_val, self.seed * 1000 + 2, "val", self.kinds, grid=self.grid, cell=self.cell)
        samples = [it.sample() for it in train]
        groups = [[i] for i in range(len(train))]
        if self.with_edits:
            samples += [it.edited_sample() for it in train]
            groups = [[i, i + len(train)] for i in range(len(train))]
        self.train_set = TensorRows(encode_samples(self.adapter, samples), groups)
        self.train_levels = [it.level for it in train]
        vt = encode_samples(self.adapter, [it.sample() for it in val])
        vt["level_index"] = torch.tensor([LEVELS.index(it.level) for it in val])
        self.val_set = TensorRows(vt, [[i] for i in range(len(val))])

    def train_dataloader(self) -> DataLoader:
        per_item = 2 if self.with_edits else 1
        sampler = CurriculumBatches(self.train_levels, self.curriculum, max(1, self.batch_size // per_item),
                                    self.seed, self.steps)
        return DataLoader(self.train_set, batch_sampler=sampler, collate_fn=self.train_set.collate)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=256, shuffle=False, collate_fn=self.val_set.collate)
