"""Head-attribution speed and agreement benchmark (issue 4, section 4).

One run, side by side, on the same samples:

1. a LLaVA-shaped tiny random model (32 KV heads like Vicuna-7B, MLP 2.69 x hidden) (32 layers x 32 heads, small hidden size): the reference loop
   (per sample and head: load + preprocess the image, full model forward, full logits) against the
   fast exact engine: wall time and max |difference| of the ablated probabilities;
2. attribution patching against the exact engine on the same grid: wall time;
3. agreement of attribution patching (log-odds and plain probability estimates) with the exact scores (Spearman over the L x H signed matrix,
   overlap of the top-10 heads) on the trained organism (``checkpoints/organism/llava``) when it
   exists, otherwise on a tiny random model (said in the output).

The three are timed sample by sample, interleaved, so they see the same load on a shared machine;
wall and CPU time are both printed. By default the reference runs on a spread subset of heads (``--ref-heads``) and its time is scaled
to the full grid, because the full loop takes tens of minutes on 2 CPU cores; ``--ref-heads 0``
runs it on every head. The last line is machine-readable:
``exact_speedup=.. max_abs_diff=.. atp_speedup=.. spearman=.. top10_overlap=..``.

    python benchmarks/attribution_speed.py                     # ~1 min idle, 3-5 min on a loaded 2-core box
    python benchmarks/attribution_speed.py --threads 1         # per-core figures (steadier under load)
    python benchmarks/attribution_speed.py --samples 8 --ref-heads 0
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from vseam.attribution.exact import ExactEngine  # noqa: E402
from vseam.attribution.patching import estimated_ablated_probs  # noqa: E402
from vseam.attribution.reference import reference_ablated_probs  # noqa: E402
from vseam.attribution.scores import head_scores, spearman, top_k_overlap  # noqa: E402
from vseam.models.base import answer_stats  # noqa: E402
from vseam.models.llava import LlavaAdapter  # noqa: E402

ORGANISM = Path("checkpoints/organism/llava")


def world_samples(root: Path, n: int, seed: int = 0):
    """``n`` organism-world samples written to disk (the reference reads each image file every time)."""
    from vseam.data.load import load_samples
    from omegaconf import OmegaConf

    per_cat = max(1, -(-n // 6))
    cfg = OmegaConf.create({"format": "organism", "root": str(root), "annotations": [], "image_dir": None,
                            "image_pattern": None, "categories": [], "limit": None, "n_per_category": per_cat,
                            "world_seed": seed, "world_split": "test"})
    samples = load_samples(cfg)
    # interleave categories so a small n still covers several question types
    by_cat: dict = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    mixed = [s for group in zip(*by_cat.values()) for s in group]
    return mixed[:n]


def timed(fn):
    """(result, wall seconds, CPU seconds of this process). On a shared machine the wall time also
    counts waiting for a core; the CPU time is the work done, so both are reported."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def exact_grid(adapter, samples, batch_size, rows):
    """Exact engine over all heads, timed from raw samples (image loading and preprocessing included)."""
    engine = ExactEngine(adapter, rows_per_forward=rows)
    outs, probs, corrects = [], [], []
    for i in range(0, len(samples), batch_size):
        enc = adapter.encode(samples[i:i + batch_size])
        mask = enc.answer_mask(adapter.vocab_size)
        with torch.no_grad():
            emb = adapter.embed(enc)
        p_abl, clean = engine.ablated_probs(emb, mask)
        p, c, _ = answer_stats(clean.logits, mask)
        outs.append(p_abl); probs.append(p); corrects.append(c)
    return torch.cat(outs), torch.cat(probs), torch.cat(corrects)


def atp_grid(adapter, samples, batch_size, space="logodds"):
    outs = []
    for i in range(0, len(samples), batch_size):
        enc = adapter.encode(samples[i:i + batch_size])
        mask = enc.answer_mask(adapter.vocab_size)
        with torch.no_grad():
            emb = adapter.embed(enc)
        outs.append(estimated_ablated_probs(adapter, emb, mask, space=space)[0])
    return torch.cat(outs)


def spread_heads(L, H, n):
    """``n`` heads spread over the grid: every layer, heads at a stride (deterministic)."""
    if n <= 0 or n >= L * H:
        return [(l, h) for l in range(L) for h in range(H)]
    flat = torch.linspace(0, L * H - 1, n).round().long().unique().tolist()
    return [(i // H, i % H) for i in flat]


def agreement(adapter, samples, batch_size, rows, spaces=("logodds", "prob")):
    """{space: {matrix: (spearman, top-10 overlap)}} of attribution patching against the exact scores."""
    exact, p, c = exact_grid(adapter, samples, batch_size, rows)
    s_exact = head_scores(p, c, exact)
    out = {}
    for space in spaces:
        s_est = head_scores(p, c, atp_grid(adapter, samples, batch_size, space))
        out[space] = {}
        for name in ("signed", "positive", "negative"):
            a, b = getattr(s_exact, name), getattr(s_est, name)
            small = max(1, adapter.num_layers * adapter.num_heads // 4)  # meaningful on small grids too
            out[space][name] = (spearman(a, b), top_k_overlap(a, b, 10), small, top_k_overlap(a, b, small))
    return out, s_exact


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny model (head_dim = hidden / heads)")
    ap.add_argument("--samples", type=int, default=2, help="samples of the speed comparison")
    ap.add_argument("--ref-heads", type=int, default=32, help="heads the reference loop runs (0 = all); time is scaled")
    ap.add_argument("--batch-size", type=int, default=4, help="samples per batch in the agreement comparison")
    ap.add_argument("--rows", type=int, default=64, help="exact engine: ablated copies per forward")
    ap.add_argument("--agreement-samples", type=int, default=96, help="samples of the Spearman / top-10 comparison")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--organism", default=str(ORGANISM), help="trained organism checkpoint of the agreement part")
    ap.add_argument("--skip-speed", action="store_true", help="only the agreement part")
    ap.add_argument("--atp-space", default="logodds", choices=["logodds", "prob"],
                    help="space of the estimate in the summary line (both are printed)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    from vseam.models.tiny import build_tiny_llava

    tmp = Path(tempfile.mkdtemp(prefix="vseam-bench-"))
    samples = world_samples(tmp / "world", max(a.samples, a.agreement_samples))
    speed_samples = samples[:a.samples]

    model, processor = build_tiny_llava(num_layers=a.layers, num_heads=a.heads, num_kv_heads=None,
                                        hidden_size=a.hidden, intermediate_size=int(2.6875 * a.hidden))
    model.requires_grad_(False)
    adapter = LlavaAdapter(model, processor, name=f"tiny-llava-{a.layers}x{a.heads}")
    L, H = adapter.num_layers, adapter.num_heads
    T = adapter.encode(speed_samples[:1]).inputs["input_ids"].shape[1]
    print(f"model: {adapter.name} (hidden {a.hidden}, head_dim {adapter.head_dim}, ~{T} tokens), "
          f"{len(speed_samples)} samples, torch threads {torch.get_num_threads()}", flush=True)

    if a.skip_speed:
        exact_speedup = atp_speedup = max_diff = c_ref = c_exact = c_atp = float("nan")
        c_exact = c_atp = 1.0
    else:
        exact_speedup, atp_speedup, max_diff, c_ref, c_exact, c_atp = speed(a, adapter, speed_samples)
    agreement_part(a, samples, exact_speedup, atp_speedup, max_diff, c_ref, c_exact, c_atp)


def speed(a, adapter, speed_samples):
    L, H = adapter.num_layers, adapter.num_heads
    heads = spread_heads(L, H, a.ref_heads)
    # Interleaved: for each sample, the reference, then the exact engine, then attribution patching, so
    # all three see the same load on a shared machine (timings drift by 2-3x over minutes here).
    t_ref_run = c_ref_run = t_exact = c_exact = t_atp = c_atp = 0.0
    refs, exacts, ests = [], [], []
    for s in speed_samples:
        r, dt, dc = timed(lambda: reference_ablated_probs(adapter, [s], heads=heads))
        refs.append(r); t_ref_run += dt; c_ref_run += dc
        (e, _, _), dt, dc = timed(lambda: exact_grid(adapter, [s], a.batch_size, a.rows))
        exacts.append(e); t_exact += dt; c_exact += dc
        est_s, dt, dc = timed(lambda: atp_grid(adapter, [s], a.batch_size, a.atp_space))
        ests.append(est_s); t_atp += dt; c_atp += dc
    ref, exact = torch.cat(refs), torch.cat(exacts)
    t_ref, c_ref = t_ref_run * (L * H) / len(heads), c_ref_run * (L * H) / len(heads)
    known = ~ref.isnan()
    max_diff = float((exact[known] - ref[known]).abs().max())
    n_fwd = len(heads) * len(speed_samples)
    per = L * H * len(speed_samples)
    print(f"\n{'':24}{'wall (s)':>10}{'CPU (s)':>10}{'wall per head x sample (ms)':>30}")
    print(f"{'reference loop':24}{t_ref:10.2f}{c_ref:10.2f}{1000 * t_ref_run / n_fwd:30.3f}")
    print(f"{'exact engine':24}{t_exact:10.2f}{c_exact:10.2f}{1000 * t_exact / per:30.3f}")
    print(f"{'attribution patching':24}{t_atp:10.2f}{c_atp:10.2f}{1000 * t_atp / per:30.3f}")
    if len(heads) != L * H:
        print(f"(reference measured on {len(heads)} of {L * H} heads: {t_ref_run:.1f} s wall, scaled to the grid)")
    exact_speedup, atp_speedup = t_ref / t_exact, t_exact / t_atp
    print(f"\nexact vs reference: {exact_speedup:.1f}x faster wall, {c_ref / c_exact:.1f}x CPU time; max |diff| "
          f"{max_diff:.2e} over {int(known.sum())} (sample, head) values (target >= 20x, <= 1e-5)")
    print(f"atp vs exact: {atp_speedup:.1f}x faster wall, {c_exact / c_atp:.1f}x CPU time (target >= 50x)")
    explain(adapter, speed_samples[0], t_exact / (len(speed_samples) * H * L * (L + 1) / 2))
    return exact_speedup, atp_speedup, max_diff, c_ref, c_exact, c_atp


def explain(adapter, sample, engine_row_layer_s: float, reps: int = 3) -> None:
    """Where the time goes: the reference's forward split into preprocessing + vision and the LM, against
    the engine's cost per (row, layer). The speed-up is about (layer reuse) x (batching gain) x (the
    share of preprocessing + vision + full logits in a reference forward)."""
    L = adapter.num_layers
    t_pre = t_lm = 0.0
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            enc = adapter.encode([sample])
            emb = adapter.embed(enc)
            t1 = time.perf_counter()
            adapter.lm_logits(emb)
            t_pre += t1 - t0
            t_lm += time.perf_counter() - t1
    t_pre, t_lm = t_pre / reps, t_lm / reps
    print(f"where the time goes: a batch-1 forward costs {1000 * t_pre:.1f} ms preprocessing + vision and "
          f"{1000 * t_lm:.1f} ms LM ({1000 * t_lm / L:.2f} ms per layer); the engine costs "
          f"{1000 * engine_row_layer_s:.3f} ms per (row, layer): batching gain {t_lm / L / engine_row_layer_s:.1f}x, "
          f"layer reuse {2 * L / (L + 1):.2f}x")


def agreement_part(a, samples, exact_speedup, atp_speedup, max_diff, c_ref, c_exact, c_atp):
    from vseam.models import load_adapter

    organism = Path(a.organism)
    if (organism / "config.json").exists():
        org = load_adapter({"arch": "llava", "path": str(organism), "dtype": "float32", "device": "cpu"})
        where = f"trained organism ({organism})"
    else:
        org = load_adapter({"arch": "llava", "path": "tiny:llava", "dtype": "float32", "device": "cpu"})
        where = f"tiny random llava (no trained organism at {organism} yet)"
    agr, s_exact = agreement(org, samples[:a.agreement_samples], a.batch_size, a.rows)
    print(f"\nagreement of attribution patching with exact scores on the {where}, "
          f"{a.agreement_samples} samples ({s_exact.n_correct} baseline-correct):")
    for space, table in agr.items():
        for name, (rho, ov, small, ov_small) in table.items():
            rho_s = "undefined" if rho is None else f"{rho:.3f}"
            ov_s = "undefined" if ov is None else f"{ov}/{min(10, org.num_layers * org.num_heads)}"
            small_s = "undefined" if ov_small is None else f"{ov_small}/{small}"
            print(f"  {space:8} {name:10} spearman {rho_s:>9}   top-10 overlap {ov_s:>9}   top-{small} overlap {small_s}")
    n_heads = org.num_layers * org.num_heads
    k = min(10, n_heads)
    print(f"  ({org.num_layers} layers x {org.num_heads} heads: two random top-{k} lists share {k * k / n_heads:.1f} "
          f"heads on average{'; the overlap says little here' if n_heads < 40 else ''})")
    rho, ov = agr[a.atp_space]["signed"][:2]
    print(f"exact_speedup={exact_speedup:.2f} max_abs_diff={max_diff:.3g} atp_speedup={atp_speedup:.2f} "
          f"spearman={rho:.3f} top10_overlap={ov} exact_speedup_cpu={c_ref / c_exact:.2f} "
          f"atp_speedup_cpu={c_exact / c_atp:.2f}")


if __name__ == "__main__":
    sys.exit(main())
