"""Language-model inputs per sample, computed once by the frozen vision side and reused (every epoch of
training, every method of a comparison, the attribution sweep of ``train.py``).

Only language-model heads are modulated (and LoRA / IA3 baselines touch only the language model), so
the merged token embeddings of a sample never change during training: the vision tower, projector or
Q-Former runs once per sample, not once per epoch and method.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vseam.data.sample import Sample
from vseam.models.base import Embedded, Encoded, answer_mask


@dataclass
class _Entry:
    embeds: torch.Tensor  # [T_i, d] the real (unpadded) tokens
    positions: torch.Tensor  # [T_i] or [k, T_i] their position ids (Embedded.position_ids without padding)
    extra: dict[str, torch.Tensor]  # per-token extras [..., T_i] (Embedded.extra without padding)
    target: int  # gold first answer token
    answer_ids: list[int]  # every token id whose probability counts as the answer's
    correct_ids: list[int]  # every token id an arg-max counts as correct at
    visual: torch.Tensor | None = None  # [T_i] bool: the image's tokens (adapter.visual_token_mask); None = unknown


@dataclass
class Batch:
    """A left-padded batch of cached language-model inputs with its targets."""

    emb: Embedded
    target: torch.Tensor  # [B]
    answer_ids: list[list[int]]
    ids: list[str]
    correct_ids: list[list[int]] | None = None  # None = answer_ids
    visual: torch.Tensor | None = None  # [B, T] bool: the image's tokens of each row (False at padding); None = unknown

    def answer_mask(self, vocab_size: int) -> torch.Tensor:
        return answer_mask(self.answer_ids, vocab_size, self.target.device)

    def correct_mask(self, vocab_size: int) -> torch.Tensor:
        return answer_mask(self.answer_ids if self.correct_ids is None else self.correct_ids, vocab_size,
                           self.target.device)


class EmbeddingCache:
    """Sample id -> merged embeddings. ``enabled=False`` recomputes every time (same numbers, slower).

    ``transform(encoded, samples) -> encoded`` changes the processor's outputs before the vision side runs (VCD's
    distorted image: noise on the pixel values); such a cache holds the transformed inputs' embeddings only.
    """

    def __init__(self, adapter, enabled: bool = True, transform: Callable[[Encoded, Sequence[Sample]], Encoded] | None = None):
        self.adapter = adapter
        self.enabled = enabled
        self.transform = transform
        self.store: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self.store)

    @torch.no_grad()
    def _compute(self, samples: Sequence[Sample], images=None) -> list[_Entry]:
        enc = self.adapter.encode(samples, images=images).to(self.adapter.device)
        if self.transform is not None:
            enc = self.transform(enc, samples)
        emb = self.adapter.embed(enc)
        visual = self.adapter.visual_token_mask(enc.inputs["input_ids"]).to(emb.attention_mask.device)
        if visual.shape != emb.attention_mask.shape:  # the language model's inputs are not the processor's tokens
            visual = None
        out = []
        for i in range(len(samples)):
            keep = emb.attention_mask[i].bool()
            correct = enc.answer_ids[i] if enc.correct_ids is None else enc.correct_ids[i]
            out.append(_Entry(emb.inputs_embeds[i][keep].detach().clone(), emb.position_ids[i][..., keep].clone(),
                              {k: v[i][..., keep].clone() for k, v in emb.extra.items()}, int(enc.target[i]),
                              list(enc.answer_ids[i]), list(correct),
                              None if visual is None else visual[i][keep].cpu()))
        return out

    def entries(self, samples: Sequence[Sample], images=None) -> list[_Entry]:
        if not self.enabled:
            return self._compute(samples, images)
        todo = [i for i, s in enumerate(samples) if s.id not in self.store]
        if todo:
            new = self._compute([samples[i] for i in todo], None if images is None else [images[i] for i in todo])
            for i, e in zip(todo, new):
                self.store[samples[i].id] = e
        return [self.store[s.id] for s in samples]

    def batch(self, samples: Sequence[Sample], images=None, device=None) -> Batch:
        """Left-padded ``Embedded`` for ``samples`` (padding is masked out, so values there do not matter)."""
        entries = self.entries(samples, images)
        device = device or self.adapter.device
        T = max(e.embeds.shape[0] for e in entries)
        d = entries[0].embeds.shape[1]
        # In the model's dtype: entries made under autocast (bf16-mixed) may be bf16 while the model is not.
        x = torch.zeros(len(entries), T, d, dtype=self.adapter.dtype, device=device)
        mask = torch.zeros(len(entries), T, dtype=torch.long, device=device)
        pos = entries[0].positions.new_zeros(len(entries), *entries[0].positions.shape[:-1], T, device=device)
        extra = {k: v.new_zeros(len(entries), *v.shape[:-1], T, device=device) for k, v in entries[0].extra.items()}
        for i, e in enumerate(entries):
            n = e.embeds.shape[0]
            x[i, T - n:] = e.embeds.to(device)
            mask[i, T - n:] = 1
            pos[i, ..., T - n:] = e.positions.to(device)
            for k, v in e.extra.items():
                extra[k][i, ..., T - n:] = v.to(device)
        emb = Embedded(x, mask, pos, extra)
        target = torch.tensor([e.target for e in entries], device=device)
        visual = None
        if all(e.visual is not None for e in entries):
            visual = torch.zeros(len(entries), T, dtype=torch.bool, device=device)
            for i, e in enumerate(entries):
                visual[i, T - e.visual.shape[0]:] = e.visual.to(device)
        return Batch(emb, target, [e.answer_ids for e in entries], [s.id for s in samples],
                     [e.correct_ids for e in entries], visual)
