"""Head scores for the training job: read the attribution result named in the config, or compute it on
the *train* split (so head selection never sees the test split) with the attribution engine.

Computing goes through ``vseam.attribution`` (the fast exact engine and its score math). When that
package is not importable, a direct loop over layers with the shared ``Ablate`` edit gives the same
numbers (SPEC section 2 definitions), more slowly; the result says which one ran.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from vseam.data.sample import Sample
from vseam.interventions import Ablate, intervene
from vseam.models.base import answer_stats
from vseam.modulation.cache import EmbeddingCache
from vseam.modulation.heads import HeadScores



def _ablated_probs_direct(adapter, batch, mode: str) -> torch.Tensor:
    """[B, L, H] probabilities with one head mean/zero-ablated per row (every head of a layer in one pass)."""
    L, H = adapter.num_layers, adapter.num_heads
    B = batch.target.shape[0]
    emb = batch.emb.repeat(H)  # rows b*H + h: sample b with head h ablated
    head_mask = torch.eye(H, dtype=torch.bool, device=adapter.device).repeat(B, 1)
    amask = batch.answer_mask(adapter.vocab_size).repeat_interleave(H, 0)
    out = torch.empty(B, L, H)
    for l in range(L):
        with intervene(adapter, Ablate(l, head_mask, mode=mode)):
            logits = adapter.lm_logits(emb)
        p, _, _ = answer_stats(logits, amask)
        out[:, l, :] = p.float().cpu().view(B, H)
    return out


def _score_math(prob: torch.Tensor, correct: torch.Tensor, ablated: torch.Tensor):
    try:
        from vseam.attribution.scores import head_scores

        s = head_scores(prob, correct, ablated)
        return s.positive, s.negative, s.signed, s.n_correct, s.n_incorrect
    except ImportError:
        drop = prob.double()[:, None, None] - ablated.double()
        c = correct.bool()
        n_c, n_i = int(c.sum()), int((~c).sum())
        pos = (drop[c].clamp(min=0).sum(0) / n_c).float() if n_c else None
        neg = ((-drop[~c]).clamp(min=0).sum(0) / n_i).float() if n_i else None
        return pos, neg, (drop.mean(0)).float(), n_c, n_i


@torch.no_grad()
def compute_head_scores(adapter, samples: Sequence[Sample], *, mode: str = "mean", batch_size: int = 16,
                        cache: EmbeddingCache | None = None, dataset: str = "") -> HeadScores:
    """Exact mean- (or zero-) ablation scores of every head over ``samples`` (SPEC section 2)."""
    cache = cache if cache is not None else EmbeddingCache(adapter)
    try:
        from vseam.attribution.exact import ExactEngine

        engine = ExactEngine(adapter, mode=mode)
        method = "exact (vseam.attribution.exact)"
    except ImportError:
        engine = None
        method = "exact (direct loop, vseam.modulation.attribution)"
    probs, corrects, ablated = [], [], []
    for start in range(0, len(samples), batch_size):
        batch = cache.batch(samples[start:start + batch_size])
        amask = batch.answer_mask(adapter.vocab_size)
        logits = adapter.lm_logits(batch.emb)
        p, c, _ = answer_stats(logits, amask)
        probs.append(p.float().cpu()); corrects.append(c.cpu())
        if engine is not None:
            abl, _ = engine.ablated_probs(batch.emb, amask)
        else:
            abl = _ablated_probs_direct(adapter, batch, mode)
        ablated.append(abl.float().cpu())
    prob, correct, abl = torch.cat(probs), torch.cat(corrects), torch.cat(ablated)
    pos, neg, signed, n_c, n_i = _score_math(prob, correct, abl)
    return HeadScores(adapter.num_layers, adapter.num_heads, pos, neg, signed, model=adapter.name, method=method,
                      meta={"ablation": mode, "dataset": dataset, "n": len(prob),
                            "categories": dict(sorted(Counter(str(x.category) for x in samples).items())), "n_correct": n_c,
                            "n_incorrect": n_i, "baseline_accuracy": float(correct.float().mean())})
