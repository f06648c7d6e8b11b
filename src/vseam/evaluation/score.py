"""Score samples with a model, with or without an edit (a per-head modulation, a logit bias): one record per
sample (prediction, correctness, answer probability, yes-vs-no margin) and a counted list of skipped
samples (missing images).

The yes-vs-no margin of a yes/no question is ``log p(yes) - log p(no)`` at the answer position, each
``p`` summed over the answer's probability ids under the model's answer definition (SPEC section 0:
``▁Yes``, ``▁yes``, ``▁YES`` under the project's), the "no" answer written in the gold answer's case. It
is the threshold-free score of POPE's AUROC and balanced accuracy (``metrics.pope_metrics``); None for
other answers.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterator, Sequence

import torch

from vseam.data.sample import MissingImageError, Sample, load_image
from vseam.evaluation.metrics import summarize
from vseam.interventions import GroupedHeadModulation, intervene
from vseam.models.base import answer_mask, answer_stats
from vseam.models.cache import Batch, EmbeddingCache

_OPPOSITE = {"yes": "no", "no": "yes"}


@dataclass
class EvalResult:
    records: list[dict]
    skipped: list[dict] = field(default_factory=list)

    def summary(self) -> dict:
        return summarize(self.records, self.skipped)

    @property
    def accuracy(self) -> float | None:
        return self.summary()["accuracy"]


def yes_no_forms(answer: str | None) -> tuple[str, str] | None:
    """(yes answer, no answer) in the case ``answer`` is written in, for a yes/no gold answer; else None."""
    a = (answer or "").strip()
    low = a.lower()
    if low not in _OPPOSITE:
        return None
    other = _OPPOSITE[low]
    other = other.upper() if a.isupper() else other.capitalize() if a[:1].isupper() else other
    return (a, other) if low == "yes" else (other, a)


def yes_no_margin(adapter, logits: torch.Tensor, answers: Sequence[str | None]) -> list[float | None]:
    """Per row of last-position ``logits`` [B, V]: ``log p(yes) - log p(no)`` for a yes/no answer, else None."""
    forms = [yes_no_forms(a) for a in answers]
    rows = [i for i, f in enumerate(forms) if f is not None]
    out: list[float | None] = [None] * len(forms)
    if not rows:
        return out
    V = logits.shape[-1]
    yes = answer_mask([adapter.answer_tokens(forms[i][0])[0] for i in rows], V, logits.device)
    no = answer_mask([adapter.answer_tokens(forms[i][1])[0] for i in rows], V, logits.device)
    x = logits[rows].float()
    ninf = torch.tensor(float("-inf"), device=x.device)
    margin = torch.where(yes, x, ninf).logsumexp(-1) - torch.where(no, x, ninf).logsumexp(-1)
    for i, m in zip(rows, margin.tolist()):
        out[i] = float(m)
    return out


def _batches(adapter, samples: Sequence[Sample], batch_size: int, cache: EmbeddingCache, skipped: list[dict],
             progress: bool) -> Iterator[tuple[list[Sample], Batch]]:
    """Batches of readable samples (a missing image is appended to ``skipped``) as cached LM inputs."""
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
        yield chunk, cache.batch(chunk, images=None if cache.enabled else images)


def _records(adapter, chunk: Sequence[Sample], batch: Batch, logits: torch.Tensor) -> list[dict]:
    V = logits.shape[-1]
    prob, correct, _ = answer_stats(logits, batch.answer_mask(V), batch.correct_mask(V))
    tokens = adapter.token_text(logits.argmax(-1).tolist())
    margins = yes_no_margin(adapter, logits, [s.answer for s in chunk])
    return [{"id": s.id, "benchmark": s.benchmark, "category": s.category, "level": s.level, "answer": s.answer,
             "pred_token": tokens[i], "correct": bool(correct[i]), "prob": float(prob[i]), "margin": margins[i]}
            for i, s in enumerate(chunk)]


@torch.no_grad()
def evaluate(adapter, samples: Sequence[Sample], modulation=None, *, batch_size: int = 16,
             cache: EmbeddingCache | None = None, logits_fn: Callable | None = None,
             progress: bool = False) -> EvalResult:
    """Score ``samples``; a sample whose image is missing is skipped and counted, never scored 0.0.

    ``modulation``: any edit of ``vseam.interventions`` applied while scoring (a ``HeadModulation``, a
    ``LogitBias``); ``logits_fn(batch) -> [B, V]`` replaces the default forward (peft-adapted copies).
    """
    cache = cache if cache is not None else EmbeddingCache(adapter)
    records, skipped = [], []
    for chunk, batch in _batches(adapter, samples, batch_size, cache, skipped, progress):
        if logits_fn is not None:
            logits = logits_fn(batch)
        elif modulation is not None:
            with intervene(adapter, modulation):
                logits = adapter.lm_logits(batch.emb)
        else:
            logits = adapter.lm_logits(batch.emb)
        records += _records(adapter, chunk, batch, logits)
    return EvalResult(records, skipped)


@torch.no_grad()
def evaluate_groups(adapter, samples: Sequence[Sample], grouped: GroupedHeadModulation, *, batch_size: int = 16,
                    cache: EmbeddingCache | None = None, progress: bool = False,
                    context: Callable[[], ContextManager] | None = None) -> list[EvalResult]:
    """Score every group of ``grouped`` on ``samples`` in one pass (each batch of samples repeated once per
    group, ``batch_size * groups`` rows a forward): one ``EvalResult`` per group, equal to ``evaluate`` with
    ``grouped.group(g)``. ``context()``: a context each forward runs in (the draws' last-position forward,
    ``interventions.last_position_only``)."""
    cache = cache if cache is not None else EmbeddingCache(adapter)
    G = grouped.groups
    records: list[list[dict]] = [[] for _ in range(G)]
    skipped: list[dict] = []
    for chunk, batch in _batches(adapter, samples, batch_size, cache, skipped, progress):
        with context() if context is not None else nullcontext(), intervene(adapter, grouped):
            logits = adapter.lm_logits(batch.emb.repeat(G))
        logits = logits.reshape(len(chunk), G, -1)
        for g in range(G):
            records[g] += _records(adapter, chunk, batch, logits[:, g])
    return [EvalResult(r, list(skipped)) for r in records]
