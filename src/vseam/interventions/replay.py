"""Replaying a forward pass from a recorded layer: the one clean pass every engine shares (head attribution,
the ablation study, causal tracing).

One clean pass records every decoder layer's input hidden states and the keyword arguments the decoder
hands its layers: whatever the architecture builds there (the causal mask, or one per layer type:
sliding-window and full layers; rotary cos / sin of 1-D positions or of Qwen2-VL's 3-D M-RoPE ids; a
prefix-LM mask) is replayed as the model made it, so no architecture's masking or position scheme is
re-implemented here. Anything a decoder adds to the hidden states between two layers (Qwen3-VL adds visual
features after its first layers, in place) is recorded as the difference between a layer's input and a
copy of the previous layer's output, and added back. An edit in layer ``l`` cannot change layers ``< l``,
so an edited pass starts from the recorded input of layer ``l`` and runs only layers ``l..L-1``, the final
norm and the unembedding at the last position, with the edits of the one intervention mechanism
(``intervene``) applied; each row of such a pass selects its sample of the clean batch, so many edited
copies share one forward. Samples sharing a forward are best those of similar length (``length_batches``),
so a left-padded batch pays little padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from vseam.interventions.hooks import intervene
from vseam.models.base import Embedded, VLMAdapter


@dataclass
class CleanRun:
    """What one clean pass over a batch leaves for the edited passes."""

    layer_inputs: list[torch.Tensor]  # per layer: its input hidden states [B, T, d]
    layer_kwargs: list[dict[str, Any]]  # per layer: the keyword arguments the decoder passed it
    # per layer: what the decoder added to the previous layer's output before this layer (None: nothing)
    layer_gaps: list[torch.Tensor | None]
    logits: torch.Tensor  # [B, V] clean logits at the last position
    batch_size: int


def clean_run(adapter: VLMAdapter, emb: Embedded) -> CleanRun:
    """Run the language model once on ``emb``, recording each layer's inputs (no gradients)."""
    L = adapter.num_layers
    inputs: list[Any] = [None] * L
    kwargs: list[Any] = [None] * L
    gaps: list[Any] = [None] * L
    last_out: list[Any] = [None]

    def make_hook(i):
        def hook(module, args, kw):
            hs = args[0] if args else kw["hidden_states"]
            inputs[i] = hs.detach()
            kwargs[i] = {k: v for k, v in kw.items() if k != "hidden_states"}
            prev = last_out[0]  # a copy of the previous layer's output (a decoder may add to it in place)
            if prev is not None and prev.shape == hs.shape:
                gap = (hs - prev).detach()
                gaps[i] = gap if bool(gap.any()) else None
        return hook

    def keep_output(module, args, output):
        last_out[0] = (output[0] if isinstance(output, tuple) else output).detach().clone()

    handles = [layer.register_forward_pre_hook(make_hook(i), with_kwargs=True)
               for i, layer in enumerate(adapter.layers)]
    handles += [layer.register_forward_hook(keep_output) for layer in adapter.layers]
    try:
        with torch.no_grad():
            logits = adapter.lm_logits(emb)
    finally:
        for h in handles:
            h.remove()
    if any(x is None for x in inputs):
        raise RuntimeError("some decoder layers were not called in the clean pass")
    return CleanRun(inputs, kwargs, gaps, logits, emb.inputs_embeds.shape[0])


def _take_rows(obj: Any, rows: torch.Tensor, batch: int) -> Any:
    """Select batch rows of every tensor with a leading batch dimension (nested in tuples / dicts).

    Tensors with a leading dimension of 1 broadcast over the batch and are kept as they are, unless the
    batch itself is 1 (then they are per-sample and are indexed too, which is the same thing). Only
    tensors of 2 or more dimensions are per-sample (masks, position ids, rotary cos / sin).
    """
    if isinstance(obj, torch.Tensor):
        # 1-D tensors (cache_position [T]) are never per-sample, even when T happens to equal the batch
        if obj.dim() > 1 and obj.shape[0] == batch:
            return obj.index_select(0, rows.to(obj.device))
        return obj
    if isinstance(obj, tuple):
        return tuple(_take_rows(o, rows, batch) for o in obj)
    if isinstance(obj, list):
        return [_take_rows(o, rows, batch) for o in obj]
    if isinstance(obj, dict):
        return {k: _take_rows(v, rows, batch) for k, v in obj.items()}
    return obj


def run_from_layer(adapter: VLMAdapter, clean: CleanRun, layer: int, rows: torch.Tensor,
                   *edits) -> torch.Tensor:
    """Logits at the last position [R, V] of the rows ``rows`` (indices into the clean batch), running
    only layers ``layer..L-1`` from the recorded input of ``layer``, with ``edits`` applied."""
    hidden = clean.layer_inputs[layer].index_select(0, rows.to(clean.layer_inputs[layer].device))
    with intervene(adapter, *edits):
        for j in range(layer, adapter.num_layers):
            if j > layer and clean.layer_gaps[j] is not None:
                hidden = hidden + clean.layer_gaps[j].index_select(0, rows.to(hidden.device))
            out = adapter.layers[j](hidden, **_take_rows(clean.layer_kwargs[j], rows, clean.batch_size))
            hidden = out[0] if isinstance(out, tuple) else out
    # the final norm is per position, so normalising only the last position gives the same vector
    last = adapter.norm(hidden[:, -1:])[:, -1]
    return adapter.unembed(last)


def length_groups(attention_mask: torch.Tensor, max_samples: int) -> list[tuple[torch.Tensor, int]]:
    """Split a batch into groups of at most ``max_samples`` samples of similar length: [(sample indices,
    width)], where width is the group's longest unpadded length, so ``[:, -width:]`` drops only padding.

    Only a left-padded mask (each row's ones at its end) is regrouped; any other mask is one group of the
    full width. Samples are taken shortest first (ties by index), so the grouping is deterministic.
    """
    mask = attention_mask.detach().bool().cpu()
    B, T = mask.shape
    lengths = mask.sum(1)
    left_padded = all(bool(mask[b, T - int(lengths[b]):].all()) for b in range(B))
    if not left_padded or B == 0:
        return [(torch.arange(B), T)]
    order = sorted(range(B), key=lambda b: (int(lengths[b]), b))
    groups = []
    for i in range(0, B, max(1, max_samples)):
        idx = torch.tensor(order[i:i + max_samples], dtype=torch.long)
        groups.append((idx, max(1, int(lengths[idx].max()))))
    return groups


def length_batches(emb: Embedded, max_samples: int):
    """``(sample indices, sub-batch)`` of each ``length_groups`` group of ``emb``: the sub-batch keeps only
    the padding its longest sample needs (position ids kept, so the numbers do not change)."""
    for group, width in length_groups(emb.attention_mask, max_samples):
        sub = emb.index(group.to(emb.inputs_embeds.device))
        if width < sub.inputs_embeds.shape[1]:
            sub = sub.crop(width)
        yield group, sub
