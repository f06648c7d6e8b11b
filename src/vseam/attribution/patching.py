"""Attribution patching: a first-order estimate of every head's ablation effect from one forward and
one backward pass per batch.

For head (l, h) of sample i the change of a metric m is estimated as
``sum_{t, d} (z'_{t,h,d} - z_{t,h,d}) * dm/dz_{t,h,d}``, where ``z`` is the clean ``o_proj`` input of
layer l, ``z'`` the ablated one (mean of the other heads, or zero) and the gradient is read by the
zero probe of ``vseam.interventions.Read(grad=True)``. Two choices of m (``space``):

- ``prob``: m = p, the answer probability; ``p_abl ~= p + estimate``.
- ``logodds``: m = log(p / (1 - p)), computed stably from the logits as logsumexp(answer logits) -
  logsumexp(other logits); ``p_abl ~= sigmoid(m + estimate)``. Same cost. A confident model (p near
  0 or 1) has a vanishing dp/dz although ablating a head can still move p a lot; in log-odds the
  gradient does not vanish and the sigmoid puts the saturation back. On the trained organism this
  is the difference between a useful and a useless ranking (see benchmarks/attribution_speed.py).

The estimated ``p_abl`` feeds the same score math as the exact engine.
"""

from __future__ import annotations

import torch

from vseam.interventions import Read, intervene
from vseam.models.base import Embedded, VLMAdapter, answer_stats

SPACES = ("logodds", "prob")


def ablation_delta(z: torch.Tensor, mode: str) -> torch.Tensor:
    """``z' - z`` for every head at once: z [B, T, H, D] -> [B, T, H, D] (as ``Ablate`` replaces)."""
    if mode == "zero":
        return -z
    if mode != "mean":
        raise ValueError(f"ablation {mode!r}: expected 'mean' or 'zero'")
    H = z.shape[2]
    return (z.sum(2, keepdim=True) - z) / (H - 1) - z


def answer_log_odds(logits: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of the summed answer probability, [B], stable for p near 0 and 1."""
    logits = logits.float()
    neg_inf = torch.finfo(logits.dtype).min
    ans = logits.masked_fill(~answer_mask, neg_inf).logsumexp(-1)
    other = logits.masked_fill(answer_mask, neg_inf).logsumexp(-1)
    return ans - other


def first_order(adapter: VLMAdapter, emb: Embedded, answer_mask: torch.Tensor, mode: str = "mean",
                space: str = "logodds") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(metric [B], first-order metric change per head [B, L, H], prob [B], correct [B]) on the CPU.

    The batch's metrics are summed before the backward pass; samples do not interact in the model,
    so each sample's gradient is its own.
    """
    if space not in SPACES:
        raise ValueError(f"attribution space {space!r}: expected one of {SPACES}")
    L = adapter.num_layers
    answer_mask = answer_mask.to(adapter.device)
    with torch.enable_grad(), intervene(adapter, Read(grad=True)) as cache:
        logits = adapter.lm_logits(emb)
        prob, correct, _ = answer_stats(logits, answer_mask)
        metric = prob if space == "prob" else answer_log_odds(logits, answer_mask)
        metric.sum().backward()
    est = []
    with torch.no_grad():
        for l in range(L):
            z = cache[l].detach().float()
            g = cache.grad(l).float()
            est.append((ablation_delta(z, mode) * g).sum(dim=(1, 3)))  # [B, H]
    return (metric.detach().float().cpu(), torch.stack(est, 1).cpu(), prob.detach().float().cpu(),
            correct.cpu())


def estimated_ablated_probs(adapter: VLMAdapter, emb: Embedded, answer_mask: torch.Tensor, mode: str = "mean",
                            space: str = "logodds") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimated ``p_abl`` [B, L, H] (float32), clean prob [B] and clean correctness [B]."""
    metric, delta, prob, correct = first_order(adapter, emb, answer_mask, mode, space)
    if space == "prob":
        return prob[:, None, None] + delta, prob, correct
    lo = metric.double()[:, None, None]
    # p + (sigmoid(lo + delta) - sigmoid(lo)): no change where the estimate is zero, exactly
    change = torch.sigmoid(lo + delta.double()) - torch.sigmoid(lo)
    return (prob.double()[:, None, None] + change).float(), prob, correct
