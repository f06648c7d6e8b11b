"""``python analyze.py trace ...``: causal tracing and the logit lens of clean / edited pairs, end to end.

Reads an edit manifest (``trace.manifest``; by default the organism's exact edits of ``data``),
loads the model, cuts the pairs into chunks of ``trace.chunk_size`` that are saved under
``<out_dir>/progress`` (a killed run resumes) and sharded over the Lightning Fabric ranks
(``trainer.devices`` x ``trainer.num_nodes``; ``vseam.runtime``), gathers them and on rank 0 writes:

- ``trace.json``: ``model``, ``model_identity`` ({id, path, weights_sha256}), ``arch``, ``prompt_template``, ``num_layers``,
  ``blocks`` (attn | mlp | resid), ``groups`` (image | question | last), ``direction`` (denoise |
  noise), ``metrics`` (prob_norm, prob_raw, logit_norm, logit_raw), ``n_manifest``, ``n_pairs``
  (traced), ``skipped`` ([{id, reason}]: missing images, untokenizable answers, not-effective edits),
  ``pairs`` ([{id, category, level, question, answer, edit, edited_answer, tokens, roles, clean:
  {prob, logit, correct, pred}, corrupt: {...}, logit_lens: {clean|edited: per layer {prob, rank,
  top: [[token, prob], ...]}}}]), ``average`` ({``groups``: {metric: {block: {group: {mean, se, n}}}}
  over layers; ``tokenwise``: {labels, roles, n_pairs, n_left_out, question, metrics: {metric:
  {block: {mean, se}}} as ``[L][slots]``}; ``tokenwise_by_category``: {category: the same};
  ``logit_lens``: {clean|edited: {prob_mean, prob_se, rank_mean, rank_se, rank_median, top1}}}),
  ``files``, ``config``, ``seconds``, ``world_size``.
- ``trace.safetensors``: ``average.groups.<metric>`` [blocks, L, groups] (+ ``.se``),
  ``average.tokenwise.<metric>`` [blocks, L, slots] (+ ``.se``), ``category.<c>.tokenwise.<metric>``
  (+ ``.se``), ``pairs.groups.<metric>``
  [N, blocks, L, groups], ``pair.<i>.tokenwise.<metric>`` [blocks, L, tokens of pair i],
  ``pairs.lens_prob`` / ``pairs.lens_rank`` [N, 2 (clean, edited), L].
- ``heatmap_{prob,logit}.png`` (mean normalised token-wise effects, layer x token),
  ``groups_{prob,logit}.png`` (group curves over layers), ``logit_lens.png`` (rank and probability by
  layer), ``categories/heatmap_<c>.png``, ``pairs/heatmap_<i>.png``, ``logit_lens.txt`` (the table),
  ``config.yaml``, a W&B run (offline unless ``logger.mode=online``).

Normalised effects are ``(m(patched) - m(base)) / (m(source) - m(base))``: 1 = the patch restores the
source run's answer, 0 = no effect; the base run is the edited one when denoising.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vseam.data.sample import MissingImageError, load_image
from vseam.data.skips import check_skips, missing_images, model_skips
from vseam.editing.filter import edited_probe
from vseam.editing.run import organism_records, read_manifest
from vseam.runtime import Progress, Ranks, Runtime, fresh_progress, launch, model_cfg, model_fingerprint, read_chunk
from vseam.tracing.engine import PairTrace, TraceEngine
from vseam.tracing.outputs import aggregate, format_table, lens_table, write_figures
from vseam.utils.io import save_safetensors, write_json, write_text
from vseam.utils.tracking import Tracker

log = logging.getLogger(__name__)

_ARRAYS = ("tokenwise_prob", "tokenwise_logit", "group_prob", "group_logit", "lens_prob", "lens_rank")


@dataclass
class TraceChunk:
    """The traced pairs of one chunk and the pairs it skipped (with reasons)."""

    index: int
    pairs: list[PairTrace]
    skipped: list[dict] = field(default_factory=list)

    def save(self, path: Path, fingerprint: str) -> None:
        tensors, info = {}, []
        for i, p in enumerate(self.pairs):
            for k in _ARRAYS:
                if getattr(p, k) is not None:
                    tensors[f"{i}.{k}"] = getattr(p, k)
            info.append({k: getattr(p, k) for k in ("id", "tokens", "roles", "clean", "corrupt", "blocks", "groups",
                                                     "direction", "lens_top", "meta")})
        if not tensors:
            tensors["empty"] = torch.zeros(0)
        save_safetensors(path, tensors, metadata={"fingerprint": fingerprint, "index": str(self.index),
                                                  "pairs": json.dumps(info), "skipped": json.dumps(self.skipped)})

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> TraceChunk:
        t, meta = read_chunk(path, fingerprint, resume_key="trace.resume")
        pairs = [PairTrace(**d, **{k: t.get(f"{i}.{k}") for k in _ARRAYS})
                 for i, d in enumerate(json.loads(meta["pairs"]))]
        return cls(int(meta["index"]), pairs, json.loads(meta["skipped"]))


def select_records(cfg: Any) -> tuple[list, str]:
    """The edit records to trace and where they come from: ``trace.manifest``, or the organism's edits."""
    tcfg = cfg.trace
    if tcfg.manifest:
        recs, source = read_manifest(tcfg.manifest, effective=True), str(tcfg.manifest)
        if cfg.data.categories:
            recs = [r for r in recs if r.category in set(cfg.data.categories)]
    elif cfg.data.format == "organism":
        recs, path = organism_records(cfg.data)
        source = str(path)
    else:
        raise ValueError(f"trace.manifest is not set and data.format={cfg.data.format!r} has no exact edits: run "
                         f"`python analyze.py edit ...` first and pass trace.manifest=<its out_dir>")
    if tcfg.limit is not None:
        seen: dict = {}
        kept = []
        for r in recs:
            seen[r.category] = seen.get(r.category, 0) + 1
            if seen[r.category] <= int(tcfg.limit):
                kept.append(r)
        recs = kept
    ids = [(r.category, r.id) for r in recs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{source}: a (category, id) appears twice")
    if not recs:
        raise ValueError(f"{source}: no edit pair to trace")
    return recs, source


def compute_chunk(engine: TraceEngine, records: list, lo: int, hi: int, index: int, batch_size: int,
                  effective_only: bool, on_progress: Callable[[int], None] | None = None) -> TraceChunk:
    """Trace records[lo:hi] in batches of ``batch_size`` pairs (missing images and ineffective edits skipped)."""
    a = engine.adapter
    pairs, skipped = [], []
    valid = []
    for r in records[lo:hi]:
        try:
            valid.append((r, load_image(r.clean_sample()), load_image(edited_probe(r))))
        except MissingImageError as e:
            skipped.append({"id": r.id, "category": r.category, "reason": str(e)})
    keep = (lambda c, e: c["correct"] and not e["correct"]) if effective_only else None
    for start in range(0, len(valid), batch_size):
        batch = valid[start:start + batch_size]
        recs = [b[0] for b in batch]
        samples = [r.clean_sample() for r in recs] + [edited_probe(r) for r in recs]
        enc = a.encode(samples, [b[1] for b in batch] + [b[2] for b in batch]).to(a.device)
        traced, dropped = engine.trace_pairs(enc, [r.question for r in recs], keep=keep, on_progress=on_progress)
        dropped_idx = {i for i, _, _ in dropped}
        for p, r in zip(traced, [r for i, r in enumerate(recs) if i not in dropped_idx]):
            p.meta = {"category": r.category, "level": r.level, "question": r.question, "answer": r.answer,
                      "edit": r.edit_prompt, "edited_answer": r.edited_answer}
        pairs += traced
        for i, c, e in dropped:
            skipped.append({"id": recs[i].id, "category": recs[i].category,
                            "reason": f"edit not effective (clean correct={c['correct']}, edited correct={e['correct']})"})
    return TraceChunk(index, pairs, skipped)


def run_trace(cfg: Any, on_chunk: Callable[[TraceChunk], None] | None = None) -> dict:
    """Trace ``cfg``'s pairs (a resolved RootConfig); the ``trace.json`` dict on rank 0 ({} elsewhere).

    ``on_chunk`` is called after each newly computed and saved chunk (tests use it to simulate a kill).
    """
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    validate(cfg, "trace")  # before the folder is taken and before any model loads
    with run_folder(cfg, "trace"):  # refused when it holds another run's results; DDP children inherit it
        return _run(cfg, launch(cfg), on_chunk)


def _run(cfg: Any, fabric, on_chunk) -> dict:
    from omegaconf import OmegaConf

    from vseam.models import load_adapter

    tcfg, ranks = cfg.trace, Ranks.of(fabric)
    rank0 = ranks.zero
    out = Path(cfg.out_dir)
    progress_dir = out / "progress"
    torch.manual_seed(int(cfg.seed))
    records, source = select_records(cfg)  # before the model loads: a bad manifest fails fast
    max_skip = float(cfg.data.max_skip_fraction)
    missing = {s["id"].removesuffix("@edit"): s for s in
               missing_images([r.clean_sample() for r in records] + [edited_probe(r) for r in records])}
    check_skips(len(records), list(missing.values()), max_skip, "trace")
    if rank0:
        fresh_progress(progress_dir, bool(tcfg.resume))
    ranks.barrier()

    mcfg = model_cfg(cfg, fabric)
    adapter = load_adapter(mcfg)
    # the one screen of every job (answer, prompt length, image size); missing images are counted above
    bad_answers = model_skips(adapter, [r.clean_sample() for r in records if r.id not in missing]).skipped
    bad = {s["id"] for s in bad_answers}
    records = [r for r in records if r.id not in bad]  # counted skips, in trace.json
    check_skips(len(records) + len(bad), bad_answers + list(missing.values()), max_skip, "trace")
    engine = TraceEngine(adapter, tcfg)
    L = adapter.num_layers
    started = time.time()
    chunks = Runtime(progress_dir, model_fingerprint(mcfg, adapter), ranks).chunks(
        len(records), int(tcfg.chunk_size), "trace",
        blocks=list(tcfg.blocks), groups=list(tcfg.groups), direction=tcfg.direction, tokenwise=bool(tcfg.tokenwise),
        effective_only=bool(tcfg.effective_only), lens_top_k=int(tcfg.lens_top_k), batch_size=int(cfg.data.batch_size),
        chunk_size=int(tcfg.chunk_size), ids=[f"{r.category}/{r.id}" for r in records])
    per_pair = engine.units(_prompt_tokens(adapter, records[0]))
    bar = Progress(rank0 and bool(tcfg.progress), sum(chunks.size(c) * per_pair for c in chunks.mine()),
                   "trace", unit="row x layer")
    tracker = Tracker(cfg, out, "trace") if rank0 else None
    done = [0]

    def compute(c: int) -> TraceChunk:
        lo, hi = chunks.bounds[c]
        return compute_chunk(engine, records, lo, hi, c, int(cfg.data.batch_size), bool(tcfg.effective_only),
                             bar.update)

    def chunk_done(res: TraceChunk) -> None:
        done[0] += 1
        if tracker is not None:
            tracker.log({"progress/chunks_done": done[0], "progress/fraction": done[0] / max(1, len(chunks.mine())),
                         "progress/seconds": time.time() - started})
        if on_chunk is not None:
            on_chunk(res)

    try:
        mine = chunks.run(compute, TraceChunk.load, units=lambda c: chunks.size(c) * per_pair,
                          on_progress=bar.update, on_chunk=chunk_done)
    finally:
        bar.close()
    chunks = chunks.gather(mine)
    result: dict = {}
    if rank0:
        pairs = [p for ch in chunks for p in ch.pairs]
        skipped = bad_answers + [s for ch in chunks for s in ch.skipped]
        summary, arrays = aggregate(pairs, L)
        files: dict[str, str] = {}
        result = {"model": adapter.name, "model_identity": dict(adapter.identity), "arch": adapter.arch,
                  "prompt_template": adapter.template, "num_layers": L, "num_heads": adapter.num_heads,
                  "blocks": list(tcfg.blocks), "groups": list(tcfg.groups), "direction": tcfg.direction,
                  "tokenwise": bool(tcfg.tokenwise), "metrics": ["prob_norm", "prob_raw", "logit_norm", "logit_raw"],
                  "manifest": source, "effective_only": bool(tcfg.effective_only), "n_manifest": len(records) + len(bad),
                  "n_pairs": len(pairs), "n_skipped": len(skipped), "skipped": skipped,
                  "pairs": [_pair_json(p) for p in pairs], "average": summary}
        if pairs:
            save_safetensors(out / "trace.safetensors", arrays)
            files["safetensors"] = str(out / "trace.safetensors")
            cols, rows = lens_table(summary, L)
            files["logit_lens_table"] = str(write_text(out / "logit_lens.txt", format_table(cols, rows)))
            if tcfg.plots:
                files.update(write_figures(out, pairs, summary, arrays, arch=adapter.arch, model=adapter.name,
                                           num_layers=L, plot_pairs=int(tcfg.plot_pairs)))
        else:
            log.warning("no pair left to trace (%d skipped): see trace.json", len(skipped))
        result["files"] = files
        result["config"] = OmegaConf.to_container(cfg, resolve=True)
        result["seconds"] = round(time.time() - started, 3)
        result["world_size"] = ranks.world_size
        write_json(out / "trace.json", result)
        metrics = {"data/n_pairs": len(pairs), "data/n_skipped": len(skipped), "time/seconds": result["seconds"]}
        for m in ("prob_norm", "logit_norm"):
            for b, per in (summary.get("groups", {}).get(m) or {}).items():
                for g, d in per.items():
                    metrics.update({f"groups/{m}/{b}/{g}/layer{l}": v for l, v in enumerate(d["mean"])})
        tracker.images({f"trace/{k}": v for k, v in files.items() if v.endswith(".png")})
        if pairs:
            tracker.table("trace/logit_lens", *lens_table(summary, L))
        tracker.summary(metrics)
        tracker.finish()
        print(f"trace ({tcfg.direction}): {len(pairs)} of {result['n_manifest']} pairs traced, {len(skipped)} "
              f"skipped ({result['seconds']:.0f} s); results in {out / 'trace.json'}")
    ranks.barrier()
    return result


def _prompt_tokens(adapter, record) -> int:
    """Number of prompt tokens of one record (its clean image encoded once), for the progress bar's ETA."""
    try:
        enc = adapter.encode([record.clean_sample()], [load_image(record.clean_sample())])
    except MissingImageError:
        return 1
    return int(enc.inputs["attention_mask"].sum())


def _pair_json(p: PairTrace) -> dict:
    names = ("clean", "edited")
    L = p.lens_prob.shape[1]
    lens = {n: [{"prob": float(p.lens_prob[k, l]), "rank": int(p.lens_rank[k, l]), "top": p.lens_top[k][l]}
                for l in range(L)] for k, n in enumerate(names)}
    return {"id": p.id, **p.meta, "tokens": p.tokens, "roles": p.roles, "clean": p.clean, "corrupt": p.corrupt,
            "logit_lens": lens}
