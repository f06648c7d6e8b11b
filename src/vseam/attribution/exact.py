"""Exact head-ablation probabilities, fast: the numbers of the per-head, per-sample reference loop
(``reference.py``) from far fewer and cheaper forward passes.

How: images are encoded once per batch (``adapter.embed``); one clean pass records every decoder layer's
input (``vseam.interventions.replay``: whatever the architecture hands its layers is replayed as the model
made it). An ablation in layer ``l`` cannot change layers ``< l``, so its pass starts from the recorded
input of layer ``l`` and runs only layers ``l..L-1``, the final norm and the unembedding at the last
position. Many (sample, head) pairs share one pass: each row of the batch is one sample with one head
ablated, through a per-row [rows, H] head mask of the one intervention mechanism
(``vseam.interventions.Ablate``). Samples sharing a forward are those of most similar length, so a
left-padded batch pays little padding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vseam.config import AttributionConfig
from vseam.interventions import Ablate, intervene
from vseam.interventions.replay import CleanRun, clean_run, length_batches, run_from_layer
from vseam.models.base import Embedded, Encoded, VLMAdapter, answer_stats
from vseam.runtime import RowBatches


class ExactEngine:
    """Exact ablated answer probabilities for chosen heads, many (sample, head) rows per forward.

    ``mode`` is the ablation (``attribution.ablation``: mean | zero) and ``rows_per_forward`` the number
    of ablated copies in one forward pass (``attribution.rows_per_forward``, the memory knob; for a 7B model
    in bf16 on an 80 GB GPU, 32-128 fits prompts of ~600 tokens); both default to the config's. On an
    out-of-memory error it halves itself and retries (``vseam.runtime.RowBatches``), so a too-large value
    costs time, not the run.
    """

    def __init__(self, adapter: VLMAdapter, mode: str = AttributionConfig.ablation,
                 rows_per_forward: int = AttributionConfig.rows_per_forward):
        if mode not in ("mean", "zero"):
            raise ValueError(f"ablation {mode!r}: expected 'mean' or 'zero'")
        self.adapter = adapter
        self.mode = mode
        self.batches = RowBatches(rows_per_forward, "attribution.rows_per_forward")

    @property
    def rows_per_forward(self) -> int:
        """Ablated copies per forward now (halved from the setting after an out-of-memory error)."""
        return self.batches.size

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
                                               (lambda l, n=len(group): on_layer(l, n)) if on_layer else None)  # noqa: B008 (binds this group's size)
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

        def forward(start: int, stop: int) -> torch.Tensor:
            rows = sample_of_row[start:stop].to(a.device)
            mask = torch.zeros(stop - start, a.num_heads, dtype=torch.bool, device=a.device)
            mask[torch.arange(stop - start, device=a.device), head_of_row[start:stop].to(a.device)] = True
            logits = run_from_layer(a, clean, layer, rows, Ablate(layer, mask, mode=self.mode))
            p, _, _ = answer_stats(logits, answer_mask.index_select(0, rows))
            return p.float().cpu()

        return torch.cat(self.batches.run(len(sample_of_row), forward))

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
