"""The random-heads control of ``train.py``: its draws trained together against one at a time, side by side.

Every arm runs ``train.py``'s own code on the organism (default ``model=organism-llava data=organism-pope``,
its split, cached inputs, lr, epochs):

- together: ``draws.train_draws``, what ``train.py``'s random method runs: ``draws_together`` draws a batch
  through the last-position forward, each group scored on test and validation with ``evaluate_groups``,
  the groups in one process and again spread over ``modulation.draws_workers`` processes (default: one per
  CPU core);
- one at a time: ``job.fit`` of one ``HeadModulation`` per draw (the learned method's own path: the plain
  forward with the model's attention) and ``evaluate`` on test and validation, on a measured subset
  (``--alone`` draws) extrapolated linearly to all draws, which the output says. It also checks that the
  subset's parameters equal those of the same draws trained together (within 1e-5).

Wall time on a shared machine moves with the other jobs (the load average is printed); CPU time (this
process and its workers) less so: both are printed. First it prints what one training step costs per draw:
the plain forward one draw a batch (the learned method's), the last-position forward with 1,
``draws_together`` and all draws a batch.

What it shows on the organism (6 layers x 8 heads x 8, hidden 64, ~30 tokens, 16 questions a batch): the
step is compute-bound on a CPU, so batching the draws saves per-step and per-fit overhead, not arithmetic
(the cost per draw is flat from 1 to 99 draws a batch). The arithmetic saved is the forward's: the
attention at this shape is mostly per-element work on [rows, heads, T, T] (scale, mask, softmax and their
backward), which transformers' eager attention does faster than sdpa's CPU kernel at head dim 8, and the
last layer needs only the last position's query, ``o_proj`` and MLP. The rest of the speed-up is the
second core (worker processes: each group of draws is independent).

Run: ``python benchmarks/random_draws.py [--draws 99] [--alone 6] [--epochs 2] [--together 8] [--workers N]``.
The last line is machine-readable: ``ratio_wall=.. ratio_cpu=.. ratio_wall_one_process=.. max_param_diff=..``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import lightning as L
import torch


class Clock:
    """Wall and CPU seconds of a block: this process and the worker processes it waited for."""

    @staticmethod
    def _cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __enter__(self):
        self.w, self.c = time.perf_counter(), self._cpu()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, self._cpu() - self.c


def step_cost(adapter, batch, sets: list, sizes: list[int], repeats: int = 5) -> dict:
    """CPU ms of one training forward + backward of one batch, per draw (median of ``repeats``): the plain
    forward with one draw (the learned method's path), and the last-position forward with each of ``sizes``
    draws in the batch: where the time goes."""
    import statistics
    from contextlib import nullcontext

    import torch.nn.functional as F

    from vseam.interventions import GroupedHeadModulation, intervene, last_position_only, lean_attention

    adapter.model.requires_grad_(False)
    impl = lean_attention(adapter)
    out = {}
    print(f"one forward + backward of {batch.target.shape[0]} questions, CPU ms per draw:", flush=True)
    for G, lean in [(1, False)] + [(G, True) for G in sizes]:
        mod = GroupedHeadModulation(sets[:G], adapter.head_dim)
        times = []
        for _ in range(repeats + 1):
            t = time.process_time()
            with last_position_only(adapter, impl) if lean else nullcontext(), intervene(adapter, mod):
                logits = adapter.lm_logits(batch.emb.repeat(G)).float()
            F.cross_entropy(logits, batch.target.repeat_interleave(G), reduction="none").view(-1, G).mean(0).sum() \
                .backward()
            times.append(time.process_time() - t)
        ms = 1000 * statistics.median(times[1:]) / G
        name = f"last-position forward ({impl}), {G:>2} draws a batch" if lean else \
            f"plain forward ({adapter.decoder.config._attn_implementation}), 1 draw a batch"
        print(f"  {name:<48} {ms:6.1f}", flush=True)
        out[(G, lean)] = ms
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=99, help="random draws trained together")
    ap.add_argument("--alone", type=int, default=6, help="of them, trained one at a time (a measured subset)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each training (train.py: trainer.max_epochs=10)")
    ap.add_argument("--together", type=int, default=None, help="draws per batch (default: modulation.draws_together)")
    ap.add_argument("--workers", type=int, default=None,
                    help="processes of the together arm (default: modulation.draws_workers: one per CPU core)")
    ap.add_argument("overrides", nargs="*", help="config overrides (default model=organism-llava data=organism-pope)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)  # train.py: trainer.torch_threads=1

    from vseam.config import TRAIN_TOP, load_config
    from vseam.data.load import load_samples
    from vseam.evaluation.score import evaluate
    from vseam.interventions import HeadModulation
    from vseam.models import load_adapter
    from vseam.models.cache import EmbeddingCache
    from vseam.modulation.data import ModulationDataModule, readable, split_samples
    from vseam.modulation.draws import draw_workers, read_draw_parameters, train_draws
    from vseam.modulation.heads import random_head_sets
    from vseam.modulation.job import Job, fit
    from vseam.utils.tracking import Tracker
    from vseam.world.write import ensure_world

    def config(*extra):
        return load_config(["logger=none", "trainer.accelerator=cpu", f"trainer.max_epochs={args.epochs}",
                            "trainer.enable_progress_bar=false", *args.overrides, *extra], top=TRAIN_TOP)

    cfg = config()
    mc = cfg.modulation
    together = int(args.together or mc.draws_together or args.draws)
    ensure_world(cfg.data)
    samples, _ = readable(load_samples(cfg.data))
    adapter = load_adapter(cfg.model, device="cpu")
    splits = split_samples(samples, mc.val_fraction, mc.test_fraction, int(cfg.seed))
    dm = ModulationDataModule(splits, batch_size=int(cfg.data.batch_size), seed=int(cfg.seed))
    cache = EmbeddingCache(adapter)
    for split in splits.values():  # the inputs are cached once in train.py too: not part of either arm
        for i in range(0, len(split), 64):
            cache.entries(split[i:i + 64])
    k = int(mc.k_pos) + int(mc.k_neg)
    sets, _ = random_head_sets(adapter.num_layers, adapter.num_heads, k, args.draws, seed=int(cfg.seed))
    groups = -(-len(sets) // together)
    workers = args.workers or draw_workers(cfg, adapter, groups, distributed=False)
    lr = float(mc.lr)
    print(f"model {adapter.name} ({adapter.num_layers} x {adapter.num_heads} heads x {adapter.head_dim}), "
          f"train/val/test = {len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])}, {args.draws} draws of "
          f"{k} heads, {args.epochs} epochs each, 1 torch thread a process; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs", flush=True)
    step_cost(adapter, cache.batch(splits["train"][:int(cfg.data.batch_size)]), sets, sorted({1, together, len(sets)}))

    with tempfile.TemporaryDirectory() as tmp:
        runs = {}
        for w in sorted({1, workers}):
            out = Path(tmp) / f"together-{w}"
            job = Job(cfg=config(f"modulation.draws_together={together}", f"modulation.draws_workers={w}"), out=out,
                      adapter=adapter, total_params=0, skipped=[], splits=splits, dm=dm, cache=cache,
                      tracker=Tracker(cfg, out, "benchmark"))
            with Clock() as clock:
                train_draws(job, "together", sets, lr)
            runs[w] = clock
        grouped = [g.group(i) for f in sorted((Path(tmp) / f"together-{workers}" / "methods").glob("*.safetensors"))
                   for g in [read_draw_parameters(f)] for i in range(g.groups)]
        alone, diff = [], 0.0
        kw = dict(batch_size=int(cfg.data.batch_size), cache=cache)
        with Clock() as t_alone:
            for i in range(min(args.alone, len(sets))):
                L.seed_everything(int(cfg.seed), verbose=False)
                module, _ = fit(cfg, f"alone{i}", adapter, HeadModulation(sets[i], adapter.head_dim, scale=mc.scale,
                                                                           offset=bool(mc.offset)).to(adapter.device),
                                dm, Path(tmp), None, cache, lr)
                evaluate(adapter, splits["test"], module.modulation, **kw)
                evaluate(adapter, splits["val"], module.modulation, **kw)
                alone.append(module.modulation)
        for i, mod in enumerate(alone):
            assert grouped[i].heads == mod.heads
            for name in ("scale", "offset"):
                a, b = getattr(mod, name), getattr(grouped[i], name)
                if a is not None:
                    diff = max(diff, float((a.detach() - b.detach()).abs().max()))

    n, m = len(sets), len(alone)
    est_wall, est_cpu = t_alone.wall / m * n, t_alone.cpu / m * n
    print(f"\n{'arm':<52} {'wall s':>9} {'CPU s':>9} {'per draw (wall)':>16}")
    for w, clock in runs.items():
        name = f"together: {n} draws, {together} a batch, {w} process{'es' if w > 1 else ''}"
        print(f"{name:<52} {clock.wall:>9.1f} {clock.cpu:>9.1f} {clock.wall / n:>15.2f}s")
    print(f"{f'one at a time: {m} draws measured':<52} {t_alone.wall:>9.1f} {t_alone.cpu:>9.1f} {t_alone.wall / m:>15.2f}s")
    print(f"{f'one at a time: {n} draws (extrapolated x {n}/{m})':<52} {est_wall:>9.1f} {est_cpu:>9.1f}")
    best = runs[workers]
    res = {"ratio_wall": est_wall / best.wall, "ratio_cpu": est_cpu / best.cpu,
           "ratio_wall_one_process": est_wall / runs[1].wall, "max_param_diff": diff}
    print(f"\ntogether on {workers} process{'es' if workers > 1 else ''} is {res['ratio_wall']:.2f}x faster (wall), "
          f"{res['ratio_cpu']:.2f}x (CPU) than one at a time (the latter measured on {m} of {n} draws); in one process "
          f"{res['ratio_wall_one_process']:.2f}x (wall); the {m} draws' parameters agree to {diff:.1e}; load average "
          f"now {os.getloadavg()[0]:.1f}")
    print(" ".join(f"{k}={v:.4g}" for k, v in res.items()))
    return res


if __name__ == "__main__":
    main()
