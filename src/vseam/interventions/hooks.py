"""The one intervention mechanism: edits at named hook points of each layer of a stack of layers: the
language model's decoder (``intervene(adapter, ...)``) or the vision tower's encoder
(``intervene(adapter.vision, ...)``; ``vseam.models.structure.Stack``).

Hook points (``site``), named for what they are (TransformerLens's ``hook_*`` names in brackets):

- ``"z"``: the input of the layer's ``o_proj``, viewed as the H head outputs ``z`` [B, T, H, D] (``hook_z``);
- ``"resid_pre"``: the residual stream entering the layer, [B, T, d] (``hook_resid_pre``);
- ``"attn_out"``: the attention block's output (after ``o_proj``), added to the residual, [B, T, d];
- ``"mlp_out"``: the MLP block's output, added to the residual, [B, T, d];
- ``"resid_post"``: the residual stream leaving the layer, [B, T, d] (``hook_resid_post``);
- ``"attn_scores"``: the attention logits as the softmax sees them, [B, H, query, key]: ``q k^T / sqrt(d)`` plus
  the mask (and whatever the architecture adds before its softmax, e.g. Gemma's soft cap), per head (``hook_attn_scores``);
- ``"attn_pattern"``: the attention probabilities [B, H, query, key], the softmax's output (``hook_pattern``).
  The fast kernels compute neither, so a context that touches them runs the stack's eager attention path.
  Reading the pattern alone is a hook on the attention block's output; an edit of either (and every item at
  that layer's scores or pattern then) goes through the eager path's softmax call itself: while the layer's
  attention runs, its one softmax over [B, H, query, key] is intercepted (a ``TorchFunctionMode``), the
  ``attn_scores`` items act on its input and the ``attn_pattern`` items on its output, so what the model
  computes next (``pattern @ V``, ``o_proj``) sees the edited values;
- ``"proj_out"`` (vision tower only, layer 0): the projector / connector's output, what the language model
  receives for the image tokens (LLaVA: [images or tiles, tokens, d]; Qwen2-VL's merger: [tokens, d]);
- ``"logits"``: the output of the language-model head, [..., V] (``LogitBias`` only).

A stack that runs all images as one packed sequence without a batch axis (Qwen2-VL's vision tower:
[T, W]) is seen with a batch of one ([1, T, H, D] at ``z``, [1, T, d] elsewhere).

One hook per touched (site, layer) applies, in order, the edits given for it. Ablation, patching,
heuristic rescaling, learned modulation, causal tracing and caching (with gradients) are all edits of
this one mechanism:

- ``Ablate``: replace a head's slice by the mean of the other H-1 heads' slices, or by zeros;
- ``Patch``: replace a head's slice (``z``) or a hidden state (other sites) with the value from another
  run (e.g. the clean run's cache), at chosen positions;
- ``HeadModulation``: ``z <- a * z + v`` on chosen heads, ``a`` scalar or per-dim, ``v`` per-dim,
  as (trainable) ``nn.Parameter``s;
- ``GroupedHeadModulation``: G such modulations in one batch, each on its own heads and rows;
- ``LogitBias``: learned biases on the answer logits (the yes-vs-no margin, answer words);
- ``Steer``: a fixed steering vector added to chosen heads (``z``) or to a hidden state, or VTI's norm-preserving
  rotation of a hidden state towards it, at every, the last, or chosen positions;
- ``AttentionEdit``: ``x <- scale * x + amplify * |x| + add`` on the attention scores (or probabilities) of
  chosen heads at chosen (query, key) positions (PAI, VAF and any attention reweighting);
- ``Read``: cache the values of a site, optionally with their gradients.

Heads are chosen per sample by a bool mask [B, H] (or one list of heads for the whole batch), and
positions by an optional bool mask [B, T]; all vectorised, no loop over heads or positions.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

SITES = ("z", "resid_pre", "attn_out", "mlp_out", "resid_post", "attn_scores", "attn_pattern", "proj_out")
HIDDEN_SITES = ("resid_pre", "attn_out", "mlp_out", "resid_post")
ATTENTION_SITES = ("attn_scores", "attn_pattern")  # [B, H, query, key], before / after the softmax (eager path)
LAYERLESS_SITES = ("proj_out",)  # one hook point per stack, at layer 0


def _check_site(site: str) -> str:
    if site not in SITES:
        raise ValueError(f"intervention site {site!r}: expected one of {SITES}")
    return site


class HeadShapeError(ValueError):
    """A head list, score matrix or saved modulation made for a model of another shape."""


def check_heads(heads: Sequence[tuple[int, int]], num_layers: int, num_heads: int, where: str = "head list") -> None:
    """Raise ``HeadShapeError`` naming the first head that does not exist in an L x H model."""
    for l, h in heads:
        if not (0 <= int(l) < num_layers and 0 <= int(h) < num_heads):
            raise HeadShapeError(f"{where} names head ({l}, {h}), but the model has {num_layers} layers x "
                                 f"{num_heads} heads: it was made for a model of another shape")


def _head_mask(heads, batch: int, num_heads: int, device) -> torch.Tensor:
    """Bool [B, H] from a mask [B, H] / [H], or from head indices applied to every sample."""
    if isinstance(heads, torch.Tensor) and heads.dtype == torch.bool:
        mask = heads.to(device)
        if mask.dim() == 1:
            mask = mask.expand(batch, -1)
    else:
        mask = torch.zeros(batch, num_heads, dtype=torch.bool, device=device)
        idx = torch.as_tensor(list(heads) if not isinstance(heads, torch.Tensor) else heads, dtype=torch.long)
        mask[:, idx.to(device)] = True
    if mask.shape != (batch, num_heads):
        raise ValueError(f"head mask of shape {tuple(mask.shape)} does not fit batch {batch} x {num_heads} heads")
    return mask


def _where_mask(heads_mask: torch.Tensor, positions: torch.Tensor | None, z: torch.Tensor) -> torch.Tensor:
    """Broadcastable bool [B, T|1, H, 1] selecting (sample, position, head)."""
    m = heads_mask[:, None, :, None]
    if positions is not None:
        if positions.shape != z.shape[:2]:
            raise ValueError(f"position mask {tuple(positions.shape)} does not fit [B, T] = {tuple(z.shape[:2])}")
        m = m & positions.to(z.device)[:, :, None, None]
    return m


@dataclass
class Ablate:
    """Replace heads' slices by the mean of the other heads' slices (``mode="mean"``) or by zeros.

    ``strength`` s moves a slice only part of the way: ``z <- z + s * (z' - z)``. A float, or a tensor
    [H] / [B, H] (one strength per head, or per sample and head) that may require grad: then its
    ``.grad`` after a backward pass is the derivative of the output w.r.t. each head's ablation
    strength, which is what attribution patching needs. ``strength=1.0`` (the default) is the full
    ablation, computed as a plain replacement.
    """

    layer: int
    heads: torch.Tensor | Sequence[int]  # bool [B, H] / [H] or head indices
    mode: str = "mean"  # mean | zero
    positions: torch.Tensor | None = None  # bool [B, T]; None = every position
    strength: float | torch.Tensor = 1.0  # 1 = full ablation; a tensor [H] / [B, H] may require grad

    def __post_init__(self):
        if self.mode not in ("mean", "zero"):
            raise ValueError(f"ablation mode {self.mode!r}: expected 'mean' or 'zero'")

    def apply(self, z: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
        B, T, H, D = z.shape
        if self.mode == "zero":
            repl = torch.zeros_like(z)
        else:
            if H < 2:
                raise ValueError("mean ablation needs at least 2 heads")
            repl = (z.sum(2, keepdim=True) - z) / (H - 1)
        where = _where_mask(_head_mask(self.heads, B, H, z.device), self.positions, z)
        s = self.strength
        if isinstance(s, torch.Tensor):
            s = s.to(device=z.device, dtype=z.dtype)
            if s.dim() not in (1, 2) or s.shape[-1] != H or (s.dim() == 2 and s.shape[0] != B):
                raise ValueError(f"ablation strength of shape {tuple(s.shape)} does not fit [H] or [B, H] = "
                                 f"[{B}, {H}] at layer {self.layer}")
            s = s.reshape(-1 if s.dim() == 2 else 1, 1, H, 1)
        elif s == 1.0:
            return torch.where(where, repl, z)
        return torch.where(where, z + s * (repl - z), z)


@dataclass
class Patch:
    """Replace values with ``source`` from another run (e.g. the clean run's cache) at chosen positions.

    At ``site="z"`` the source is [B, T, H, D] and ``heads`` picks the heads (None = all); at the
    hidden-state sites (``resid_pre``, ``attn_out``, ``mlp_out``, ``resid_post``) it is [B, T, d] and
    ``heads`` must be None. A source with batch 1 (or without a batch dimension) serves every row.
    """

    layer: int
    source: torch.Tensor
    heads: torch.Tensor | Sequence[int] | None = None
    positions: torch.Tensor | None = None  # bool [B, T]; None = every position
    site: str = "z"

    def __post_init__(self):
        _check_site(self.site)
        if self.site in ATTENTION_SITES:
            raise ValueError(f"attention {self.site.split('_')[1]} can be read, not patched (edit them with "
                             f"AttentionEdit, or patch z or attn_out instead)")
        if self.site != "z" and self.heads is not None:
            raise ValueError(f"Patch at site {self.site!r} (a hidden state) takes no heads")

    def apply(self, z: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
        src = self.source.to(device=z.device, dtype=z.dtype)
        if src.dim() == z.dim() - 1:
            src = src.unsqueeze(0)
        src = src.expand(z.shape[0], *src.shape[1:])
        if src.shape != z.shape:
            raise ValueError(f"patch source {tuple(src.shape)} does not fit the {self.site} value {tuple(z.shape)} "
                             f"at layer {self.layer}")
        if self.site != "z":
            if self.positions is None:
                return src.clone()
            pos = self.positions.to(z.device)
            if pos.shape != z.shape[:2]:
                raise ValueError(f"position mask {tuple(pos.shape)} does not fit [B, T] = {tuple(z.shape[:2])} "
                                 f"at {self.site} of layer {self.layer}")
            return torch.where(pos[:, :, None], src, z)
        B, T, H, D = z.shape
        heads = range(H) if self.heads is None else self.heads
        return torch.where(_where_mask(_head_mask(heads, B, H, z.device), self.positions, z), src, z)


STEER_MODES = ("add", "rotate")


@dataclass
class Steer:
    """Steer the values of ``site`` along a fixed ``vector`` (activation steering), at chosen positions.

    - ``mode="add"``: ``x <- x + strength * vector`` (at ``z``: ``vector`` [H, D], a zero row leaves its head alone);
    - ``mode="rotate"`` (hidden-state sites): the norm-preserving steering of VTI (Liu et al., ICLR 2025,
      ``vti_utils/llm_layers.py``), ``x <- |x| * normalize(x / |x| + strength * vector / |vector|)`` per position.

    ``vector``: [H, D] at ``z``; at a hidden-state site [d] (every position) or [T, d] (one per position: a
    vision tower's fixed grid of tokens). ``positions``: None (every position), ``"last"`` (the last position of
    every row: the answer position of a left-padded batch) or a bool mask [B, T].
    """

    layer: int
    vector: torch.Tensor
    site: str = "z"
    strength: float = 1.0
    mode: str = "add"
    positions: torch.Tensor | str | None = None

    def __post_init__(self):
        _check_site(self.site)
        if self.site != "z" and self.site not in HIDDEN_SITES:
            raise ValueError(f"Steer at site {self.site!r}: expected z or a hidden-state site {HIDDEN_SITES}")
        if self.mode not in STEER_MODES:
            raise ValueError(f"steering mode {self.mode!r}: expected one of {STEER_MODES}")
        if self.mode == "rotate" and self.site == "z":
            raise ValueError("Steer(mode='rotate') steers a hidden state; at z (per head) use mode='add'")
        if isinstance(self.positions, str) and self.positions != "last":
            raise ValueError(f"steering positions {self.positions!r}: expected None, 'last' or a bool mask [B, T]")
        want = (2,) if self.site == "z" else (1, 2)
        if self.vector.dim() not in want:
            raise ValueError(f"steering vector of shape {tuple(self.vector.shape)} at {self.site}: expected "
                             f"{'[H, D]' if self.site == 'z' else '[d] or [T, d]'}")

    def apply(self, x: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
        v = self.vector.to(device=x.device, dtype=torch.float32)
        if self.site == "z":
            if v.shape != x.shape[2:]:
                raise ValueError(f"steering vector {tuple(v.shape)} does not fit the heads [H, D] = "
                                 f"{tuple(x.shape[2:])} at z of layer {self.layer}")
            v = v[None, None]
        elif v.shape != x.shape[-1:] and v.shape != x.shape[1:]:
            raise ValueError(f"steering vector {tuple(v.shape)} does not fit [d] = [{x.shape[-1]}] or [T, d] = "
                             f"{list(x.shape[1:])} at {self.site} of layer {self.layer}")
        if self.mode == "add":
            new = x + (self.strength * v).to(x.dtype)
        else:
            norm = x.float().norm(dim=-1, keepdim=True)
            unit = torch.nn.functional.normalize(v, dim=-1)
            new = (torch.nn.functional.normalize(torch.nn.functional.normalize(x.float(), dim=-1) + self.strength * unit,
                                                 dim=-1) * norm).to(x.dtype)
        if self.positions is None:
            return new
        if isinstance(self.positions, str):
            where = torch.zeros(x.shape[:2], dtype=torch.bool, device=x.device)
            where[:, -1] = True
        else:
            where = self.positions.to(x.device)
            if where.shape != x.shape[:2]:
                raise ValueError(f"position mask {tuple(where.shape)} does not fit [B, T] = {tuple(x.shape[:2])} "
                                 f"at {self.site} of layer {self.layer}")
        return torch.where(where.reshape(*where.shape, *([1] * (x.dim() - 2))), new, x)


@dataclass
class Read:
    """Cache the values of ``site`` at ``layers`` (all when None) as they are at this point of the edit order.

    With ``grad=True`` a zero probe is added, so ``cache.grad(l, site)`` gives d(output)/d(value) after
    backward without cutting any path through the model (not for ``attn_pattern``; ``attn_scores`` has it).
    """

    layers: Iterable[int] | None = None
    grad: bool = False
    detach: bool = True  # cache detached copies (saves memory); ignored when grad=True
    site: str = "z"

    def __post_init__(self):
        _check_site(self.site)
        if self.grad and self.site == "attn_pattern":
            raise ValueError("Read(grad=True) is not offered for attention patterns")


class ActivationCache:
    """What ``Read`` edits recorded: ``cache[l]`` is z [B, T, H, D]; ``cache[site, l]`` any site's value;
    ``cache.grad(l)`` / ``cache.grad(l, site)`` their gradients."""

    def __init__(self):
        self.sites: dict[str, dict[int, torch.Tensor]] = {s: {} for s in SITES}
        self.site_probes: dict[str, dict[int, torch.Tensor]] = {s: {} for s in SITES}
        self.values = self.sites["z"]
        self.probes = self.site_probes["z"]

    @staticmethod
    def _key(key) -> tuple[str, int]:
        return (key[0], int(key[1])) if isinstance(key, tuple) else ("z", int(key))

    def __getitem__(self, key) -> torch.Tensor:
        site, layer = self._key(key)
        try:
            return self.sites[site][layer]
        except KeyError:
            raise KeyError(f"nothing read at site {site!r} of layer {layer}") from None

    def __contains__(self, key) -> bool:
        site, layer = self._key(key)
        return layer in self.sites.get(site, {})

    def grad(self, layer: int, site: str = "z") -> torch.Tensor:
        g = self.site_probes[site][layer].grad
        if g is None:
            raise RuntimeError(f"no gradient at {site} of layer {layer}: call backward() inside or after the context")
        return g

    def layers(self, site: str = "z") -> list[int]:
        return sorted(self.sites[site])

    def stack(self, site: str) -> torch.Tensor:
        """The values read at ``site`` for every layer, stacked: [L, ...] (layers 0..L-1 must all be there)."""
        layers = self.layers(site)
        if layers != list(range(len(layers))) or not layers:
            raise KeyError(f"site {site!r} was read at layers {layers}, not at every layer from 0")
        return torch.stack([self.sites[site][l] for l in layers])


class HeadModulation(nn.Module):
    """``z <- a * z + v`` on a list of (layer, head): ``a`` [K] or [K, D] (init 1), ``v`` [K, D] (init 0).

    ``scale`` is "scalar", "vector" or "none"; ``offset`` turns ``v`` on or off. With ``a = 1`` and
    ``v = 0`` the model's output is bit-identical to the unmodulated one.
    """

    def __init__(self, heads: Sequence[tuple[int, int]], head_dim: int, scale: str = "scalar", offset: bool = True,
                 trainable: bool = True):
        super().__init__()
        if scale not in ("scalar", "vector", "none"):
            raise ValueError(f"modulation scale {scale!r}: expected scalar, vector or none")
        heads = [(int(l), int(h)) for l, h in heads]
        if len(set(heads)) != len(heads):
            raise ValueError("modulation head list has duplicates")
        self.heads = heads
        self.head_dim = head_dim
        self.scale_kind = scale
        K = len(heads)
        self.register_buffer("layer_index", torch.tensor([l for l, _ in heads], dtype=torch.long), persistent=True)
        self.register_buffer("head_index", torch.tensor([h for _, h in heads], dtype=torch.long), persistent=True)
        self.scale = None
        self.offset = None
        if scale != "none":
            shape = (K,) if scale == "scalar" else (K, head_dim)
            self.scale = nn.Parameter(torch.ones(shape), requires_grad=trainable)
        if offset:
            self.offset = nn.Parameter(torch.zeros(K, head_dim), requires_grad=trainable)

    @classmethod
    def from_scales(cls, scales: torch.Tensor, head_dim: int) -> HeadModulation:
        """Fixed per-head scalar scales for every head of an [L, H] matrix (heuristic rescaling)."""
        L, H = scales.shape
        mod = cls([(l, h) for l in range(L) for h in range(H)], head_dim, scale="scalar", offset=False,
                  trainable=False)
        with torch.no_grad():
            mod.scale.copy_(scales.reshape(-1).float())
        return mod

    def layers(self) -> list[int]:
        return sorted(set(self.layer_index.tolist()))

    def edit(self, layer: int) -> _ModulationAt:
        return _ModulationAt(self, layer)

    def apply_at(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        B, T, H, D = z.shape
        rows = (self.layer_index == layer).nonzero().squeeze(1)
        if rows.numel() == 0:
            return z
        if D != self.head_dim:
            raise ValueError(f"modulation made for head_dim {self.head_dim}, model has {D}")
        h_idx = self.head_index[rows].to(z.device)
        if int(h_idx.max()) >= H:
            raise ValueError(f"modulation names head {int(h_idx.max())} of layer {layer}; the model has {H} heads")
        if self.scale is not None:
            s = self.scale[rows.to(self.scale.device)].to(z.dtype)
            s = s[:, None].expand(-1, D) if s.dim() == 1 else s
            a = torch.ones(H, D, dtype=z.dtype, device=z.device).index_put((h_idx,), s.to(z.device))
            z = z * a
        if self.offset is not None:
            v = torch.zeros(H, D, dtype=z.dtype, device=z.device).index_put(
                (h_idx,), self.offset[rows.to(self.offset.device)].to(device=z.device, dtype=z.dtype))
            z = z + v
        return z

    def extra_repr(self) -> str:
        return f"heads={len(self.heads)}, head_dim={self.head_dim}, scale={self.scale_kind}, offset={self.offset is not None}"


class GroupedHeadModulation(nn.Module):
    """G independent head modulations trained or scored together in one batch (random-head controls).

    Group g modulates its own K heads ``head_sets[g]`` with its own parameters: ``scale`` [G, K] or
    [G, K, D] (init 1), ``offset`` [G, K, D] (init 0), applied as ``HeadModulation`` applies them. Row r of
    a batch belongs to group ``r % G``: each sample repeated G times in a row (``Embedded.repeat(G)``), so
    a batch of B samples has B * G rows. Every operation is per element of a group's own parameters, so a
    loss that sums the groups' own mean losses gives each group the gradients it would get alone;
    ``group(g)`` is group g as a ``HeadModulation``.
    """

    def __init__(self, head_sets: Sequence[Sequence[tuple[int, int]]], head_dim: int, scale: str = "scalar",
                 offset: bool = True, trainable: bool = True):
        super().__init__()
        if scale not in ("scalar", "vector", "none"):
            raise ValueError(f"modulation scale {scale!r}: expected scalar, vector or none")
        sets = [[(int(l), int(h)) for l, h in heads] for heads in head_sets]
        if not sets or len({len(s) for s in sets}) != 1 or not sets[0]:
            raise ValueError(f"grouped modulation: expected one or more head sets of one size > 0, got sizes "
                             f"{sorted({len(s) for s in sets})}")
        if any(len(set(s)) != len(s) for s in sets):
            raise ValueError("grouped modulation: a head set has duplicates")
        self.head_sets = sets
        self.head_dim = head_dim
        self.scale_kind = scale
        G, K = len(sets), len(sets[0])
        self.register_buffer("layer_index", torch.tensor([[l for l, _ in s] for s in sets], dtype=torch.long))
        self.register_buffer("head_index", torch.tensor([[h for _, h in s] for s in sets], dtype=torch.long))
        self.scale = None
        self.offset = None
        if scale != "none":
            self.scale = nn.Parameter(torch.ones((G, K) if scale == "scalar" else (G, K, head_dim)),
                                      requires_grad=trainable)
        if offset:
            self.offset = nn.Parameter(torch.zeros(G, K, head_dim), requires_grad=trainable)

    @property
    def groups(self) -> int:
        return len(self.head_sets)

    def layers(self) -> list[int]:
        return sorted(set(self.layer_index.reshape(-1).tolist()))

    def edit(self, layer: int) -> _ModulationAt:
        return _ModulationAt(self, layer)

    def apply_at(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        N, T, H, D = z.shape
        G = self.groups
        if N % G:
            raise ValueError(f"grouped modulation of {G} groups: a batch of {N} rows is not samples x groups")
        g_idx, k_idx = (self.layer_index == layer).nonzero(as_tuple=True)
        if g_idx.numel() == 0:
            return z
        if D != self.head_dim:
            raise ValueError(f"modulation made for head_dim {self.head_dim}, model has {D}")
        h_idx = self.head_index[g_idx, k_idx]
        if int(h_idx.max()) >= H:
            raise ValueError(f"modulation names head {int(h_idx.max())} of layer {layer}; the model has {H} heads")
        g_idx, h_idx = g_idx.to(z.device), h_idx.to(z.device)
        z = z.reshape(N // G, G, T, H, D)
        if self.scale is not None:
            s = self.scale[g_idx, k_idx].to(device=z.device, dtype=z.dtype)
            s = s[:, None].expand(-1, D) if s.dim() == 1 else s
            z = z * torch.ones(G, H, D, dtype=z.dtype, device=z.device).index_put((g_idx, h_idx), s)[None, :, None]
        if self.offset is not None:
            v = self.offset[g_idx, k_idx].to(device=z.device, dtype=z.dtype)
            z = z + torch.zeros(G, H, D, dtype=z.dtype, device=z.device).index_put((g_idx, h_idx), v)[None, :, None]
        return z.reshape(N, T, H, D)

    def group(self, g: int) -> HeadModulation:
        """Group ``g`` alone, as a ``HeadModulation`` with a copy of its parameters (frozen)."""
        mod = HeadModulation(self.head_sets[g], self.head_dim, scale=self.scale_kind, offset=self.offset is not None,
                             trainable=False)
        with torch.no_grad():
            if self.scale is not None:
                mod.scale.copy_(self.scale[g])
            if self.offset is not None:
                mod.offset.copy_(self.offset[g])
        return mod.to(self.layer_index.device)

    def extra_repr(self) -> str:
        return (f"groups={self.groups}, heads={len(self.head_sets[0])}, head_dim={self.head_dim}, "
                f"scale={self.scale_kind}, offset={self.offset is not None}")


def _per_head(value, batch: int, num_heads: int, x: torch.Tensor, what: str, layer: int):
    """A float as it is, or a tensor [H] / [B, H] (one value per head, or per sample and head) as [B|1, H, 1, 1]."""
    if not isinstance(value, torch.Tensor):
        return float(value)
    v = value.to(device=x.device, dtype=x.dtype)
    if v.dim() not in (1, 2) or v.shape[-1] != num_heads or (v.dim() == 2 and v.shape[0] != batch):
        raise ValueError(f"attention edit {what} of shape {tuple(v.shape)} does not fit [H] or [B, H] = [{batch}, "
                         f"{num_heads}] at layer {layer}")
    return v.reshape(-1 if v.dim() == 2 else 1, num_heads, 1, 1)


@dataclass
class AttentionEdit:
    """``x <- scale * x + amplify * |x| + add`` on the attention scores (``site="attn_scores"``: the softmax's input,
    ``q k^T / sqrt(d)`` + mask) or probabilities (``site="attn_pattern"``: its output) of layer ``layer``.

    Only the chosen entries move: ``heads`` (bool [B, H] / [H] or head indices; None = every head), ``queries`` and
    ``keys`` (bool [B, T] each, T the query / key length; None = every position). ``scale``, ``amplify`` and ``add``
    are floats or tensors [H] / [B, H] (one per head, or per sample and head). At the scores an entry the mask
    removed (-inf, or the dtype's minimum as transformers' eager masks write it) is never touched, so no edit lets
    a query see a position it could not (padding, a later token). The defaults change nothing (bit-identical).

    PAI's amplification (``amplify=alpha`` on the last query's image keys), VAF's enhancement and suppression
    (``scale`` on the image / system-prompt keys) and attention reweighting at the pattern are instances of it.
    """

    layer: int
    heads: torch.Tensor | Sequence[int] | None = None  # bool [B, H] / [H] or head indices; None = every head
    queries: torch.Tensor | None = None  # bool [B, T_query]; None = every query
    keys: torch.Tensor | None = None  # bool [B, T_key]; None = every key
    scale: float | torch.Tensor = 1.0
    amplify: float | torch.Tensor = 0.0
    add: float | torch.Tensor = 0.0
    site: str = "attn_scores"

    def __post_init__(self):
        if self.site not in ATTENTION_SITES:
            raise ValueError(f"AttentionEdit at site {self.site!r}: expected one of {ATTENTION_SITES}")

    def apply(self, x: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
        B, H, Q, K = x.shape
        where = torch.ones(B, H, 1, 1, dtype=torch.bool, device=x.device)
        if self.heads is not None:
            where = _head_mask(self.heads, B, H, x.device)[:, :, None, None]
        for name, mask, shape, view in (("query", self.queries, (B, Q), (B, 1, Q, 1)),
                                        ("key", self.keys, (B, K), (B, 1, 1, K))):
            if mask is not None:
                if tuple(mask.shape) != shape:
                    raise ValueError(f"attention edit {name} mask {tuple(mask.shape)} does not fit [B, T] = {list(shape)} "
                                     f"at {self.site} of layer {self.layer}")
                where = where & mask.to(device=x.device, dtype=torch.bool).reshape(view)
        if self.site == "attn_scores":
            where = where & (x > torch.finfo(x.dtype).min / 2)  # masked entries (-inf, finfo.min) stay masked
        scale, amplify, add = (_per_head(v, B, H, x, n, self.layer) for v, n in
                               ((self.scale, "scale"), (self.amplify, "amplify"), (self.add, "add")))
        new = x
        if not (isinstance(scale, float) and scale == 1.0):
            new = new * scale
        if not (isinstance(amplify, float) and amplify == 0.0):
            new = new + amplify * x.abs()
        if not (isinstance(add, float) and add == 0.0):
            new = new + add
        return torch.where(where, new, x)


class LogitBias(nn.Module):
    """Learned biases on the answer logits (the bias-only baseline: does a gain need heads at all?), applied at
    the output of the language-model head (hook point ``"logits"``), every position.

    - yes/no answers: ONE scalar ``margin`` b, added as +b/2 to the logits of the yes tokens and -b/2 to
      those of the no tokens, so the yes-vs-no margin ``log p(yes) - log p(no)`` moves by exactly b (the
      threshold of a yes/no decision) and their sum stays;
    - one-word answers: one scalar per answer word (``class_bias``, one per token in ``class_ids``, the
      words' first tokens), added to that token's logit: a learned prior over the answers.
    Each part exists only when it has tokens; all zero is the model as it is.
    """

    site = "logits"

    def __init__(self, yes_ids: Sequence[int] = (), no_ids: Sequence[int] = (), class_ids: Sequence[int] = (),
                 trainable: bool = True):
        super().__init__()
        yes, no, classes = (sorted(set(int(i) for i in x)) for x in (yes_ids, no_ids, class_ids))
        if set(yes) & set(no) or (set(yes) | set(no)) & set(classes):
            raise ValueError("logit bias: the yes, no and answer-word token sets must be disjoint")
        if not (yes and no) and not classes:
            raise ValueError("logit bias: no yes/no token pair and no answer-word token: nothing to bias")
        self.register_buffer("yes_index", torch.tensor(yes, dtype=torch.long))
        self.register_buffer("no_index", torch.tensor(no, dtype=torch.long))
        self.register_buffer("class_index", torch.tensor(classes, dtype=torch.long))
        self.margin = nn.Parameter(torch.zeros(()), requires_grad=trainable) if yes and no else None
        self.class_bias = nn.Parameter(torch.zeros(len(classes)), requires_grad=trainable) if classes else None

    def vector(self, vocab_size: int, dtype=torch.float32, device=None) -> torch.Tensor:
        """The bias over the vocabulary, [V] (differentiable in the parameters)."""
        device = self.yes_index.device if device is None else device
        top = max([int(t.max()) for t in (self.yes_index, self.no_index, self.class_index) if t.numel()])
        if top >= vocab_size:
            raise ValueError(f"logit bias names token {top}; the model's vocabulary has {vocab_size} tokens")
        bias = torch.zeros(vocab_size, dtype=dtype, device=device)
        if self.margin is not None:
            half = (self.margin / 2).to(device=device, dtype=dtype)
            bias = bias.index_put((self.yes_index.to(device),), half.expand(self.yes_index.numel()))
            bias = bias.index_put((self.no_index.to(device),), -half.expand(self.no_index.numel()))
        if self.class_bias is not None:
            bias = bias.index_put((self.class_index.to(device),), self.class_bias.to(device=device, dtype=dtype))
        return bias

    def apply(self, logits: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
        return logits + self.vector(logits.shape[-1], logits.dtype, logits.device)

    def extra_repr(self) -> str:
        return (f"yes={self.yes_index.numel()}, no={self.no_index.numel()} tokens (one margin), "
                f"answer words={self.class_index.numel()}")


@dataclass
class _ModulationAt:
    module: HeadModulation | GroupedHeadModulation
    layer: int

    def apply(self, z: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
        return self.module.apply_at(self.layer, z)


def _site_of(item) -> str:
    return getattr(item, "site", "z")


def _expand(edits, num_layers: int) -> dict[tuple[str, int], list]:
    per_point: dict[tuple[str, int], list] = {}
    for e in edits:
        if e is None:
            continue
        if isinstance(e, LogitBias):  # not a layer's: the language-model head's output
            per_point.setdefault(("logits", -1), []).append(e)
            continue
        if isinstance(e, (HeadModulation, GroupedHeadModulation)):
            items = [(l, e.edit(l)) for l in e.layers()]
        elif isinstance(e, Read):
            layers = ([0] if e.site in LAYERLESS_SITES else range(num_layers)) if e.layers is None else e.layers
            items = [(l, e) for l in layers]
        else:
            items = [(e.layer, e)]
        for l, item in items:
            site = _site_of(item)
            if site in LAYERLESS_SITES and l != 0:
                raise ValueError(f"intervention at {site} of layer {l}: {site} is one hook point, at layer 0")
            if not 0 <= l < num_layers:
                raise ValueError(f"intervention at layer {l}: the stack has {num_layers} layers")
            per_point.setdefault((site, l), []).append(item)
    return per_point


def block_modules(target, layer: int) -> dict[str, nn.Module]:
    """The modules whose hooks give each site of ``layer``: found by structure, not by attribute names.

    The attention block is the layer's module holding ``o_proj`` (``target.attention``); the MLP block
    is the layer's one other direct child that holds linear layers (norms hold none).
    """
    block = target.layers[layer]
    attn = target.attention(layer)
    mlps = [m for m in block.children() if m is not attn and any(isinstance(x, nn.Linear) for x in m.modules())]
    if len(mlps) != 1:
        raise ValueError(f"decoder layer {layer} ({type(block).__name__}): expected one MLP block beside the "
                         f"attention, found {[type(m).__name__ for m in mlps]}")
    return {"z": target.o_proj(layer), "resid_pre": block, "attn_out": attn, "mlp_out": mlps[0],
            "resid_post": block, "attn_pattern": attn}


def _apply_items(site: str, layer: int, items: list, x: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
    for item in items:
        if isinstance(item, Read):
            if item.grad:
                probe = torch.zeros_like(x, requires_grad=True)
                cache.site_probes[site][layer] = probe
                x = x + probe
                cache.sites[site][layer] = x
            else:
                cache.sites[site][layer] = x.detach() if item.detach else x
        else:
            x = item.apply(x, cache)
    return x


def _check_causal(pattern: torch.Tensor, layer: int) -> None:
    # Eager attention under a mask made for a fast kernel (which may pass none) attends to the future.
    # The second-to-last query is a real token in any left-padded batch (fully padded rows are uniform).
    q, k = pattern.shape[-2:]
    if q == k and q >= 2 and bool((pattern.detach()[..., -2, -1] > 1e-6).any()):
        raise RuntimeError(f"attention pattern of layer {layer} attends to a later position: the attention mask was "
                           f"made for another attention implementation; read patterns in a context that runs the "
                           f"whole language-model forward")


def _batched(site: str, layer: int, items: list, x: torch.Tensor, cache: ActivationCache) -> torch.Tensor:
    """The edits of a hidden-state site on ``x``; a packed [T, d] value is seen as a batch of one."""
    if x.dim() == 2:
        return _apply_items(site, layer, items, x.unsqueeze(0), cache).squeeze(0)
    return _apply_items(site, layer, items, x, cache)


def _make_hook(site: str, layer: int, items: list, cache: ActivationCache, num_heads: int, causal: bool = True):
    if site == "z":
        def z_hook(module, args):
            x = args[0]
            B, T = (1, x.shape[0]) if x.dim() == 2 else x.shape[:2]  # a packed [T, H*D] is a batch of one
            z = _apply_items(site, layer, items, x.reshape(B, T, num_heads, x.shape[-1] // num_heads), cache)
            return (z.reshape(x.shape),) + tuple(args[1:])
        return z_hook, "pre"
    if site == "resid_pre":
        def pre_hook(module, args, kwargs):
            if args:
                return (_batched(site, layer, items, args[0], cache),) + tuple(args[1:]), kwargs
            kwargs = dict(kwargs)
            kwargs["hidden_states"] = _batched(site, layer, items, kwargs["hidden_states"], cache)
            return args, kwargs
        return pre_hook, "pre_kw"
    if site == "attn_pattern":
        def pattern_hook(module, args, kwargs, output):
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise RuntimeError(f"layer {layer}'s attention returned no pattern (attention implementation "
                                   f"{getattr(module.config, '_attn_implementation', '?')!r})")
            mask = kwargs.get("attention_mask")
            if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:  # made for sdpa: eager would add it
                raise RuntimeError(f"attention pattern of layer {layer} read under a boolean (sdpa) attention mask: "
                                   f"the mask was made for another attention implementation; read patterns in a "
                                   f"context that runs the whole language-model forward")
            if causal:
                _check_causal(weights, layer)
            _apply_items(site, layer, items, weights, cache)
        return pattern_hook, "post_kw"

    def post_hook(module, args, output):
        if isinstance(output, tuple):
            return (_batched(site, layer, items, output[0], cache),) + tuple(output[1:])
        return _batched(site, layer, items, output, cache)
    return post_hook, "post"


_SOFTMAXES = (torch.nn.functional.softmax, torch.softmax, torch.Tensor.softmax)


class _SoftmaxTap(TorchFunctionMode):
    """While one layer's attention runs (opened and closed by hooks on its attention block): its softmax over
    the scores [B, H, query, key], with the ``attn_scores`` items applied to the softmax's input and the
    ``attn_pattern`` items to its output. ``calls`` counts such softmaxes; exactly one is expected."""

    def __init__(self, layer: int, scores: list, pattern: list, cache: ActivationCache, num_heads: int, causal: bool):
        super().__init__()
        self.layer, self.scores, self.pattern, self.cache = layer, scores, pattern, cache
        self.num_heads, self.causal = num_heads, causal
        self.calls = 0
        self.active = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _SOFTMAXES and args and isinstance(args[0], torch.Tensor) and args[0].dim() == 4 \
                and args[0].shape[1] == self.num_heads and kwargs.get("dim", args[1] if len(args) > 1 else None) in (-1, 3):
            self.calls += 1
            if self.calls == 1:
                x = _apply_items("attn_scores", self.layer, self.scores, args[0], self.cache)
                out = func(x, *args[1:], **kwargs)
                if self.causal and self.pattern:
                    _check_causal(out, self.layer)
                return _apply_items("attn_pattern", self.layer, self.pattern, out, self.cache)
        return func(*args, **kwargs)

    def open(self) -> None:
        self.calls = 0
        self.__enter__()
        self.active = True

    def close(self) -> None:
        if self.active:
            self.active = False
            self.__exit__(None, None, None)


def _tap_hooks(module: nn.Module, tap: _SoftmaxTap) -> list:
    """Hooks on an attention block that open ``tap`` for the block's forward (closed also when it raises)."""
    def pre(module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dtype == torch.bool:  # made for sdpa: eager would add it
            raise RuntimeError(f"attention scores of layer {tap.layer} touched under a boolean (sdpa) attention mask: "
                               f"the mask was made for another attention implementation; touch them in a context "
                               f"that runs the whole language-model forward")
        tap.open()

    def post(module, args, kwargs, output):
        tap.close()
        if output is None:  # the forward raised: its own error is the one to see
            return
        if tap.calls != 1:
            impl = getattr(getattr(module, "config", None), "_attn_implementation", "?")
            raise RuntimeError(f"layer {tap.layer}'s attention ran {tap.calls} softmaxes over [B, {tap.num_heads} heads, "
                               f"query, key] (attention implementation {impl!r}); its attention scores / pattern can be "
                               f"edited only where one softmax computes them (not over a packed sequence of several "
                               f"images, nor by a fused kernel)")
    return [module.register_forward_pre_hook(pre, with_kwargs=True),
            module.register_forward_hook(post, with_kwargs=True, always_call=True)]


@contextmanager
def _eager_attention(target, on: bool):
    """Run the language model's eager attention path (which returns patterns) while the body runs."""
    if not on:
        yield
        return
    configs = {id(c): c for c in [getattr(target.decoder, "config", None)] + [
        getattr(target.attention(l), "config", None) for l in range(target.num_layers)] if c is not None}
    before = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        yield
    finally:
        for k, c in configs.items():
            c._attn_implementation = before[k]


@contextmanager
def intervene(target, *edits, num_heads: int | None = None) -> Iterator[ActivationCache]:
    """Apply ``edits`` at their hook points while the body runs; yields the ``ActivationCache``.

    ``target`` is a ``VLMAdapter``, ``adapter.vision`` (a ``Stack``), or anything with ``layers``,
    ``attention(l)``, ``o_proj(l)``, ``num_layers``, ``num_heads`` (``decoder`` too when attention patterns
    are read; ``projector`` for ``proj_out``; ``causal=False`` for a bidirectional stack). Every hook is
    removed (and the attention implementation restored) on exit, also when the body raises.
    """
    num_layers = target.num_layers
    num_heads = num_heads or target.num_heads
    cache = ActivationCache()
    handles, taps = [], []
    points = _expand(edits, num_layers)
    # layers whose softmax is intercepted: scores touched, or the pattern edited (a pattern only read is hooked on
    # the attention block's output)
    tapped = sorted({l for (site, l), items in points.items() if site == "attn_scores" or
                     (site == "attn_pattern" and any(not isinstance(i, Read) for i in items))})
    causal = getattr(target, "causal", True)
    try:
        with _eager_attention(target, any(site in ATTENTION_SITES for site, _ in points)):
            for layer in tapped:
                taps.append(_SoftmaxTap(layer, points.get(("attn_scores", layer), []),
                                        points.get(("attn_pattern", layer), []), cache, num_heads, causal))
                handles += _tap_hooks(target.attention(layer), taps[-1])
            for (site, layer), items in points.items():
                if site in ATTENTION_SITES and layer in tapped:
                    continue
                if site == "z":
                    module = target.o_proj(layer)
                elif site == "logits":  # LogitBias: the language-model head's output
                    module = target.lm_head
                elif site in LAYERLESS_SITES:
                    module = getattr(target, "projector", None)
                    if module is None:
                        raise ValueError(f"intervention at {site}: only the vision tower (adapter.vision) has it")
                else:
                    module = block_modules(target, layer)[site]
                hook, kind = _make_hook(site, layer, items, cache, num_heads, causal)
                if kind == "pre":
                    handles.append(module.register_forward_pre_hook(hook))
                elif kind == "pre_kw":
                    handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
                elif kind == "post_kw":
                    handles.append(module.register_forward_hook(hook, with_kwargs=True))
                else:
                    handles.append(module.register_forward_hook(hook))
            yield cache
    finally:
        for tap in taps:
            tap.close()
        for h in handles:
            h.remove()
