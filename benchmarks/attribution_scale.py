"""Head attribution at LLaVA-1.5-7B's real widths (docs/benchmarks.md#at-the-real-models-shape): which method gets the exact
top-10 heads first, and what the exact engine can gain over the reference loop at this shape.

The model is a random ``LlavaForConditionalGeneration`` of the real widths (language model hidden 4096,
32 heads x 128, MLP 11008, vocabulary 32064; CLIP ViT-L/14-336 vision config, so 576 image tokens
through the real CLIP processor configuration at 336 and the real prompt template; projector 1024 ->
4096 -> 4096) but only ``--lm-layers`` language and ``--vision-layers`` vision layers
(``vseam.models.tiny.build_full_width``). On the same samples, side by side:

- the reference loop (per sample and head: preprocess, whole model, full logits; ``--ref-heads``
  spread heads, its time scaled to the grid), the exact engine over every head, attribution patching
  (``--atp-alpha``, log-odds), and attribution patching followed by exact re-scoring of its top-M heads;
- counted work: the multiply-adds of one (sample, head) in the reference (vision tower, projector, every
  layer at every position, logits at every position) against the engine's floor (layers >= l for an
  ablation in layer l, at every position, and the logits of the last position), printed next to the
  engine's measured gain;
- **time to the exact top-10**: for each method, the time until its top-10 list (signed scores: the
  heads whose ablation lowers the answer most; and the most negative signed: those whose ablation raises
  it; plus positive / negative where defined) equals the exact sweep's. For attribution patching +
  re-scoring, M is the smallest number of re-scored heads (taken in the estimate's order) for which the
  combined matrix's top-10 equals the exact one; that re-scoring is then run and timed.

The last line is machine-readable (``exact_speedup=.. work_floor=.. atp_top10=.. M=.. ...``).

    python benchmarks/attribution_scale.py                 # 36 min wall on 2 busy CPU cores (550 s CPU), 4.3 GB
    python benchmarks/attribution_scale.py --dtype bfloat16   # ~4x faster on a CPU with AVX512-BF16 / AMX
    python benchmarks/attribution_scale.py --tiny --samples 2  # tiny widths: a smoke run in seconds (tests)
    python benchmarks/attribution_scale.py --memory-only --memory 1,8 --dtype bfloat16  # MiB per ablated copy
    python benchmarks/attribution_scale.py --device cuda --dtype bfloat16 --lm-layers 8 --samples 8  # GPU
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_speed import spread_heads, sync, timed, world_samples  # noqa: E402

from vseam.attribution.exact import ExactEngine  # noqa: E402
from vseam.attribution.patching import estimated_ablated_probs  # noqa: E402
from vseam.attribution.reference import reference_ablated_probs  # noqa: E402
from vseam.attribution.scores import head_scores, top_k_set  # noqa: E402
from vseam.models.base import answer_stats  # noqa: E402
from vseam.models.llava import LlavaAdapter  # noqa: E402
from vseam.stats import spearman  # noqa: E402

K = 10


# ------------------------------------------------------------------------------------------- counted work
def layer_macs(d: int, heads: int, kv_heads: int, head_dim: int, mlp: int, T: int, pairs: float | None = None) -> float:
    """Multiply-adds of one Llama decoder layer over T positions: q, k, v, o, a gated MLP (gate, up, down), and
    attention over ``pairs`` (query, key) pairs (default: the causal triangle, T(T+1)/2)."""
    proj = d * heads * head_dim + 2 * d * kv_heads * head_dim + heads * head_dim * d  # q, k, v, o
    per_token = proj + 3 * d * mlp  # gate, up, down
    attn = 2 * heads * head_dim * (T * (T + 1) / 2 if pairs is None else pairs)  # q.k and p.v
    return T * per_token + attn


def encoder_layer_macs(d: int, mlp: int, n: int, pairs: float | None = None, mlp_mats: int = 2) -> float:
    """Multiply-adds of one vision-encoder layer over n tokens: q, k, v, o (d x d each), an MLP of ``mlp_mats``
    d x mlp matrices (fc1 / fc2; 3 for a gated one), and attention over ``pairs`` pairs (default: all, n^2)."""
    return n * (4 * d * d + mlp_mats * d * mlp) + 2 * d * (n * n if pairs is None else pairs)


def counted_work(model, T: int, n_image: int) -> dict:
    """Multiply-adds of one (sample, head) in the reference and in the exact engine's floor, averaged over
    the heads' layers, from the model's config."""
    cfg = model.config
    tc, vc = cfg.get_text_config(), cfg.vision_config
    d, H, V = tc.hidden_size, tc.num_attention_heads, tc.vocab_size
    D = getattr(tc, "head_dim", None) or d // H
    kv = getattr(tc, "num_key_value_heads", None) or H
    L = tc.num_hidden_layers
    lay = layer_macs(d, H, kv, D, tc.intermediate_size, T)
    n_patch = (vc.image_size // vc.patch_size) ** 2 + 1
    dv = vc.hidden_size
    vision = vc.num_hidden_layers * encoder_layer_macs(dv, vc.intermediate_size, n_patch)
    projector = n_image * (dv * d + d * d)
    ref = vision + projector + L * lay + T * d * V
    engine = sum((L - l) * lay for l in range(L)) / L + d * V
    return {"layer": lay, "vision": vision, "projector": projector, "logits_all": T * d * V,
            "reference": ref, "engine_floor": engine, "floor_gain": ref / engine, "L": L}


# ------------------------------------------------------------------------------------------- top-10 race
def lists(scores, k: int = K) -> dict[str, set]:
    """The top-k sets a user reads: signed (most positive), signed_low (most negative), and the positive /
    negative matrices where they are defined."""
    out = {"signed": top_k_set(scores.signed, k), "signed_low": top_k_set(-scores.signed, k)}
    for name in ("positive", "negative"):
        m = getattr(scores, name)
        if m is not None:
            out[name] = top_k_set(m, k)
    return out


def combined(est: torch.Tensor, exact: torch.Tensor, order: list[tuple[int, int]], m: int) -> torch.Tensor:
    """The estimate ``est`` [N, L, H] with the first ``m`` heads of ``order`` replaced by their exact values:
    what ``attribution.rescore_top_k`` gives when those are the re-scored heads."""
    out = est.clone()
    for l, h in order[:m]:
        out[:, l, h] = exact[:, l, h]
    return out


def rescore_order(s_est, n_heads: int) -> list[tuple[int, int]]:
    """Heads in the order re-scoring takes them: by |estimated signed score|, largest first (ties by index)."""
    m = s_est.signed.double()
    L, H = m.shape
    flat = sorted(range(L * H), key=lambda i: (-abs(float(m.view(-1)[i])), i))
    return [(i // H, i % H) for i in flat[:n_heads]]


def smallest_m(prob, correct, est, exact, order, target: dict[str, set], k: int = K) -> int | None:
    """The fewest re-scored heads (in ``order``) for which every top-k list equals ``target``; None if none."""
    for m in range(0, len(order) + 1):
        got = lists(head_scores(prob, correct, combined(est, exact, order, m)), k)
        if all(got.get(name) == want for name, want in target.items()):
            return m
    return None


# ------------------------------------------------------------------------------------------- the run
def build(a):
    from vseam.models.tiny import build_full_width, build_tiny_llava

    if a.tiny:
        model, processor = build_tiny_llava(num_layers=a.lm_layers, vision_layers=a.vision_layers, num_kv_heads=None,
                                            seed=a.seed)
    else:
        model, processor = build_full_width("llava-1.5-7b", num_layers=a.lm_layers, vision_layers=a.vision_layers,
                                            seed=a.seed)
    model.to(device=a.device, dtype=getattr(torch, a.dtype)).requires_grad_(False)
    return LlavaAdapter(model, processor, name=f"llava-1.5-7b-width-{a.lm_layers}x{a.vision_layers}" if not a.tiny
                        else f"tiny-llava-{a.lm_layers}x{a.vision_layers}")


def embedded(adapter, samples):
    enc = adapter.encode(samples).to(adapter.device)
    with torch.no_grad():
        emb = adapter.embed(enc)
    return enc.answer_mask(adapter.vocab_size), enc.correct_mask(adapter.vocab_size), emb


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux: VmHWM); False where it cannot."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


@torch.no_grad()
def activation_memory(adapter, emb, mask, rows_list=(1, 8)) -> dict:
    """Peak memory above the resting state of one exact-engine forward of R ablated copies from layer 0 (every
    layer), for each R of ``rows_list``, and the slope per copy: what ``attribution.rows_per_forward`` costs.
    CUDA: ``torch.cuda.max_memory_allocated``; CPU: the process's peak RSS (VmHWM reset before each)."""
    from vseam.interventions import Ablate
    from vseam.interventions.replay import clean_run, run_from_layer

    clean = clean_run(adapter, emb.index(torch.arange(1)))
    cuda = adapter.device.type == "cuda"
    if not cuda and not _reset_peak_rss():
        return {}
    peaks = {}
    for R in rows_list:
        rows = torch.zeros(R, dtype=torch.long)
        hm = torch.zeros(R, adapter.num_heads, dtype=torch.bool, device=adapter.device)
        hm[torch.arange(R), torch.arange(R) % adapter.num_heads] = True
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            import gc

            gc.collect()
            _reset_peak_rss()
            base = _peak_rss_bytes()
        run_from_layer(adapter, clean, 0, rows, Ablate(0, hm))
        peak = (torch.cuda.max_memory_allocated() if cuda else _peak_rss_bytes()) - base
        peaks[R] = peak
    lo, hi = min(rows_list), max(rows_list)
    return {"peak_bytes": peaks, "per_copy_bytes": (peaks[hi] - peaks[lo]) / (hi - lo), "tokens": emb.inputs_embeds.shape[1],
            "how": "torch.cuda.max_memory_allocated" if cuda else "peak RSS (VmHWM)"}


def peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # kB on Linux


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lm-layers", type=int, default=2)
    ap.add_argument("--vision-layers", type=int, default=2)
    ap.add_argument("--samples", type=int, default=1)
    ap.add_argument("--ref-heads", type=int, default=4, help="heads the reference loop runs (0 = all); time scaled")
    ap.add_argument("--rows", type=int, default=8, help="exact engine: ablated copies per forward")
    ap.add_argument("--atp-alpha", type=float, default=0.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="tiny widths (smoke test), same code paths")
    ap.add_argument("--json", default=None, help="also write the summary and the timings to this JSON file")
    ap.add_argument("--memory", default="", help="comma-separated rows_per_forward values whose activation memory "
                                               "to measure (e.g. 1,8); empty = skip")
    ap.add_argument("--memory-only", action="store_true", help="only the activation memory (--memory, default 1,8)")
    ap.add_argument("--save", default=None, help="also save the per-sample values (exact, estimate) as safetensors")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = Path(tempfile.mkdtemp(prefix="vseam-scale-"))
    samples = world_samples(tmp / "world", a.samples)

    t0 = time.perf_counter()
    adapter = build(a)
    sync()
    build_s = time.perf_counter() - t0
    L, H = adapter.num_layers, adapter.num_heads
    enc = adapter.encode(samples[:1])
    T = int(enc.inputs["input_ids"].shape[1])
    n_image = int(adapter.visual_token_mask(enc.inputs["input_ids"]).sum())
    print(f"model: {adapter.name} ({L} LM layers x {H} heads x {adapter.head_dim}, hidden "
          f"{adapter.model.config.get_text_config().hidden_size}, vocabulary {adapter.vocab_size}; "
          f"{adapter.model.config.vision_config.num_hidden_layers} vision layers), {a.dtype} on {a.device}, "
          f"{n_image} image tokens, {T} tokens in all; built in {build_s:.1f} s; {len(samples)} samples; "
          f"torch threads {torch.get_num_threads()}", flush=True)

    if a.memory_only:
        mask0, _, emb0 = embedded(adapter, samples[:1])
        mem = activation_memory(adapter, emb0, mask0, tuple(int(x) for x in (a.memory or "1,8").split(",")))
        print(f"activation memory of one engine forward from layer 0 at {mem['tokens']} tokens ({a.dtype}, {mem['how']}): "
              + ", ".join(f"{r} copies {v / 2 ** 20:.0f} MiB" for r, v in mem["peak_bytes"].items())
              + f"; {mem['per_copy_bytes'] / 2 ** 20:.1f} MiB per ablated copy")
        print(f"mib_per_copy={mem['per_copy_bytes'] / 2 ** 20:.1f} T={T} dtype={a.dtype} device={a.device}")
        return

    # the exact engine over every head, from raw samples (preprocessing and vision included)
    engine = ExactEngine(adapter, rows_per_forward=a.rows)

    def run_exact(heads=None):
        mask, cmask, emb = embedded(adapter, samples)
        p_abl, logits = engine.ablated_probs(emb, mask, heads)
        p, c, _ = answer_stats(logits, mask, cmask)
        return p_abl, p.cpu(), c.cpu()

    (exact, prob, correct), t_exact, c_exact = timed(run_exact)
    print(f"exact engine: {t_exact:.1f} s wall ({c_exact:.1f} s CPU)", flush=True)

    def run_atp():
        mask, cmask, emb = embedded(adapter, samples)
        return estimated_ablated_probs(adapter, emb, mask, alpha=a.atp_alpha, correct_mask=cmask, path="all")[0].cpu()

    est, t_atp, c_atp = timed(run_atp)
    print(f"attribution patching (alpha {a.atp_alpha}): {t_atp:.1f} s wall ({c_atp:.1f} s CPU)", flush=True)

    heads = spread_heads(L, H, a.ref_heads)
    ref, t_ref_part, c_ref_part = timed(lambda: reference_ablated_probs(adapter, samples, heads=heads))
    scale = L * H / len(heads)
    t_ref, c_ref = t_ref_part * scale, c_ref_part * scale
    known = ~ref.isnan()
    max_diff = float((exact[known] - ref[known]).abs().max())
    print(f"reference loop: {t_ref_part:.1f} s on {len(heads)} of {L * H} heads, {t_ref:.1f} s scaled to the grid; "
          f"max |exact - reference| {max_diff:.2e} over {int(known.sum())} values", flush=True)

    s_exact, s_est = head_scores(prob, correct, exact), head_scores(prob, correct, est)
    target = lists(s_exact)
    order = rescore_order(s_est, L * H)
    m = smallest_m(prob, correct, est, exact, order, target)
    mask = torch.zeros(L, H, dtype=torch.bool)
    for l, h in order[:m or 0]:
        mask[l, h] = True
    if m:
        (resc, _, _), t_resc, c_resc = timed(lambda: run_exact(mask))
        if not torch.equal(resc[:, mask], exact[:, mask]):
            diff = float((resc[:, mask] - exact[:, mask]).abs().max())
            print(f"note: the re-scored heads differ from the full sweep by up to {diff:.2e} (batch composition)")
    else:
        t_resc = c_resc = 0.0
    atp_alone = all(lists(s_est).get(n) == want for n, want in target.items())

    mem = {}
    if a.memory:
        mask0, _, emb0 = embedded(adapter, samples[:1])
        mem = activation_memory(adapter, emb0, mask0, tuple(int(x) for x in a.memory.split(",")))

    # ---------------------------------------------------------------- report
    work = counted_work(adapter.model, T, n_image)
    gain = t_ref / t_exact
    print(f"\ncounted multiply-adds per (sample, head) at {T} tokens: reference {work['reference'] / 1e9:.1f} G "
          f"(vision {work['vision'] / 1e9:.1f} G, projector {work['projector'] / 1e9:.2f} G, {L} layers x "
          f"{work['layer'] / 1e9:.1f} G, logits at every position {work['logits_all'] / 1e9:.1f} G); the exact engine's "
          f"floor {work['engine_floor'] / 1e9:.1f} G (layers >= l at every position, last-position logits)")
    print(f"exact engine vs reference: measured {gain:.2f}x faster wall ({c_ref / c_exact:.2f}x CPU), counted-work "
          f"floor {work['floor_gain']:.2f}x; on 32 layers the floor is "
          f"{counted_work_32(adapter.model, T, n_image):.2f}x")
    head_x_sample = L * H * len(samples)
    print(f"\n{'method':38}{'wall (s)':>10}{'CPU (s)':>10}{'ms per head x sample':>22}{'exact top-10 after (s)':>24}")
    rows = [("reference loop (scaled)", t_ref, c_ref, t_ref), ("exact engine", t_exact, c_exact, t_exact),
            (f"attribution patching (alpha {a.atp_alpha})", t_atp, c_atp, t_atp if atp_alone else None),
            (f"  + exact re-scoring of its top-{m}", t_atp + t_resc, c_atp + c_resc,
             None if m is None else t_atp + t_resc)]
    for name, w, c, top in rows:
        top_s = "never" if top is None else f"{top:.1f}"
        print(f"{name:38}{w:10.1f}{c:10.1f}{1000 * w / head_x_sample:22.1f}{top_s:>24}")
    rho = spearman(s_exact.signed, s_est.signed)
    k = min(K, L * H)
    print(f"\nattribution patching vs exact (signed, {L * H} heads, {len(samples)} samples, "
          f"{s_exact.n_correct} baseline-correct): Spearman {rho:.3f}, top-10 overlap "
          f"{len(target['signed'] & lists(s_est)['signed'])}/{k} (most negative: "
          f"{len(target['signed_low'] & lists(s_est)['signed_low'])}/{k}); re-scoring needs the top {m} of "
          f"{L * H} heads by |estimate| to give every exact top-10 list ({', '.join(sorted(target))})")
    if mem:
        print(f"activation memory of one engine forward from layer 0 at {mem['tokens']} tokens ({a.dtype}, {mem['how']}): "
              + ", ".join(f"{r} copies {v / 2 ** 20:.0f} MiB" for r, v in mem["peak_bytes"].items())
              + f"; {mem['per_copy_bytes'] / 2 ** 20:.1f} MiB per ablated copy")
    print(f"peak resident memory {peak_rss_gb():.2f} GB")
    summary = dict(exact_speedup=f"{gain:.3f}", work_floor=f"{work['floor_gain']:.3f}", max_abs_diff=f"{max_diff:.3g}",
                   t_ref=f"{t_ref:.1f}", t_exact=f"{t_exact:.1f}", t_atp=f"{t_atp:.1f}", t_rescore=f"{t_resc:.1f}",
                   M=m if m is not None else "none", atp_top10=int(atp_alone), spearman=f"{rho:.3f}",
                   top10_to_exact_speedup=f"{t_exact / (t_atp + t_resc):.2f}" if m is not None else "nan",
                   T=T, L=L, H=H, samples=len(samples), dtype=a.dtype, device=a.device,
                   peak_rss_gb=f"{peak_rss_gb():.2f}")
    if mem:
        summary["mib_per_copy"] = f"{mem['per_copy_bytes'] / 2 ** 20:.1f}"
    if a.save:
        from vseam.utils.io import save_safetensors

        save_safetensors(a.save, {"exact": exact.float(), "estimate": est.float(), "prob": prob.float(),
                                  "correct": correct.to(torch.uint8)}, metadata={"dtype": a.dtype, "device": a.device})
    if a.json:
        Path(a.json).write_text(json.dumps({**summary, "work": work, "memory": mem, "argv": sys.argv[1:]}, indent=1))
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


def counted_work_32(model, T: int, n_image: int) -> float:
    """The floor gain of the same widths at 32 layers (the real depth), from the config alone."""
    import copy

    cfg = copy.deepcopy(model.config)
    cfg.get_text_config().num_hidden_layers = 32
    cfg.vision_config.num_hidden_layers = 24
    return counted_work(type("M", (), {"config": cfg})(), T, n_image)["floor_gain"]


if __name__ == "__main__":
    sys.exit(main())
