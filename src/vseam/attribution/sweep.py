"""The sweep over samples (per-sample baseline and ablated probabilities) and ``score_heads``, the one
driver of head attribution (``analyze.py heads``, ``train.py``, the notebook API).

The samples are chunked, saved, resumed and sharded over ranks by the runtime (``vseam.runtime.Chunks``):
a restarted run with the same config computes only the chunks it lacks and ends bit-identical to an
uninterrupted one, and any number of ranks gives the numbers of one. The settings are the
``attribution`` config group (``AttributionConfig``), taken whole: no default here can differ from it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vseam.attribution.exact import ExactEngine
from vseam.attribution.patching import estimated_ablated_probs
from vseam.attribution.scores import HeadScores, grouped_head_scores, head_scores, top_k_set
from vseam.config import AttributionConfig, DataConfig, settings_of
from vseam.data.sample import MissingImageError, Sample, load_image
from vseam.models.base import VLMAdapter, answer_stats
from vseam.models.cache import EmbeddingCache
from vseam.runtime import Progress, Runtime, read_chunk
from vseam.utils.io import BadFileError, save_safetensors

log = logging.getLogger(__name__)


@dataclass
class ChunkResult:
    """Per-sample results of one chunk (samples whose image loaded)."""

    index: int
    ids: list[str]
    prob: torch.Tensor  # [n] baseline probability of the answer
    correct: torch.Tensor  # [n] bool, baseline arg-max is an answer token
    ablated: torch.Tensor  # [n, L, H] probability with each head ablated (NaN = head not scored)
    skipped: list[dict] = field(default_factory=list)  # [{"id", "reason"}]
    categories: list[str | None] | None = None  # each sample's category and level (the merged result only):
    levels: list[str | None] | None = None  # the study regroups the per-sample values by them

    def save(self, path: Path, fingerprint: str) -> None:
        meta = {"fingerprint": fingerprint, "index": str(self.index), "ids": json.dumps(self.ids),
                "skipped": json.dumps(self.skipped)}
        save_safetensors(path, {"prob": self.prob, "correct": self.correct.to(torch.uint8),
                                "ablated": self.ablated}, metadata=meta)

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> ChunkResult:
        fix = "delete it to recompute that chunk, or attribution.resume=false to discard all saved progress"
        t, meta = read_chunk(path, fingerprint, "attribution.resume")
        try:
            ids, skipped = json.loads(meta["ids"]), json.loads(meta["skipped"])
            res = cls(int(meta["index"]), ids, t["prob"], t["correct"].bool(), t["ablated"], skipped)
        except (KeyError, ValueError) as e:
            raise BadFileError(f"progress chunk {path} lacks or garbles {e}; {fix}") from None
        n = len(ids)
        if res.prob.shape != (n,) or res.correct.shape != (n,) or res.ablated.dim() != 3 or res.ablated.shape[0] != n:
            raise BadFileError(f"progress chunk {path} is inconsistent: {n} ids, prob {tuple(res.prob.shape)}, "
                               f"ablated {tuple(res.ablated.shape)}; {fix}")
        return res


class Sweep:
    """Runs ``settings.method`` (exact | atp) over this rank's chunks, saving and reusing progress.

    ``settings`` is the ``attribution`` group (``AttributionConfig``, a config node, a mapping of some of its
    keys, or None: the defaults); ``batch_size`` is ``data.batch_size``; ``heads`` [L, H] limits the exact
    engine to some heads (the re-scoring of an estimate's top heads); ``runtime`` says where chunks are
    saved, what else they depend on and which ranks share them (default: one process, nothing saved).
    """

    def __init__(self, adapter: VLMAdapter, samples: Sequence[Sample], settings: Any = None, *,
                 batch_size: int = DataConfig.batch_size, heads: torch.Tensor | None = None, tag: str | None = None,
                 runtime: Runtime | None = None, cache: EmbeddingCache | None = None):
        st = self.settings = settings_of(settings, AttributionConfig)
        method, tower = st.method, st.tower
        if tower != "language" and method != "exact":
            raise ValueError(f"attribution.tower={tower}: scored by the exact engine only (got method {method!r})")
        if method == "atp" and heads is not None:
            raise ValueError("attribution patching scores all heads at once; a head subset is for the exact engine")
        self.adapter, self.samples, self.method, self.mode = adapter, list(samples), method, st.ablation
        self.space, self.alpha, self.path, self.tower = st.atp_space, float(st.atp_alpha), str(st.atp_path), tower
        self.num_layers, self.num_heads = adapter.stack(tower).shape[:2]
        self.batch_size = max(1, int(batch_size))
        self.heads = None if heads is None else heads.bool().cpu()
        self.engine = ExactEngine(adapter, mode=st.ablation, rows_per_forward=st.rows_per_forward)
        self.cache = cache  # language-model inputs already computed (train.py), reused and filled here
        runtime = runtime or Runtime()
        alpha, path = self.alpha, self.path
        self.chunks = runtime.chunks(
            len(self.samples), st.chunk_size, tag or method,
            method=method, mode=st.ablation, batch_size=self.batch_size, chunk_size=max(1, int(st.chunk_size)),
            heads=None if self.heads is None else self.heads.int().flatten().tolist(),
            space=st.atp_space if method == "atp" else None, ids=[s.id for s in self.samples],
            # named only when it is not the classic 0, so progress saved before the option existed still matches
            **({"alpha": alpha} if method == "atp" and alpha != 0 else {}),
            **({"path": path} if method == "atp" and alpha != 0 and path != "all" else {}),
            **({"tower": tower} if tower != "language" else {}))  # named only when not the default, as alpha
        self.bounds = self.chunks.bounds

    # ------------------------------------------------------------------ chunks
    def my_chunks(self) -> list[int]:
        return self.chunks.mine()

    def work_units(self, c: int) -> int:
        """Progress-bar units of a chunk, proportional to its cost so the ETA holds: for exact, an
        ablation in layer l runs L - l layers, so a sample costs L + (L-1) + ... + 1 layer passes."""
        lo, hi = self.bounds[c]
        L = self.num_layers
        if self.tower != "language":  # a vision head ablation reruns everything: one unit per sample and layer
            return (hi - lo) * L
        return (hi - lo) * (L * (L + 1) // 2 if self.method == "exact" else 1)

    def run(self, on_progress: Callable[[int], None] | None = None,
            on_chunk: Callable[[ChunkResult], None] | None = None) -> list[ChunkResult]:
        """This rank's chunk results, in chunk order: loaded when saved, computed otherwise.

        ``on_progress(units)`` advances a progress bar; ``on_chunk(result)`` is called after each newly
        computed chunk is saved (W&B progress; tests raise there to simulate a kill).
        """
        return self.chunks.run(lambda c: self.compute_chunk(c, on_progress), ChunkResult.load,
                               units=self.work_units, on_progress=on_progress, on_chunk=on_chunk)

    def compute_chunk(self, c: int, on_progress: Callable[[int], None] | None = None) -> ChunkResult:
        lo, hi = self.bounds[c]
        valid, images, skipped = [], [], []
        for s in self.samples[lo:hi]:
            try:
                images.append(load_image(s))
                valid.append(s)
            except MissingImageError as e:
                skipped.append({"id": s.id, "reason": str(e)})
                if on_progress:
                    on_progress(self.work_units(c) // (hi - lo))
        L, H = self.num_layers, self.num_heads
        probs, corrects, ablated = [], [], []
        for start in range(0, len(valid), self.batch_size):
            batch, imgs = valid[start:start + self.batch_size], images[start:start + self.batch_size]
            batch_of = self._vision_batch if self.tower != "language" else self._language_batch
            p_abl, p, ok = batch_of(batch, imgs, on_progress)
            probs.append(p.float().cpu())
            corrects.append(ok.cpu())
            ablated.append(p_abl.float().cpu())
        if valid:
            prob, correct, abl = torch.cat(probs), torch.cat(corrects), torch.cat(ablated)
        else:
            prob, correct, abl = torch.zeros(0), torch.zeros(0, dtype=torch.bool), torch.zeros(0, L, H)
        return ChunkResult(c, [s.id for s in valid], prob, correct, abl, skipped)

    def _language_batch(self, batch, imgs, on_progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(ablated [B, L, H], baseline p [B], correct [B]) of the language model's heads on one batch."""
        a, L = self.adapter, self.num_layers
        if self.cache is not None:
            cached = self.cache.batch(batch, imgs)
            emb = cached.emb
            mask, cmask = cached.answer_mask(a.vocab_size), cached.correct_mask(a.vocab_size)
        else:
            enc = a.encode(batch, imgs).to(a.device)
            mask, cmask = enc.answer_mask(a.vocab_size), enc.correct_mask(a.vocab_size)
            with torch.no_grad():
                emb = a.embed(enc)
        if self.method == "exact":
            step = (lambda l, n: on_progress(n * (L - l))) if on_progress else None
            p_abl, clean_logits = self.engine.ablated_probs(emb, mask, self.heads, on_layer=step)
            p, ok, _ = answer_stats(clean_logits, mask, cmask)
            return p_abl, p, ok
        p_abl, p, ok = estimated_ablated_probs(a, emb, mask, mode=self.mode, space=self.space, alpha=self.alpha,
                                               correct_mask=cmask, path=self.path)
        if on_progress:
            on_progress(len(batch))
        return p_abl, p, ok

    def _vision_batch(self, batch, imgs, on_progress) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The same for the vision tower's heads (the cached language-model inputs change with every head)."""
        a = self.adapter
        enc = a.encode(batch, imgs).to(a.device)
        mask, cmask = enc.answer_mask(a.vocab_size), enc.correct_mask(a.vocab_size)
        step = (lambda l, n: on_progress(n)) if on_progress else None
        p_abl, clean_logits = self.engine.vision_ablated_probs(enc, mask, self.heads, on_layer=step)
        p, ok, _ = answer_stats(clean_logits, mask, cmask)
        return p_abl, p, ok


def merge_chunks(chunks: Sequence[ChunkResult], num_layers: int, num_heads: int) -> ChunkResult:
    """All chunks (in chunk order: ``Chunks.gather``), concatenated into one (index -1)."""
    ids = [i for r in chunks for i in r.ids]
    skipped = [s for r in chunks for s in r.skipped]
    if not chunks:
        return ChunkResult(-1, [], torch.zeros(0), torch.zeros(0, dtype=torch.bool),
                           torch.zeros(0, num_layers, num_heads), [])
    return ChunkResult(-1, ids, torch.cat([r.prob for r in chunks]), torch.cat([r.correct for r in chunks]),
                       torch.cat([r.ablated for r in chunks]), skipped)


def score_heads(adapter: VLMAdapter, samples: Sequence[Sample], settings: Any = None, *,
                batch_size: int = DataConfig.batch_size, max_skip_fraction: float = DataConfig.max_skip_fraction,
                runtime: Runtime | None = None, cache: EmbeddingCache | None = None,
                on_chunk: Callable[[str, int, int, ChunkResult], None] | None = None) -> HeadScores:
    """Head scores of every head of ``adapter`` over ``samples`` (docs/method.md#head-scores).

    ``settings``: the ``attribution`` group (``AttributionConfig``; a config node, a mapping of some keys or
    None: the defaults). ``method``: exact (mean- or zero-ablation of each head, the fast engine) | atp
    (attribution patching, optionally re-scoring its top-``rescore_top_k`` heads exactly); ``progress``: a
    bar on rank 0. ``batch_size`` and ``max_skip_fraction`` are the ``data`` group's keys. With a
    ``runtime`` (``vseam.runtime.Runtime``) every finished chunk is saved under its progress folder and a
    restarted call resumes; its ranks each compute their chunks and gather every rank's. Missing images are
    counted skips (``meta["skipped"]``). ``on_chunk(phase, done, total, result)`` is called after each newly
    computed chunk. The per-sample values are kept in ``per_sample`` (a ``ChunkResult``); the result file is
    ``outputs.build_result``. An answer the model cannot tokenize is a skip naming its file and record; no
    usable sample, or a skipped share above ``max_skip_fraction``, raises ``NothingToScoreError`` with the
    first reasons. ``tower="vision"`` scores the vision tower's heads instead of the language model's (exact
    only; ``meta["tower"]``).
    """
    from vseam.data.sample import sample_key
    from vseam.data.skips import check_skips, model_skips

    st = settings_of(settings, AttributionConfig)
    method, tower, k = st.method, st.tower, int(st.rescore_top_k)
    runtime = runtime or Runtime()
    progress = bool(st.progress) and runtime.ranks.zero
    all_samples = samples
    screen = model_skips(adapter, all_samples)
    samples, answer_skipped = screen.kept, screen.skipped
    if progress:
        screen.say("head scores")
    L, H = adapter.stack(tower).shape[:2]
    common = dict(batch_size=batch_size, runtime=runtime, cache=cache)

    def sweep_all(sweep: Sweep, desc: str) -> ChunkResult:
        bar = Progress(progress, sum(sweep.work_units(c) for c in sweep.my_chunks()), desc)
        total, done = len(sweep.my_chunks()), [0]

        def chunk_done(res: ChunkResult) -> None:
            done[0] += 1
            if on_chunk is not None:
                on_chunk(desc, done[0], total, res)

        try:
            mine = sweep.run(on_progress=bar.update, on_chunk=chunk_done)
        finally:
            bar.close()
        return merge_chunks(sweep.chunks.gather(mine), L, H)

    first = sweep_all(Sweep(adapter, samples, st, **common), f"heads {method}")
    ablated, exact_heads, name, estimate = first.ablated, None, method, None
    if method == "atp" and k > 0:
        est = head_scores(first.prob, first.correct, first.ablated)
        chosen = top_k_set(est.positive, k) | top_k_set(est.negative, k) | top_k_set(est.signed, k)
        mask = torch.zeros(L, H, dtype=torch.bool)
        for l, h in chosen:
            mask[l, h] = True
        exact = sweep_all(Sweep(adapter, samples, dataclasses.replace(st, method="exact"), heads=mask,
                                tag="exact_topk", **common), "heads exact re-score")
        if exact.ids != first.ids:
            raise RuntimeError("re-scoring saw a different sample set than the estimate")
        ablated = first.ablated.clone()
        ablated[:, mask] = exact.ablated[:, mask]
        exact_heads = [[int(l), int(h)] for l, h in sorted(chosen)]
        name = "atp+exact_topk"
        # the pure estimate is kept beside the mixed matrices, so exact and estimated values stay apart
        estimate = {k: None if m is None else m.tolist() for k, m in est.matrices().items()}
    skipped = answer_skipped + first.skipped
    check_skips(len(all_samples), skipped, max_skip_fraction, "head scores")
    scores = head_scores(first.prob, first.correct, ablated)
    scores.model, scores.method = adapter.name, name
    # per category and per level, from the same per-sample values (no second pass)
    by_id = {s.id: s for s in samples}
    cats, levels = [by_id[i].category for i in first.ids], [by_id[i].level for i in first.ids]
    scores.per_sample = ChunkResult(-1, first.ids, first.prob, first.correct, ablated, skipped, cats, levels)
    scores.by_category = grouped_head_scores(first.prob, first.correct, ablated, cats)
    scores.by_level = grouped_head_scores(first.prob, first.correct, ablated, levels)
    for c, sc in scores.by_category.items():
        sc.meta["level"] = next((lv for cc, lv in zip(cats, levels) if cc == c and lv is not None), None)
    for sc in (*scores.by_category.values(), *scores.by_level.values()):
        sc.model, sc.method = adapter.name, name
    if exact_heads is not None:  # each group's cells are exact at the same heads; its pure estimate kept beside
        for group, labels in (("by_category", cats), ("by_level", levels)):
            for g, est_g in grouped_head_scores(first.prob, first.correct, first.ablated, labels).items():
                getattr(scores, group)[g].meta.update(
                    exact_heads=exact_heads, rescore_top_k=k,
                    estimate={m: None if t is None else t.tolist() for m, t in est_g.matrices().items()})
    n = int(first.prob.numel())
    scored = set(first.ids)
    ident = getattr(adapter, "identity", {}) or {}
    scores.meta = {"model_path": ident.get("path"), "weights_sha256": ident.get("weights_sha256"),
                   "prompt_template": adapter.template, "tower": tower,
                   "ablation": st.ablation, "n": n, "n_total": len(all_samples), "n_skipped": len(skipped),
                   "categories": dict(sorted(Counter(str(s.category) for s in samples if s.id in scored).items())),
                   "baseline_accuracy": float(first.correct.float().mean()) if n else None,
                   **screen.report(),
                   # content keys of the scored samples: a run that picks heads from this file can tell whether
                   # they were computed on its own evaluation samples (vseam.modulation.run.scores_provenance)
                   "sample_keys": [sample_key(by_id[i]) for i in first.ids],
                   **({"atp_space": st.atp_space, "atp_alpha": float(st.atp_alpha), "atp_path": str(st.atp_path)}
                      if method == "atp" else {}),
                   **({"exact_heads": exact_heads, "rescore_top_k": k, "estimate": estimate}
                      if exact_heads is not None else {})}
    return scores
