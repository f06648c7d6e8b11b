"""What every field method shares: the one ``Applied`` (a method ready to score), how a method is registered
(``Method``, what its estimate on a train split gives: ``Estimate``), the scaling of the papers' layer ranges and
head counts to the model (``model_layers``, ``model_heads``: ``modulation.field_depth`` / ``field_heads``), the
token roles of a batch (``token_roles``), the prompt without its image (``image_free``) and the language-model
inputs of a steered vision tower (``SteeredCache``). The methods themselves: ``field.attention`` and
``field.activation``; the registry and the paths from a config, a file and ``train.py``: ``field`` (``__init__``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from vseam.data.sample import Sample
from vseam.evaluation.score import Contrast
from vseam.interventions import intervene
from vseam.interventions.checkpoint import save_method
from vseam.models.base import Embedded
from vseam.models.cache import Batch, EmbeddingCache
from vseam.utils.errors import UserError


class NotApplicableError(UserError, ValueError):
    """A method asked for on a model (or data) it does not apply to."""


# ------------------------------------------------------------------------------------------ the paper's model
def model_layers(span: Sequence[int], depth: int, num_layers: int) -> list[int]:
    """The model's layers for a range ``[start, end)`` written for a ``depth``-layer model
    (``modulation.field_depth``: LLaVA-1.5-7B's 32): each end scaled by ``num_layers / depth`` and rounded half
    up, at least one layer (the same share of the stack)."""
    start, end = (int(math.floor(int(v) * num_layers / int(depth) + 0.5)) for v in span)
    start = min(max(start, 0), num_layers - 1)
    return list(range(start, min(max(end, start + 1), num_layers)))


def model_heads(n: int, depth: int, heads: int, num_layers: int, num_heads: int) -> int:
    """``n`` heads of a ``depth`` x ``heads`` model (``modulation.field_depth`` x ``field_heads``: LLaVA-1.5-7B's
    32 x 32) as the same share of a ``num_layers`` x ``num_heads`` model's heads, rounded, at least one."""
    total = int(num_layers) * int(num_heads)
    return max(1, min(total, round(int(n) * total / (int(depth) * int(heads)))))


# ------------------------------------------------------------------------------------------ a batch's tokens
def token_roles(batch: Batch, method: str) -> dict[str, torch.Tensor]:
    """Bool [B, T] per role of each (left-padded) row: ``image`` (the image's tokens), ``before`` (text before the
    first image token: the system prompt), ``after`` (text after the last one: the question and the answer's
    template), ``last`` (the last position, where the answer is read). Refused (``NotApplicableError`` naming
    ``method``) where the rows' image tokens are unknown or a row has none."""
    if batch.visual is None:
        raise NotApplicableError(f"{method}: the model's language-model inputs are not the processor's tokens, so "
                                 f"its image tokens cannot be found (adapter.visual_token_mask)")
    real = batch.emb.attention_mask.bool()
    image = batch.visual.to(real.device) & real
    if not bool(image.any(1).all()):
        raise NotApplicableError(f"{method}: {int((~image.any(1)).sum())} of {len(image)} questions have no image token in "
                                 f"the language model's input: the method acts on attention to the image")
    T = image.shape[1]
    idx = torch.arange(T, device=real.device)[None]
    first = torch.where(image, idx, T).min(1, keepdim=True).values
    last_image = torch.where(image, idx, -1).max(1, keepdim=True).values
    last = torch.zeros_like(real)
    last[:, -1] = True
    return {"image": image, "before": real & ~image & (idx < first), "after": real & ~image & (idx > last_image),
            "last": last}


def image_free(emb: Embedded, visual: torch.Tensor) -> Embedded:
    """The prompt as the model reads it without its image: ``emb`` with the image's tokens (``visual`` [B, T])
    removed from every row (the tokens before and after the image, joined: PAI's ``neg_promt``, VHR's text-only
    row), left-padded again. Positions count on from where the row's own positions start (the model's first
    position: 0, PaliGemma's 1), over the kept tokens, the same on every axis of an M-RoPE position tensor (as a
    text-only prompt gets them); per-token extras keep the kept tokens' values."""
    x, mask, pos = emb.inputs_embeds, emb.attention_mask, emb.position_ids
    real = mask.bool()
    keep = real & ~visual.to(mask.device).bool()
    B, n = mask.shape[0], keep.sum(1)
    W = int(n.max())
    nx = x.new_zeros(B, W, x.shape[-1])
    nmask = mask.new_zeros(B, W)
    npos = pos.new_zeros(*pos.shape[:-1], W)
    nextra = {k: v.new_zeros(*v.shape[:-1], W) for k, v in emb.extra.items()}
    for i in range(B):
        idx = keep[i].nonzero().squeeze(1)
        m = idx.numel()
        if m == 0:
            raise ValueError(f"row {i} holds only image tokens: nothing is left without the image")
        start = pos[i, ..., int(real[i].nonzero()[0, 0])].min()
        nx[i, W - m:] = x[i, idx]
        nmask[i, W - m:] = 1
        npos[i, ..., W - m:] = start + torch.arange(m, device=pos.device, dtype=pos.dtype)
        for k, v in emb.extra.items():
            nextra[k][i, ..., W - m:] = v[i][..., idx]
    return Embedded(nx, nmask, npos, nextra)


# ------------------------------------------------------------------------------------------ the vision tower
class SteeredCache(EmbeddingCache):
    """Language-model inputs computed with edits of the vision tower applied (VTI's visual steering): its own
    store, so the run's unsteered cache is never mixed in."""

    def __init__(self, adapter, vision_edits: Sequence, enabled: bool = True):
        super().__init__(adapter, enabled=enabled)
        self.vision_edits = list(vision_edits)

    def _compute(self, samples, images=None):
        with intervene(self.adapter.vision, *self.vision_edits):
            return super()._compute(samples, images)


# ------------------------------------------------------------------------------------------ a method, applied
@dataclass
class Applied:
    """One field method ready to score, whichever it is and however it was made (from its ``modulation.*`` keys,
    from its file, by ``train.py``). Every consumer scores it the same way: ``evaluate(adapter, samples,
    **applied.scoring(adapter, cache))`` (``Job.evaluate`` takes the same keywords).

    What it may carry: ``edits(batch)``, the language model's edits of a batch (made per batch: they may depend on
    its image tokens); ``vision_edits``, edits of the vision tower while the language model's inputs are computed
    (then scored from their own cache, ``SteeredCache``); ``contrast``, contrastive next-token scoring against a
    second input; ``forward(batch) -> [B, V]``, a replacement of the plain forward (VHR's two rows). And what it
    is: ``hyperparameters`` as applied, ``changes`` (what it changes), ``cost`` (forward passes per question),
    ``tensors`` (what it estimated, saved with it), ``extra`` (its row's own fields), ``observed()`` (fields its
    scoring observed, e.g. the heads VHR chose)."""

    name: str
    hyperparameters: dict[str, Any]
    changes: str
    cost: dict[str, Any]
    edits: Callable[[Batch], list] | None = None
    vision_edits: list = field(default_factory=list)
    contrast: Contrast | None = None
    forward: Callable[[Batch], torch.Tensor] | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    observed: Callable[[], dict] | None = None

    def for_batch(self, batch: Batch) -> list:
        """The language model's edits of ``batch`` (``evaluation.score.evaluate`` asks for them per batch)."""
        return [] if self.edits is None else list(self.edits(batch))

    def cache(self, base: EmbeddingCache) -> EmbeddingCache:
        """``base`` (the model's own inputs), or a cache of the same adapter with the vision tower edited."""
        return base if not self.vision_edits else SteeredCache(base.adapter, self.vision_edits, enabled=base.enabled)

    def scoring(self, adapter, cache: EmbeddingCache | None = None) -> dict:
        """The keywords of ``evaluate`` / ``Job.evaluate`` that score with this method: ``modulation`` (its edits per
        batch), ``contrast``, ``logits_fn`` (its forward) and ``cache`` (``cache`` or the adapter's own)."""
        return {"modulation": self, "contrast": self.contrast, "logits_fn": self.forward,
                "cache": self.cache(cache if cache is not None else EmbeddingCache(adapter))}

    def summary(self) -> dict:
        """The fields of the method's row (``summary.json``) and of ``eval_results.json``'s ``method_info``."""
        return {"hyperparameters": self.hyperparameters, "changes": self.changes, "cost": self.cost, **self.extra,
                **(self.observed() if self.observed is not None else {})}

    def save(self, path, adapter, extra: dict | None = None):
        """Its file (``interventions.checkpoint.save_method``): name, hyperparameters, tensors, the model's identity."""
        return save_method(path, self.name, hyperparameters=self.hyperparameters, tensors=self.tensors,
                           model=adapter.name, num_layers=adapter.num_layers, num_heads=adapter.num_heads,
                           head_dim=adapter.head_dim, identity=adapter.identity, extra=extra)


# ------------------------------------------------------------------------------------------ a method, registered
@dataclass
class Estimate:
    """What a method that needs data estimated on a train split: its ``hyperparameters`` as applied and
    ``tensors`` (what ``Method.build`` makes it from, saved in its file), the train samples it used (``seen``:
    ``analyze.py eval`` refuses to score them), what the estimate cost (``setup``) and fields for its row."""

    hyperparameters: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    seen: list[Sample]
    setup: str
    row: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """One field method, registered once (``field.METHODS``): ``build(adapter, hyperparameters, tensors,
    cache_enabled) -> Applied`` (from what its file holds, or from ``configure``); ``configure(adapter, mc, seed)
    -> hyperparameters`` from the ``modulation.*`` keys for a method that needs no data, else ``estimate(job,
    name) -> Estimate | None`` on the train split (None: it does not apply to this data, said); ``check(job,
    batch)`` raises ``NotApplicableError`` where the model does not apply (``train.py`` asks before any method
    runs; a method with neither is checked by the edits it makes of ``batch``)."""

    build: Callable[[Any, dict, dict, bool], Applied]
    configure: Callable[[Any, Any, int], dict] | None = None
    estimate: Callable[[Any, str], Estimate | None] | None = None
    check: Callable[[Any, Batch], None] | None = None

    def __post_init__(self):
        if (self.configure is None) == (self.estimate is None):
            raise ValueError("a field method is configured from its keys or estimated from data: exactly one")

    @property
    def needs_file(self) -> bool:
        """Estimated from data: ``analyze.py eval`` applies it from a ``train.py`` run's file only."""
        return self.configure is None


def span(layers: Sequence[int]) -> str:
    """``layer 3`` / ``layers 2-5``: a list of layers in a method's ``changes``."""
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"
