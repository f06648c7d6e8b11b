"""Attribution patching: a first-order estimate of every head's ablation effect from one forward and
one backward pass per group of heads (``path``) and batch.

Every head (l, h) gets an ablation strength ``s[l, h]`` (``Ablate(strength=...)``, the one
intervention mechanism): ``z <- z + s * (z' - z)``, where ``z`` is the ``o_proj`` input of layer l
and ``z'`` its ablated value (mean of the other heads, or zero). ``s = 0`` is the clean model,
``s[l, h] = 1`` alone is the exact single-head ablation. The estimate of the change of a metric m
when head (l, h) is ablated is the derivative ``dm/ds[l, h]`` (one backward pass gives a whole group's),
taken at the point where the heads of its group have strength ``alpha`` (``attribution.atp_alpha``, default
0.5; the groups: ``attribution.atp_path``, default ``layer``):

- ``alpha = 0``: classic attribution patching, the gradient at the clean run:
  ``sum_{t, d} (z'_{t,h,d} - z_{t,h,d}) * dm/dz_{t,h,d}``.
- ``alpha = 0.5``: the midpoint rule of ``integral_0^1 dm/ds[l, h] ds`` (integrated gradients with one
  step) along a path on which a group of heads is ablated together (``path``):

  - ``"all"``: every head together, one backward pass (plus one clean forward without gradients).
  - ``"layer"``: a layer's heads together, the other layers clean (L forward + backward passes): a
    head is estimated where only its own layer is half-ablated.
  - ``"index"``: head g of every layer together, one pass per head index g (H passes): no two heads
    of one layer move together (a mean ablation replaces a head by the mean of its layer's others).

  Which grouping, and whether the clean gradient or a point on a path, ranks the heads better depends on the
  model: measured in docs/benchmarks.md#estimate-quality (``benchmarks/atp_quality.py`` measures every choice).

At ``alpha = 0`` every path's point is the clean run: one pass, whatever ``path`` says.

Two choices of m (``space``):

- ``prob``: m = p, the answer probability; ``p_abl ~= p + estimate``.
- ``logodds``: m = log(p / (1 - p)), computed stably from the logits as logsumexp(answer logits) -
  logsumexp(other logits); ``p_abl ~= sigmoid(m + estimate)``. Same cost. A confident model (p near
  0 or 1) has a vanishing dp/dz although ablating a head can still move p a lot; in log-odds the
  gradient does not vanish and the sigmoid puts the saturation back.

The estimated ``p_abl`` feeds the same score math as the exact engine.
"""

from __future__ import annotations

from typing import get_args

import torch

from vseam.config import AtpPath, AtpSpace, AttributionConfig
from vseam.interventions import Ablate, intervene
from vseam.models.base import Embedded, VLMAdapter, answer_stats


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


def path_groups(path: str, num_layers: int, num_heads: int) -> list[torch.Tensor]:
    """The groups of heads ablated together on ``path`` (``attribution.atp_path``), bool [L, H] each; every
    head is in exactly one group, and each group costs one forward + backward pass."""
    L, H = num_layers, num_heads
    if path == "all":
        return [torch.ones(L, H, dtype=torch.bool)]
    eye = lambda n: torch.eye(n, dtype=torch.bool)  # noqa: E731
    if path == "index":
        return [eye(H)[g].expand(L, H) for g in range(H)]
    if path == "layer":
        return [eye(L)[l][:, None].expand(L, H) for l in range(L)]
    raise ValueError(f"attribution.atp_path={path!r}: expected one of {list(get_args(AtpPath))}")


def first_order(adapter: VLMAdapter, emb: Embedded, answer_mask: torch.Tensor,
                mode: str = AttributionConfig.ablation, space: str = AttributionConfig.atp_space,
                alpha: float = AttributionConfig.atp_alpha, correct_mask: torch.Tensor | None = None,
                path: str = AttributionConfig.atp_path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(clean metric [B], estimated metric change per head [B, L, H], clean prob [B], clean correct [B])
    on the CPU: the derivative of the metric w.r.t. each head's ablation strength, taken where the heads
    of its group on ``path`` (``path_groups``) have strength ``alpha`` and all others 0 (0 = the clean run).

    The batch's metrics are summed before the backward pass; samples do not interact in the model,
    so each sample's gradient is its own. ``correct_mask`` (default ``answer_mask``) decides the clean
    correctness (``model.answer_definition``).
    """
    if space not in get_args(AtpSpace):
        raise ValueError(f"attribution.atp_space={space!r}: expected one of {list(get_args(AtpSpace))}")
    alpha = check_alpha(alpha)
    L, H = adapter.num_layers, adapter.num_heads
    groups = path_groups(path, L, H)
    if alpha == 0:  # every group's point is the clean run: one pass serves them all
        groups = path_groups("all", L, H)
    B = emb.inputs_embeds.shape[0]
    answer_mask = answer_mask.to(adapter.device)
    if alpha > 0:
        with torch.no_grad():
            clean_metric, prob, correct = _metric(adapter.lm_logits(emb), answer_mask, space, correct_mask)
    est = torch.zeros(B, L, H)
    for group in groups:
        point = (alpha * group.float())[:, None, :].expand(L, B, H).to(adapter.device)
        strength = point.clone().requires_grad_(True)  # [L, B, H]
        layers = [l for l in range(L) if bool(group[l].any())]
        with torch.enable_grad():  # the per-layer slices too: taken under a caller's no_grad they lose the graph
            edits = [Ablate(l, torch.ones(H, dtype=torch.bool, device=adapter.device), mode=mode,
                            strength=strength[l]) for l in layers]
            with intervene(adapter, *edits):
                metric, p_path, c_path = _metric(adapter.lm_logits(emb), answer_mask, space, correct_mask)
                metric.sum().backward()
        grad = strength.grad.permute(1, 0, 2).float().cpu()  # [B, L, H]
        est = torch.where(group, grad, est)
    if alpha == 0:  # the pass at strength 0 is the clean run
        clean_metric, prob, correct = metric, p_path, c_path
    return (clean_metric.detach().float().cpu(), est, prob.detach().float().cpu(), correct.cpu())


def estimated_ablated_probs(adapter: VLMAdapter, emb: Embedded, answer_mask: torch.Tensor,
                            mode: str = AttributionConfig.ablation, space: str = AttributionConfig.atp_space,
                            alpha: float = AttributionConfig.atp_alpha, correct_mask: torch.Tensor | None = None,
                            path: str = AttributionConfig.atp_path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Estimated ``p_abl`` [B, L, H] (float32), clean prob [B] and clean correctness [B]."""
    metric, delta, prob, correct = first_order(adapter, emb, answer_mask, mode, space, alpha, correct_mask, path)
    if space == "prob":
        return prob[:, None, None] + delta, prob, correct
    lo = metric.double()[:, None, None]
    # p + (sigmoid(lo + delta) - sigmoid(lo)): no change where the estimate is zero, exactly
    change = torch.sigmoid(lo + delta.double()) - torch.sigmoid(lo)
    return (prob.double()[:, None, None] + change).float(), prob, correct
