"""Mechanism checks on the organism's ground truth (``vseam.organism.mechanism``) that need head
attribution and learned modulation: the per-category rank correlation between a head's attention
mass on the queried object and its positive score, and the planted-defect experiment (found by
attribution, undone by modulation)."""

from __future__ import annotations

from collections.abc import Sequence

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


def fit_modulation(adapter, heads: Sequence[tuple[int, int]], train_samples: Sequence, *, epochs: int = 8,
                   lr: float = 0.05, batch_size: int = 16, seed: int = 0, under=()) -> HeadModulation:
    """Learned modulation (scalar scale and offset per head, ``FrozenVLMModule``) of ``heads`` trained on
    ``train_samples`` with the frozen model, inside the interventions ``under`` (e.g. a planted defect)."""
    import lightning as L

    from vseam.interventions import intervene
    from vseam.modulation.module import FrozenVLMModule

    mod = HeadModulation([tuple(h) for h in heads], adapter.head_dim, scale="scalar", offset=True).to(adapter.device)
    module = FrozenVLMModule(adapter, mod, lr=lr, method="ground-truth", norm_every=0)
    loader = torch.utils.data.DataLoader(list(train_samples), batch_size=batch_size, shuffle=True,
                                         collate_fn=list, generator=torch.Generator().manual_seed(seed))
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    with intervene(adapter, *under):
        trainer.fit(module, train_dataloaders=loader)
    module.eval()
    return mod


def _accuracy(adapter, samples: Sequence, *extra) -> float:
    from vseam.interventions import intervene

    with intervene(adapter, *extra):
        return float(adapter.score(list(samples), batch_size=64).correct.float().mean())


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
    from vseam.attribution import score_heads
    from vseam.interventions import intervene

    defect = plant_defect(adapter, layer, head, strength)
    clean = _accuracy(adapter, test_samples)
    broken = _accuracy(adapter, test_samples, defect)
    with intervene(adapter, defect):
        scores = score_heads(adapter, list(score_samples or train_samples), {"progress": False}, batch_size=batch_size)
    neg = scores.negative.float().flatten() if scores.negative is not None else None
    planted = layer * adapter.num_heads + head
    rank = int((neg > neg[planted]).sum()) + 1 if neg is not None else None
    top = [[int(v) for v in divmod(int(i), adapter.num_heads)] for i in neg.argsort(descending=True)[:5]] \
        if neg is not None else []
    mod = fit_modulation(adapter, [(layer, head)], train_samples, epochs=epochs, lr=lr, batch_size=batch_size,
                         under=(defect,))
    fixed = _accuracy(adapter, test_samples, defect, mod)
    lost = clean - broken
    return {"head": [layer, head], "strength": strength, "accuracy": {"clean": clean, "defect": broken,
            "defect+learned": fixed}, "recovered": (fixed - broken) / lost if lost > 0 else None,
            "negative_rank": rank, "top_negative": top, "n_incorrect_under_defect": scores.n_incorrect,
            "n_test": len(test_samples), "n_train": len(train_samples)}


def planted_heads_experiment(planted_adapter, clean_accuracy: float, heads: Sequence[tuple[int, int]],
                             train_samples: Sequence, test_samples: Sequence, *, k: int = 6, n_random: int = 5,
                             epochs: int = 6, lr: float = 0.05, batch_size: int = 16, seed: int = 0,
                             score_samples: Sequence | None = None) -> dict:
    """On a model whose ``heads`` carry a weight-level defect (``vseam.organism.mechanism.PlantedHeads``):
    the planted heads' ranks among the negative heads (exact attribution on ``score_samples`` or
    ``train_samples``), and test accuracy with learned modulation of (a) the top-``k`` negative heads
    of that attribution, (b) the planted heads with random others to ``k`` heads, and (c) ``n_random``
    random ``k``-head sets that leave out every planted head; against the planted model and the
    clean one (``clean_accuracy``). The mechanism is there when (a) and (b) recover the accuracy and
    (c) do not."""
    import random

    from vseam.attribution import score_heads

    L_, H = planted_adapter.num_layers, planted_adapter.num_heads
    heads = [tuple(int(v) for v in h) for h in heads]
    broken = _accuracy(planted_adapter, test_samples)
    scores = score_heads(planted_adapter, list(score_samples or train_samples), {"progress": False},
                         batch_size=batch_size)
    neg = scores.negative.float().flatten() if scores.negative is not None else None
    ranks = {f"{l},{h}": int((neg > neg[l * H + h]).sum()) + 1 for l, h in heads} if neg is not None else None
    top_neg = [tuple(int(v) for v in divmod(int(i), H)) for i in neg.argsort(descending=True)[:k]] \
        if neg is not None else []
    rng = random.Random(seed)
    others = [(l, h) for l in range(L_) for h in range(H) if (l, h) not in heads]

    def run(hs):
        mod = fit_modulation(planted_adapter, hs, train_samples, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
        return {"heads": [list(h) for h in hs], "accuracy": _accuracy(planted_adapter, test_samples, mod)}

    lost = clean_accuracy - broken
    recovered = lambda acc: (acc - broken) / lost if lost > 0 else None  # noqa: E731
    with_planted = run(heads + rng.sample(others, max(0, k - len(heads))))
    key = run(top_neg) if top_neg else None
    randoms = [run(rng.sample(others, k)) for _ in range(n_random)]
    for r in [with_planted, key, *randoms]:
        if r is not None:
            r["recovered"] = recovered(r["accuracy"])
    return {"planted_heads": [list(h) for h in heads], "k": k, "negative_ranks": ranks,
            "top_negative": [list(h) for h in top_neg], "accuracy": {"clean": clean_accuracy, "planted": broken},
            "modulated": {"top_negative": key, "planted_plus_random": with_planted, "random_without_planted": randoms},
            "n_train": len(train_samples), "n_test": len(test_samples), "n_incorrect": scores.n_incorrect}
