"""Score samples with a model, with or without an edit (a per-head modulation, a logit bias, an attention edit,
edits made for each batch), optionally by contrastive next-token scoring (``Contrast``): one record per sample
(prediction, correctness, answer probability, yes-vs-no margin) and a counted list of skipped samples
(missing images).

Contrastive decoding (VCD, PAI's logit refinement) contrasts the next-token distribution of the input with that
of a second input (a distorted image, no image). The answer here is one token, so decoding reduces to the
next-token distribution at the answer position: ``evaluate(..., contrast=Contrast(...))`` runs the second input
through the model as it is (the method's edits act on the first input only, as PAI turns its attention edit off
for the image-free pass), combines ``(1 + alpha) * l(x) - alpha * l(x')`` and applies the adaptive plausibility
constraint, and every record is read off the combined logits.

The yes-vs-no margin of a yes/no question is ``log p(yes) - log p(no)`` at the answer position, each
``p`` summed over the answer's probability ids under the model's answer definition (docs/method.md#answer-tokens:
``▁Yes``, ``▁yes``, ``▁YES`` under the project's), the "no" answer written in the gold answer's case. It
is the threshold-free score of POPE's AUROC and balanced accuracy (``metrics.pope_metrics``); None for
other answers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

import torch

from vseam.data.sample import MissingImageError, Sample, load_image
from vseam.evaluation.metrics import summarize
from vseam.interventions import GroupedHeadModulation, intervene
from vseam.models.base import Embedded, answer_mask, answer_stats
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
        # +-inf: one answer was ruled out (a contrast's plausibility constraint); both ruled out: no margin (NaN)
        out[i] = None if math.isnan(m) else float(m)
    return out


@dataclass
class Contrast:
    """Contrastive next-token scoring: ``c = (1 + alpha) * l(x) - alpha * l(x')`` at the answer position.

    ``l`` is the logits (VCD) or, with ``log_probs``, the log-probabilities (PAI's CFG processor works on
    log-softmax; the two give the same distribution, arg-max and yes-vs-no margin, since they differ by a
    constant per row). ``x`` is the input as scored (with the method's edits), ``x'`` the second input,
    ``second(samples, batch) -> Embedded``, run through the model without edits. With ``beta`` the adaptive
    plausibility constraint: where ``p(token | x) < beta * max p(. | x)``, ``c = -inf`` (VCD's and PAI's cutoff,
    ``log(beta) + max`` on the first input's logits). ``alpha = 0`` gives the first input's own logits back
    (the constraint aside). ``name`` says what the second input is (records, summaries).
    """

    alpha: float
    second: Callable[[Sequence[Sample], Batch], Embedded]
    beta: float | None = None
    log_probs: bool = False
    name: str = "second input"


def contrast_logits(first: torch.Tensor, second: torch.Tensor, alpha: float, beta: float | None = None,
                    log_probs: bool = False) -> torch.Tensor:
    """``(1 + alpha) * l(first) - alpha * l(second)`` over the vocabulary (``l``: identity, or log-softmax with
    ``log_probs``), set to ``-inf`` where ``first`` is implausible (``softmax(first) < beta * max``), in float32."""
    a, b = first.float(), second.float()
    if log_probs:
        a, b = a.log_softmax(-1), b.log_softmax(-1)
    out = (1 + alpha) * a - alpha * b
    if beta is not None:
        cutoff = math.log(beta) + a.max(-1, keepdim=True).values
        out = out.masked_fill(a < cutoff, float("-inf"))
    return out


def _edits(modulation, batch: Batch) -> list:
    """The edits to apply to ``batch``: none, one edit, a list of them, or what an object with
    ``for_batch(batch)`` (edits that depend on the batch: its image tokens' positions) makes for it."""
    if modulation is None:
        return []
    if hasattr(modulation, "for_batch"):
        return list(modulation.for_batch(batch))
    return list(modulation) if isinstance(modulation, (list, tuple)) else [modulation]


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
                chunk.append(s)
                images.append(None)
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
def evaluate(adapter, samples: Sequence[Sample], modulation=None, *, contrast: Contrast | None = None,
             batch_size: int = 16, cache: EmbeddingCache | None = None, logits_fn: Callable | None = None,
             progress: bool = False) -> EvalResult:
    """Score ``samples``; a sample whose image is missing is skipped and counted, never scored 0.0.

    ``modulation``: any edit of ``vseam.interventions`` applied while scoring (a ``HeadModulation``, a
    ``LogitBias``, an ``AttentionEdit``), a list of edits, or an object whose ``for_batch(batch)`` makes the
    edits of each batch; ``contrast``: contrastive next-token scoring against a second input (``Contrast``);
    ``logits_fn(batch) -> [B, V]`` replaces the default forward (a method's own, e.g. VHR's two rows), the edits
    applied around it. A field method (``modulation.field.Applied``) gives all of these as ``applied.scoring(...)``.
    """
    cache = cache if cache is not None else EmbeddingCache(adapter)
    records, skipped = [], []
    for chunk, batch in _batches(adapter, samples, batch_size, cache, skipped, progress):
        edits = _edits(modulation, batch)
        forward = logits_fn if logits_fn is not None else (lambda b: adapter.lm_logits(b.emb))
        if edits:
            with intervene(adapter, *edits):
                logits = forward(batch)
        else:
            logits = forward(batch)
        if contrast is not None:
            logits = contrast_logits(logits, adapter.lm_logits(contrast.second(chunk, batch)), float(contrast.alpha),
                                     contrast.beta, contrast.log_probs)
        records += _records(adapter, chunk, batch, logits)
    return EvalResult(records, skipped)


@torch.no_grad()
def evaluate_groups(adapter, samples: Sequence[Sample], grouped: GroupedHeadModulation, *, batch_size: int = 16,
                    cache: EmbeddingCache | None = None, progress: bool = False,
                    context: Callable[[], AbstractContextManager] | None = None) -> list[EvalResult]:
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
