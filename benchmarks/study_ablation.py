"""The ablation study's cost per condition (99 random sets per K; docs/benchmarks.md#study-ablation): the study's rows, each started
from the clean pass's record of its first ablated layer (``vseam.study.ablation.ablated_answer_stats``),
against the plain way (the batch repeated once per condition, every row through the whole language model),
side by side on the same samples and conditions of an organism model, with the largest difference.

Conditions: the top-K positive / negative heads of the model's shipped-organism head scores and
``--trials`` random sets per K of ``--k`` (every K-head set where there are no more: K=1), as
``python analyze.py ablate`` builds them.

    python benchmarks/study_ablation.py                       # organism llava, 32 samples, 99 trials
    python benchmarks/study_ablation.py --model organism-instructblip --samples 16 --trials 5

Times are this process's CPU seconds (the wall clock of a shared machine mostly measures the other jobs),
wall beside them. The last line is machine-readable: ``plain_cpu_s=.. study_cpu_s=.. speedup=.. max_abs_diff=..
conditions=..``.
"""

from __future__ import annotations

import argparse
import time

import torch

from vseam.interventions import Ablate, intervene
from vseam.models.base import answer_stats
from vseam.study.ablation import ablated_answer_stats, conditions, layer_masks


def plain(adapter, emb, answer_mask, conds, categories, mode="mean", rows_per_forward=64):
    """Every (sample, condition) row through the whole language model, conditions of a sample in a batch."""
    L, H = adapter.num_layers, adapter.num_heads
    B, C = len(categories), len(conds)
    masks = layer_masks(conds, categories, L, H)
    prob = torch.empty(B * C)
    per = max(1, rows_per_forward // C)
    for s0 in range(0, B, per):
        s1 = min(B, s0 + per)
        rows = slice(s0 * C, s1 * C)
        m = masks[:, rows]
        with intervene(adapter, *[Ablate(l, m[l], mode=mode) for l in range(L) if m[l].any()]):
            logits = adapter.lm_logits(emb.index(slice(s0, s1)).repeat(C))
        prob[rows] = answer_stats(logits, answer_mask[s0:s1].repeat_interleave(C, 0))[0].float()
    return prob.view(B, C)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="organism-llava")
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--trials", type=int, default=99)
    ap.add_argument("--k", default="1,3,5")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from omegaconf import OmegaConf

    from vseam.attribution.exact import ExactEngine
    from vseam.attribution.scores import head_scores
    from vseam.config import load_config
    from vseam.data.load import load_samples
    from vseam.data.sample import load_image
    from vseam.models import load_adapter
    from vseam.world.write import ensure_world

    cfg = load_config([f"model={args.model}"])
    ensure_world(cfg.data)
    adapter = load_adapter(OmegaConf.to_container(cfg.model, resolve=True))
    everything = load_samples(cfg.data)
    samples = everything[:: max(1, len(everything) // args.samples)][: args.samples]
    enc = adapter.encode(samples, [load_image(s) for s in samples])
    with torch.no_grad():
        emb = adapter.embed(enc)
    mask = enc.answer_mask(adapter.vocab_size)
    p_abl, logits = ExactEngine(adapter).ablated_probs(emb, mask)  # head scores of these samples: the top sets
    p, ok, _ = answer_stats(logits, mask)
    conds, _ = conditions(head_scores(p, ok, p_abl), [int(k) for k in args.k.split(",")], None, args.trials, 0)
    cats = [s.category for s in samples]

    def timed(fn):  # (result, CPU seconds of this process, wall seconds): CPU time is what a shared machine leaves
        c, w = time.process_time(), time.perf_counter()
        out = fn()
        return out, time.process_time() - c, time.perf_counter() - w

    a, c_plain, w_plain = timed(lambda: plain(adapter, emb, mask, conds, cats))
    (b, _), c_study, w_study = timed(lambda: ablated_answer_stats(adapter, emb, mask, conds, cats))
    diff = float((a - b).abs().max())
    print(f"{args.model}: {len(samples)} samples x {len(conds)} conditions ({args.trials} trials per K of {args.k}; "
          f"{args.threads} thread(s))")
    print(f"  plain (whole model per row):           CPU {c_plain:7.2f} s   wall {w_plain:7.2f} s")
    print(f"  study (rows from first ablated layer): CPU {c_study:7.2f} s   wall {w_study:7.2f} s   "
          f"ratio (CPU) {c_plain / c_study:.2f}x")
    print(f"  largest |difference| of the answer probability: {diff:.2e}")
    print(f"plain_cpu_s={c_plain:.3f} study_cpu_s={c_study:.3f} speedup={c_plain / c_study:.3f} max_abs_diff={diff:.3e} "
          f"conditions={len(conds)}")


if __name__ == "__main__":
    main()
