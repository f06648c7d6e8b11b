"""Per-head interventions at the input of each decoder layer's ``o_proj`` (the concatenated head outputs).

One forward pre-hook per touched layer views the input as ``z`` [B, T, H, D] and applies, in order,
the edits given for that layer. Ablation, patching, heuristic rescaling, learned modulation and
caching (with gradients) are all edits of this one mechanism:

- ``Ablate``: replace a head's slice by the mean of the other H-1 heads' slices, or by zeros;
- ``Patch``: replace it with a slice from another run (e.g. the clean run's cache);
- ``HeadModulation``: ``z <- a * z + v`` on chosen heads, ``a`` scalar or per-dim, ``v`` per-dim,
  as (trainable) ``nn.Parameter``s;
- ``Read``: cache the slices, optionally with their gradients.

Heads are chosen per sample by a bool mask [B, H] (or one list of heads for the whole batch), and
positions by an optional bool mask [B, T]; all vectorised, no loop over heads.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence

import torch
from torch import nn


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

    def apply(self, z: torch.Tensor, cache: "HeadCache") -> torch.Tensor:
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
    """Replace heads' slices with ``source`` [B, T, H, D] (e.g. cached from the clean run)."""

    layer: int
    source: torch.Tensor
    heads: torch.Tensor | Sequence[int]
    positions: torch.Tensor | None = None

    def apply(self, z: torch.Tensor, cache: "HeadCache") -> torch.Tensor:
        B, T, H, D = z.shape
        src = self.source.to(device=z.device, dtype=z.dtype)
        if src.dim() == 3:
            src = src.unsqueeze(0)
        src = src.expand(B, -1, -1, -1)
        if src.shape != z.shape:
            raise ValueError(f"patch source {tuple(src.shape)} does not fit o_proj input {tuple(z.shape)} "
                             f"at layer {self.layer}")
        return torch.where(_where_mask(_head_mask(self.heads, B, H, z.device), self.positions, z), src, z)


@dataclass
class Read:
    """Cache the slices of ``layers`` (all when None) as they are at this point of the edit order.

    With ``grad=True`` a zero probe is added, so ``cache.grad(l)`` gives d(output)/d(z) after backward
    without cutting any path through the model.
    """

    layers: Iterable[int] | None = None
    grad: bool = False
    detach: bool = True  # cache detached copies (saves memory); ignored when grad=True


class HeadCache:
    """What ``Read`` edits recorded: ``cache[l]`` is z [B, T, H, D]; ``cache.grad(l)`` its gradient."""

    def __init__(self):
        self.values: dict[int, torch.Tensor] = {}
        self.probes: dict[int, torch.Tensor] = {}

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.values[layer]

    def __contains__(self, layer: int) -> bool:
        return layer in self.values

    def grad(self, layer: int) -> torch.Tensor:
        g = self.probes[layer].grad
        if g is None:
            raise RuntimeError(f"no gradient at layer {layer}: call backward() inside or after the context")
        return g

    def layers(self) -> list[int]:
        return sorted(self.values)


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
    def from_scales(cls, scales: torch.Tensor, head_dim: int) -> "HeadModulation":
        """Fixed per-head scalar scales for every head of an [L, H] matrix (heuristic rescaling)."""
        L, H = scales.shape
        mod = cls([(l, h) for l in range(L) for h in range(H)], head_dim, scale="scalar", offset=False,
                  trainable=False)
        with torch.no_grad():
            mod.scale.copy_(scales.reshape(-1).float())
        return mod

    def layers(self) -> list[int]:
        return sorted(set(self.layer_index.tolist()))

    def edit(self, layer: int) -> "_ModulationAt":
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


@dataclass
class _ModulationAt:
    module: HeadModulation
    layer: int

    def apply(self, z: torch.Tensor, cache: "HeadCache") -> torch.Tensor:
        return self.module.apply_at(self.layer, z)


def _expand(edits, num_layers: int) -> dict[int, list]:
    per_layer: dict[int, list] = {}
    for e in edits:
        if e is None:
            continue
        if isinstance(e, HeadModulation):
            items = [(l, e.edit(l)) for l in e.layers()]
        elif isinstance(e, Read):
            layers = range(num_layers) if e.layers is None else e.layers
            items = [(l, e) for l in layers]
        else:
            items = [(e.layer, e)]
        for l, item in items:
            if not 0 <= l < num_layers:
                raise ValueError(f"intervention at layer {l}: the language model has {num_layers} layers")
            per_layer.setdefault(l, []).append(item)
    return per_layer


@contextmanager
def intervene(target, *edits, num_heads: int | None = None) -> Iterator[HeadCache]:
    """Apply ``edits`` at the ``o_proj`` inputs while the body runs; yields the ``HeadCache``.

    ``target`` is a ``VLMAdapter`` (or anything with ``o_proj(l)``, ``num_layers``, ``num_heads``).
    Every hook is removed on exit, also when the body raises.
    """
    num_layers = target.num_layers
    num_heads = num_heads or target.num_heads
    cache = HeadCache()
    handles = []

    def make_hook(layer: int, items: list):
        def hook(module, args):
            x = args[0]
            B, T, W = x.shape
            z = x.reshape(B, T, num_heads, W // num_heads)
            for item in items:
                if isinstance(item, Read):
                    if item.grad:
                        probe = torch.zeros_like(z, requires_grad=True)
                        cache.probes[layer] = probe
                        z = z + probe
                        cache.values[layer] = z
                    else:
                        cache.values[layer] = z.detach() if item.detach else z
                else:
                    z = item.apply(z, cache)
            return (z.reshape(B, T, W),) + tuple(args[1:])

        return hook

    try:
        for layer, items in _expand(edits, num_layers).items():
            handles.append(target.o_proj(layer).register_forward_pre_hook(make_hook(layer, items)))
        yield cache
    finally:
        for h in handles:
            h.remove()
