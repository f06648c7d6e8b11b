"""The training job behind ``python train.py``: select key heads from a head-attribution result, learn
their scales and offsets on a frozen VLM, and compare with the baselines on the same held-out split.

Steps: load the model and samples; split train / val / test; head scores from the configured file or
computed on the train split; train each method (model selection on val); evaluate every method on
test; print a table and write ``summary.json``, ``modulation.safetensors`` and per-sample predictions
into ``out_dir`` (rank 0 only).
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

from vseam.attribution.outputs import load_head_scores, scores_to_dict
from vseam.attribution.scores import HeadScores
from vseam.data.load import load_samples
from vseam.data.sample import sample_key
from vseam.data.skips import check_skips, model_skips
from vseam.evaluation.score import EvalResult, evaluate
from vseam.interventions import HeadModulation, check_heads
from vseam.interventions.checkpoint import save_modulation
from vseam.models import load_adapter
from vseam.models.cache import EmbeddingCache
from vseam.modulation.baselines import count_trainable, peft_copy
from vseam.modulation.data import ModulationDataModule, readable, split_samples
from vseam.modulation.heads import heuristic_scales, random_heads, select_key_heads
from vseam.modulation.module import FrozenVLMModule, NonFiniteLossError, head_norms
from vseam.utils.devices import torch_device
from vseam.utils.io import write_json, write_text
from vseam.utils.ranks import is_rank_zero
from vseam.utils.rundir import run_folder
from vseam.utils.tracking import Tracker
from vseam.validate import say_k_fits
from vseam.world.write import ensure_world


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

TRAINED = ("learned", "random", "lora", "ia3")
LEVEL_ORDER = ("object", "attribute", "relation")


def say(msg: str) -> None:
    if is_rank_zero():
        print(msg, flush=True)


# ----------------------------------------------------------------------------------------- pieces
def scores_file(cfg, adapter) -> HeadScores:
    """``modulation.head_scores``, checked to be of this model's shape and weights (before any training)."""
    from vseam.models.identity import check_same_model

    mc = cfg.modulation
    scores = load_head_scores(mc.head_scores)
    where = f"modulation.head_scores={mc.head_scores}"
    scores.check_shape(adapter.num_layers, adapter.num_heads, where)
    check_same_model({"id": scores.model, "path": scores.meta.get("model_path"),
                      "weights_sha256": scores.meta.get("weights_sha256")}, adapter, where,
                     allow=bool(mc.allow_other_model), say=say)
    if mc.select == "key":  # an estimate-plus-exact file that cannot rank K heads exactly fails now (MixedRankingError)
        select_key_heads(scores, int(mc.k_pos), int(mc.k_neg))
    used = scores.meta.get("answer_definition", "project")
    if used != adapter.answer_definition:
        say(f"note: {where} was computed with answer_definition={used!r}, this run reads answers with "
            f"{adapter.answer_definition!r}")
    return scores


def scores_provenance(scores: HeadScores, path: str, splits: dict[str, list]) -> dict:
    """Where ``modulation.head_scores`` came from (file, data, samples) and how many of this run's validation
    and test samples it was computed on (said, and a warning when any: key heads picked with them)."""
    data = scores.meta.get("dataset") or {}
    info = {"file": str(path), "dataset_id": scores.meta.get("dataset_id"),
            "data_root": data.get("root") if isinstance(data, dict) else None,
            "annotations": data.get("annotations") if isinstance(data, dict) else None,
            "n_samples": scores.meta.get("n", scores.n_correct + scores.n_incorrect)}
    keys = scores.meta.get("sample_keys")
    if keys is None:
        info["overlap"] = None
        say(f"head scores from {path} (data {info['dataset_id']}, {info['n_samples']} samples); the file records no "
            f"sample keys, so an overlap with this run's validation / test samples cannot be ruled out")
        return info
    keys = set(keys)
    info["overlap"] = {k: sum(sample_key(s) in keys for s in splits[k]) for k in ("val", "test")}
    say(f"head scores from {path} (data {info['dataset_id']}, {info['n_samples']} samples); of this run's samples "
        f"they saw {info['overlap']['val']} validation and {info['overlap']['test']} test")
    if any(info["overlap"].values()):
        say(f"WARNING: modulation.head_scores={path} was computed on {info['overlap']['test']} of this run's "
            f"{len(splits['test'])} test and {info['overlap']['val']} of its {len(splits['val'])} validation samples: "
            f"the key heads were chosen with them, so the test accuracy is not held out from head selection "
            f"(compute the scores on the train split: unset modulation.head_scores)")
    return info


def obtain_head_scores(cfg, adapter, train: list, cache: EmbeddingCache, out: Path, fabric=None) -> HeadScores:
    """The configured ``head_scores.json``, or head attribution on the train split through the sweep
    (``attribution.*`` settings: method, ablation, chunks saved under ``<out_dir>/progress`` and resumed),
    its chunks sharded over the ranks of ``fabric`` (``launch_ranks``) as in ``analyze.py heads``."""
    from vseam.attribution.run import fresh_progress, gather_chunks, model_fingerprint, sweep_settings
    from vseam.attribution.sweep import score_heads

    mc = cfg.modulation
    if mc.head_scores:
        return scores_file(cfg, adapter)
    subset = list(train)
    if mc.attribution_limit is not None and len(subset) > int(mc.attribution_limit):
        # a seeded draw over the whole split: the split is ordered by category, a prefix would not be
        import random

        keep = sorted(random.Random(int(cfg.seed)).sample(range(len(subset)), int(mc.attribution_limit)))
        subset = [subset[i] for i in keep]
    say(f"computing head scores on {len(subset)} train samples (set modulation.head_scores to reuse a result)")
    acfg = cfg.attribution
    if is_rank_zero():
        fresh_progress(out / "progress", acfg)
    ranks = {}
    if fabric is not None:
        fabric.barrier()  # no rank reads the progress folder before rank 0 has emptied it (resume=false)
        ranks = dict(rank=fabric.global_rank, world_size=fabric.world_size,
                     gather=lambda mine: gather_chunks(fabric, mine))
    scores = score_heads(adapter, subset, **sweep_settings(acfg), batch_size=int(cfg.data.batch_size), cache=cache,
                         progress_dir=out / "progress", fingerprint_parts=model_fingerprint(cfg.model, adapter),
                         progress=is_rank_zero() and bool(acfg.progress), **ranks)
    scores.meta["dataset"] = f"{cfg.data.name}:train"
    scores.meta["world_size"] = 1 if fabric is None else fabric.world_size  # ranks the sweep was sharded over
    scores.meta["answer_definition"] = adapter.answer_definition
    return scores


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


def launch_ranks(cfg):
    """The launched Fabric of ``cfg.trainer`` when it runs several processes that start by running the
    script again (DDP, Lightning's default for several devices), else None. train.py's ranks then exist
    before anything is computed, so the head-score sweep shards over them as ``analyze.py heads`` does;
    the Trainer later finds them (``LOCAL_RANK`` is set) and starts no others. Strategies that spawn
    (``ddp_spawn``) are left to the Trainer: there rank 0 computes the head scores alone."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    from vseam.attribution.run import fabric_of

    fabric = fabric_of(cfg)
    if fabric.world_size == 1 or not isinstance(fabric.strategy.launcher, _SubprocessScriptLauncher):
        return None
    fabric.launch()
    return fabric


def build_trainer(cfg, method: str, out: Path, logger) -> tuple[L.Trainer, ModelCheckpoint]:
    tc = cfg.trainer
    monitor = f"{method}/{tc.monitor}"
    ckpt = ModelCheckpoint(dirpath=str(out / "checkpoints" / method), filename="best", monitor=monitor,
                           mode=tc.monitor_mode, save_top_k=1, save_last=True, enable_version_counter=False,
                           # saved once the epoch (and its validation) is complete, so a resumed run starts the next
                           save_on_train_epoch_end=True)
    callbacks: list = [ckpt]
    if not tc.enable_progress_bar:
        callbacks.append(EpochLine(method))
    if logger is not None:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    trainer = L.Trainer(
        accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy, precision=tc.precision,
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


def fit(cfg, method: str, adapter, modulation: HeadModulation | None, dm: ModulationDataModule, out: Path, logger,
        cache: EmbeddingCache, lr: float) -> tuple[FrozenVLMModule, dict]:
    """Train one method; load its best checkpoint (by validation); return the module and fit facts."""
    mc, tc = cfg.modulation, cfg.trainer
    module = FrozenVLMModule(adapter, modulation, lr=lr, weight_decay=mc.weight_decay,
                             l1=mc.l1 if modulation is not None else 0.0, scheduler=mc.scheduler,
                             warmup_steps=mc.warmup_steps, cache=cache,
                             gradient_checkpointing=tc.gradient_checkpointing, method=method,
                             norm_every=mc.norm_every if logger is not None else 0)
    trainer, ckpt = build_trainer(cfg, method, out, logger)
    # a run killed mid-way resumes: the same command (same config, same out_dir) continues each method from
    # its last checkpoint (parameters, optimizer, scheduler, loop and best-checkpoint state)
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
    info = {"fit_seconds": round(time.time() - t0, 2), "steps": int(trainer.global_step),
            "epochs": int(trainer.current_epoch), "best_checkpoint": ckpt.best_model_path,
            "best_score": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None}
    if ckpt.best_model_path:
        module.load_trained(ckpt.best_model_path)
    module.eval()
    return module, info


def rank_heads(mod: HeadModulation) -> list[dict]:
    """Modulated heads ordered by |scale - 1| (then offset norm), largest first."""
    rows = []
    with torch.no_grad():
        for i, (l, h) in enumerate(mod.heads):
            dev = float((mod.scale[i] - 1).norm()) if mod.scale is not None else 0.0
            off = float(mod.offset[i].norm()) if mod.offset is not None else 0.0
            rows.append({"layer": l, "head": h, "scale_dev": dev, "offset_norm": off})
    return sorted(rows, key=lambda r: (-r["scale_dev"], -r["offset_norm"], r["layer"], r["head"]))


def _fmt(x: float | None, digits: int = 3, missing: str = "  -  ") -> str:
    """An accuracy for the console: ``digits`` places, ``missing`` where there is none (empty split)."""
    return f"{x:.{digits}f}" if isinstance(x, float) else missing


def _method_row(result: EvalResult, val: EvalResult, trainable: int, extra: dict) -> dict:
    s = result.summary()
    return {"test": {"accuracy": s["accuracy"], "n": s["n"], "skipped": s["skipped"],
                     "by_level": {k: v["acc"] for k, v in s["by_level"].items()},
                     "by_category": {k: v["acc"] for k, v in s["by_category"].items()},
                     **({"pope": s["pope"]} if "pope" in s else {})},
            "val_accuracy": val.summary()["accuracy"], "trainable_params": int(trainable), **extra}


POPE_SPLITS = ("random", "popular", "adversarial")


def test_se(acc: float | None, n: int) -> float | None:
    """Standard error of a test accuracy over ``n`` samples, sqrt(p (1 - p) / n)."""
    return math.sqrt(acc * (1 - acc) / n) if isinstance(acc, float) and n > 0 else None


def format_table(methods: dict[str, dict], total_params: int) -> str:
    """One row per method: trainable parameters, val / test accuracy (with its standard error), test
    accuracy per level and, when the pool holds them, per POPE split (pope-r / pope-p / pope-a)."""
    levels = [lv for lv in LEVEL_ORDER if any(lv in m["test"]["by_level"] for m in methods.values())]
    pope = [s for s in POPE_SPLITS if any(s in m["test"].get("by_category", {}) for m in methods.values())]
    head = f"{'method':<10} {'trainable':>10} {'% of model':>10} {'val acc':>8} {'test acc':>8} {'SE':>6} " + \
        " ".join(f"{lv:>9}" for lv in levels) + "".join(f" {'pope-' + s[0]:>7}" for s in pope)
    lines = [head, "-" * len(head)]

    for name, m in methods.items():
        pct = 100.0 * m["trainable_params"] / max(1, total_params)
        se = test_se(m["test"]["accuracy"], int(m["test"]["n"]))
        lines.append(f"{name:<10} {m['trainable_params']:>10,d} {pct:>9.4f}% {_fmt(m['val_accuracy']):>8} "
                     f"{_fmt(m['test']['accuracy']):>8} {_fmt(se):>6} " +
                     " ".join(f"{_fmt(m['test']['by_level'].get(lv)):>9}" for lv in levels) +
                     "".join(f" {_fmt(m['test']['by_category'].get(s)):>7}" for s in pope))
    return "\n".join(lines)


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
    provenance: dict | None = None  # where modulation.head_scores came from (scores_provenance)
    scores: HeadScores | None = None
    key: dict = field(default_factory=lambda: {"all": []})

    def evaluate(self, modulation: HeadModulation | None = None, adapter=None,
                 cache: EmbeddingCache | None = None) -> tuple[EvalResult, EvalResult]:
        """Test and validation results of ``adapter`` (default: the run's model) with ``modulation``."""
        adapter = self.adapter if adapter is None else adapter
        kw = dict(batch_size=int(self.cfg.data.batch_size), cache=self.cache if cache is None else cache)
        return evaluate(adapter, self.splits["test"], modulation, **kw), evaluate(adapter, self.splits["val"],
                                                                                 modulation, **kw)

    def fit(self, method: str, modulation: HeadModulation | None, lr: float, adapter=None,
            cache: EmbeddingCache | None = None) -> tuple[FrozenVLMModule, dict]:
        return fit(self.cfg, method, self.adapter if adapter is None else adapter, modulation, self.dm, self.out,
                   self.tracker.lightning, self.cache if cache is None else cache, lr)


@dataclass
class Outcome:
    """One method's result: test and validation evaluation, trainable parameters, its own summary fields."""

    test: EvalResult
    val: EvalResult
    trainable: int
    extra: dict = field(default_factory=dict)
    modulation: HeadModulation | None = None  # set by the learned method: saved as modulation.safetensors


# --------------------------------------------------------------------------------- the methods
# One function per ``modulation.methods`` entry: ``(job, method) -> Outcome``, or None when the method
# does not apply to this run (it says why). Each starts from the same seed (see ``run_methods``).

def _none(job: Job, method: str) -> Outcome:
    """The frozen model as it is."""
    return Outcome(*job.evaluate(), 0)


def _heuristic(job: Job, method: str) -> Outcome | None:
    """Fixed scales from the signed head scores (no training)."""
    lam = float(job.cfg.modulation.heuristic_lambda)
    if job.scores.signed is None:
        say("[heuristic] skipped: the signed score matrix is undefined")
        return None
    scales = heuristic_scales(job.scores.signed, lam)
    mod = HeadModulation.from_scales(scales, job.adapter.head_dim).to(job.adapter.device)
    return Outcome(*job.evaluate(mod), 0, {"fixed_params": int(scales.numel()), "heuristic_lambda": lam})


def _modulate(job: Job, method: str, heads: list) -> tuple[Outcome, HeadModulation]:
    """Learn the scales / offsets of ``heads``; return the outcome and the trained modulation."""
    mc = job.cfg.modulation
    mod = HeadModulation(heads, job.adapter.head_dim, scale=mc.scale, offset=bool(mc.offset)).to(job.adapter.device)
    module, info = job.fit(method, mod, float(mc.lr))
    trained = module.modulation
    return Outcome(*job.evaluate(trained), count_trainable(mod),
                   {"heads": [list(h) for h in heads], "head_norms": head_norms(trained), **info}), trained


def _learned(job: Job, method: str) -> Outcome:
    """Learned modulation of the key heads (``modulation.select=key``) or of every head (``all``)."""
    a = job.adapter
    every_head = [(l, h) for l in range(a.num_layers) for h in range(a.num_heads)]
    outcome, trained = _modulate(job, method, job.key["all"] if job.cfg.modulation.select == "key" else every_head)
    # heads ranked by how far training moved their scale (with modulation.l1 > 0: LoFiT-style selection)
    outcome.extra["ranking"] = rank_heads(trained)
    outcome.modulation = trained
    return outcome


def _random(job: Job, method: str) -> Outcome | None:
    """The same training on as many random heads, none of them a key head (``modulation.k_random``)."""
    mc, a = job.cfg.modulation, job.adapter
    if mc.select == "all" and mc.k_random is None:
        say("[random] skipped: modulation.select=all already modulates every head")
        return None
    k = int(mc.k_random) if mc.k_random is not None else max(1, len(job.key["all"]))
    heads = random_heads(a.num_layers, a.num_heads, k, seed=int(job.cfg.seed), exclude=job.key["all"])
    return _modulate(job, method, heads)[0]


def _peft(job: Job, method: str) -> Outcome:
    """A peft baseline (``lora`` or ``ia3``) trained on a copy of the model."""
    mc = job.cfg.modulation
    peft_adapter = peft_copy(job.adapter, method, r=mc.lora_r, alpha=mc.lora_alpha, dropout=mc.lora_dropout,
                             lora_targets=list(mc.lora_targets), ia3_targets=list(mc.ia3_targets))
    # LM-only adapters leave the vision side as it is: the cached embeddings stay valid.
    pcache = EmbeddingCache(peft_adapter, enabled=job.cache.enabled)
    pcache.store = job.cache.store
    _, info = job.fit(method, None, float(mc.baseline_lr), adapter=peft_adapter, cache=pcache)
    trainable = count_trainable(peft_adapter.model)
    return Outcome(*job.evaluate(adapter=peft_adapter, cache=pcache), trainable, info)


METHODS: dict[str, Callable[[Job, str], Outcome | None]] = {
    "none": _none, "heuristic": _heuristic, "learned": _learned, "random": _random, "lora": _peft, "ia3": _peft,
}


# ----------------------------------------------------------------------------------------- the job
def run_train(cfg) -> dict:
    """Run the training job described by ``cfg`` (see configs/); return the summary dict."""
    from vseam.validate import validate

    validate(cfg, "train")  # before the folder is taken and before any model loads
    with run_folder(cfg, "train") as out:  # refused when it holds another run's; DDP children inherit it
        return _train(cfg, out)


def _train(cfg, out: Path) -> dict:
    t_start = time.time()
    job = prepare(cfg, out)
    job.scores, job.key = key_heads(job)
    results, evals, learned = run_methods(job)
    summary = {
        "model": job.adapter.name, "answer_definition": job.adapter.answer_definition,
        "shape": list(job.adapter.shape), "total_params": int(job.total_params),
        "data": cfg.data.name, "splits": {k: len(v) for k, v in job.splits.items()}, "skipped": job.skipped,
        **job.data_report,
        "head_scores": None if job.scores is None else {
            "method": job.scores.method, "source": cfg.modulation.head_scores or "computed",
            "n_correct": job.scores.n_correct, "n_incorrect": job.scores.n_incorrect,
            **{k: v for k, v in job.scores.meta.items() if k not in ("top_k", "sample_keys")},
            **({"provenance": job.provenance} if job.provenance else {})},
        "key_heads": {k: [list(h) for h in v] for k, v in job.key.items()},
        "key_heads_ranked_on": None if job.scores is None else ranked_on(job.scores, job.scores.method),
        "methods": results, "seconds": round(time.time() - t_start, 1),
    }
    if is_rank_zero():
        write_results(job, summary, evals, learned)
    job.tracker.finish()
    return summary


def prepare(cfg, out: Path) -> Job:
    """Seed; load the samples (skips counted and checked) and the model; split; cache; tracker."""
    mc, tc = cfg.modulation, cfg.trainer
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if int(tc.torch_threads) > 0:
        torch.set_num_threads(int(tc.torch_threads))

    ensure_world(cfg.data)
    all_samples = load_samples(cfg.data)
    max_skip = float(cfg.data.max_skip_fraction)
    samples, skipped = readable(all_samples)
    check_skips(len(all_samples), skipped, max_skip, "train")  # before the model loads
    fabric = launch_ranks(cfg)  # DDP: every rank runs from here on
    device = torch_device(tc.accelerator, tc.devices) if fabric is None else str(fabric.device)  # one GPU a rank
    adapter = load_adapter(cfg.model, device=device)
    total_params = sum(p.numel() for p in adapter.model.parameters())
    if mc.head_scores:
        scores_file(cfg, adapter)  # a file of another shape or model fails now, not after the split and caching
    screen = model_skips(adapter, samples)
    samples, answer_skipped = screen.kept, screen.skipped
    screen.say("train")
    skipped = answer_skipped + skipped
    check_skips(len(all_samples), skipped, max_skip, "train")
    if skipped:
        say(f"skipped {len(skipped)} of {len(all_samples)} samples (first: {skipped[0]['reason']})")
    splits = split_samples(samples, mc.val_fraction, mc.test_fraction, int(cfg.seed))
    say(f"model {adapter.name}: {adapter.num_layers} layers x {adapter.num_heads} heads x {adapter.head_dim}; "
        f"samples train/val/test = {len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])}")
    cache = EmbeddingCache(adapter, enabled=bool(mc.cache_embeddings))
    dm = ModulationDataModule(splits, batch_size=int(cfg.data.batch_size), num_workers=int(cfg.data.num_workers),
                              seed=int(cfg.seed))
    return Job(cfg=cfg, out=out, adapter=adapter, total_params=total_params, skipped=skipped, splits=splits, dm=dm,
               cache=cache, tracker=Tracker(cfg, out, "train"), fabric=fabric,
               data_report=screen.report())


def key_heads(job: Job) -> tuple[HeadScores | None, dict]:
    """The head scores (when a method needs them) and the key heads picked from them (``modulation.k_*``)."""
    mc, a = job.cfg.modulation, job.adapter
    need_scores = "heuristic" in mc.methods or (mc.select == "key" and
                                                 any(m in ("learned", "random") for m in mc.methods))
    scores = obtain_head_scores(job.cfg, a, job.splits["train"], job.cache, job.out, job.fabric) \
        if need_scores else None
    if scores is not None and mc.head_scores:
        job.provenance = scores_provenance(scores, str(mc.head_scores), job.splits)
    k_pos = say_k_fits(int(mc.k_pos), "modulation.k_pos", a.num_layers, a.num_heads, say)
    k_neg = say_k_fits(int(mc.k_neg), "modulation.k_neg", a.num_layers, a.num_heads, say)
    key = select_key_heads(scores, k_pos, k_neg) if scores is not None else {"all": []}
    if scores is not None and mc.select == "key":
        for kind, k in (("positive", k_pos), ("negative", k_neg)):
            if len(key[kind]) < k:
                say(f"note: only {len(key[kind])} heads have a {kind} score > 0; modulation.k_"
                    f"{kind[:3]}={k} asked for {k}")
    check_heads(key["all"], a.num_layers, a.num_heads, "key heads")
    if mc.select == "key" and not key["all"] and "learned" in mc.methods:
        raise ValueError("no head has a positive or negative score > 0: nothing to modulate (more samples?)")
    if scores is not None:
        say(f"key heads ({scores.method}; ranked on {ranked_on(scores, 'its scores')}): positive {key['positive']} "
            f"negative {key['negative']}")
        if is_rank_zero():
            _log_key_heads(job.tracker, scores, key, job.out)
    return scores, key


def run_methods(job: Job) -> tuple[dict[str, dict], dict[str, EvalResult], HeadModulation | None]:
    """Every method of ``modulation.methods`` in its order: the summary rows, the test results, and the
    learned modulation (None when it did not run)."""
    results: dict[str, dict] = {}
    evals: dict[str, EvalResult] = {}
    learned: HeadModulation | None = None
    for method in job.cfg.modulation.methods:
        # each method from the same seed: its row does not depend on which methods ran before it
        L.seed_everything(int(job.cfg.seed), workers=True, verbose=False)
        outcome = METHODS[method](job, method)
        if outcome is None:
            continue
        evals[method] = outcome.test
        results[method] = r = _method_row(outcome.test, outcome.val, outcome.trainable, outcome.extra)
        learned = outcome.modulation if outcome.modulation is not None else learned
        say(f"[{method}] trainable={outcome.trainable:,d} val_acc={_fmt(r['val_accuracy'], 4, 'n/a')} "
            f"test_acc={_fmt(r['test']['accuracy'], 4, 'n/a')}")
        job.tracker.log({f"{method}/test/acc": r["test"]["accuracy"] or 0.0,
                         f"{method}/val/acc_final": r["val_accuracy"] or 0.0,
                         **{f"{method}/test/acc_{k}": v for k, v in r["test"]["by_level"].items() if v is not None}})
    return results, evals, learned


def write_results(job: Job, summary: dict, evals: dict[str, EvalResult], learned: HeadModulation | None) -> None:
    """Rank 0: ``modulation.safetensors`` (the learned method), ``head_scores_used.json``, ``summary.json``,
    ``table.txt``, ``predictions.jsonl``; print the table; log the tables."""
    cfg, out, adapter, splits, results = job.cfg, job.out, job.adapter, job.splits, summary["methods"]
    table = format_table(results, job.total_params)
    out.mkdir(parents=True, exist_ok=True)
    if learned is not None:
        path = save_modulation(out / "modulation.safetensors", learned, model=adapter.name,
                               num_layers=adapter.num_layers, num_heads=adapter.num_heads,
                               identity=adapter.identity,
                               extra={"data": cfg.data.name, "test_accuracy": results["learned"]["test"]["accuracy"],
                                      # what it was trained and selected on: eval refuses an overlap with these
                                      "seen": {k: [sample_key(x) for x in splits[k]] for k in ("train", "val")},
                                      "seen_ids": {k: [x.id for x in splits[k]] for k in ("train", "val")}})
        summary["modulation_file"] = str(path)
    if job.scores is not None:
        write_json(out / "head_scores_used.json", scores_to_dict(job.scores))
    write_json(out / "summary.json", summary)
    write_text(out / "table.txt", table + "\n")
    _write_predictions(out, evals)
    print("\n" + table + f"\n\nwritten: {out / 'summary.json'} ({summary['seconds']} s)", flush=True)
    if learned is not None:
        print(f"evaluate it on held-out data: {eval_command(cfg, out / 'modulation.safetensors')}", flush=True)
    _log_tables(job.tracker, results, evals, out, artifact=bool(cfg.logger.artifact))


def eval_command(cfg, modulation_file: Path) -> str:
    """The ``analyze.py eval`` command for a saved modulation: the same model, on the held-out twin of
    this run's organism data (``configs/data/<name>-heldout.yaml``: another world seed, disjoint
    images and questions); other data: a placeholder the user must fill with a disjoint set."""
    from vseam.config import CONFIG_DIR

    name = str(cfg.model.name)
    model = f"model={name}" if (CONFIG_DIR / "model" / f"{name}.yaml").exists() else f"model.path={cfg.model.path}"
    heldout = f"{cfg.data.name}-heldout"
    data = (f" data={heldout}" if cfg.data.format == "organism" and (CONFIG_DIR / "data" / f"{heldout}.yaml").exists()
            else " data=<a set disjoint from the train / val split>")
    return f"python analyze.py eval {model}{data} eval.checkpoint={modulation_file}"


def _write_predictions(out: Path, evals: dict[str, EvalResult]) -> None:
    from vseam.utils.io import append_jsonl

    path = out / "predictions.jsonl"
    if path.exists():
        path.unlink()
    append_jsonl(path, [{"method": m, **r} for m, e in evals.items() for r in e.records])


def ranked_on(scores: HeadScores, otherwise: str) -> str:
    """What the key heads were ranked on: for an estimate-plus-exact result the exact scores of its
    re-scored heads only (``select_key_heads``), else ``otherwise``."""
    n = len(scores.meta.get("exact_heads") or [])
    return f"the exact scores of the {n} re-scored heads only" if n else otherwise


def _log_key_heads(tracker: Tracker, scores: HeadScores, key: dict, out: Path) -> None:
    """The key heads and their scores as a table, and the signed-score heat map they were picked from."""
    kinds = {tuple(h): "positive" for h in key.get("positive", [])}
    kinds.update({tuple(h): "negative" for h in key.get("negative", []) if tuple(h) not in kinds})
    cell = lambda m, l, h: None if m is None else float(m[l, h])  # noqa: E731
    tracker.table("key_heads", ["layer", "head", "kind", "positive", "negative", "signed"],
                  [[l, h, kind, cell(scores.positive, l, h), cell(scores.negative, l, h), cell(scores.signed, l, h)]
                   for (l, h), kind in kinds.items()])
    if scores.signed is not None:
        import matplotlib.pyplot as plt

        from vseam.attribution.outputs import heatmap_figure
        from vseam.utils.io import save_figure

        facts = {"n_correct": scores.n_correct, "n_incorrect": scores.n_incorrect, "n": scores.n,
                 "method": scores.method, "ablation": scores.meta.get("ablation", "mean"), "model_id": scores.model,
                 "dataset_id": scores.meta.get("dataset", ""), "exact_heads": scores.meta.get("exact_heads")}
        fig = heatmap_figure(scores.signed, "signed", facts)
        fig.axes[0].scatter([h for _, h in kinds], [l for l, _ in kinds], marker="o", facecolors="none",
                            edgecolors="black", s=60, label="key heads")
        fig.axes[0].legend(loc="upper right", fontsize=7)
        path = save_figure(out / "key_heads_signed.png", fig)
        plt.close(fig)
        tracker.images({"key_heads/heatmap": path})


def _log_tables(tracker: Tracker, results: dict, evals: dict[str, EvalResult], out: Path, artifact: bool) -> None:
    """The comparison table, a before/after per-sample table and the modulation file (W&B online)."""
    levels = [lv for lv in LEVEL_ORDER if any(lv in m["test"]["by_level"] for m in results.values())]
    tracker.table("comparison", ["method", "trainable_params", "val_acc", "test_acc", *levels],
                  [[k, m["trainable_params"], m["val_accuracy"], m["test"]["accuracy"],
                    *[m["test"]["by_level"].get(lv) for lv in levels]] for k, m in results.items()])
    if "none" in evals and "learned" in evals:
        after = {r["id"]: r for r in evals["learned"].records}
        rows = [[r["id"], r["category"], r["level"], r["answer"], r["pred_token"], after[r["id"]]["pred_token"],
                 r["prob"], after[r["id"]]["prob"], r["correct"], after[r["id"]]["correct"]]
                for r in evals["none"].records if r["id"] in after]
        tracker.table("before_after", ["id", "category", "level", "answer", "pred_before", "pred_after",
                                       "prob_before", "prob_after", "correct_before", "correct_after"], rows)
    if artifact:
        tracker.artifact(out / "modulation.safetensors", f"modulation-{out.name}", "modulation")
