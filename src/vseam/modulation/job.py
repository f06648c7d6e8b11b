"""What every method of one ``train.py`` run shares (``Job``: config, run folder, model, splits, input cache,
head scores, tracker), one method's result (``Outcome``), and how one method is fitted with Lightning
(``fit``: a Trainer with the run's settings, resumed from the method's last checkpoint, its best
checkpoint by validation loaded at the end)."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from torch import nn

from vseam.attribution.scores import HeadScores
from vseam.evaluation.score import Contrast, EvalResult, evaluate
from vseam.models.cache import EmbeddingCache
from vseam.modulation.data import ModulationDataModule
from vseam.modulation.module import FrozenVLMModule, NonFiniteLossError
from vseam.utils.ranks import is_rank_zero
from vseam.utils.tracking import Tracker

# The frozen VLM is in eval mode on purpose (no dropout); Lightning's notice about it is noise here.
warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode at the start of training.*")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*")  # Lightning's own


class _Once(logging.Filter):
    """Lightning's info lines (devices available, tips, limits) once per process, not once per method's Trainer."""

    def __init__(self):
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg in self.seen:
            return False
        self.seen.add(msg)
        return True


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_Once())


def say(msg: str) -> None:
    if is_rank_zero():
        print(msg, flush=True)


class EpochLine(L.Callback):
    """Progress without a bar: one line per finished epoch (rank 0) with the method's losses and accuracy."""

    def __init__(self, method: str):
        self.method = method

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        shown = " ".join(f"{k.split('/', 1)[1]}={float(m[k]):.4f}" for k in
                         (f"{self.method}/train/loss_epoch", f"{self.method}/val/loss", f"{self.method}/val/acc")
                         if k in m)
        total = trainer.max_epochs if trainer.max_steps in (None, -1) else f"<= {trainer.max_epochs}"
        print(f"[{self.method}] epoch {trainer.current_epoch + 1}/{total} step {trainer.global_step}: {shown}",
              flush=True)


def build_trainer(cfg, method: str, out: Path, logger, monitor: bool = True) -> tuple[L.Trainer, ModelCheckpoint]:
    """The Trainer of one method, checkpointing under ``<out>/checkpoints/<method>``: ``last.ckpt`` (resume)
    and, with ``monitor``, ``best.ckpt`` by ``trainer.monitor`` (model selection on validation). Without
    ``monitor`` the module selects itself (the random draws: one best epoch per draw)."""
    tc = cfg.trainer
    ckpt = ModelCheckpoint(dirpath=str(out / "checkpoints" / method), filename="best",
                           monitor=f"{method}/{tc.monitor}" if monitor else None, mode=tc.monitor_mode,
                           save_top_k=1 if monitor else 0, save_last=True, enable_version_counter=False,
                           # saved once the epoch (and its validation) is complete, so a resumed run starts the next
                           save_on_train_epoch_end=True)
    callbacks: list = [ckpt]
    if not tc.enable_progress_bar:
        callbacks.append(EpochLine(method))
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = L.Trainer(
        accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy, num_nodes=tc.num_nodes,
        precision=tc.precision,
        max_epochs=tc.max_epochs, max_steps=tc.max_steps, limit_train_batches=tc.limit_train_batches,
        limit_val_batches=tc.limit_val_batches, log_every_n_steps=tc.log_every_n_steps,
        gradient_clip_val=tc.gradient_clip_val, accumulate_grad_batches=tc.accumulate_grad_batches,
        check_val_every_n_epoch=tc.check_val_every_n_epoch, num_sanity_val_steps=tc.num_sanity_val_steps,
        enable_progress_bar=tc.enable_progress_bar, deterministic=tc.deterministic, logger=logger or False,
        callbacks=callbacks, default_root_dir=str(out), enable_model_summary=False,
        # the DataModule shards with its own DistributedSampler (same global batches on 1 or N processes)
        use_distributed_sampler=False,
    )
    return trainer, ckpt


def run_fit(trainer: L.Trainer, ckpt: ModelCheckpoint, module: L.LightningModule, dm, out: Path, method: str) -> dict:
    """``trainer.fit``, resumed from ``<out>/checkpoints/<method>/last.ckpt`` when a killed run left one (the
    same command, same config, same out_dir continues: parameters, optimizer, scheduler, loop state);
    returns the fit facts (seconds, steps, epochs)."""
    last = out / "checkpoints" / method / "last.ckpt"
    resume = None
    if last.exists():
        from vseam.utils.io import load_torch_checkpoint

        done = load_torch_checkpoint(last, f"{method} checkpoint")  # a damaged file is named, not a bare error
        resume = str(last)
        say(f"[{method}] resuming from {last} (epoch {done.get('epoch')}, step {done.get('global_step')})")
    t0 = time.time()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=resume)
    except NonFiniteLossError as e:
        kept = ckpt.best_model_path or ckpt.last_model_path
        raise SystemExit(f"{e}\nlast good checkpoint: {kept or 'none (no validation finished yet)'}") from None
    return {"fit_seconds": round(time.time() - t0, 2), "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch)}


def fit(cfg, method: str, adapter, modulation: nn.Module | None, dm: ModulationDataModule, out: Path, logger,
        cache: EmbeddingCache, lr: float) -> tuple[FrozenVLMModule, dict]:
    """Train one method; load its best checkpoint (by validation); return the module and fit facts."""
    mc, tc = cfg.modulation, cfg.trainer
    module = FrozenVLMModule(adapter, modulation, lr=lr, weight_decay=mc.weight_decay,
                             l1=mc.l1 if modulation is not None else 0.0, scheduler=mc.scheduler,
                             warmup_steps=mc.warmup_steps, cache=cache,
                             gradient_checkpointing=tc.gradient_checkpointing, method=method,
                             norm_every=mc.norm_every if logger is not None else 0)
    trainer, ckpt = build_trainer(cfg, method, out, logger)
    info = run_fit(trainer, ckpt, module, dm, out, method)
    info.update(best_checkpoint=ckpt.best_model_path,
                best_score=float(ckpt.best_model_score) if ckpt.best_model_score is not None else None)
    if ckpt.best_model_path:
        module.load_trained(ckpt.best_model_path)
    module.eval()
    return module, info


@dataclass
class Job:
    """What every method of one run shares: the config, run folder, model, splits, input cache, head
    scores and key heads, and the tracker."""

    cfg: Any
    out: Path
    adapter: Any
    total_params: int
    skipped: list[dict]
    splits: dict[str, list]
    dm: ModulationDataModule
    cache: EmbeddingCache
    tracker: Tracker
    fabric: Any = None  # the launched ranks (``launch_ranks``); None in one process
    data_report: dict = field(default_factory=dict)  # vseam.data.skips.Screen.report: images converted to RGB
    provenance: dict | None = None  # where modulation.head_scores came from (run.scores_provenance)
    scores: HeadScores | None = None
    key: dict = field(default_factory=lambda: {"all": []})
    pending: dict = field(default_factory=dict)  # methods training beside the others (``methods.beside``)

    def evaluate(self, modulation=None, adapter=None, cache: EmbeddingCache | None = None,
                 contrast: Contrast | None = None, logits_fn=None) -> tuple[EvalResult, EvalResult]:
        """Test and validation results of ``adapter`` (default: the run's model) with ``modulation`` (an edit, or
        edits made per batch), with contrastive next-token scoring when ``contrast`` is given, or with
        ``logits_fn(batch) -> [B, V]`` in place of the plain forward (``evaluation.score.evaluate``); a field method
        with ``job.evaluate(**applied.scoring(job.adapter, job.cache))``."""
        adapter = self.adapter if adapter is None else adapter
        kw = dict(batch_size=int(self.cfg.data.batch_size), cache=self.cache if cache is None else cache,
                  contrast=contrast, logits_fn=logits_fn)
        return evaluate(adapter, self.splits["test"], modulation, **kw), evaluate(adapter, self.splits["val"],
                                                                                 modulation, **kw)

    def fit(self, method: str, modulation: nn.Module | None, lr: float, adapter=None,
            cache: EmbeddingCache | None = None) -> tuple[FrozenVLMModule, dict]:
        return fit(self.cfg, method, self.adapter if adapter is None else adapter, modulation, self.dm, self.out,
                   self.tracker.lightning, self.cache if cache is None else cache, lr)


@dataclass
class Outcome:
    """One method's result: test and validation evaluation, trainable parameters, its own summary fields.
    The random-heads control has no single evaluation: ``test`` / ``val`` are None and ``draws`` holds
    its draws (``modulation.draws``)."""

    test: EvalResult | None
    val: EvalResult | None
    trainable: int
    extra: dict = field(default_factory=dict)
    modulation: nn.Module | None = None  # set by the learned method: saved as modulation.safetensors
    draws: dict | None = None  # the random-heads control: its draws' results (``draws.DrawResults``)
