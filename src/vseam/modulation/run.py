"""The training job behind ``python train.py``: select key heads from a head-attribution result, learn
their scales and offsets on a frozen VLM, and compare with the baselines on the same held-out split.

Steps: load the model and samples; split train / val / test; head scores from the configured file or
computed on the train split; train each method (model selection on val; ``methods``), a method finished
by a stopped run reused from the run folder; evaluate every method on test; compute the statistics,
print the tables and write ``summary.json``, ``modulation.safetensors`` and per-sample predictions into
``out_dir`` (rank 0 only; ``outputs``). What a method run shares: ``job``.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
import torch

from vseam.attribution.outputs import load_head_scores
from vseam.attribution.scores import HeadScores
from vseam.data.load import load_samples
from vseam.data.sample import sample_key
from vseam.data.skips import check_skips, model_skips
from vseam.interventions import check_heads
from vseam.models import load_adapter
from vseam.models.cache import EmbeddingCache
from vseam.modulation.data import ModulationDataModule, readable, split_samples
from vseam.modulation.field import check_applicable
from vseam.modulation.heads import select_key_heads
from vseam.modulation.job import Job, Outcome, say
from vseam.modulation.methods import RUNNERS, beside, describe
from vseam.modulation.outputs import (
    _fmt,
    comparison_stats,
    load_outcome,
    log_key_heads,
    method_row,
    ranked_on,
    save_outcome,
    write_results,
)
from vseam.runtime import launch_ranks
from vseam.utils.devices import torch_device
from vseam.utils.ranks import is_rank_zero
from vseam.utils.rundir import run_folder
from vseam.utils.tracking import Tracker
from vseam.validate import say_k_fits
from vseam.world.write import ensure_world


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


def attribution_subset(train: list, limit, seed: int) -> list:
    """At most ``limit`` train samples (None = all), a seeded draw over the whole split (the split is ordered by
    category, a prefix would not be)."""
    subset = list(train)
    if limit is not None and len(subset) > int(limit):
        import random

        keep = sorted(random.Random(int(seed)).sample(range(len(subset)), int(limit)))
        subset = [subset[i] for i in keep]
    return subset


def sweep_heads(cfg, acfg, adapter, subset: list, cache: EmbeddingCache, progress_dir: Path, fabric=None) -> HeadScores:
    """Head attribution of ``subset`` through the sweep with the ``acfg`` settings (the ``attribution`` group),
    its chunks saved under ``progress_dir`` (resumed) and sharded over the ranks of ``fabric``
    (``vseam.runtime.launch_ranks``; or ``Ranks``) as in ``analyze.py heads``."""
    from vseam.attribution import score_heads
    from vseam.runtime import Ranks, Runtime, fresh_progress, model_fingerprint

    ranks = fabric if isinstance(fabric, Ranks) else Ranks.of(fabric)
    if is_rank_zero():
        fresh_progress(progress_dir, bool(acfg.resume))
    ranks.barrier()  # no rank reads the progress folder before rank 0 has emptied it (resume=false)
    scores = score_heads(adapter, subset, acfg, batch_size=int(cfg.data.batch_size),
                         max_skip_fraction=float(cfg.data.max_skip_fraction), cache=cache,
                         runtime=Runtime(progress_dir, model_fingerprint(cfg.model, adapter), ranks))
    scores.meta["world_size"] = ranks.world_size  # ranks the sweep was sharded over
    scores.meta["answer_definition"] = adapter.answer_definition
    return scores


def obtain_head_scores(cfg, adapter, train: list, cache: EmbeddingCache, out: Path, fabric=None) -> HeadScores:
    """The configured ``head_scores.json``, or head attribution on the train split through the sweep
    (``attribution.*`` settings: method, ablation, chunks saved under ``<out_dir>/progress`` and resumed),
    its chunks sharded over the ranks of ``fabric`` (``vseam.runtime.launch_ranks``) as in ``analyze.py heads``."""
    mc = cfg.modulation
    if mc.head_scores:
        return scores_file(cfg, adapter)
    subset = attribution_subset(train, mc.attribution_limit, int(cfg.seed))
    say(f"computing head scores on {len(subset)} train samples (set modulation.head_scores to reuse a result)")
    scores = sweep_heads(cfg, cfg.attribution, adapter, subset, cache, out / "progress", fabric)
    scores.meta["dataset"] = f"{cfg.data.name}:train"
    return scores


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
    with beside(job):  # the random draws start on their worker processes now, when they have any
        outcomes = run_methods(job)
    results = {m: method_row(o) for m, o in outcomes.items()}
    learned = outcomes["learned"].modulation if "learned" in outcomes else None
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
        "methods": results,
        "stats": comparison_stats({m: o.test for m, o in outcomes.items() if o.test is not None},
                                  next((o.draws for o in outcomes.values() if o.draws is not None), None),
                                  int(cfg.seed)),
        "seconds": round(time.time() - t_start, 1),
    }
    if is_rank_zero():
        write_results(job, summary, outcomes, learned)
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
               cache=cache, tracker=Tracker(cfg, out, "train"), fabric=fabric, data_report=screen.report())


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
            log_key_heads(job.tracker, scores, key, job.out)
    return scores, key


def run_methods(job: Job) -> dict[str, Outcome]:
    """Every method of ``modulation.methods`` in its order (a method that does not apply is left out).
    A method a stopped run had finished is read back from the run folder (``outputs.load_outcome``), not
    trained again; each finished method is kept there (``save_outcome``)."""
    outcomes: dict[str, Outcome] = {}
    check_applicable(job)  # a field method the model does not apply to is refused before any method runs
    for method in job.cfg.modulation.methods:
        outcome = load_outcome(job, method)
        if outcome is None:
            # each method from the same seed: its row does not depend on which methods ran before it
            L.seed_everything(int(job.cfg.seed), workers=True, verbose=False)
            outcome = RUNNERS[method](job, method)
            if outcome is None:
                continue
            save_outcome(job, method, outcome)
        describe(method, outcome)
        outcomes[method] = outcome
        r = method_row(outcome)
        say(f"[{method}] trainable={outcome.trainable:,d} val_acc={_fmt(r['val_accuracy'], 4, 'n/a')} "
            f"test_acc={_fmt(r['test']['accuracy'], 4, 'n/a')}"
            + (f" (mean of {r['mean_of_draws']} draws)" if "mean_of_draws" in r else ""))
        job.tracker.log({f"{method}/test/acc": r["test"]["accuracy"] or 0.0,
                         f"{method}/val/acc_final": r["val_accuracy"] or 0.0,
                         **{f"{method}/test/acc_{k}": v for k, v in r["test"]["by_level"].items() if v is not None}})
    return outcomes
