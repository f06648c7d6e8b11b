"""Attribution patching: a first-order estimate of every head's ablation effect from one forward and
one backward pass per batch.

Every head (l, h) gets an ablation strength ``s[l, h]`` (``Ablate(strength=...)``, the one
intervention mechanism): ``z <- z + s * (z' - z)``, where ``z`` is the ``o_proj`` input of layer l
and ``z'`` its ablated value (mean of the other heads, or zero). ``s = 0`` is the clean model,
``s[l, h] = 1`` alone is the exact single-head ablation. The estimate of the change of a metric m
when head (l, h) is ablated is the derivative ``dm/ds[l, h]`` (one backward pass gives all L x H),
taken at the point where every head has strength ``alpha``:

- ``alpha = 0`` (default): classic attribution patching, the gradient at the clean run:
  ``sum_{t, d} (z'_{t,h,d} - z_{t,h,d}) * dm/dz_{t,h,d}``.
- ``alpha = 0.5``: the midpoint rule of ``integral_0^1 dm/ds[l, h] ds`` along the path on which all
  heads are ablated together, one point (integrated gradients with one step). Same cost plus one
  clean forward without gradients. Where a single head's ablation is a large, non-linear change (a
  small model whose few heads each carry much: the organism) the gradient at the clean point misses
  it and the midpoint finds it; where single heads are small perturbations of a deep model (32 x 32
  heads), half-ablating every head moves the model far from where single ablations land and the
  clean gradient is the better estimate. ``benchmarks/attribution_speed.py`` measures both.

Two choices of m (``space``):

- ``prob``: m = p, the answer probability; ``p_abl ~= p + estimate``.
- ``logodds``: m = log(p / (1 - p)), computed stably from the logits as logsumexp(answer logits) -
  logsumexp(other logits); ``p_abl ~= sigmoid(m + estimate)``. Same cost. A confident model (p near
  0 or 1) has a vanishing dp/dz although ablating a head can still move p a lot; in log-odds the
  gradient does not vanish and the sigmoid puts the saturation back.

The estimated ``p_abl`` feeds the same score math as the exact engine.
"""

from __future__ import annotations

import torch

from vseam.interventions import Ablate, intervene
from vseam.models.base import Embedded, VLMAdapter, answer_stats
from vseam.validate import ATP_SPACES

SPACES = ATP_SPACES  # the choices of attribution.atp_space (vseam.validate holds every key's choices)


def answer_log_odds(logits: torch.Tensor, answer_mask: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) of the summed answer probability, [B], stable for p near 0 and 1."""
    logits = logits.float()
    neg_inf = torch.finfo(logits.dtype).min
    ans = logits.masked_fill(~answer_mask, neg_inf).logsumexp(-1)
    other = logits.masked_fill(answer_mask, neg_inf).logsumexp(-1)
    return ans - other


def check_alpha(alpha) -> float:
    """``alpha`` as a float, or a ValueError naming the config key when it is outside [0, 1)."""
    alpha = float(alpha)
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"attribution.atp_alpha={alpha}: expected 0 <= alpha < 1 (0 = classic attribution "
                         "patching at the clean run, 0.5 = midpoint of the all-heads ablation path)")
    return alpha


def _metric(logits: torch.Tensor, answer_mask: torch.Tensor, space: str, correct_mask: torch.Tensor | None = None):
    prob, correct, _ = answer_stats(logits, answer_mask, correct_mask)
    return (prob if space == "prob" else answer_log_odds(logits, answer_mask)), prob, correct


def first_order(adapter: VLMAdapter, emb: Embedded, answer_mask: torch.Tensor, mode: str = "mean",
                space: str = "logodds", alpha: float = 0.0, correct_mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean metric [B], estimated metric change per head [B, L, H], clean prob [B], clean correct [B])
    on the CPU: the derivative of the metric w.r.t. each head's ablation strength, at strength
    ``alpha`` for every head (0 = the clean run).

    The batch's metrics are summed before the backward pass; samples do not interact in the model,
    so each sample's gradient is its own. ``correct_mask`` (default ``answer_mask``) decides the clean
    correctness (``model.answer_definition``).
    """
    if space not in SPACES:
        raise ValueError(f"attribution space {space!r}: expected one of {SPACES}")
    alpha = check_alpha(alpha)
    L, H = adapter.num_layers, adapter.num_heads
    B = emb.inputs_embeds.shape[0]
    answer_mask = answer_mask.to(adapter.device)
    if alpha > 0:
        with torch.no_grad():
            clean_metric, prob, correct = _metric(adapter.lm_logits(emb), answer_mask, space, correct_mask)
    every_head = torch.ones(H, dtype=torch.bool, device=adapter.device)
    strength = torch.full((L, B, H), alpha, device=adapter.device, dtype=torch.float32, requires_grad=True)
    with torch.enable_grad():  # the per-layer slices too: taken under a caller's no_grad they lose the graph
        edits = [Ablate(l, every_head, mode=mode, strength=strength[l]) for l in range(L)]
        with intervene(adapter, *edits):
            metric, p_path, c_path = _metric(adapter.lm_logits(emb), answer_mask, space, correct_mask)
            metric.sum().backward()
    if alpha == 0:  # the pass at strength 0 is the clean run
        clean_metric, prob, correct = metric, p_path, c_path
    est = strength.grad.permute(1, 0, 2)  # [B, L, H]
    return (clean_metric.detach().float().cpu(), est.float().cpu(), prob.detach().float().cpu(), correct.cpu())


def estimated_ablated_probs(adapter: VLMAdapter, emb: Embedded, answer_mask: torch.Tensor, mode: str = "mean",
                            space: str = "logodds", alpha: float = 0.0, correct_mask: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimated ``p_abl`` [B, L, H] (float32), clean prob [B] and clean correctness [B]."""
    metric, delta, prob, correct = first_order(adapter, emb, answer_mask, mode, space, alpha, correct_mask)
    if space == "prob":
        return prob[:, None, None] + delta, prob, correct
    lo = metric.double()[:, None, None]
    # p + (sigmoid(lo + delta) - sigmoid(lo)): no change where the estimate is zero, exactly
    change = torch.sigmoid(lo + delta.double()) - torch.sigmoid(lo)
    return (prob.double()[:, None, None] + change).float(), prob, correct
