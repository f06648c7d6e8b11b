"""The random-heads control as a distribution: ``modulation.random_draws`` random head sets of the key
heads' size (``heads.random_head_sets``), each trained exactly as the key heads are (the same data order,
steps, learning rate, schedule and penalty, and its own model selection on validation), and the key
heads' rank among them (a permutation p, ``vseam.stats.monte_carlo_p``).

The draws train together: one ``GroupedHeadModulation`` holds every draw's heads and parameters (a draw
dimension), each batch of samples is repeated once per draw through the one intervention mechanism, and
the loss is the sum of the draws' own mean losses. Every update of AdamW (and the L1 penalty) is per
element, so each draw gets the gradients, optimizer state and parameters it would get alone
(``tests/integration/test_modulation_draws.py``: equal within 1e-5 to training each draw by itself), and gradient
clipping is per draw. ``modulation.draws_together`` bounds how many draws share one batch (memory); each
group is seeded, trained and saved on its own (a resumed run reuses the finished groups).

Where the time goes (``benchmarks/random_draws.py``): on a CPU a step of the organism is compute-bound,
so batching saves per-step and per-fit overhead, not arithmetic. Two things save arithmetic or use more
of the machine without changing what is computed:

- the last-position forward (``interventions.last_position_only``): only the last position's logits are
  read, so the last layer computes its query, ``o_proj`` and MLP there only, and on a CPU every layer runs
  transformers' eager attention, faster than sdpa's kernel at head dim 8. Each group checks it against the
  plain forward on its first batch (``lean_forward``) and runs the plain forward where it differs;
- worker processes (``modulation.draws_workers``, default one per CPU core when the model is on the CPU):
  the groups are independent, so forked processes train them side by side, from the start of the run,
  beside the other methods (``methods.beside``).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F

import vseam.stats as st
from vseam.evaluation.score import EvalResult, evaluate_groups
from vseam.interventions import GroupedHeadModulation, check_last_position, last_position_only, lean_attention
from vseam.modulation.job import build_trainer, run_fit, say
from vseam.modulation.module import FrozenVLMModule, NonFiniteLossError
from vseam.utils.io import read_safetensors, save_safetensors, write_json
from vseam.utils.ranks import is_rank_zero


class DrawsModule(FrozenVLMModule):
    """G random-head draws trained together (``modulation`` is a ``GroupedHeadModulation``; row r of a batch
    is draw r % G). Each draw keeps its own best parameters by ``monitor`` on validation (as the learned
    method's best checkpoint): buffers ``best_scale`` / ``best_offset`` / ``best_score`` / ``best_epoch``,
    saved with the checkpoint so a resumed run keeps them; ``use_best()`` loads them after training."""

    def __init__(self, adapter, modulation: GroupedHeadModulation, *, monitor: str = "val/loss",
                 monitor_mode: str = "min", lean: str | None = None, **kw):
        super().__init__(adapter, modulation, **kw)
        self.lean = lean  # the attention implementation of the last-position forward; None = the plain forward
        G = modulation.groups
        self.monitor_metric = monitor.rsplit("/", 1)[-1]  # loss | acc
        self.monitor_mode = monitor_mode
        self.register_buffer("best_score", torch.full((G,), float("nan"), dtype=torch.float64))
        self.register_buffer("best_epoch", torch.full((G,), -1, dtype=torch.long))
        for name in ("scale", "offset"):
            p = getattr(modulation, name)
            if p is not None:
                self.register_buffer(f"best_{name}", p.detach().clone())
        self.trainable_keys = sorted(set(self.trainable_keys) | {k for k in self.state_dict() if k.startswith("best_")})
        self._val: list | None = None

    @property
    def groups(self) -> int:
        return self.modulation.groups

    def forward_context(self):
        """The last-position forward (``interventions.last_position_only``) when ``lean`` names its attention."""
        return super().forward_context() if self.lean is None else last_position_only(self.adapter, self.lean)

    def draw_step(self, samples, stage: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Per question and draw: cross-entropy and correctness, both [B, G]."""
        batch = self.cache.batch(samples, device=self.device)
        G = self.groups
        logits = self.forward_logits(batch.emb.repeat(G), keep_hooks=stage == "train")  # [B * G, V]
        ce = F.cross_entropy(logits, batch.target.repeat_interleave(G), reduction="none").view(-1, G)
        pred = logits.argmax(-1)
        correct = batch.correct_mask(logits.shape[-1]).repeat_interleave(G, 0).gather(1, pred[:, None]).view(-1, G)
        return ce, correct

    def training_step(self, samples, batch_idx):
        ce, correct = self.draw_step(samples, "train")
        loss = ce.mean(0).sum() + self.l1_penalty()  # each draw's own mean loss (and penalty): own gradients
        if not torch.isfinite(loss):
            self.release_hooks()
            bad = [g for g in range(self.groups) if not torch.isfinite(ce[:, g]).all()]
            raise NonFiniteLossError(
                f"non-finite training loss at step {self.global_step} (epoch {self.current_epoch}, batch {batch_idx}) "
                f"of {self.method!r}, draws {bad[:10]}; stopping. The last good checkpoint is kept.")
        n = len(samples)
        self.log(f"{self.method}/train/loss", loss.detach() / self.groups, on_step=True, on_epoch=True, prog_bar=True,
                 sync_dist=True, batch_size=n)  # the mean over draws
        if self._trainer is not None and self.trainer.optimizers:
            self.log(f"{self.method}/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), on_step=True,
                     on_epoch=False, batch_size=n)
        self.log(f"{self.method}/train/acc", correct.float().mean(), on_step=False, on_epoch=True, batch_size=n)
        return loss

    def on_validation_epoch_start(self) -> None:
        zeros = torch.zeros(self.groups, dtype=torch.float64, device=self.device)
        self._val = [zeros, zeros.clone(), torch.zeros((), dtype=torch.float64, device=self.device)]

    def validation_step(self, samples, batch_idx):
        ce, correct = self.draw_step(samples, "val")
        self._val[0] += ce.detach().double().sum(0)
        self._val[1] += correct.double().sum(0)
        self._val[2] += len(samples)
        n = len(samples)
        self.log(f"{self.method}/val/loss", ce.mean(), on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        self.log(f"{self.method}/val/acc", correct.float().mean(), on_epoch=True, prog_bar=True, batch_size=n)

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or self._val is None:
            return
        G = self.groups
        total = self.trainer.strategy.reduce(torch.cat([self._val[0], self._val[1], self._val[2][None]]),
                                             reduce_op="sum")  # every rank's questions
        n = total[-1].clamp(min=1)
        score = total[:G] / n if self.monitor_metric == "loss" else total[G:2 * G] / n
        best = self.best_score
        better = torch.isnan(best) | (score < best if self.monitor_mode == "min" else score > best)
        better &= torch.isfinite(score)
        with torch.no_grad():
            self.best_score[better] = score[better]
            self.best_epoch[better] = int(self.current_epoch)
            for name in ("scale", "offset"):
                p = getattr(self.modulation, name)
                if p is not None:
                    getattr(self, f"best_{name}")[better] = p.detach()[better]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        """Clipping by norm is per draw (each draw's gradient norm, as if it trained alone); by value it is
        per element already."""
        if gradient_clip_val is None or gradient_clip_algorithm == "value":
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        grads = [p.grad for p in (self.modulation.scale, self.modulation.offset) if p is not None and p.grad is not None]
        if not grads:
            return None
        G = self.groups
        norm = torch.stack([g.reshape(G, -1).pow(2).sum(1) for g in grads]).sum(0).sqrt()
        coef = (float(gradient_clip_val) / (norm + 1e-6)).clamp(max=1.0)  # torch.nn.utils.clip_grad_norm_'s rule
        for g in grads:
            g.mul_(coef.view(G, *([1] * (g.dim() - 1))).to(g.dtype))
        return None

    def use_best(self) -> None:
        """Each draw's parameters of its best validation epoch (a draw never validated keeps its last)."""
        chosen = self.best_epoch >= 0
        with torch.no_grad():
            for name in ("scale", "offset"):
                p = getattr(self.modulation, name)
                if p is not None:
                    p[chosen] = getattr(self, f"best_{name}")[chosen]


def lean_forward(adapter, grouped: GroupedHeadModulation, samples: list, cache, label: str) -> str | None:
    """The attention implementation the draws' last-position forward runs with (``lean_attention``), or None
    (the plain forward) when that forward does not give the plain one's logits on ``samples`` with these
    draws' heads at parameters away from identity (said, with what differed)."""
    impl = lean_attention(adapter)
    probe = GroupedHeadModulation(grouped.head_sets, grouped.head_dim, scale=grouped.scale_kind,
                                  offset=grouped.offset is not None, trainable=False).to(adapter.device)
    gen = torch.Generator().manual_seed(0)  # not the global generator: training draws nothing from it here
    with torch.no_grad():
        for p in (probe.scale, probe.offset):
            if p is not None:
                p.add_(0.5 * torch.randn(p.shape, generator=gen).to(p))
    batch = cache.batch(samples, device=adapter.device)
    ok, detail = check_last_position(adapter, batch.emb.repeat(grouped.groups), probe, attention=impl)
    if not ok:
        say(f"[{label}] the last-position forward ({impl} attention) does not give this model's logits ({detail}): "
            f"the draws run the plain forward")
        return None
    return impl


def fit_draws(cfg, label: str, adapter, head_sets: list, dm, out: Path, logger, cache, lr: float, lean: bool = True
              ) -> tuple[GroupedHeadModulation, dict]:
    """Train the draws ``head_sets`` together as the learned method trains its heads (``job.fit``'s settings),
    under ``<out>/checkpoints/<label>`` (resumed from its ``last.ckpt``); return the grouped modulation at
    each draw's best validation epoch and the fit facts (``last_position_forward``: the attention of the
    last-position forward the draws ran, checked on the first train batch by ``lean_forward``; None: the
    plain forward, also with ``lean=False``)."""
    mc, tc = cfg.modulation, cfg.trainer
    grouped = GroupedHeadModulation(head_sets, adapter.head_dim, scale=mc.scale, offset=bool(mc.offset)).to(
        adapter.device)
    impl = lean_forward(adapter, grouped, dm.splits["train"][:dm.batch_size], cache, label) if lean else None
    module = DrawsModule(adapter, grouped, monitor=tc.monitor, monitor_mode=tc.monitor_mode, lr=lr,
                         weight_decay=mc.weight_decay, l1=mc.l1, scheduler=mc.scheduler, warmup_steps=mc.warmup_steps,
                         cache=cache, gradient_checkpointing=tc.gradient_checkpointing, method=label, norm_every=0,
                         lean=impl)
    trainer, ckpt = build_trainer(cfg, label, out, logger, monitor=False)
    info = run_fit(trainer, ckpt, module, dm, out, label)
    module.use_best()
    module.eval()
    info.update(best_epoch=module.best_epoch.tolist(),
                best_score=[None if s != s else float(s) for s in module.best_score.tolist()],
                last_position_forward=impl)
    return module.modulation, info


def forward_of(adapter, info: dict):
    """The context the draws of ``info`` (``fit_draws``) are scored in: their training's forward."""
    impl = info.get("last_position_forward")
    return None if impl is None else partial(last_position_only, adapter, impl)


def draw_results(head_sets: list, test: list[EvalResult], val: list[EvalResult], info: dict) -> list[dict]:
    """One record per draw: its heads, best epoch, validation and test accuracy, the test summary (levels,
    categories, POPE) and its per-question test correctness as a 0/1 string in test-split order."""
    out = []
    for g, heads in enumerate(head_sets):
        s = test[g].summary()
        out.append({"heads": [list(h) for h in heads], "best_epoch": info["best_epoch"][g],
                    "best_score": info["best_score"][g], "val_accuracy": val[g].summary()["accuracy"],
                    "test_accuracy": s["accuracy"],
                    "test": {"n": s["n"], "by_level": {k: v["acc"] for k, v in s["by_level"].items()},
                             "by_category": {k: v["acc"] for k, v in s["by_category"].items()},
                             **({"pope": s["pope"]} if "pope" in s else {})},
                    "correct": "".join("1" if r["correct"] else "0" for r in test[g].records)})
    return out


def train_draw_group(job, label: str, head_sets: list, lr: float, log: bool = True) -> list[dict]:
    """One group of draws: its results saved under ``<out>/methods/<label>.json`` (and its parameters beside
    it), or read from there when a run that was stopped had finished it (same config: same draws). Seeded
    like a method (``seed``), so a group's result does not depend on the groups before it or on the process
    that trains it. ``log``: to the run's Lightning logger (a worker process logs nothing per step)."""
    path = job.out / "methods" / f"{label.replace('/', '-')}.json"
    if path.exists():
        saved = json.loads(path.read_text())
        if [[tuple(h) for h in d["heads"]] for d in saved["draws"]] == [list(map(tuple, s)) for s in head_sets]:
            say(f"[{label}] reusing the finished draws in {path}")
            return saved["draws"]
    L.seed_everything(int(job.cfg.seed), workers=True, verbose=False)
    grouped, info = fit_draws(job.cfg, label, job.adapter, head_sets, job.dm, job.out,
                              job.tracker.lightning if log else None, job.cache, lr)
    kw = dict(batch_size=int(job.cfg.data.batch_size), cache=job.cache, context=forward_of(job.adapter, info))
    test = evaluate_groups(job.adapter, job.splits["test"], grouped, **kw)
    val = evaluate_groups(job.adapter, job.splits["val"], grouped, **kw)
    results = draw_results(head_sets, test, val, info)
    if is_rank_zero():
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in grouped.state_dict().items()
                   if v.is_floating_point()}
        save_safetensors(path.with_suffix(".safetensors"), tensors,
                         metadata={"head_sets": json.dumps(grouped.head_sets), "scale": grouped.scale_kind,
                                   "head_dim": str(grouped.head_dim)})
        write_json(path, {"label": label, "fit": {k: v for k, v in info.items() if k not in ("best_epoch", "best_score")},
                          "draws": results})
    return results


# ------------------------------------------------------------------------------------ the groups, on workers
def draw_workers(cfg, adapter, n_groups: int, distributed: bool) -> int:
    """How many processes train the groups of draws: ``modulation.draws_workers``, or (null) one per CPU core
    this process may run on when the model is on the CPU in one process, else 1; at most ``n_groups``."""
    w = cfg.modulation.draws_workers
    cpu = adapter.device.type == "cpu"
    if w is None:
        w = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) \
            if cpu and not distributed else 1
    w = max(1, min(int(w), n_groups))
    if w > 1 and (not cpu or distributed):
        raise ValueError(f"modulation.draws_workers={cfg.modulation.draws_workers}: worker processes train the draws "
                         f"on the CPU of one process (the model is on {adapter.device}"
                         f"{', under several processes' if distributed else ''}); set it to 1 or null")
    if w > 1 and not sys.platform.startswith("linux"):
        say(f"note: modulation.draws_workers={w}: worker processes are forked, which is Linux-only here (a worker "
            f"must end with its parent): the draws train in this process")
        return 1
    return w


_JOB = None  # the job a forked worker trains groups of (inherited, not pickled)


def _die_with_parent() -> None:
    """A worker ends when the process that started it does (Linux; a killed train.py leaves no orphans)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_start() -> None:
    # One torch thread: a forked child cannot use the OpenMP pool of a parent that ran more than one thread.
    torch.set_num_threads(1)
    _die_with_parent()


def _group_in_worker(label: str, head_sets: list, lr: float, line: str) -> list[dict]:
    say(line)
    return train_draw_group(_JOB, label, head_sets, lr, log=False)


def _groups(method: str, sets: list, size: int) -> list[tuple[str, list, str]]:
    """(label, head sets, the line said when it starts) of each group of ``size`` draws."""
    out = []
    for start in range(0, len(sets), size):
        group = sets[start:start + size]
        out.append((f"{method}/draws{start:03d}-{start + len(group) - 1:03d}", group,
                    f"[{method}] training draws {start}-{start + len(group) - 1} of {len(sets)} together "
                    f"({len(group[0])} heads each)"))
    return out


class DrawPool:
    """Groups of draws training on ``workers`` forked processes (one torch thread each), which take the next
    group as they finish one; the caller's process is free meanwhile (``train.py`` trains its other methods).
    ``results()`` waits for them; ``close()`` stops what is still under way."""

    def __init__(self, job, method: str, groups: list, lr: float, workers: int):
        global _JOB
        say(f"[{method}] {len(groups)} groups of draws on {workers} worker processes (modulation.draws_workers; "
            f"one torch thread each; the draws' per-step metrics are not logged from workers)")
        if job.cache.enabled:  # every split's inputs once, here, not once per worker
            for split in job.splits.values():
                for i in range(0, len(split), 64):
                    job.cache.entries(split[i:i + 64])
        _JOB = job
        sys.stdout.flush()
        sys.stderr.flush()  # a forked worker would print what is still buffered here again
        self.ex = ProcessPoolExecutor(workers, mp_context=mp.get_context("fork"), initializer=_worker_start)
        self.futures = [self.ex.submit(_group_in_worker, label, group, lr, line) for label, group, line in groups]

    def results(self) -> list[dict]:
        try:
            out = [d for f in self.futures for d in f.result()]
        except BaseException:
            self.close()
            raise
        self.close(wait=True)
        return out

    def close(self, wait: bool = False) -> None:
        global _JOB
        if self.ex is None:
            return
        under_way = [] if wait else list((getattr(self.ex, "_processes", None) or {}).values())
        self.ex.shutdown(wait=wait, cancel_futures=True)
        for proc in under_way:  # the groups under way: stop them now, not when they finish
            proc.terminate()
        self.ex, _JOB = None, None


def start_draws(job, method: str, sets: list, lr: float) -> DrawPool | None:
    """The draws of ``sets`` started on worker processes (``DrawPool``), or None when they train in this
    process (``draw_workers`` is 1)."""
    groups = _groups(method, sets, int(job.cfg.modulation.draws_together or len(sets)))
    tc = job.cfg.trainer
    distributed = job.fabric is not None or str(tc.devices) not in ("1", "auto") or "ddp" in str(tc.strategy)
    workers = draw_workers(job.cfg, job.adapter, len(groups), distributed)
    return DrawPool(job, method, groups, lr, workers) if workers > 1 else None


def train_draws(job, method: str, sets: list, lr: float) -> list[dict]:
    """Every draw of ``sets``, ``modulation.draws_together`` to a group (``train_draw_group``): on worker
    processes (``start_draws``) or one group after another here. A group's result does not depend on where
    it was trained (``tests/integration/test_modulation_draws.py``). Returns the draws' results in the order of ``sets``."""
    pool = start_draws(job, method, sets, lr)
    if pool is not None:
        return pool.results()
    out = []
    for label, group, line in _groups(method, sets, int(job.cfg.modulation.draws_together or len(sets))):
        say(line)
        out += train_draw_group(job, label, group, lr)
    return out


def read_draw_parameters(path: Path) -> GroupedHeadModulation:
    """The draws' parameters saved beside their results (``<label>.safetensors``), as a grouped modulation."""
    tensors, meta = read_safetensors(path, "random draws file")
    mod = GroupedHeadModulation(json.loads(meta["head_sets"]), int(meta["head_dim"]), scale=meta["scale"],
                                offset="offset" in tensors, trainable=False)
    mod.load_state_dict({**mod.state_dict(), **tensors})
    return mod


# ------------------------------------------------------------------------------------ the control
def random_control(learned: EvalResult, draws: list[dict], *, exact: bool = False, alpha: float = 0.05) -> dict:
    """The key heads (the learned method's test result) against the draws' test accuracies: their rank and
    the permutation p (``monte_carlo_p``, one-sided: a draw at least as accurate counts against them), the
    draws' mean, spread and range, and per draw an exact McNemar test of the learned row against it (how
    many draws it beats, and is beaten by, at ``alpha``). ``exact``: the draws are every other head set (the
    exact null by enumeration, not a sample)."""
    mine = [bool(r["correct"]) for r in learned.records]
    # accuracies as exact counts over the same questions, so that a tie is a tie (no float32 rounding)
    obs = sum(mine) / len(mine)
    accs = np.array([d["correct"].count("1") / len(d["correct"]) for d in draws], dtype=np.float64)
    better = worse = 0
    for d in draws:
        bits = [c == "1" for c in d["correct"]]
        if len(bits) != len(mine):
            raise ValueError(f"a draw was scored on {len(bits)} test questions, the learned method on {len(mine)}")
        t = st.mcnemar(mine, bits)
        better += int(t["p"] < alpha and t["a_only"] > t["b_only"])
        worse += int(t["p"] < alpha and t["b_only"] > t["a_only"])
    mc = st.monte_carlo_p(obs, accs, alternative="greater")
    q = np.quantile(accs, [0.025, 0.5, 0.975]).tolist()
    return {"n_draws": int(accs.size), "k": len(draws[0]["heads"]), "exact": bool(exact),
            "learned_accuracy": obs, "rank": mc["rank"], "n_at_least": int(np.sum(accs >= obs)),
            "p": mc["p"], "p_floor": mc["floor"], "mean": float(accs.mean()),
            "sd": float(accs.std(ddof=1)) if accs.size > 1 else None, "min": float(accs.min()),
            "max": float(accs.max()), "q025": q[0], "median": q[1], "q975": q[2], "alpha": alpha,
            "learned_better": better, "learned_worse": worse}


def draws_row(draws: list[dict], trainable: int) -> dict:
    """The random row of the table: the draws' mean of every column (test accuracy, levels, categories,
    POPE metrics, validation accuracy), in the schema of the other methods' rows."""
    def mean(values):
        v = [x for x in values if isinstance(x, (int, float))]
        return float(np.mean(v)) if v else None

    tests = [d["test"] for d in draws]
    keys = lambda part: sorted({k for t in tests for k in t.get(part, {})})  # noqa: E731
    test = {"accuracy": mean(d["test_accuracy"] for d in draws), "n": tests[0]["n"], "skipped": 0,
            "by_level": {k: mean(t["by_level"].get(k) for t in tests) for k in keys("by_level")},
            "by_category": {k: mean(t["by_category"].get(k) for t in tests) for k in keys("by_category")}}
    if any("pope" in t for t in tests):
        test["pope"] = {split: {m: mean(t.get("pope", {}).get(split, {}).get(m) for t in tests)
                                for m in ("n", "accuracy", "precision", "recall", "f1", "yes_ratio", "auroc",
                                          "acc_at_balanced")} for split in keys("pope")}
    return {"test": test, "val_accuracy": mean(d["val_accuracy"] for d in draws), "trainable_params": int(trainable),
            "mean_of_draws": len(draws)}
