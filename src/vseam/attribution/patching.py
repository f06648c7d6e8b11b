"""Attribution patching: a first-order estimate of every head's ablation effect from one forward and
one backward pass per batch.

For head (l, h) of sample i, ``p_abl - p ~= sum_{t, d} (z'_{t,h,d} - z_{t,h,d}) * dp/dz_{t,h,d}`` where
``z`` is the clean ``o_proj`` input of layer l, ``z'`` the ablated one (mean of the other heads, or
zero) and the gradient is read by the zero probe of ``vseam.interventions.Read(grad=True)``. The
estimated ``p_abl`` feeds the same score math as the exact engine.
"""

from __future__ import annotations

import torch

from vseam.interventions import Read, intervene
from vseam.models.base import Embedded, VLMAdapter, answer_stats


def ablation_delta(z: torch.Tensor, mode: str) -> torch.Tensor:
    """``z' - z`` for every head at once: z [B, T, H, D] -> [B, T, H, D] (as ``Ablate`` replaces)."""
    if mode == "zero":
        return -z
    if mode != "mean":
        raise ValueError(f"ablation {mode!r}: expected 'mean' or 'zero'")
    H = z.shape[2]
    return (z.sum(2, keepdim=True) - z) / (H - 1) - z


def estimated_ablated_probs(adapter: VLMAdapter, emb: Embedded, answer_mask: torch.Tensor,
                            mode: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimated ``p_abl`` [B, L, H] (float32), clean prob [B] and clean correctness [B].

    The batch's probabilities are summed before the backward pass; samples do not interact in the
    model, so each sample's gradient is its own.
    """
    L = adapter.num_layers
    with torch.enable_grad(), intervene(adapter, Read(grad=True)) as cache:
        logits = adapter.lm_logits(emb)
        prob, correct, _ = answer_stats(logits, answer_mask.to(logits.device))
        prob.sum().backward()
    est = []
    with torch.no_grad():
        for l in range(L):
            z = cache[l].detach().float()
            g = cache.grad(l).float()
            est.append((ablation_delta(z, mode) * g).sum(dim=(1, 3)))  # [B, H]
    delta = torch.stack(est, 1).cpu()  # [B, L, H]
    prob = prob.detach().float().cpu()
    return prob[:, None, None] + delta, prob, correct.cpu()
