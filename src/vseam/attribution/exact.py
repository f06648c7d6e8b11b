"""Exact head-ablation probabilities, fast: the numbers of the per-head, per-sample reference loop
(``reference.py``) from far fewer and cheaper forward passes.

How: images are encoded once per batch (``adapter.embed``); one clean pass records every decoder
layer's input hidden states and the keyword arguments the decoder hands its layers: whatever the
architecture builds there (the causal mask, or one per layer type: sliding-window and full layers;
rotary cos / sin of 1-D positions or of Qwen2-VL's 3-D M-RoPE ids; a prefix-LM mask) is replayed as
the model made it, so no architecture's masking or position scheme is re-implemented here. Anything a
decoder adds to the hidden states between two layers (Qwen3-VL adds visual features after its first
layers, in place) is recorded as the difference between a layer's input and a copy of the previous
layer's output, and added back. An ablation in layer ``l`` cannot change layers ``< l``, so its pass starts from the
recorded input of layer ``l`` and runs only layers ``l..L-1``, the final norm and the unembedding at
the last position. Many (sample, head) pairs share one pass: each row of the batch is
one sample with one head ablated, through a per-row [rows, H] head mask of the one intervention
mechanism (``vseam.interventions.Ablate``). Samples sharing a forward are those of most similar
length, so a left-padded batch pays little padding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import torch

from vseam.interventions import Ablate, intervene
from vseam.models.base import Embedded, Encoded, VLMAdapter, answer_stats

log = logging.getLogger(__name__)


@dataclass
class CleanRun:
    """What one clean pass over a batch leaves for the ablated passes."""

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


def _is_oom(e: BaseException) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or "out of memory" in str(e).lower()


class ExactEngine:
    """Exact ablated answer probabilities for chosen heads, many (sample, head) rows per forward.

    ``rows_per_forward`` is the number of ablated copies in one forward pass (the memory knob; for a
    7B model in bf16 on an 80 GB GPU, 32-128 fits prompts of ~600 tokens). On a CUDA out-of-memory
    error it halves itself and retries, so a too-large value costs time, not the run.
    """

    def __init__(self, adapter: VLMAdapter, mode: str = "mean", rows_per_forward: int = 256):
        if mode not in ("mean", "zero"):
            raise ValueError(f"ablation {mode!r}: expected 'mean' or 'zero'")
        self.adapter = adapter
        self.mode = mode
        self.rows_per_forward = max(1, int(rows_per_forward))

    @torch.no_grad()
    def ablated_probs(self, emb: Embedded, answer_mask: torch.Tensor, heads: torch.Tensor | None = None,
                      on_layer: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``p_abl`` [B, L, H] (float32; NaN where ``heads`` [L, H] is False) and the clean logits at the
        last position [B, V].

        ``answer_mask`` is the bool [B, V] mask of answer token ids. ``on_layer(l, n)`` is called after
        layer l's heads are done for n of the samples (progress reporting).

        Samples of a left-padded batch are regrouped by length (``length_groups``) and each group runs
        with only the padding it needs: an ablated copy costs its sequence length in every layer, so the
        padding of one long prompt is not paid by all the copies of the short ones.
        """
        a = self.adapter
        L, H = a.num_layers, a.num_heads
        heads = torch.ones(L, H, dtype=torch.bool) if heads is None else heads.bool().cpu()
        B = emb.inputs_embeds.shape[0]
        out = torch.full((B, L, H), float("nan"))
        logits = None
        answer_mask = answer_mask.to(a.device)
        per_sample = max(1, int(heads.sum(1).max()))  # rows one sample adds to a layer's forward
        for group, sub in length_batches(emb, max(1, self.rows_per_forward // per_sample)):
            p_abl, clean = self._ablated_group(sub, answer_mask.index_select(0, group.to(a.device)), heads,
                                               (lambda l, n=len(group): on_layer(l, n)) if on_layer else None)
            out[group] = p_abl
            if logits is None:
                logits = clean.logits.new_empty((B, clean.logits.shape[-1]))
            logits[group.to(logits.device)] = clean.logits
        return out, logits

    def _ablated_group(self, emb: Embedded, answer_mask: torch.Tensor, heads: torch.Tensor,
                       on_layer: Callable[[int], None] | None) -> tuple[torch.Tensor, CleanRun]:
        a = self.adapter
        L, H = a.num_layers, a.num_heads
        clean = clean_run(a, emb)
        B = clean.batch_size
        out = torch.full((B, L, H), float("nan"))
        for l in range(L):
            hs = heads[l].nonzero().squeeze(1)
            if hs.numel():
                # rows are sample-major: (b, h) for every sample b and every chosen head h
                sample_of_row = torch.arange(B).repeat_interleave(hs.numel())
                head_of_row = hs.repeat(B)
                out[sample_of_row, l, head_of_row] = self._rows(clean, l, sample_of_row, head_of_row, answer_mask)
            if on_layer is not None:
                on_layer(l)
        return out, clean

    def _rows(self, clean: CleanRun, layer: int, sample_of_row: torch.Tensor, head_of_row: torch.Tensor,
              answer_mask: torch.Tensor) -> torch.Tensor:
        a = self.adapter
        probs = []
        start, R = 0, len(sample_of_row)
        while start < R:
            stop = min(R, start + self.rows_per_forward)
            rows = sample_of_row[start:stop].to(a.device)
            mask = torch.zeros(stop - start, a.num_heads, dtype=torch.bool, device=a.device)
            mask[torch.arange(stop - start, device=a.device), head_of_row[start:stop].to(a.device)] = True
            try:
                logits = run_from_layer(a, clean, layer, rows, Ablate(layer, mask, mode=self.mode))
            except RuntimeError as e:
                if not _is_oom(e) or self.rows_per_forward == 1:
                    raise
                self.rows_per_forward = max(1, self.rows_per_forward // 2)
                log.warning("out of memory: rows_per_forward lowered to %d", self.rows_per_forward)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            p, _, _ = answer_stats(logits, answer_mask.index_select(0, rows))
            probs.append(p.float().cpu())
            start = stop
        return torch.cat(probs)

    @torch.no_grad()
    def vision_ablated_probs(self, enc: Encoded, answer_mask: torch.Tensor, heads: torch.Tensor | None = None,
                             on_layer: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The same for the vision tower's heads (``attribution.tower=vision``): ``p_abl`` [B, Lv, Hv] (NaN where
        ``heads`` [Lv, Hv] is False) and the clean logits at the last position [B, V].

        An ablated vision head changes every image token the language model reads, so nothing after the
        tower can be reused: each head costs one forward of the tower (the HF model's own, through its
        projector, tiling, newline tokens and merge) and one of the language model, for the whole batch at
        once: the head is ablated in every image of the batch, and images never attend to each other in
        the tower (separate rows, or Qwen2-VL's per-image attention blocks), so each sample's probability
        is that of its own ablation.
        """
        a, v = self.adapter, self.adapter.vision
        L, H = v.num_layers, v.num_heads
        heads = torch.ones(L, H, dtype=torch.bool) if heads is None else heads.bool().cpu()
        answer_mask = answer_mask.to(a.device)
        logits = a.last_logits(enc)
        out = torch.full((enc.batch_size, L, H), float("nan"))
        for l in range(L):
            for h in heads[l].nonzero().squeeze(1).tolist():
                with intervene(v, Ablate(l, [h], mode=self.mode)):
                    p, _, _ = answer_stats(a.last_logits(enc), answer_mask)
                out[:, l, h] = p.float().cpu()
            if on_layer is not None:
                on_layer(l, enc.batch_size)
        return out, logits
