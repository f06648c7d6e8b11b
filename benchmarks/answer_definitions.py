"""How far apart the head-score matrices of the two answer definitions are (``model.answer_definition``,
docs/method.md#answer-tokens): the project's (p sums the single-token yes/no case variants; correct when the arg-max is
one of them) and the paper's released code's (p of the answer's first sub-token as written; correct when
the arg-max is any sub-token of the answer).

Both come from the same exact ablated forwards (``vseam.attribution.exact.run_from_layer``): each
(sample, head) row's last-position logits are read under both definitions, so the difference is the
definitions' alone. Printed per matrix: max and mean |difference|, the largest difference relative to
the matrix's largest entry, Spearman, top-10 overlap; and the baseline accuracy / mean p under each.

    python benchmarks/answer_definitions.py                                    # the trained organism, 96 samples
    python benchmarks/answer_definitions.py --model checkpoints/organism/instructblip
    python benchmarks/answer_definitions.py --model tiny:llava-1.5-7b --samples 1   # the full-width model (~4 min)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_speed import world_samples  # noqa: E402

from vseam.attribution.scores import head_scores, top_k_overlap  # noqa: E402
from vseam.interventions import Ablate  # noqa: E402
from vseam.interventions.replay import clean_run, run_from_layer  # noqa: E402
from vseam.models import load_adapter  # noqa: E402
from vseam.models.base import answer_stats  # noqa: E402
from vseam.stats import spearman  # noqa: E402

DEFINITIONS = ("project", "reference")


@torch.no_grad()
def both_definitions(adapters: dict, samples, batch_size: int = 8, rows: int = 64):
    """{definition: (prob [N], correct [N], p_abl [N, L, H])} from one set of exact ablated forwards."""
    a = adapters["project"]
    L, H = a.num_layers, a.num_heads
    out = {d: ([], [], []) for d in adapters}
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        encs = {d: ad.encode(batch).to(a.device) for d, ad in adapters.items()}
        emb = a.embed(encs["project"])  # the same inputs under both (only the answer ids differ)
        masks = {d: (e.answer_mask(a.vocab_size), e.correct_mask(a.vocab_size)) for d, e in encs.items()}
        clean = clean_run(a, emb)
        B = len(batch)
        p_abl = {d: torch.full((B, L, H), float("nan")) for d in adapters}
        for l in range(L):
            sample_of_row = torch.arange(B).repeat_interleave(H)
            head_of_row = torch.arange(H).repeat(B)
            for s0 in range(0, len(sample_of_row), rows):
                r = sample_of_row[s0:s0 + rows]
                hm = torch.zeros(len(r), H, dtype=torch.bool)
                hm[torch.arange(len(r)), head_of_row[s0:s0 + rows]] = True
                logits = run_from_layer(a, clean, l, r, Ablate(l, hm.to(a.device)))
                for d, (pm, _) in masks.items():
                    p_abl[d][r, l, head_of_row[s0:s0 + rows]] = answer_stats(logits, pm.index_select(0, r.to(a.device)))[0].float().cpu()
        for d, (pm, cm) in masks.items():
            p, c, _ = answer_stats(clean.logits, pm, cm)
            out[d][0].append(p.float().cpu())
            out[d][1].append(c.cpu())
            out[d][2].append(p_abl[d])
    return {d: tuple(torch.cat(x) for x in v) for d, v in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/organism/llava", help="a checkpoint folder or tiny:<name>")
    ap.add_argument("--arch", default=None, help="llava | instructblip (default: from the folder's config)")
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    arch = a.arch or ("instructblip" if "instructblip" in a.model else "llava")
    base = load_adapter({"arch": arch, "path": a.model, "dtype": "float32", "device": "cpu"})
    adapters = {d: type(base)(base.model, base.processor, template=base.template, name=base.name,
                              answer_definition=d) for d in DEFINITIONS}
    samples = world_samples(Path(tempfile.mkdtemp(prefix="vseam-defs-")) / "world", a.samples)
    res = both_definitions(adapters, samples, a.batch_size)
    scores = {d: head_scores(*v) for d, v in res.items()}
    L, H = base.num_layers, base.num_heads
    print(f"model: {base.name} ({L} x {H} heads), {len(samples)} organism-world samples "
          f"({sum(s.answer.lower() in ('yes', 'no') for s in samples)} yes/no)")
    for d in DEFINITIONS:
        p, c, _ = res[d]
        print(f"  {d:9}: baseline accuracy {float(c.float().mean()):.4f}, mean p {float(p.mean()):.6f}, "
              f"{scores[d].n_correct} correct / {scores[d].n_incorrect} incorrect")
    k = min(10, L * H)
    summary = {}
    for name in ("positive", "negative", "signed"):
        x, y = getattr(scores["project"], name), getattr(scores["reference"], name)
        if x is None or y is None:
            print(f"  {name:8}: undefined under {'project' if x is None else 'reference'}")
            continue
        diff = (x - y).abs()
        top = float(x.abs().max())
        rel = float(diff.max()) / top if top > 0 else float("nan")
        rho, ov = spearman(x, y), top_k_overlap(x, y, k)
        print(f"  {name:8}: max |diff| {float(diff.max()):.3g}, mean |diff| {float(diff.mean()):.3g}, max |diff| / "
              f"max |score| {rel:.3g}, Spearman {rho:.4f}, top-{k} overlap {ov}/{k}")
        summary[f"{name}_max_abs_diff"] = f"{float(diff.max()):.3g}"
        summary[f"{name}_rel"] = f"{rel:.3g}"
        summary[f"{name}_spearman"] = f"{rho:.4f}"
        summary[f"{name}_top{k}"] = ov
    dp = (res["project"][0] - res["reference"][0]).abs()
    summary["baseline_p_max_abs_diff"] = f"{float(dp.max()):.3g}"
    summary["accuracy_project"] = f"{float(res['project'][1].float().mean()):.4f}"
    summary["accuracy_reference"] = f"{float(res['reference'][1].float().mean()):.4f}"
    print(" ".join(f"{k_}={v}" for k_, v in summary.items()))


if __name__ == "__main__":
    sys.exit(main())
