"""The training job's DataModule: one pool of samples (organism, GQA-style, POPE, COCO-QA) split once,
by a seed, into train / val / test. The test split is never used to fit or choose anything.

Batches are lists of ``Sample``; the module turns them into cached language-model inputs. The train
loader always uses a ``DistributedSampler`` (one replica when not distributed) so that a run on N
processes sees exactly the same global batches as a run on one process.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence

import lightning as L
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from vseam.data.sample import MissingImageError, Sample, load_image

SPLITS = ("train", "val", "test")


class SampleList(Dataset):
    def __init__(self, samples: Sequence[Sample]):
        self.samples = list(samples)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]


def _collate(batch: list[Sample]) -> list[Sample]:
    return batch


def split_samples(samples: Sequence[Sample], val_fraction: float, test_fraction: float,
                  seed: int) -> dict[str, list[Sample]]:
    """Split stratified by category (each category keeps its share in every split), deterministic in ``seed``."""
    if not (0 <= val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"split fractions val={val_fraction}, test={test_fraction} must be in [0, 1) and sum below 1")
    by_cat: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_cat[str(s.category)].append(s)
    rng = random.Random(int(seed))
    out = {k: [] for k in SPLITS}
    for cat in sorted(by_cat):
        group = sorted(by_cat[cat], key=lambda s: s.id)
        rng.shuffle(group)
        n = len(group)
        n_test = max(1, round(n * test_fraction)) if n >= 3 else 0
        n_val = max(1, round(n * val_fraction)) if n >= 3 and val_fraction > 0 else 0
        out["test"] += group[:n_test]
        out["val"] += group[n_test:n_test + n_val]
        out["train"] += group[n_test + n_val:]
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        raise ValueError("sample ids are not unique; the embedding cache and the splits key on them")
    return out


def readable(samples: Sequence[Sample]) -> tuple[list[Sample], list[dict]]:
    """Samples whose image opens, and the skipped ones with their reason (a counted skip, never a 0.0)."""
    kept, skipped = [], []
    for s in samples:
        try:
            load_image(s)
        except MissingImageError as e:
            skipped.append({"id": s.id, "reason": str(e)})
            continue
        kept.append(s)
    return kept, skipped


class ModulationDataModule(L.LightningDataModule):
    """Train / val / test loaders over fixed splits (see ``split_samples``)."""

    def __init__(self, splits: dict[str, list[Sample]], batch_size: int = 16, num_workers: int = 0, seed: int = 0,
                 eval_batch_size: int | None = None):
        super().__init__()
        missing = [k for k in ("train", "val") if not splits.get(k)]
        if missing:
            raise ValueError(f"the {missing} split(s) are empty: too few samples for the chosen fractions")
        self.splits = splits
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)

    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # a list of Samples: the module's embedding cache puts tensors on the model's device

    def _world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 1, 0
        return int(trainer.world_size), int(trainer.global_rank)

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        ds = SampleList(self.splits[split])
        world, rank = self._world()
        # Always a DistributedSampler: its permutation depends only on (seed, epoch), so one process
        # and N processes draw the same global batches (Trainer: use_distributed_sampler=False).
        sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=shuffle, seed=self.seed)
        return DataLoader(ds, batch_size=batch_size, sampler=sampler, collate_fn=_collate,
                          num_workers=self.num_workers)

    def train_dataloader(self) -> DataLoader:
        world, rank = self._world()
        if self.batch_size % world:
            raise ValueError(f"data.batch_size={self.batch_size} (global) is not divisible by {world} processes")
        n = len(self.splits["train"])
        if n % world and rank == 0:
            # what it changes, measured: docs/guides/train.md#determinism-ddp-and-resuming
            print(f"note: {n} training samples over {world} processes: the DistributedSampler pads them to "
                  f"{n + world - n % world}, so the last batch of every epoch repeats {world - n % world} sample(s) "
                  f"and training is not bit-identical to one process (a train split divisible by {world} is)",
                  flush=True)
        return self._loader("train", True, self.batch_size // world)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)
