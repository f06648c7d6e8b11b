"""The reference head-ablation algorithm, written the slow way on purpose.

For each head (l, h), for each sample: preprocess the image and prompt, run the whole model (vision
tower included) with that one head mean- (or zero-) ablated, take the full logits and read the last
position. This is what the original V-SEAM scripts do; here it is the test oracle of the fast exact
engine and the baseline of ``benchmarks/attribution_speed.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vseam.data.sample import Sample
from vseam.interventions import Ablate, intervene
from vseam.models.base import VLMAdapter, answer_stats


def _full_forward_prob(adapter: VLMAdapter, sample: Sample, *edits) -> tuple[float, bool]:
    enc = adapter.encode([sample]).to(adapter.device)
    with intervene(adapter, *edits):
        logits = adapter.model(**adapter.model_inputs(enc), use_cache=False).logits[:, -1]
    p, c, _ = answer_stats(logits, enc.answer_mask(logits.shape[-1]), enc.correct_mask(logits.shape[-1]))
    return float(p[0]), bool(c[0])


@torch.no_grad()
def reference_baseline(adapter: VLMAdapter, samples: Sequence[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample baseline (prob [N], correct [N]) by one full forward per sample."""
    res = [_full_forward_prob(adapter, s) for s in samples]
    return torch.tensor([r[0] for r in res]), torch.tensor([r[1] for r in res])


@torch.no_grad()
def reference_ablated_probs(adapter: VLMAdapter, samples: Sequence[Sample], mode: str = "mean",
                            heads: Sequence[tuple[int, int]] | None = None) -> torch.Tensor:
    """``p_abl`` [N, L, H]: one full forward per (head, sample); NaN for heads not in ``heads``."""
    L, H = adapter.num_layers, adapter.num_heads
    heads = [(l, h) for l in range(L) for h in range(H)] if heads is None else list(heads)
    out = torch.full((len(samples), L, H), float("nan"))
    for l, h in heads:
        for i, s in enumerate(samples):
            out[i, l, h] = _full_forward_prob(adapter, s, Ablate(l, [h], mode=mode))[0]
    return out
