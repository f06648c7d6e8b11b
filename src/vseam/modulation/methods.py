"""The methods ``train.py`` compares (``modulation.methods``), one function each: ``(job, method) -> Outcome``,
or None when the method does not apply to this run (it says why). Each starts from the same seed
(``run.run_methods``), so its row does not depend on which other methods run.

- ``none``: the frozen model as it is;
- ``heuristic``: the original V-SEAM rescaling ``clip(1 + lambda * s, 0, 2)`` of every head (no training);
- ``learned``: scales and offsets of the key heads (or of every head, ``modulation.select=all``);
- ``random``: the same training on ``modulation.random_draws`` random head sets of the key heads' size
  (``modulation.draws``), trained together; its row is their mean, its test the key heads' rank;
- ``bias``: the bias-only baseline, learned biases on the answer logits (``baselines.logit_bias_for``);
- ``lora`` / ``ia3``: peft adapters on a copy of the language model;
- ``pai``, ``vaf``, ``vhr``, ``ict``, ``vti``, ``adhh``, ``spin``, ``vcd``: the field's hallucination methods
  (``field``: registered in ``field.METHODS``, with their sources), one row each through ``field.run_method``.

Every row says what the method changes and what it costs per test question (``PROTOCOL``; the field's methods
say their own), so one table compares them on the same questions.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch

from vseam.interventions import HeadModulation
from vseam.models.cache import EmbeddingCache
from vseam.modulation import field
from vseam.modulation.baselines import count_trainable, logit_bias_for, peft_copy
from vseam.modulation.draws import start_draws, train_draws
from vseam.modulation.heads import heuristic_scales, random_head_sets
from vseam.modulation.job import Job, Outcome, say
from vseam.modulation.module import head_norms


def rank_heads(mod: HeadModulation) -> list[dict]:
    """Modulated heads ordered by |scale - 1| (then offset norm), largest first."""
    rows = []
    with torch.no_grad():
        for i, (l, h) in enumerate(mod.heads):
            dev = float((mod.scale[i] - 1).norm()) if mod.scale is not None else 0.0
            off = float(mod.offset[i].norm()) if mod.offset is not None else 0.0
            rows.append({"layer": l, "head": h, "scale_dev": dev, "offset_norm": off})
    return sorted(rows, key=lambda r: (-r["scale_dev"], -r["offset_norm"], r["layer"], r["head"]))


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


def _random_sets(job: Job, method: str, quiet: bool = False) -> tuple[list, bool, int] | None:
    """The random control's head sets (``modulation.random_draws`` sets of ``modulation.k_random`` heads,
    default as many as the key heads), whether they are every possible set (the exact null), and K; None
    when the control does not apply."""
    mc, a = job.cfg.modulation, job.adapter
    if mc.select == "all" and mc.k_random is None:
        if not quiet:
            say(f"[{method}] skipped: modulation.select=all already modulates every head")
        return None
    k = int(mc.k_random) if mc.k_random is not None else max(1, len(job.key["all"]))
    sets, exact = random_head_sets(a.num_layers, a.num_heads, k, int(mc.random_draws), seed=int(job.cfg.seed),
                                   key=job.key["all"])
    if exact and not quiet:
        say(f"[{method}] the model has only {len(sets) + 1} sets of {k} heads: every one but the key heads' is "
            f"trained (the exact null, {len(sets)} draws)")
    return sets, exact, k


@contextmanager
def beside(job: Job):
    """While the methods run: the random draws train on worker processes from the start, beside the other
    methods (``draws.start_draws``; with ``modulation.draws_workers`` 1 they train in their turn), and
    ``_random`` collects them; what is still under way at the end (an error) is stopped."""
    method = "random"
    plan = None
    if method in job.cfg.modulation.methods and not (job.out / "methods" / f"{method}.json").exists():
        plan = _random_sets(job, method, quiet=True)
    pool = None if plan is None else start_draws(job, method, plan[0], float(job.cfg.modulation.lr))
    if pool is not None:
        job.pending[method] = pool
    try:
        yield
    finally:
        job.pending.pop(method, None)
        if pool is not None:
            pool.close()


def _random(job: Job, method: str) -> Outcome | None:
    """The random-heads control: every head set of ``_random_sets`` trained as the learned method trains the
    key heads, ``modulation.draws_together`` of them in one batch, the groups on ``modulation.draws_workers``
    processes (``draws.train_draws``; started by ``beside`` when the methods began)."""
    mc, a = job.cfg.modulation, job.adapter
    plan = _random_sets(job, method)
    if plan is None:
        return None
    sets, exact, k = plan
    pool = job.pending.pop(method, None)
    if pool is not None:
        say(f"[{method}] waiting for the draws training on worker processes")
    draws = pool.results() if pool is not None else train_draws(job, method, sets, float(mc.lr))
    trainable = count_trainable(HeadModulation(sets[0], a.head_dim, scale=mc.scale, offset=bool(mc.offset)))
    return Outcome(None, None, trainable, {"k": k, "exact": exact}, draws={"draws": draws, "exact": exact,
                                                                          "test_ids": [s.id for s in job.splits["test"]]})


def _bias(job: Job, method: str) -> Outcome:
    """The bias-only baseline: learned biases on the answer logits (one scalar on the yes-vs-no margin, one per
    other answer word of the train split), trained as the learned method is (same lr, epochs, selection)."""
    bias = logit_bias_for(job.adapter, job.splits["train"]).to(job.adapter.device)
    module, info = job.fit(method, bias, float(job.cfg.modulation.lr))
    trained = module.modulation
    tok = job.adapter.token_text
    learned = {"margin": None if trained.margin is None else float(trained.margin),
               "yes_tokens": tok(trained.yes_index.tolist()), "no_tokens": tok(trained.no_index.tolist()),
               "words": dict(zip(tok(trained.class_index.tolist()),
                                 [] if trained.class_bias is None else trained.class_bias.tolist()))}
    return Outcome(*job.evaluate(trained), count_trainable(trained), {"bias": learned, **info})


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


RUNNERS: dict[str, Callable[[Job, str], Outcome | None]] = {  # train.py's rows: method name -> its runner
    "none": _none, "heuristic": _heuristic, "learned": _learned, "random": _random, "bias": _bias,
    "lora": _peft, "ia3": _peft,
}


# What each method above changes and what it costs per test question: forward passes of the language model and of
# the vision side, and what it needs before it can score (a method's own row may say more).
ONE_PASS = {"forward_passes": 1, "vision_passes": 1}
PROTOCOL: dict[str, tuple[str, dict]] = {
    "none": ("nothing: the frozen model", ONE_PASS),
    "heuristic": ("the output scale of every head (z), fixed: clip(1 + lambda * signed score, 0, 2)",
                  {**ONE_PASS, "setup": "head attribution on the train split"}),
    "learned": ("scale and offset of the key heads' outputs (z)", {**ONE_PASS, "setup": "attribution + training"}),
    "random": ("scale and offset of random head sets' outputs (z), each set trained as the key heads",
               {**ONE_PASS, "setup": "training, once per draw"}),
    "bias": ("biases on the answer logits", {**ONE_PASS, "setup": "training"}),
    "lora": ("low-rank updates of the language model's linear layers (modulation.lora_targets)",
             {**ONE_PASS, "setup": "training"}),
    "ia3": ("rescaling vectors of the language model's layers (modulation.ia3_targets)",
            {**ONE_PASS, "setup": "training"}),
}


def describe(method: str, outcome: Outcome) -> None:
    """``changes`` and ``cost`` of ``outcome``'s row, from ``PROTOCOL`` where the method did not say its own."""
    changes, cost = PROTOCOL.get(method, ("", ONE_PASS))
    outcome.extra.setdefault("changes", changes)
    outcome.extra.setdefault("cost", dict(cost))

RUNNERS.update({name: field.run_method for name in field.METHODS})  # the field's methods (issue 27)
