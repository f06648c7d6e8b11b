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
from vseam.attribution.scores import head_scores, top_k_set
from vseam.attribution.sweep import ChunkResult, Sweep, check_answers, merge_chunks

log = logging.getLogger(__name__)



def run_heads(cfg: Any, on_chunk: Callable[[ChunkResult], None] | None = None) -> dict:
    """Run head attribution for ``cfg`` (a resolved RootConfig); returns the ``head_scores.json`` dict
    on rank 0 (an empty dict on the other ranks).

    ``on_chunk`` is called after each newly computed and saved chunk (tests use it to simulate a kill).
    """
    from lightning.fabric import Fabric

    from vseam.config import resolve_out_dir

    resolve_out_dir(cfg, "heads")  # DDP children write into the launcher's folder
    tcfg = cfg.trainer
    threads = int(getattr(tcfg, "torch_threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)
    fabric = Fabric(accelerator=tcfg.accelerator, devices=tcfg.devices, strategy=tcfg.strategy,
                    num_nodes=int(getattr(tcfg, "num_nodes", 1) or 1))
    fabric.launch()
    return _run(cfg, fabric, on_chunk)


def _gather(fabric, chunks: list[ChunkResult]) -> list[ChunkResult]:
    """Every rank's chunk results on every rank (per-sample values, so no floating-point reduction
    order enters: the matrices are then summed in sample order, identically for any world size)."""
    if fabric.world_size == 1:
        return chunks
    import torch.distributed as dist

    everything: list = [None] * fabric.world_size
    dist.all_gather_object(everything, chunks)
    return [c for part in everything for c in part]


def _model_cfg(cfg: Any, fabric) -> dict:
    from omegaconf import OmegaConf

    mcfg = OmegaConf.to_container(cfg.model, resolve=True)
    if fabric.world_size > 1 and fabric.device.type == "cuda" and not mcfg.get("device_map"):
        mcfg["device"] = str(fabric.device)  # one GPU per rank
    return mcfg


class _Progress:
    """tqdm bar with ETA on rank 0; a no-op elsewhere."""

    def __init__(self, enabled: bool, total: int, desc: str):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="layer pass" if "exact" in desc else "sample",
                            unit_scale=True, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _validate(acfg: Any) -> None:
    """Bad choices fail before any model loads, naming the key."""
    from vseam.attribution.patching import SPACES, check_alpha
    from vseam.attribution.sweep import METHODS

    for key, value, valid in (("method", acfg.method, METHODS), ("ablation", acfg.ablation, ("mean", "zero")),
                              ("atp_space", acfg.atp_space, SPACES)):
        if value not in valid:
            raise ValueError(f"attribution.{key}={value!r}: expected one of {list(valid)}")
    for key in ("top_k", "rows_per_forward", "chunk_size"):
        if int(acfg[key]) < 1:
            raise ValueError(f"attribution.{key}={acfg[key]!r}: expected a positive integer")
    check_alpha(acfg.atp_alpha)
    if int(acfg.rescore_top_k) < 0:
        raise ValueError(f"attribution.rescore_top_k={acfg.rescore_top_k!r}: expected >= 0")


def _run(cfg: Any, fabric, on_chunk) -> dict:
    from omegaconf import OmegaConf

    from vseam.attribution.tracking import RunLogger
    from vseam.config import save_config
    from vseam.data.load import load_samples
    from vseam.models import load_adapter

    acfg = cfg.attribution
    _validate(acfg)
    out = Path(cfg.out_dir)
    progress_dir = out / "progress"
    rank0 = fabric.global_rank == 0
    torch.manual_seed(int(cfg.seed))

    if rank0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out)
        if not acfg.resume and progress_dir.exists():
            shutil.rmtree(progress_dir)  # a fresh start was asked for
    fabric.barrier()

    samples = load_samples(cfg.data)
    mcfg = _model_cfg(cfg, fabric)
    adapter = load_adapter(mcfg)
    check_answers(adapter, samples)
    L, H = adapter.num_layers, adapter.num_heads
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    logger = RunLogger(cfg, out) if rank0 else None
    started = time.time()

    # what the per-sample numbers depend on, besides the sweep's own settings and the sample ids
    fp = {"model": {k: mcfg.get(k) for k in ("arch", "path", "dtype", "seed", "attn_implementation",
                                             "prompt_template")}}
    common = dict(mode=acfg.ablation, batch_size=cfg.data.batch_size, chunk_size=acfg.chunk_size,
                  rows_per_forward=acfg.rows_per_forward, progress_dir=progress_dir, fingerprint_parts=fp,
                  rank=fabric.global_rank, world_size=fabric.world_size)

    def sweep_all(sweep: Sweep, desc: str) -> ChunkResult:
        total = sum(sweep.work_units(c) for c in sweep.my_chunks())
        bar = _Progress(rank0 and acfg.progress, total, desc)
        n_chunks = len(sweep.my_chunks())
        done = [0]

        def chunk_done(res: ChunkResult) -> None:
            done[0] += 1
            if logger is not None:
                logger.progress(desc, done[0], n_chunks, time.time() - started)
            if on_chunk is not None:
                on_chunk(res)

        try:
            mine = sweep.run(on_progress=bar.update, on_chunk=chunk_done)
        finally:
            bar.close()
        return merge_chunks(_gather(fabric, mine), L, H)

    method = acfg.method
    first = sweep_all(Sweep(adapter, samples, method=method, space=acfg.atp_space,
                             alpha=float(acfg.atp_alpha), **common), f"heads {method}")
    ablated, exact_heads = first.ablated, None
    if method == "atp" and int(acfg.rescore_top_k) > 0:
        est = head_scores(first.prob, first.correct, first.ablated)
        k = int(acfg.rescore_top_k)
        chosen = top_k_set(est.positive, k) | top_k_set(est.negative, k) | top_k_set(est.signed, k)
        mask = torch.zeros(L, H, dtype=torch.bool)
        for l, h in chosen:
            mask[l, h] = True
        exact = sweep_all(Sweep(adapter, samples, method="exact", heads=mask, tag="exact_topk", **common),
                          "heads exact re-score")
        if exact.ids != first.ids:
            raise RuntimeError("re-scoring saw a different sample set than the estimate")
        ablated = first.ablated.clone()
        ablated[:, mask] = exact.ablated[:, mask]
        exact_heads = [[int(l), int(h)] for l, h in sorted(chosen)]
        method = "atp+exact_topk"

    result: dict = {}
    if rank0:
        scores = head_scores(first.prob, first.correct, ablated)
        result = build_result(scores, model_id=adapter.name, arch=adapter.arch, num_layers=L, num_heads=H,
                              method=method, ablation=acfg.ablation, dataset_id=cfg.data.name,
                              n_total=len(samples), skipped=first.skipped, prob=first.prob, correct=first.correct,
                              k=int(acfg.top_k), exact_heads=exact_heads, config=config_dict,
                              dataset={k: config_dict["data"].get(k) for k in
                                       ("name", "format", "root", "annotations", "categories", "limit")})
        result["atp_space"] = acfg.atp_space if acfg.method == "atp" else None
        result["atp_alpha"] = float(acfg.atp_alpha) if acfg.method == "atp" else None
        result["seconds"] = round(time.time() - started, 3)
        result["world_size"] = fabric.world_size
        write_results(out, result, scores, first.prob, first.correct, ablated, first.ids, heatmaps=acfg.heatmaps)
        logger.finish(result, scores)
        log.info("head scores written to %s", out / "head_scores.json")
    fabric.barrier()
    return result


def main(argv: list[str] | None = None) -> dict:
    """``python -m vseam.attribution.run [group=choice ...] [key=value ...]`` (same as analyze.py heads)."""
    from vseam.cli import analyze_main
    import sys

    return analyze_main(["heads", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    main()
