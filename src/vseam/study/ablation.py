"""The head ablation study (docs/method.md#ablation-study): remove the top-K positive heads, the
top-K negative heads, and K random heads (seeded trials), all at once, and report per category and
semantic level the accuracy and the mean drop of the answer probability, with the spread over the
random trials, for each K of a list.

The conditions of a batch run as rows of the same forwards: each (sample, condition) row carries its own
head mask per layer, through the one intervention mechanism (``vseam.interventions.Ablate``), and starts
from the clean pass's record of its first ablated layer (``vseam.interventions.replay``, as the attribution
engine does). Per-sample results are saved per chunk, resumed and sharded over the ranks (``vseam.runtime``:
``trainer.devices`` x ``trainer.num_nodes``) as the attribution sweep's; rank 0 writes the outputs. Outputs
(``ablation.json``, schema ``vseam.ablation/1``): ``conditions`` (name, k, trial, heads), ``groups``
(``all``, ``category/<name>``, ``level/<name>``; each: ``n``, ``baseline`` and per condition
``accuracy``, ``mean_prob``, ``prob_drop`` = mean(p - p_ablated), ``accuracy_drop``, and for a top-K
set ``vs_random`` (``vs_random()``): how many of the random sets of the same K end at an accuracy as low
or lower, its rank among them and the one-sided p with its floor, by accuracy and by probability drop
(exact where every K-head set was run); random conditions also aggregated over trials as ``mean`` /
``std`` / ``min`` / ``max``, with ``exhaustive``), ``skipped``.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vseam.attribution.scores import HeadScores, exact_cells, heads_of, only_exact, rescored_per_matrix, top_k
from vseam.config import AttributionConfig, StudyConfig
from vseam.data.sample import MissingImageError, Sample, load_image
from vseam.interventions import Ablate
from vseam.interventions.replay import clean_run, length_batches, run_from_layer
from vseam.models.base import VLMAdapter, answer_stats
from vseam.modulation.heads import random_heads
from vseam.runtime import Chunks, Progress, RowBatches, read_chunk
from vseam.utils.io import save_safetensors

log = logging.getLogger(__name__)

SCHEMA = "vseam.ablation/1"
KINDS = ("positive", "negative", "random")


@dataclass(frozen=True)
class Condition:
    """One set of heads removed together. ``heads`` maps a category to its heads, or ``None`` to the
    heads of every sample (``heads_from=all``)."""

    kind: str  # none | positive | negative | random
    k: int
    trial: int | None
    heads: tuple  # ((category | None, ((layer, head), ...)), ...)
    exhaustive: bool = False  # random: one of every K-head set (there are no more of them than the trials)

    @property
    def name(self) -> str:
        return "none" if self.kind == "none" else \
            f"{self.kind}@{self.k}" + ("" if self.trial is None else f"#{self.trial}")

    def heads_for(self, category: str | None) -> tuple:
        table = dict(self.heads)
        if None in table:
            return table[None]
        return table.get(category, ())

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "k": self.k, "trial": self.trial,
                "heads": {("all" if c is None else c): [list(h) for h in hs] for c, hs in self.heads},
                **({"exhaustive": True} if self.exhaustive else {})}


def conditions(scores: HeadScores, ks: Sequence[int], k_random: Sequence[int] | None, trials: int, seed: int,
               heads_from: str = StudyConfig.heads_from) -> tuple[list[Condition], list[dict]]:
    """The conditions of the study from head scores (``load_head_scores``), and the ones that cannot
    run (``[{"name", "reason"}]``: an undefined matrix).

    Top-K lists are the strictly positive ones (``top_k(..., positive_only=True)``): a head that never
    moved the answer is not added to fill K, so such a condition runs with fewer heads (its ``heads``
    say which). ``k_random`` (default: ``ks``) are the sizes of the random sets, drawn uniformly from
    all heads with a seed of (``seed``, K, trial), the same sets for every category; where there are no
    more K-head sets than ``trials`` (K=1: L x H), every one of them once instead (the exact null).

    Scores of ``atp+exact_topk`` (exact at the re-scored heads, estimates elsewhere) are ranked among the
    exact heads only, as ``train.py``'s key heads are; a K above the number of re-scored heads cannot
    run and is listed with its reason, not filled with estimates.
    """
    if heads_from not in ("all", "category"):
        raise ValueError(f"study.heads_from={heads_from!r}: expected all | category")
    L, H = scores.shape
    if heads_from == "category" and not scores.by_category:
        raise ValueError("study.heads_from=category: the head scores have no by_category block "
                         "(made before per-category scores existed; run `python analyze.py heads` again)")
    sources = {None: scores} if heads_from == "all" else dict(scores.by_category)
    out, skipped = [Condition("none", 0, None, ((None, ()),))], []
    exact, k_exact = exact_cells(scores), rescored_per_matrix(scores)  # the same re-scored heads in every block
    for kind in ("positive", "negative"):
        for k in ks:
            if k_exact is not None and int(k) > k_exact:
                skipped.append({"name": f"{kind}@{k}", "reason": f"K={k} is more than the {k_exact} heads re-scored "
                                f"exactly per matrix of these {scores.method} scores (attribution.rescore_top_k)"})
                continue
            table, missing = [], []
            for cat, block in sources.items():
                m = only_exact(block.matrices()[kind], exact)
                if m is None:
                    missing.append("all samples" if cat is None else cat)
                    continue
                table.append((cat, tuple(heads_of(top_k(m, int(k), positive_only=True)))))
            if missing:
                skipped.append({"name": f"{kind}@{k}", "reason": f"no {kind} scores for {', '.join(missing)} "
                                f"({'no baseline-incorrect' if kind == 'negative' else 'no baseline-correct'} sample)"})
                continue
            out.append(Condition(kind, int(k), None, tuple(table)))
    for k in (ks if k_random is None else k_random):
        if int(k) > L * H:
            skipped.append({"name": f"random@{k}", "reason": f"K={k} is more than the model's {L * H} heads"})
            continue
        if math.comb(L * H, int(k)) <= int(trials):  # the exact null: every K-head set once
            every = itertools.combinations([(l, h) for l in range(L) for h in range(H)], int(k))
            out += [Condition("random", int(k), t, ((None, hs),), exhaustive=True) for t, hs in enumerate(every)]
            continue
        for t in range(int(trials)):
            hs = random_heads(L, H, int(k), seed=_trial_seed(seed, int(k), t))
            out.append(Condition("random", int(k), t, ((None, tuple(hs)),)))
    return out, skipped


def language_heads(scores: HeadScores, where: str) -> HeadScores:
    """``scores`` when they are of the language model's heads (the ones the study removes and compares);
    scores of the vision tower (``attribution.tower=vision``) are refused, naming the file."""
    tower = scores.meta.get("tower") or "language"
    if tower != "language":
        raise ValueError(f"{where} holds scores of the {tower} tower's heads (attribution.tower={tower}); the study "
                         f"removes and compares the language model's heads: give it head scores of "
                         f"attribution.tower=language")
    return scores


def _trial_seed(seed: int, k: int, trial: int) -> int:
    return int(seed) * 1_000_003 + k * 1_009 + trial


def layer_masks(conds: Sequence[Condition], categories: Sequence[str | None], num_layers: int,
                num_heads: int) -> torch.Tensor:
    """Bool [L, B*C, H]: row b*C + c ablates condition c's heads for sample b (sample-major, as
    ``Embedded.repeat``)."""
    C = len(conds)
    mask = torch.zeros(num_layers, len(categories) * C, num_heads, dtype=torch.bool)
    for b, cat in enumerate(categories):
        for c, cond in enumerate(conds):
            for l, h in cond.heads_for(cat):
                mask[l, b * C + c, h] = True
    return mask


@torch.no_grad()
def ablated_answer_stats(adapter: VLMAdapter, emb, answer_mask: torch.Tensor, conds: Sequence[Condition],
                         categories: Sequence[str | None], mode: str = StudyConfig.ablation,
                         rows_per_forward: int | RowBatches = AttributionConfig.rows_per_forward,
                         correct_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Answer probability and correctness [B, C] of each sample under each condition.

    As the attribution engine does (``vseam.attribution.exact``): one clean pass per group of samples of
    similar length records every layer's input; a (sample, condition) row whose first ablated head is in
    layer ``l`` starts from that record and runs only layers ``l..L-1``, many rows per forward
    (``rows_per_forward``, or the ``RowBatches`` of a whole run, halved on out-of-memory; each row its own
    per-layer head mask of the one ``Ablate`` intervention); a row with no head removed is the clean pass
    itself. ``correct_mask`` [B, V]: the ids an arg-max counts as correct at (default ``answer_mask``;
    ``model.answer_definition=reference`` differs)."""
    batches = rows_per_forward if isinstance(rows_per_forward, RowBatches) else \
        RowBatches(rows_per_forward, "attribution.rows_per_forward")
    L, H = adapter.num_layers, adapter.num_heads
    B, C = len(categories), len(conds)
    masks = layer_masks(conds, categories, L, H).view(L, B, C, H)
    any_l = masks.any(-1)  # [L, B, C]
    first = torch.where(any_l.any(0), any_l.float().argmax(0), torch.full((B, C), L))  # [B, C]; L = no head
    correct_mask = answer_mask if correct_mask is None else correct_mask
    prob = torch.empty(B, C)
    ok = torch.empty(B, C, dtype=torch.bool)

    def stats(logits, samples):
        rows = samples.to(answer_mask.device)
        p, c, _ = answer_stats(logits, answer_mask.index_select(0, rows), correct_mask.index_select(0, rows))
        return p.float().cpu(), c.bool().cpu()

    for group, sub in length_batches(emb, max(1, batches.size // max(1, C))):
        clean = clean_run(adapter, sub)
        p0, c0 = stats(clean.logits, group)
        for j, b in enumerate(group.tolist()):
            none = first[b] == L
            prob[b, none], ok[b, none] = p0[j], c0[j]
        for l in range(L):
            local, cond = (first[group] == l).nonzero(as_tuple=True)  # rows: (sample within group, condition)

            def forward(start: int, stop: int, l=l, local=local, cond=cond, clean=clean, group=group) -> None:
                lj, cj = local[start:stop], cond[start:stop]
                bj = group[lj]
                m = masks[:, bj, cj].to(adapter.device)  # [L, rows, H]
                edits = [Ablate(j, m[j], mode=mode) for j in range(l, L) if m[j].any()]
                logits = run_from_layer(adapter, clean, l, lj, *edits)
                prob[bj, cj], ok[bj, cj] = stats(logits, bj)

            batches.run(len(local), forward)
    return prob, ok


@dataclass
class AblationChunk:
    """Per-sample results of one chunk: answer probability and correctness under every condition."""

    index: int
    ids: list[str]
    prob: torch.Tensor  # [n, C]
    correct: torch.Tensor  # [n, C] bool
    skipped: list[dict]  # [{"id", "reason"}]

    def save(self, path: Path, fingerprint: str) -> None:
        save_safetensors(path, {"prob": self.prob, "correct": self.correct.to(torch.uint8)},
                         metadata={"fingerprint": fingerprint, "index": str(self.index), "ids": json.dumps(self.ids),
                                   "skipped": json.dumps(self.skipped)})

    @classmethod
    def load(cls, path: Path, fingerprint: str) -> AblationChunk:
        t, meta = read_chunk(path, fingerprint, "study.resume")
        index = int(meta.get("index") or path.stem.rsplit("chunk", 1)[1])  # chunks saved before "index" was kept
        return cls(index, json.loads(meta["ids"]), t["prob"], t["correct"].bool(), json.loads(meta["skipped"]))


def compute_chunk(adapter: VLMAdapter, samples: Sequence[Sample], conds: Sequence[Condition], index: int, *,
                  mode: str, batch_size: int, rows: RowBatches) -> AblationChunk:
    """The conditions' per-sample results over ``samples`` (one chunk), in batches of ``batch_size``;
    a missing image is a counted skip."""
    ids, probs, oks, skipped, valid, images = [], [], [], [], [], []
    for s in samples:
        try:
            images.append(load_image(s))
            valid.append(s)
        except MissingImageError as e:
            skipped.append({"id": s.id, "reason": str(e)})
    for b0 in range(0, len(valid), batch_size):
        batch, imgs = valid[b0:b0 + batch_size], images[b0:b0 + batch_size]
        enc = adapter.encode(batch, imgs).to(adapter.device)
        emb = adapter.embed(enc)
        p, ok = ablated_answer_stats(adapter, emb, enc.answer_mask(adapter.vocab_size), conds,
                                     [s.category for s in batch], mode=mode, rows_per_forward=rows,
                                     correct_mask=enc.correct_mask(adapter.vocab_size))
        ids += [s.id for s in batch]
        probs.append(p)
        oks.append(ok)
    return AblationChunk(index, ids, torch.cat(probs) if probs else torch.zeros(0, len(conds)),
                         torch.cat(oks) if oks else torch.zeros(0, len(conds), dtype=torch.bool), skipped)


def merge(chunks: Sequence[AblationChunk], n_conditions: int) -> dict:
    """Every chunk's per-sample results (in chunk order) as one: ``ids``, ``prob`` [N, C], ``correct`` [N, C],
    ``skipped``."""
    return {"ids": [i for c in chunks for i in c.ids],
            "prob": torch.cat([c.prob for c in chunks]) if chunks else torch.zeros(0, n_conditions),
            "correct": torch.cat([c.correct for c in chunks]) if chunks else torch.zeros(0, n_conditions, dtype=torch.bool),
            "skipped": [s for c in chunks for s in c.skipped]}


# ------------------------------------------------------------------------------------- summary
def _spread(values: list[float]) -> dict:
    t = torch.tensor(values, dtype=torch.float64)
    return {"mean": float(t.mean()), "std": float(t.std(unbiased=True)) if len(t) > 1 else 0.0,
            "min": float(t.min()), "max": float(t.max()), "n_trials": len(values)}


def summarize(prob: torch.Tensor, correct: torch.Tensor, conds: Sequence[Condition]) -> dict:
    """Accuracy, mean probability and drops of each condition against condition 0 (no ablation) over
    the rows given; random trials also as their spread per K. Pure (tested without a model)."""
    if conds[0].kind != "none":
        raise ValueError("condition 0 must be the unablated baseline")
    n = int(prob.shape[0])
    if n == 0:
        return {"n": 0}
    p, c = prob.double(), correct.double()
    base_acc, base_p = float(c[:, 0].mean()), float(p[:, 0].mean())
    per = {}
    for j, cond in enumerate(conds[1:], start=1):
        acc, mp = float(c[:, j].mean()), float(p[:, j].mean())
        per[cond.name] = {"kind": cond.kind, "k": cond.k, "trial": cond.trial, "accuracy": acc, "mean_prob": mp,
                          "prob_drop": float((p[:, 0] - p[:, j]).mean()), "accuracy_drop": base_acc - acc,
                          "prob_drop_se": float((p[:, 0] - p[:, j]).std(unbiased=True) / math.sqrt(n)) if n > 1 else None}
    random = {}
    for k in sorted({cd.k for cd in conds if cd.kind == "random"}):
        rconds = [cd for cd in conds if cd.kind == "random" and cd.k == k]
        trials = [per[cd.name] for cd in rconds]
        exhaustive = all(cd.exhaustive for cd in rconds)
        random[str(k)] = {**{m: _spread([t[m] for t in trials]) for m in ("accuracy", "prob_drop", "accuracy_drop")},
                          "exhaustive": exhaustive}
        sets = {frozenset(cd.heads_for(None)) for cd in rconds}
        for cd in conds[1:]:
            if cd.kind != "random" and cd.k == k:
                # a top-K set among every K-head set (heads of all samples, K of them): the exact null
                member = exhaustive and None in dict(cd.heads) and frozenset(cd.heads_for(None)) in sets
                per[cd.name]["vs_random"] = vs_random(per[cd.name], trials, member)
    return {"n": n, "baseline": {"accuracy": base_acc, "mean_prob": base_p}, "conditions": per, "random": random}


def vs_random(cond: dict, trials: list[dict], exact: bool) -> dict:
    """A top-K condition against the random sets of the same K: how many random sets end at an accuracy as
    low or lower, the condition's rank among them (1 = lower than every one) and the one-sided p, by
    accuracy and by mean probability drop. ``exact``: the random sets are every K-head set, the condition's
    own among them (p = the share at least as extreme, ``vseam.stats.enumeration_p``); else the Monte
    Carlo p ``(1 + #) / (1 + trials)`` with its floor (``vseam.stats.monte_carlo_p``)."""
    from vseam.stats import enumeration_p, monte_carlo_p

    test = enumeration_p if exact else monte_carlo_p
    acc = test(cond["accuracy"], [t["accuracy"] for t in trials], "less")
    drop = test(cond["prob_drop"], [t["prob_drop"] for t in trials], "greater")
    return {"n_trials": len(trials), "exact": bool(exact),
            "n_random_as_bad": sum(t["accuracy"] <= cond["accuracy"] for t in trials),
            "p": acc["p"], "floor": acc["floor"], "rank": acc["rank"],
            "prob_drop": {"p": drop["p"], "floor": drop["floor"], "rank": drop["rank"]}}


def group_summaries(result: dict, samples_by_id: dict[str, Sample], conds: Sequence[Condition]) -> dict:
    """``summarize`` over all samples, each category and each level."""
    ids, prob, correct = result["ids"], result["prob"], result["correct"]
    groups: dict[str, list[int]] = {"all": list(range(len(ids)))}
    for i, sid in enumerate(ids):
        s = samples_by_id[sid]
        if s.category is not None:
            groups.setdefault(f"category/{s.category}", []).append(i)
        if s.level is not None:
            groups.setdefault(f"level/{s.level}", []).append(i)
    return {g: summarize(prob[idx], correct[idx], conds) for g, idx in groups.items()}


# ------------------------------------------------------------------------------------- figure
def ablation_figure(summary: dict, title: str = ""):
    """Bars per group (levels, then all): accuracy drop and probability drop of the top-K positive,
    top-K negative and random heads (mean over trials, error bar = their std), one panel row per K."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [g for g in summary["groups"] if g.startswith("level/")] + ["all"]
    ks = summary["ks"]
    fig, axes = plt.subplots(len(ks) + 1, 2, figsize=(10, 2.6 * (len(ks) + 1) + 0.6), squeeze=False)
    colors = {"positive": "#c0392b", "negative": "#2471a3", "random": "#7f8c8d"}
    for r, k in enumerate(ks):
        for col, metric in enumerate(("accuracy_drop", "prob_drop")):
            ax = axes[r][col]
            x = np.arange(len(groups))
            for i, kind in enumerate(KINDS):
                vals, errs = [], []
                for g in groups:
                    s = summary["groups"][g]
                    if kind == "random":
                        sp = s.get("random", {}).get(str(k), {}).get(metric)
                        vals.append(sp["mean"] if sp else np.nan)
                        errs.append(sp["std"] if sp else 0.0)
                    else:
                        cd = s.get("conditions", {}).get(f"{kind}@{k}")
                        vals.append(cd[metric] if cd else np.nan)
                        errs.append(0.0)
                ax.bar(x + (i - 1) * 0.27, vals, 0.27, yerr=errs if kind == "random" else None, capsize=3,
                       color=colors[kind],
                       label=f"{kind} (std over trials)" if kind == "random" else f"top-K {kind}")
            ax.set_xticks(x)
            ax.set_xticklabels([g.split("/")[-1] for g in groups], fontsize=8)
            ax.axhline(0, color="black", lw=0.6)
            ax.set_title(f"K={k}: {metric.replace('_', ' ')}", fontsize=9)
            if r == 0 and col == 0:
                ax.legend(fontsize=7)
    _curves(axes[-1], summary, colors)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _curves(axes, summary: dict, colors: dict) -> None:
    """Accuracy and probability drop of all samples as curves over K (random: mean, band = std)."""
    import numpy as np

    s = summary["groups"]["all"]
    for ax, metric in zip(axes, ("accuracy", "prob_drop")):
        for kind in ("positive", "negative"):
            pts = sorted((c["k"], c[metric]) for c in s.get("conditions", {}).values() if c["kind"] == kind)
            if pts:
                ax.plot(*zip(*pts), "o-", color=colors[kind], label=f"top-K {kind}")
        rnd = sorted((int(k), v[metric]["mean"], v[metric]["std"]) for k, v in s.get("random", {}).items())
        if rnd:
            k, m, sd = (np.array(v) for v in zip(*rnd))
            ax.plot(k, m, "o--", color=colors["random"], label="random (band: std over trials)")
            ax.fill_between(k, m - sd, m + sd, color=colors["random"], alpha=0.25)
        if metric == "accuracy" and s.get("baseline"):
            ax.axhline(s["baseline"]["accuracy"], color="black", lw=0.6, ls=":", label="no ablation")
        ax.set_xticks(sorted({int(k) for k in summary["ks"] + summary.get("k_random", [])}))
        ax.set_xlabel("K (heads removed)")
        ax.set_title(f"all samples: {metric.replace('_', ' ')} over K", fontsize=9)
        ax.legend(fontsize=7)


# ------------------------------------------------------------------------------------- entry
def run_ablate(cfg: Any, on_chunk: Callable[[int], None] | None = None) -> dict:
    """``python analyze.py ablate``: the ablation study for ``cfg`` (head scores from ``study.head_scores``,
    computed into ``<out_dir>/heads`` when null), its chunks sharded over the ranks of ``trainer.*``.
    Returns the ``ablation.json`` dict on rank 0 ({} on the other ranks); ``on_chunk(index)`` is called
    after each newly computed and saved chunk (tests use it to simulate a kill)."""
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    validate(cfg, "ablate")  # before the folder is taken and before any model loads
    with run_folder(cfg, "ablate") as out:  # refused when it holds another run's results; DDP children inherit it
        from vseam.runtime import launch

        return _ablate(cfg, Path(out), launch(cfg), on_chunk)


def _ablate(cfg: Any, out: Path, fabric: Any, on_chunk) -> dict:
    from omegaconf import OmegaConf

    from vseam.attribution.outputs import load_head_scores
    from vseam.data.load import load_samples
    from vseam.data.skips import check_skips, missing_images, model_skips
    from vseam.models import load_adapter
    from vseam.runtime import Ranks, Runtime, fresh_progress, model_cfg, model_fingerprint
    from vseam.utils.io import save_figure, write_json
    from vseam.world.write import ensure_world

    scfg = cfg.study
    ranks = Ranks.of(fabric)
    started = time.time()
    heads_path = scfg.head_scores
    if heads_path is None:
        heads_path = out / "heads"
        ranks.barrier()  # every rank sees the same folder: all of them run the sweep, or none
        if not (heads_path / "head_scores.json").exists():
            from vseam.attribution.run import run_heads

            run_heads(OmegaConf.merge(cfg, {"out_dir": str(heads_path)}))
    scores = language_heads(load_head_scores(heads_path), f"study.head_scores={heads_path}")
    ensure_world(cfg.data)
    all_samples = load_samples(cfg.data)
    max_skip = float(cfg.data.max_skip_fraction)
    check_skips(len(all_samples), missing_images(all_samples), max_skip, "ablation study")  # before the model loads
    mcfg = model_cfg(cfg, fabric)
    adapter = load_adapter(mcfg)
    scores.check_shape(adapter.num_layers, adapter.num_heads, where=f"study.head_scores={heads_path}")
    conds, skipped_conds = conditions(scores, list(scfg.k), None if scfg.k_random is None else list(scfg.k_random),
                                      int(scfg.random_trials), int(cfg.seed), str(scfg.heads_from))
    progress_dir = out / "progress"
    if ranks.zero:
        fresh_progress(progress_dir, bool(scfg.resume))
    ranks.barrier()
    screen = model_skips(adapter, all_samples)
    samples, answer_skipped = screen.kept, screen.skipped
    if ranks.zero:
        screen.say("ablation study")
    mode, batch_size = str(scfg.ablation), int(cfg.data.batch_size)
    chunks: Chunks = Runtime(progress_dir, model_fingerprint(mcfg, adapter), ranks).chunks(
        len(samples), int(cfg.attribution.chunk_size), "ablate", mode=mode, batch_size=batch_size,
        chunk_size=int(cfg.attribution.chunk_size), conditions=[c.to_dict() for c in conds],
        ids=[s.id for s in samples])
    rows = RowBatches(int(cfg.attribution.rows_per_forward), "attribution.rows_per_forward")
    bar = Progress(ranks.zero and bool(cfg.attribution.progress), sum(chunks.size(c) for c in chunks.mine()),
                   f"ablate ({len(conds)} conditions)", unit="sample")

    def compute(c: int) -> AblationChunk:
        lo, hi = chunks.bounds[c]
        res = compute_chunk(adapter, samples[lo:hi], conds, c, mode=mode, batch_size=batch_size, rows=rows)
        bar.update(hi - lo)
        return res

    try:
        mine = chunks.run(compute, AblationChunk.load, units=chunks.size, on_progress=bar.update,
                          on_chunk=None if on_chunk is None else lambda res: on_chunk(res.index))
    finally:
        bar.close()
    res = merge(chunks.gather(mine), len(conds))
    res["skipped"] = answer_skipped + res["skipped"]
    check_skips(len(all_samples), res["skipped"], max_skip, "ablation study")
    if not ranks.zero:
        ranks.barrier()  # rank 0 writes the outputs
        return {}
    summary = {
        "schema": SCHEMA, "model_id": adapter.name, "arch": adapter.arch, "num_layers": adapter.num_layers,
        "num_heads": adapter.num_heads, "ablation": str(scfg.ablation), "heads_from": str(scfg.heads_from),
        "head_scores": str(heads_path), "head_scores_method": scores.method,
        "head_scores_dataset": scores.meta.get("dataset_id"), "dataset_id": cfg.data.name,
        "ks": [int(k) for k in scfg.k], "k_random": [int(k) for k in (scfg.k_random or scfg.k)],
        "random_trials": int(scfg.random_trials), "seed": int(cfg.seed),
        "conditions": [c.to_dict() for c in conds], "skipped_conditions": skipped_conds,
        "n": len(res["ids"]), "n_total": len(all_samples), "skipped": res["skipped"], "n_skipped": len(res["skipped"]),
        **screen.report(),
        "groups": group_summaries(res, {s.id: s for s in samples}, conds),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    save_safetensors(Path(out) / "ablation.safetensors", {"prob": res["prob"], "correct": res["correct"].to(torch.uint8)},
                     metadata={"schema": SCHEMA, "ids": json.dumps(res["ids"]),
                               "conditions": json.dumps([c.name for c in conds])})
    fig = ablation_figure(summary, f"{adapter.name}: {scfg.ablation} ablation on {cfg.data.name}, "
                                   f"N={summary['n']}, random = {scfg.random_trials} sets per K (every K-head set "
                                   f"where there are no more)")
    save_figure(Path(out) / "ablation.png", fig)
    import matplotlib.pyplot as plt

    plt.close(fig)
    summary["seconds"] = round(time.time() - started, 3)
    summary["files"] = {"json": str(Path(out) / "ablation.json"), "safetensors": str(Path(out) / "ablation.safetensors"),
                        "figure": str(Path(out) / "ablation.png")}
    write_json(Path(out) / "ablation.json", summary)
    _log(cfg, out, summary)
    print(result_lines(summary), flush=True)
    ranks.barrier()
    return summary


def result_lines(summary: dict) -> str:
    """What the ablation study found over all samples, per K, and where it is written: the job's last lines."""
    g = summary["groups"].get("all", {})
    lines = [f"ablation study ({summary['ablation']} ablation, heads from {summary['head_scores']}): "
             f"{summary['n']} samples scored, {summary['n_skipped']} skipped; baseline accuracy "
             f"{_fmt((g.get('baseline') or {}).get('accuracy'))}"]
    conds, random = g.get("conditions") or {}, g.get("random") or {}
    for k in summary["ks"]:
        parts = [f"{kind} {_fmt(conds[f'{kind}@{k}']['accuracy'])}" + _vs(conds[f"{kind}@{k}"].get("vs_random"))
                 for kind in ("positive", "negative") if f"{kind}@{k}" in conds]
        if str(k) in random:
            r = random[str(k)]["accuracy"]
            parts.append(f"random {_fmt(r['mean'])} +- {_fmt(r['std'])} ({r['n_trials']} "
                         f"{'sets: all of them' if random[str(k)].get('exhaustive') else 'trials'})")
        if parts:
            lines.append(f"  accuracy with K={k} heads ablated: " + ", ".join(parts))
    lines.append(f"written: {summary['files']['json']} ({summary['seconds']:.0f} s)")
    return "\n".join(lines)


def _vs(vs: dict | None) -> str:
    """`` (rank r, p=.. floor ..)`` of a top-K set among the random sets of its K; empty without them."""
    if not vs:
        return ""
    return f" (rank {vs['rank']}, p={vs['p']:.2g}, floor {vs['floor']:.2g}{', exact' if vs['exact'] else ''})"


def _fmt(x) -> str:
    return f"{x:.3f}" if isinstance(x, float) else "-"


def _log(cfg: Any, out, summary: dict) -> None:
    from vseam.utils.tracking import log_analysis

    metrics = {}
    for g, s in summary["groups"].items():
        for name, c in (s.get("conditions") or {}).items():
            if c["trial"] is None:
                metrics[f"ablate/{g}/{name}/accuracy"] = c["accuracy"]
                metrics[f"ablate/{g}/{name}/prob_drop"] = c["prob_drop"]
        for k, sp in (s.get("random") or {}).items():
            metrics[f"ablate/{g}/random@{k}/accuracy_mean"] = sp["accuracy"]["mean"]
            metrics[f"ablate/{g}/random@{k}/accuracy_std"] = sp["accuracy"]["std"]
            metrics[f"ablate/{g}/random@{k}/prob_drop_mean"] = sp["prob_drop"]["mean"]
            metrics[f"ablate/{g}/random@{k}/prob_drop_std"] = sp["prob_drop"]["std"]
    log_analysis(cfg, out, "ablate", metrics, {"ablation": summary["files"]["figure"]})
