"""Head scores for the training job: read the attribution result named in the config, or compute it on
the *train* split (so head selection never sees the test split) with the attribution engine.

Computing goes through ``vseam.attribution`` (the fast exact engine and its score math).
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from vseam.attribution.exact import ExactEngine
from vseam.attribution.scores import head_scores
from vseam.data.sample import Sample
from vseam.models.base import answer_stats
from vseam.modulation.cache import EmbeddingCache
from vseam.modulation.heads import HeadScores


@torch.no_grad()
def compute_head_scores(adapter, samples: Sequence[Sample], *, mode: str = "mean", batch_size: int = 16,
                        cache: EmbeddingCache | None = None, dataset: str = "") -> HeadScores:
    """Exact mean- (or zero-) ablation scores of every head over ``samples`` (SPEC section 2)."""
    cache = cache if cache is not None else EmbeddingCache(adapter)
    engine = ExactEngine(adapter, mode=mode)
    method = "exact (vseam.attribution.exact)"
    probs, corrects, ablated = [], [], []
    for start in range(0, len(samples), batch_size):
        batch = cache.batch(samples[start:start + batch_size])
        amask = batch.answer_mask(adapter.vocab_size)
        abl, logits = engine.ablated_probs(batch.emb, amask)
        p, c, _ = answer_stats(logits, amask)
        probs.append(p.float().cpu()); corrects.append(c.cpu())
        ablated.append(abl.float().cpu())
    prob, correct, abl = torch.cat(probs), torch.cat(corrects), torch.cat(ablated)
    sc = head_scores(prob, correct, abl)
    n_c, n_i = sc.n_correct, sc.n_incorrect
    return HeadScores(adapter.num_layers, adapter.num_heads, sc.positive, sc.negative, sc.signed,
                      model=adapter.name, method=method,
                      meta={"ablation": mode, "dataset": dataset, "n": len(prob),
                            "categories": dict(sorted(Counter(str(x.category) for x in samples).items())), "n_correct": n_c,
                            "n_incorrect": n_i, "baseline_accuracy": float(correct.float().mean())})
