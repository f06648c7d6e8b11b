"""The random-heads control of ``train.py``: its draws trained together against one at a time, side by side.

Both arms run ``train.py``'s own code on the organism (default ``model=organism-llava data=organism-pope``,
its split, cached inputs, lr, epochs): together, ``draws.fit_draws`` on every draw, ``draws_together`` per
batch, then ``evaluate_groups`` on test and validation; one at a time, ``job.fit`` of one
``HeadModulation`` per draw (the learned method's path) and ``evaluate`` on test and validation. The
one-at-a-time arm runs a measured subset (``--alone`` draws; 99 would take about as long as 99 trainings)
and is extrapolated linearly to all draws, which the output says. It also checks that the subset's
parameters equal those of the same draws trained together.

Wall time on a shared machine moves with the other jobs; CPU time (this process) less so: both are printed.
First it prints what one training step costs per draw with 1, ``draws_together`` and all draws in one
batch: on a CPU the step is compute-bound, so batching saves overhead, not arithmetic.

Run: ``python benchmarks/random_draws.py [--draws 99] [--alone 6] [--epochs 2] [--together 8] [--threads 1]``.
The last line is machine-readable: ``ratio_wall=.. ratio_cpu=.. max_param_diff=..``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import torch


class Clock:
    """Wall and CPU (this process) seconds of a block."""

    def __enter__(self):
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def step_cost(adapter, batch, sets: list, sizes: list[int], repeats: int = 5) -> None:
    """CPU ms of one training forward + backward of one batch, per draw, with 1, ``draws_together`` and all
    draws in the batch (median of ``repeats``): where the time goes."""
    import statistics

    import torch.nn.functional as F

    from vseam.interventions import GroupedHeadModulation, intervene

    adapter.model.requires_grad_(False)
    print(f"one forward + backward of {batch.target.shape[0]} questions, CPU ms per draw:", flush=True)
    for G in sizes:
        mod = GroupedHeadModulation(sets[:G], adapter.head_dim)
        times = []
        for _ in range(repeats + 1):
            t = time.process_time()
            with intervene(adapter, mod):
                logits = adapter.lm_logits(batch.emb.repeat(G)).float()
            F.cross_entropy(logits, batch.target.repeat_interleave(G), reduction="none").view(-1, G).mean(0).sum() \
                .backward()
            times.append(time.process_time() - t)
        print(f"  {G:>3} draws in the batch: {1000 * statistics.median(times[1:]) / G:6.1f}", flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--draws", type=int, default=99, help="random draws trained together")
    ap.add_argument("--alone", type=int, default=6, help="of them, trained one at a time (a measured subset)")
    ap.add_argument("--epochs", type=int, default=2, help="epochs of each training (train.py: trainer.max_epochs=10)")
    ap.add_argument("--together", type=int, default=None, help="draws per batch (default: modulation.draws_together)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (train.py: trainer.torch_threads=1)")
    ap.add_argument("overrides", nargs="*", help="config overrides (default model=organism-llava data=organism-pope)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from vseam.config import TRAIN_TOP, load_config
    from vseam.data.load import load_samples
    from vseam.evaluation.score import evaluate, evaluate_groups
    from vseam.interventions import HeadModulation
    from vseam.models import load_adapter
    from vseam.models.cache import EmbeddingCache
    from vseam.modulation.data import ModulationDataModule, readable, split_samples
    from vseam.modulation.draws import fit_draws
    from vseam.modulation.heads import random_head_sets
    from vseam.modulation.job import fit
    from vseam.world.write import ensure_world

    cfg = load_config(["logger=none", "trainer.accelerator=cpu", f"trainer.max_epochs={args.epochs}",
                       "trainer.enable_progress_bar=false", *args.overrides], top=TRAIN_TOP)
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
    kw = dict(batch_size=int(cfg.data.batch_size), cache=cache)
    lr = float(mc.lr)
    print(f"model {adapter.name} ({adapter.num_layers} x {adapter.num_heads} heads), train/val/test = "
          f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])}, {args.draws} draws of {k} heads, "
          f"{args.epochs} epochs each, {args.threads} thread(s)", flush=True)
    step_cost(adapter, cache.batch(splits["train"][:int(cfg.data.batch_size)]), sets,
              sorted({1, together, len(sets)}))

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        grouped = []
        with Clock() as t_together:
            for start in range(0, len(sets), together):
                L.seed_everything(int(cfg.seed), verbose=False)
                g, _ = fit_draws(cfg, f"together{start}", adapter, sets[start:start + together], dm, out, None,
                                 cache, lr)
                evaluate_groups(adapter, splits["test"], g, **kw)
                evaluate_groups(adapter, splits["val"], g, **kw)
                grouped += [g.group(i) for i in range(g.groups)]
        alone, diff = [], 0.0
        with Clock() as t_alone:
            for i in range(min(args.alone, len(sets))):
                L.seed_everything(int(cfg.seed), verbose=False)
                module, _ = fit(cfg, f"alone{i}", adapter, HeadModulation(sets[i], adapter.head_dim, scale=mc.scale,
                                                                           offset=bool(mc.offset)).to(adapter.device),
                                dm, out, None, cache, lr)
                evaluate(adapter, splits["test"], module.modulation, **kw)
                evaluate(adapter, splits["val"], module.modulation, **kw)
                alone.append(module.modulation)
        for i, mod in enumerate(alone):
            for name in ("scale", "offset"):
                a, b = getattr(mod, name), getattr(grouped[i], name)
                if a is not None:
                    diff = max(diff, float((a.detach() - b.detach()).abs().max()))

    n, m = len(sets), len(alone)
    est_wall, est_cpu = t_alone.wall / m * n, t_alone.cpu / m * n
    print(f"\n{'arm':<44} {'wall s':>9} {'CPU s':>9} {'per draw (wall)':>16}")
    print(f"{f'together: {n} draws, {together} per batch':<44} {t_together.wall:>9.1f} {t_together.cpu:>9.1f} "
          f"{t_together.wall / n:>15.2f}s")
    print(f"{f'one at a time: {m} draws measured':<44} {t_alone.wall:>9.1f} {t_alone.cpu:>9.1f} "
          f"{t_alone.wall / m:>15.2f}s")
    print(f"{f'one at a time: {n} draws (extrapolated x {n}/{m})':<44} {est_wall:>9.1f} {est_cpu:>9.1f}")
    res = {"ratio_wall": est_wall / t_together.wall, "ratio_cpu": est_cpu / t_together.cpu, "max_param_diff": diff}
    print(f"\ntogether is {res['ratio_wall']:.2f}x faster (wall), {res['ratio_cpu']:.2f}x (CPU) than one at a time "
          f"(the latter measured on {m} of {n} draws); the {m} draws' parameters agree to {diff:.1e}")
    print(" ".join(f"{k}={v:.4g}" for k, v in res.items()))
    return res


if __name__ == "__main__":
    main()
