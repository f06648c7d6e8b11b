"""Score samples with a model, with or without a per-head modulation: one record per sample (prediction,
correctness, answer probability) and a counted list of skipped samples (missing images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from vseam.data.sample import MissingImageError, Sample, load_image
from vseam.evaluation.metrics import summarize
from vseam.interventions import HeadModulation, intervene
from vseam.models.base import answer_stats
from vseam.models.cache import EmbeddingCache


@dataclass
class EvalResult:
    records: list[dict]
    skipped: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return summarize(self.records, self.skipped)

    @property
    def accuracy(self) -> float | None:
        return self.summary()["accuracy"]


@torch.no_grad()
def evaluate(adapter, samples: Sequence[Sample], modulation: HeadModulation | None = None, *, batch_size: int = 16,
             cache: EmbeddingCache | None = None, logits_fn: Callable | None = None, progress: bool = False) -> EvalResult:
    """Score ``samples``; a sample whose image is missing is skipped and counted, never scored 0.0.

    ``logits_fn(batch) -> [B, V]`` replaces the default forward (used for peft-adapted copies).
    """
    cache = cache if cache is not None else EmbeddingCache(adapter)
    records, skipped = [], []
    starts = range(0, len(samples), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch")
    for start in starts:
        chunk, images = [], []
        for s in samples[start:start + batch_size]:
            if cache.enabled and s.id in cache.store:
                chunk.append(s); images.append(None)
                continue
            try:
                images.append(load_image(s))
            except MissingImageError as e:
                skipped.append({"id": s.id, "reason": str(e)})
                continue
            chunk.append(s)
        if not chunk:
            continue
        todo = [i for i, im in enumerate(images) if im is not None]
        if todo and cache.enabled:  # fill the cache with the images already opened
            cache.entries([chunk[i] for i in todo], [images[i] for i in todo])
        batch = cache.batch(chunk, images=None if cache.enabled else images)
        if logits_fn is not None:
            logits = logits_fn(batch)
        elif modulation is not None:
            with intervene(adapter, modulation):
                logits = adapter.lm_logits(batch.emb)
        else:
            logits = adapter.lm_logits(batch.emb)
        prob, correct, _ = answer_stats(logits, batch.answer_mask(logits.shape[-1]), batch.correct_mask(logits.shape[-1]))
        pred = logits.argmax(-1).tolist()
        tokens = adapter.token_text(pred)
        for i, s in enumerate(chunk):
            records.append({"id": s.id, "benchmark": s.benchmark, "category": s.category, "level": s.level,
                            "answer": s.answer, "pred_token": tokens[i], "correct": bool(correct[i]),
                            "prob": float(prob[i])})
    return EvalResult(records, skipped)
