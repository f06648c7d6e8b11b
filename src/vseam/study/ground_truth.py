"""Mechanism checks on the organism's ground truth (``vseam.organism.mechanism``) that need head
attribution and learned modulation: the per-category rank correlation between a head's attention
mass on the queried object and its positive score, and the planted-defect experiment (found by
attribution, undone by modulation)."""

from __future__ import annotations

from typing import Sequence

import torch

from vseam.interventions import HeadModulation
from vseam.organism.mechanism import attention_mass, plant_defect
from vseam.stats import spearman


def mass_score_correlation(adapter, items: Sequence, batch_size: int = 16) -> dict[str, dict]:
    """Per category of ``items``: Spearman correlation over the L x H heads between the mean attention
    mass (last position -> the queried object's image tokens) and the exact positive head score, with
    the counts behind both. A category whose items have no such tokens is reported with rho None."""
    from collections import defaultdict

    from vseam.attribution import score_heads


    by_cat: dict[str, list] = defaultdict(list)
    for it in items:
        by_cat[it.category].append(it)
    out = {}
    for cat, its in sorted(by_cat.items()):
        mass, keep = attention_mass(adapter, its)
        scores = score_heads(adapter, [it.sample() for it in its], {"progress": False}, batch_size=batch_size)
        entry = {"n": len(its), "n_with_object_tokens": len(keep), "n_correct": scores.n_correct}
        if not keep or scores.positive is None:
            out[cat] = {**entry, "spearman": None}
            continue
        mean_mass = mass.mean(0)
        out[cat] = {**entry, "spearman": spearman(mean_mass, scores.positive.float()),
                    "top_mass_head": [int(v) for v in divmod(int(mean_mass.argmax()), adapter.num_heads)],
                    "top_positive_head": [int(v) for v in divmod(int(scores.positive.float().argmax()),
                                                                  adapter.num_heads)]}
    return out


def defect_experiment(adapter, train_samples: Sequence, test_samples: Sequence, layer: int, head: int,
                      strength: float, epochs: int = 8, lr: float = 0.05, batch_size: int = 16,
                      score_samples: Sequence | None = None) -> dict:
    """Plant a "Yes" bias on head (layer, head), then check that head attribution finds it and that
    learned modulation (``HeadModulation`` on that head, trained by ``FrozenVLMModule`` on
    ``train_samples`` with the defect in place) undoes what it cost on ``test_samples``.

    Returns accuracies clean / with the defect / with the defect and the learned modulation, the
    share of the loss recovered, the planted head's rank among the negative heads (1 = first) and
    the top negative heads.
    """
    import lightning as L

    from vseam.attribution import score_heads
    from vseam.interventions import intervene
    from vseam.modulation.module import FrozenVLMModule

    def acc(extra=()):
        with intervene(adapter, *extra):
            return float(adapter.score(list(test_samples), batch_size=64).correct.float().mean())

    defect = plant_defect(adapter, layer, head, strength)
    clean = acc()
    with intervene(adapter, defect):
        broken = float(adapter.score(list(test_samples), batch_size=64).correct.float().mean())
        scores = score_heads(adapter, list(score_samples or train_samples), {"progress": False}, batch_size=batch_size)
    neg = scores.negative.float().flatten() if scores.negative is not None else None
    planted = layer * adapter.num_heads + head
    rank = int((neg > neg[planted]).sum()) + 1 if neg is not None else None
    top = [[int(v) for v in divmod(int(i), adapter.num_heads)] for i in neg.argsort(descending=True)[:5]] \
        if neg is not None else []

    mod = HeadModulation([(layer, head)], adapter.head_dim, scale="scalar", offset=True).to(adapter.device)
    module = FrozenVLMModule(adapter, mod, lr=lr, method="defect", norm_every=0)
    loader = torch.utils.data.DataLoader(list(train_samples), batch_size=batch_size, shuffle=True,
                                         collate_fn=list, generator=torch.Generator().manual_seed(0))
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with intervene(adapter, defect):
        trainer.fit(module, train_dataloaders=loader)
        module.eval()
        with intervene(adapter, mod):
            fixed = float(adapter.score(list(test_samples), batch_size=64).correct.float().mean())
    lost = clean - broken
    return {"head": [layer, head], "strength": strength, "accuracy": {"clean": clean, "defect": broken,
            "defect+learned": fixed}, "recovered": (fixed - broken) / lost if lost > 0 else None,
            "negative_rank": rank, "top_negative": top, "n_incorrect_under_defect": scores.n_incorrect,
            "n_test": len(test_samples), "n_train": len(train_samples)}
