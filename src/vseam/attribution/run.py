"""``python analyze.py heads ...``: head attribution of a VLM on a dataset, end to end.

Loads the samples and the model, shards the sample chunks over the Lightning Fabric ranks
(``trainer.devices`` x ``trainer.num_nodes``, ``trainer.strategy``; one process by default; ``vseam.runtime``),
runs the exact engine or attribution patching (optionally re-scoring the estimate's top-K heads exactly),
gathers every rank's per-sample values to all ranks, and on rank 0 computes the scores and writes
``head_scores.json`` / ``.safetensors``, heatmaps and the W&B run. Progress is saved per chunk under
``<out_dir>/progress``, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from vseam.attribution.outputs import build_result, write_results
from vseam.attribution.scores import HeadScores
from vseam.attribution.sweep import ChunkResult, score_heads
from vseam.runtime import Ranks, Runtime, fresh_progress, launch, model_cfg, model_fingerprint

log = logging.getLogger(__name__)


def run_heads(cfg: Any, on_chunk: Callable[[ChunkResult], None] | None = None) -> dict:
    """Run head attribution for ``cfg`` (a resolved RootConfig); returns the ``head_scores.json`` dict
    on rank 0 (an empty dict on the other ranks).

    ``on_chunk`` is called after each newly computed and saved chunk (tests use it to simulate a kill).
    """
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    validate(cfg, "heads")  # before the folder is taken and before any model loads
    with run_folder(cfg, "heads"):  # refused when it holds another run's results; DDP children inherit it
        return _run(cfg, launch(cfg), on_chunk)


def _fmt(x) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def _track_result(tracker, result: dict, scores: HeadScores) -> None:
    """Baseline metrics, the heatmaps and a per-head table to the tracker (W&B, CSV or none)."""
    if tracker is None:
        return
    base = {"baseline/accuracy": result["baseline"]["accuracy"], "baseline/mean_prob": result["baseline"]["mean_prob"],
            "baseline/n_correct": result["n_correct"], "baseline/n_incorrect": result["n_incorrect"],
            "data/n": result["n"], "data/n_skipped": result["n_skipped"], "time/seconds": result["seconds"]}
    mats = scores.matrices()
    L, H = result["num_layers"], result["num_heads"]
    rows = [[l, h] + [None if m is None else float(m[l, h]) for m in mats.values()]
            for l in range(L) for h in range(H)]
    files = result.get("files", {})
    tracker.images({f"heatmap/{n}": files[f"heatmap_{n}"] for n in mats if f"heatmap_{n}" in files})
    tracker.table("heads/table", ["layer", "head", *mats], rows)
    tracker.log({k: v for k, v in base.items() if v is not None})  # scalars (charts), not only the summary
    tracker.summary({**base, "method": result["method"]})
    tracker.finish()


def _run(cfg: Any, fabric, on_chunk) -> dict:
    from omegaconf import OmegaConf

    from vseam.data.load import load_samples
    from vseam.data.skips import check_skips, missing_images
    from vseam.models import load_adapter
    from vseam.utils.tracking import Tracker
    from vseam.world.write import ensure_world

    acfg = cfg.attribution
    out = Path(cfg.out_dir)
    progress_dir = out / "progress"
    ranks = Ranks.of(fabric)
    rank0 = ranks.zero
    torch.manual_seed(int(cfg.seed))

    if rank0:
        fresh_progress(progress_dir, bool(acfg.resume))
    ranks.barrier()

    ensure_world(cfg.data)
    samples = load_samples(cfg.data)
    max_skip = float(cfg.data.max_skip_fraction)
    check_skips(len(samples), missing_images(samples), max_skip, "heads")  # before the model loads
    mcfg = model_cfg(cfg, fabric)
    adapter = load_adapter(mcfg)
    L, H = adapter.stack(str(acfg.tower)).shape[:2]  # the language model's heads, or the vision tower's
    if rank0:
        from vseam.validate import say_k_fits

        say_k_fits(int(acfg.top_k), "attribution.top_k", L, H)
        if acfg.method == "atp":
            say_k_fits(int(acfg.rescore_top_k), "attribution.rescore_top_k", L, H)
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    tracker = Tracker(cfg, out, "heads") if rank0 else None
    started = time.time()

    def chunk_done(phase: str, done: int, total: int, res: ChunkResult) -> None:
        if tracker is not None:
            tracker.log({"progress/chunks_done": done, "progress/fraction": done / max(1, total),
                         "progress/seconds": time.time() - started, "progress/phase": phase})
        if on_chunk is not None:
            on_chunk(res)

    scores = score_heads(adapter, samples, acfg, batch_size=int(cfg.data.batch_size), max_skip_fraction=max_skip,
                         runtime=Runtime(progress_dir, model_fingerprint(mcfg, adapter), ranks), on_chunk=chunk_done)
    values = scores.per_sample

    result: dict = {}
    if rank0:
        result = build_result(scores, model_id=adapter.name, arch=adapter.arch, num_layers=L, num_heads=H,
                              method=scores.method, ablation=acfg.ablation, dataset_id=cfg.data.name,
                              n_total=len(samples), skipped=values.skipped, prob=values.prob, correct=values.correct,
                              k=int(acfg.top_k), exact_heads=scores.meta.get("exact_heads"), config=config_dict,
                              dataset={k: config_dict["data"].get(k) for k in
                                       ("name", "format", "root", "annotations", "categories", "limit")})
        result["answer_definition"] = adapter.answer_definition
        result["atp_space"] = acfg.atp_space if acfg.method == "atp" else None
        result["atp_alpha"] = float(acfg.atp_alpha) if acfg.method == "atp" else None
        result["atp_path"] = str(acfg.atp_path) if acfg.method == "atp" else None
        result["seconds"] = round(time.time() - started, 3)
        result["world_size"] = ranks.world_size
        result["images_converted_to_rgb"] = scores.meta.get("images_converted_to_rgb", {})
        write_results(out, result, scores, values.prob, values.correct, values.ablated, values.ids,
                      heatmaps=acfg.heatmaps)
        _track_result(tracker, result, scores)
        top = ", ".join(f"L{d['layer']}H{d['head']}" for d in (result["top_k"].get("positive") or [])[:3]) or "-"
        whose = "" if acfg.tower == "language" else f", {acfg.tower} tower"
        print(f"head scores ({result['method']}, {result['ablation']} ablation{whose}): {result['n']} samples scored, "
              f"{result['n_skipped']} skipped; baseline accuracy {_fmt(result['baseline']['accuracy'])}; top positive "
              f"{top}\nwritten: {out / 'head_scores.json'} ({result['seconds']} s)", flush=True)
    ranks.barrier()
    return result
