"""Encode organism samples once, through the evaluation adapter, into plain padded tensors.

Training re-reads the same questions many times, so they are encoded up front with ``adapter.encode``
(the prompt template and answer token of docs/method.md#prompts, as every evaluation uses) and padded to one
common width: the language model's inputs on the left, the Q-Former's text on the right.
"""

from __future__ import annotations

import torch

from vseam.data.sample import Sample


def _pad_to(t: torch.Tensor, width: int, value: int, left: bool) -> torch.Tensor:
    extra = torch.full((t.shape[0], width - t.shape[1]), value, dtype=t.dtype)
    return torch.cat([extra, t] if left else [t, extra], dim=1)


def encode_samples(adapter, samples: list[Sample], batch_size: int = 256) -> dict[str, torch.Tensor]:
    """All samples as one dict of tensors: the processor's inputs plus ``target`` (gold answer token)."""
    pad = adapter.tokenizer.pad_token_id
    chunks = []
    for i in range(0, len(samples), batch_size):
        enc = adapter.encode(samples[i:i + batch_size])
        chunks.append({**enc.inputs, "target": enc.target})
    out = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if parts[0].dim() == 2 and key != "pixel_values":
            width = max(p.shape[1] for p in parts)
            value = 0 if "attention_mask" in key else pad
            parts = [_pad_to(p, width, value, left=not key.startswith("qformer")) for p in parts]
        out[key] = torch.cat(parts)
    return out


NOT_MODEL_INPUTS = ("target", "cell_target", "cell_attr", "level_index", "key_pos", "key_target")  # our own columns beside the processor's


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in batch.items() if k not in NOT_MODEL_INPUTS}


def lm_logits(adapter, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Last-position logits [B, V] by the adapter's own forward path (positions over real tokens)."""
    from vseam.models.base import Encoded

    inputs = model_inputs(batch)
    enc = Encoded(inputs, [], batch["target"])
    return adapter.lm_logits(adapter.embed(enc))
