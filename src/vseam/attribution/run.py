"""``python analyze.py heads ...``: head attribution of a VLM on a dataset, end to end.

Loads the samples and the model, shards the sample chunks over the Lightning Fabric ranks
(``trainer.devices`` / ``trainer.strategy``; one process by default), runs the exact engine or
attribution patching (optionally re-scoring the estimate's top-K heads exactly), gathers every
rank's per-sample values to all ranks, and on rank 0 computes the scores and writes
``head_scores.json`` / ``.safetensors``, heatmaps and the W&B run. Progress is saved per chunk under
``<out_dir>/progress``, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from vseam.attribution.outputs import build_result, write_results
from vseam.attribution.scores import HeadScores
from vseam.attribution.sweep import ChunkResult, score_heads

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
        return _run(cfg, launch_fabric(cfg), on_chunk)


def fabric_of(cfg: Any):
    """The Lightning Fabric of ``cfg.trainer``, not launched yet (one process by default; DDP over
    ``trainer.devices``)."""
    from lightning.fabric import Fabric

    tcfg = cfg.trainer
    threads = int(getattr(tcfg, "torch_threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    return Fabric(accelerator=tcfg.accelerator, devices=tcfg.devices, strategy=tcfg.strategy,
                  num_nodes=int(getattr(tcfg, "num_nodes", 1) or 1))


def launch_fabric(cfg: Any):
    """The launched Lightning Fabric of ``cfg.trainer``: its ranks exist from here on."""
    fabric = fabric_of(cfg)
    fabric.launch()
    return fabric


def gather_chunks(fabric, chunks: list) -> list:
    """Every rank's chunk results on every rank (per-sample values, so no floating-point reduction
    order enters: the matrices are then summed in sample order, identically for any world size)."""
    if fabric.world_size == 1:
        return chunks
    import torch.distributed as dist

    everything: list = [None] * fabric.world_size
    dist.all_gather_object(everything, chunks)
    return [c for part in everything for c in part]


def model_cfg(cfg: Any, fabric) -> dict:
    from omegaconf import OmegaConf

    mcfg = OmegaConf.to_container(cfg.model, resolve=True)
    mcfg["device"] = str(fabric.device)  # trainer.accelerator, resolved by Fabric (one GPU per rank)
    return mcfg


def sweep_settings(acfg: Any) -> dict:
    """``score_heads`` keyword arguments from the ``attribution`` config group (validated)."""
    from vseam.validate import check_attribution

    check_attribution(acfg)
    return dict(method=str(acfg.method), ablation=str(acfg.ablation), chunk_size=int(acfg.chunk_size),
                rows_per_forward=int(acfg.rows_per_forward), atp_space=str(acfg.atp_space),
                atp_alpha=float(acfg.atp_alpha), atp_path=str(acfg.atp_path), rescore_top_k=int(acfg.rescore_top_k),
                tower=str(acfg.tower))


def model_fingerprint(mcfg: Any, adapter: Any) -> dict:
    """What the per-sample numbers depend on besides the sweep's own settings and the sample ids: the
    model settings and the weights themselves (``vseam.models.identity.weights_sha256``), so progress saved
    with another checkpoint in the same folder, even one of the same path and shape, is not reused."""
    from vseam.models.identity import weights_sha256

    fp = {"model": {k: mcfg.get(k) for k in ("arch", "path", "dtype", "seed", "attn_implementation",
                                             "prompt_template")},
          "weights_sha256": weights_sha256(adapter)}
    definition = mcfg.get("answer_definition") or "project"
    if definition != "project":  # named only when not the default: progress saved before the key still matches
        fp["answer_definition"] = definition
    return fp


def fresh_progress(progress_dir: Path, acfg: Any) -> None:
    """With ``resume=false`` in ``acfg`` (``attribution`` or ``trace``), discard saved chunks (a fresh start was asked for)."""
    if not acfg.resume and progress_dir.exists():
        shutil.rmtree(progress_dir)


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
    rank0 = fabric.global_rank == 0
    torch.manual_seed(int(cfg.seed))

    if rank0:
        fresh_progress(progress_dir, acfg)
    fabric.barrier()

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

    scores = score_heads(adapter, samples, **sweep_settings(acfg), batch_size=int(cfg.data.batch_size),
                         progress_dir=progress_dir, fingerprint_parts=model_fingerprint(mcfg, adapter),
                         rank=fabric.global_rank,
                         world_size=fabric.world_size, gather=lambda mine: gather_chunks(fabric, mine),
                         progress=rank0 and bool(acfg.progress), on_chunk=chunk_done, max_skip_fraction=max_skip)
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
        result["world_size"] = fabric.world_size
        result["images_converted_to_rgb"] = scores.meta.get("images_converted_to_rgb", {})
        write_results(out, result, scores, values.prob, values.correct, values.ablated, values.ids,
                      heatmaps=acfg.heatmaps)
        _track_result(tracker, result, scores)
        top = ", ".join(f"L{d['layer']}H{d['head']}" for d in (result["top_k"].get("positive") or [])[:3]) or "-"
        whose = "" if acfg.tower == "language" else f", {acfg.tower} tower"
        print(f"head scores ({result['method']}, {result['ablation']} ablation{whose}): {result['n']} samples scored, "
              f"{result['n_skipped']} skipped; baseline accuracy {_fmt(result['baseline']['accuracy'])}; top positive "
              f"{top}\nwritten: {out / 'head_scores.json'} ({result['seconds']} s)", flush=True)
    fabric.barrier()
    return result
