"""Head-attribution speed and agreement benchmark (docs/benchmarks.md#attribution-speed).

One run, side by side, on the same samples:

1. a LLaVA-shaped tiny random model (32 layers x 32 heads, 32 KV heads like Vicuna-7B, MLP 2.69 x
   hidden, small hidden size): the reference loop (per sample and head: load + preprocess the image,
   full model forward, full logits) against the fast exact engine: wall time and max |difference| of
   the ablated probabilities;
2. attribution patching against the exact engine on the same grid: wall time, and the agreement of
   the two on that grid;
3. agreement of attribution patching with the exact scores (Spearman over the L x H matrices, overlap
   of the top-10 heads) on the trained organism (``checkpoints/organism/llava``) when it exists,
   otherwise on a tiny random model (said in the output), for the gradient at the clean run
   (``alpha`` 0) and at the midpoint of the all-heads ablation path (``alpha`` 0.5), each with the
   log-odds and the plain probability estimate.

It also prints the most any exact method could gain over the reference in one process on this machine
(``exact_bound``: the attention kernel and linear layers each (sample, head) needs in the layers after
the ablated one, timed at the engine's batch shape; with more than one torch thread, also the attention
kernel's time on one thread) and, with ``--procs N``, the engine with the samples sharded over N
processes of one thread each (``exact_speedup_Nprocs``), as a DDP sweep runs on CPU.

The methods are timed batch by batch (``--batch-size`` samples: the engine and the estimate see the
batches a real run gives them, the reference one sample at a time as it is written), interleaved, so
they see the same load on a shared machine; wall and CPU time are both printed. By default the reference runs on a spread subset of heads (``--ref-heads``) and its time is scaled
to the full grid, because the full loop takes tens of minutes on 2 CPU cores; ``--ref-heads 0``
runs it on every head. The last line is machine-readable:
``exact_speedup=.. max_abs_diff=.. atp_speedup=.. spearman=.. top10_overlap=.. atp_alpha=..`` and more
(``spearman`` and ``atp_speedup`` are those of ``--atp-alpha`` in ``--atp-space``).

    python benchmarks/attribution_speed.py                     # ~1 min idle, 3-5 min on a loaded 2-core box
    python benchmarks/attribution_speed.py --procs 2           # + the engine in 2 processes (~2 min)
    python benchmarks/attribution_speed.py --threads 1         # per-core figures (steadier under load)
    python benchmarks/attribution_speed.py --samples 8 --ref-heads 0
    python benchmarks/attribution_speed.py --atp-alpha 0   # summary line for the classic estimate
    python benchmarks/attribution_speed.py --skip-speed --organism checkpoints/organism/instructblip
    python benchmarks/attribution_speed.py --device cuda --samples 32 --batch-size 32 --rows 1024  # GPU
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
from vseam.attribution.scores import head_scores, top_k_overlap  # noqa: E402
from vseam.models.base import answer_stats  # noqa: E402
from vseam.models.llava import LlavaAdapter  # noqa: E402
from vseam.stats import spearman  # noqa: E402

ORGANISM = Path("checkpoints/organism/llava")


def world_samples(root: Path, n: int, seed: int = 0):
    """``n`` organism-world samples written to disk (the reference reads each image file every time)."""
    from omegaconf import OmegaConf

    from vseam.data.load import load_samples
    from vseam.world.write import ensure_world

    per_cat = max(1, -(-n // 6))
    cfg = OmegaConf.create({"format": "organism", "root": str(root), "annotations": [], "image_dir": None,
                            "image_pattern": None, "categories": [], "limit": None, "n_per_category": per_cat,
                            "world_seed": seed, "world_split": "test"})
    ensure_world(cfg)
    samples = load_samples(cfg)
    # interleave categories so a small n still covers several question types
    by_cat: dict = {}
    for s in samples:
        by_cat.setdefault(s.category, []).append(s)
    mixed = [s for group in zip(*by_cat.values()) for s in group]
    return mixed[:n]


def sync():
    """Wait for queued GPU work, so a wall-clock reading includes it (nothing to wait for on a CPU)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn):
    """(result, wall seconds, CPU seconds of this process). On a shared machine the wall time also
    counts waiting for a core; the CPU time is the work done, so both are reported."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    return out, time.perf_counter() - t, time.process_time() - c


def embedded_batches(adapter, samples, batch_size):
    """(answer mask, embedded batch) per batch of raw samples: image loading, preprocessing and the vision
    side, as a real run does them before the engine or the estimate."""
    for i in range(0, len(samples), batch_size):
        enc = adapter.encode(samples[i:i + batch_size]).to(adapter.device)
        with torch.no_grad():
            emb = adapter.embed(enc)
        yield enc.answer_mask(adapter.vocab_size), emb  # outside no_grad: the consumer picks its grad mode


def exact_grid(adapter, samples, batch_size, rows):
    """Exact engine over all heads, timed from raw samples (image loading and preprocessing included)."""
    engine = ExactEngine(adapter, rows_per_forward=rows)
    outs, probs, corrects = [], [], []
    for mask, emb in embedded_batches(adapter, samples, batch_size):
        p_abl, logits = engine.ablated_probs(emb, mask)
        p, c, _ = answer_stats(logits, mask)
        outs.append(p_abl)
        probs.append(p.cpu())
        corrects.append(c.cpu())
    return torch.cat(outs), torch.cat(probs), torch.cat(corrects)


def atp_grid(adapter, samples, batch_size, space="logodds", alpha=0.0):
    return torch.cat([estimated_ablated_probs(adapter, emb, mask, space=space, alpha=alpha, path="all")[0].cpu()
                      for mask, emb in embedded_batches(adapter, samples, batch_size)])


def spread_heads(L, H, n):
    """``n`` heads spread over the grid: every layer, heads at a stride (deterministic)."""
    if n <= 0 or n >= L * H:
        return [(l, h) for l in range(L) for h in range(H)]
    flat = torch.linspace(0, L * H - 1, n).round().long().unique().tolist()
    return [(i // H, i % H) for i in flat]


ALPHAS = (0.0, 0.5)


def compare(adapter, s_exact, prob, correct, estimate):
    """{matrix: (spearman, top-10 overlap, k_small, top-k_small overlap)} of an estimate against exact."""
    s_est = head_scores(prob, correct, estimate)
    small = max(1, adapter.num_layers * adapter.num_heads // 4)  # meaningful on small grids too
    out = {}
    for name in ("signed", "positive", "negative"):
        x, y = getattr(s_exact, name), getattr(s_est, name)
        out[name] = (spearman(x, y), top_k_overlap(x, y, 10), small, top_k_overlap(x, y, small))
    return out


def agreement(adapter, samples, batch_size, rows, spaces=("logodds", "prob"), alphas=ALPHAS):
    """{(alpha, space): {matrix: (...)}} of attribution patching against the exact scores."""
    exact, p, c = exact_grid(adapter, samples, batch_size, rows)
    s_exact = head_scores(p, c, exact)
    out = {(alpha, space): compare(adapter, s_exact, p, c, atp_grid(adapter, samples, batch_size, space, alpha))
           for alpha in alphas for space in spaces}
    return out, s_exact


def print_agreement(adapter, table):
    for (alpha, space), rows in table.items():
        for name, (rho, ov, small, ov_small) in rows.items():
            rho_s = "undefined" if rho is None else f"{rho:.3f}"
            ov_s = "undefined" if ov is None else f"{ov}/{min(10, adapter.num_layers * adapter.num_heads)}"
            small_s = "undefined" if ov_small is None else f"{ov_small}/{small}"
            print(f"  alpha {alpha:<4} {space:8} {name:10} spearman {rho_s:>9}   top-10 overlap {ov_s:>9}   "
                  f"top-{small} overlap {small_s}")


def bench_adapter(a, state=None):
    """The LLaVA-shaped tiny random model of the speed part (``state``: weights to load)."""
    from vseam.models.tiny import build_tiny_llava

    model, processor = build_tiny_llava(num_layers=a.layers, num_heads=a.heads, num_kv_heads=None,
                                        hidden_size=a.hidden, intermediate_size=int(2.6875 * a.hidden))
    if state is not None:
        model.load_state_dict(state)
    model.to(device=a.device, dtype=getattr(torch, a.dtype))
    model.requires_grad_(False)
    return LlavaAdapter(model, processor, name=f"tiny-llava-{a.layers}x{a.heads}")


def _proc_worker(rank, n, a, state, samples, barrier, queue):
    """One process of ``--procs``: one thread, its round-robin shard of the samples, timed after all are
    ready (imports and model building are not timed, as for the single-process engine)."""
    try:
        torch.set_num_threads(1)
        adapter = bench_adapter(a, state)
        shard = samples[rank::n]
        barrier.wait(timeout=600)
        t = time.perf_counter()
        e = exact_grid(adapter, shard, a.batch_size, a.rows)[0]
        queue.put((rank, time.perf_counter() - t, e.numpy()))  # numpy: pickled by value, not shared memory
    except BaseException:
        import traceback

        barrier.abort()
        queue.put((rank, None, traceback.format_exc()))


def exact_in_procs(a, adapter, samples) -> tuple[torch.Tensor, float, list[float]]:
    """(p_abl [N, L, H], wall seconds of the slowest process, per-process seconds) of the exact engine over
    ``samples`` sharded round-robin over ``a.procs`` processes (at most one per sample) of one thread each."""
    import queue as queue_mod

    import torch.multiprocessing as mp

    n = min(a.procs, len(samples))
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(n), ctx.Queue()
    state = {k: v.detach().cpu().clone() for k, v in adapter.model.state_dict().items()}
    procs = [ctx.Process(target=_proc_worker, args=(r, n, a, state, samples, barrier, queue)) for r in range(n)]
    for p in procs:
        p.start()
    res = []
    try:
        while len(res) < n:
            try:
                res.append(queue.get(timeout=5))
            except queue_mod.Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"--procs: a worker process died (exit codes {dead})") from None
                continue
            if res[-1][1] is None:
                raise RuntimeError(f"--procs: worker {res[-1][0]} failed:\n{res[-1][2]}")
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    res.sort(key=lambda r: r[0])
    out = torch.empty(len(samples), adapter.num_layers, adapter.num_heads)
    for rank, _, e in res:
        out[rank::n] = torch.from_numpy(e)
    secs = [r[1] for r in res]
    return out, max(secs), secs


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=64, help="hidden size of the tiny model (head_dim = hidden / heads)")
    ap.add_argument("--samples", type=int, default=4, help="samples of the speed comparison")
    ap.add_argument("--ref-heads", type=int, default=32, help="heads the reference loop runs (0 = all); time is scaled")
    ap.add_argument("--batch-size", type=int, default=4, help="samples per batch in the agreement comparison")
    ap.add_argument("--rows", type=int, default=64, help="exact engine: ablated copies per forward")
    ap.add_argument("--agreement-samples", type=int, default=96, help="samples of the Spearman / top-10 comparison")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0 = torch's default)")
    ap.add_argument("--procs", type=int, default=0,
                    help="also time the exact engine with the samples sharded over this many processes of one "
                         "thread each, as a DDP sweep on CPU runs it (0 = skip)")
    ap.add_argument("--device", default="cpu", help="device of the speed part (cuda: GPU timings)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                    help="dtype of the speed part's model (the 1e-5 target is for float32)")
    ap.add_argument("--organism", default=str(ORGANISM), help="trained organism checkpoint of the agreement part")
    ap.add_argument("--skip-speed", action="store_true", help="only the agreement part")
    ap.add_argument("--atp-space", default="logodds", choices=["logodds", "prob"],
                    help="space of the estimate in the summary line (both are printed)")
    ap.add_argument("--atp-alpha", type=float, default=0.5, choices=ALPHAS,
                    help="where the estimate of the summary line takes its gradient: 0 = the clean run, 0.5 = "
                         "midpoint of the all-heads ablation path (both are printed)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)

    tmp = Path(tempfile.mkdtemp(prefix="vseam-bench-"))
    samples = world_samples(tmp / "world", max(a.samples, a.agreement_samples))
    speed_samples = samples[:a.samples]

    adapter = bench_adapter(a)
    T = adapter.encode(speed_samples[:1]).inputs["input_ids"].shape[1]
    print(f"model: {adapter.name} (hidden {a.hidden}, head_dim {adapter.head_dim}, ~{T} tokens), "
          f"{len(speed_samples)} samples, torch threads {torch.get_num_threads()}", flush=True)

    if a.skip_speed:
        sp = dict(exact_speedup=float("nan"), max_abs_diff=float("nan"), atp_speedup=float("nan"),
                  exact_speedup_cpu=float("nan"), atp_speedup_cpu=float("nan"), exact_bound=float("nan"),
                  exact_speedup_procs=float("nan"), exact_procs=0)
    else:
        sp = speed(a, adapter, speed_samples)
    agreement_part(a, samples, sp)


def speed(a, adapter, speed_samples) -> dict:
    L, H = adapter.num_layers, adapter.num_heads
    heads = spread_heads(L, H, a.ref_heads)
    # Interleaved: for each batch, the reference (sample by sample), then the exact engine, then attribution
    # patching at each alpha, so all see the same load on a shared machine (timings drift by 2-3x over
    # minutes here).
    t = {k: [0.0, 0.0] for k in ("ref", "exact", *ALPHAS)}
    refs, exacts, probs, corrects, ests = [], [], [], [], {alpha: [] for alpha in ALPHAS}

    def add(key, dt, dc):
        t[key][0] += dt
        t[key][1] += dc

    for i in range(0, len(speed_samples), a.batch_size):
        batch = speed_samples[i:i + a.batch_size]
        r, dt, dc = timed(lambda batch=batch: reference_ablated_probs(adapter, batch, heads=heads))
        refs.append(r)
        add("ref", dt, dc)
        (e, p, c), dt, dc = timed(lambda batch=batch: exact_grid(adapter, batch, a.batch_size, a.rows))
        exacts.append(e)
        probs.append(p)
        corrects.append(c)
        add("exact", dt, dc)
        for alpha in ALPHAS:
            est, dt, dc = timed(lambda batch=batch, alpha=alpha: atp_grid(adapter, batch, a.batch_size, a.atp_space, alpha))
            ests[alpha].append(est)
            add(alpha, dt, dc)
    ref, exact, prob, correct = torch.cat(refs), torch.cat(exacts), torch.cat(probs), torch.cat(corrects)
    scale = (L * H) / len(heads)
    t["ref"] = [t["ref"][0] * scale, t["ref"][1] * scale]
    known = ~ref.isnan()
    max_diff = float((exact[known] - ref[known]).abs().max())
    per = L * H * len(speed_samples)
    print(f"\n{'':34}{'wall (s)':>10}{'CPU (s)':>10}{'wall per head x sample (ms)':>30}")
    names = {"ref": "reference loop", "exact": "exact engine",
             **{alpha: f"attribution patching, alpha {alpha}" for alpha in ALPHAS}}
    for key, name in names.items():
        print(f"{name:34}{t[key][0]:10.2f}{t[key][1]:10.2f}{1000 * t[key][0] / per:30.3f}")
    if len(heads) != L * H:
        print(f"(reference measured on {len(heads)} of {L * H} heads: {t['ref'][0] / scale:.1f} s wall, "
              f"scaled to the grid)")
    exact_speedup, exact_cpu = t["ref"][0] / t["exact"][0], t["ref"][1] / t["exact"][1]
    print(f"\nexact vs reference: {exact_speedup:.1f}x faster wall, {exact_cpu:.1f}x CPU time; max |diff| "
          f"{max_diff:.2e} over {int(known.sum())} (sample, head) values (target >= 20x, <= 1e-5)")
    procs_speedup, n_procs = float("nan"), 0
    if a.procs > 0:
        e_procs, wall, secs = exact_in_procs(a, adapter, speed_samples)
        procs_speedup, n_procs = t["ref"][0] / wall, len(secs)
        print(f"exact engine in {len(secs)} processes x 1 thread ({len(speed_samples)} samples round-robin): {wall:.2f} s "
              f"wall (per process: {', '.join(f'{x:.2f}' for x in secs)} s), {procs_speedup:.1f}x faster than the "
              f"reference, {t['exact'][0] / wall:.2f}x the engine in one process; max |diff| to it "
              f"{float((e_procs - exact).abs().max()):.2e}")
    for alpha in ALPHAS:
        print(f"atp (alpha {alpha}) vs exact: {t['exact'][0] / t[alpha][0]:.1f}x faster wall, "
              f"{t['exact'][1] / t[alpha][1]:.1f}x CPU time (target >= 50x)")
    bound = explain(adapter, speed_samples[0], t["exact"][0] / (len(speed_samples) * H * L * (L + 1) / 2),
                    min(a.rows, len(speed_samples) * H), t["ref"][0] / per)  # rows of one engine forward
    # agreement on this deep grid (random weights: every head a small, nearly linear perturbation)
    s_exact = head_scores(prob, correct, exact)
    deep = {(alpha, a.atp_space): compare(adapter, s_exact, prob, correct, torch.cat(ests[alpha]))
            for alpha in ALPHAS}
    print(f"agreement with the exact scores on this {L} x {H} random model, {len(speed_samples)} samples "
          f"({s_exact.n_correct} baseline-correct):")
    print_agreement(adapter, deep)
    deep_rho = deep[(a.atp_alpha, a.atp_space)]["signed"]
    return dict(exact_speedup=exact_speedup, max_abs_diff=max_diff,
                atp_speedup=t["exact"][0] / t[a.atp_alpha][0], exact_speedup_cpu=exact_cpu,
                atp_speedup_cpu=t["exact"][1] / t[a.atp_alpha][1],
                deep_spearman=deep_rho[0], deep_top10_overlap=deep_rho[1], exact_bound=bound,
                exact_speedup_procs=procs_speedup, exact_procs=n_procs)


def explain(adapter, sample, engine_row_layer_s: float, rows: int, ref_s: float, reps: int = 3) -> float:
    """Where the time goes: the reference's forward split into preprocessing + vision and the LM, against
    the engine's cost per (row, layer). The speed-up is about (layer reuse) x (batching gain) x (the
    share of preprocessing + vision + full logits in a reference forward).

    Returns the most any exact method can gain over the reference (``ref_s`` seconds per (sample, head),
    as measured in this run) in one process on this machine at this shape. Ablating head (l, h) changes
    the residual stream at every position, so every later layer's queries, keys and values change:
    each (sample, head) needs its own attention and linear layers
    (projections, MLP) at every position of layers l+1 .. L-2 (the last layer needs the last query only),
    (L - 1)(L - 2) / 2L layers on average. The bound counts only those, at the engine's batch shape, timed
    here with torch's kernels (sdpa, the layer's own nn.Linear modules), as if all else (norms, rotary
    embeddings, activations, residual adds, the vision tower, the final layers) were free."""
    import torch.nn.functional as F

    L, H, D = adapter.num_layers, adapter.num_heads, adapter.head_dim
    dev = adapter.device

    def per_call(fn):
        fn()  # warm-up
        sync()
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        sync()
        return (time.perf_counter() - t) / reps

    t_pre = t_lm = 0.0
    with torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            enc = adapter.encode([sample]).to(dev)
            emb = adapter.embed(enc)
            sync()
            t1 = time.perf_counter()
            adapter.lm_logits(emb)
            sync()
            t_pre += t1 - t0
            t_lm += time.perf_counter() - t1
        t_pre, t_lm = t_pre / reps, t_lm / reps
        T = emb.inputs_embeds.shape[1]
        # q, k, v as the decoder hands them to sdpa: [rows, H, T, D] views of [rows, T, H, D]
        dt_ = adapter.model.dtype
        q, k, v = (torch.randn(rows, T, H, D, device=dev, dtype=dt_).transpose(1, 2) for _ in range(3))
        linears = [m for m in adapter.layers[0].modules() if isinstance(m, torch.nn.Linear)]
        xs = [torch.randn(rows, T, m.in_features, device=dev, dtype=dt_) for m in linears]

        def attn():
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)

        t_attn = per_call(attn) / rows
        t_lin = per_call(lambda: [m(x) for m, x in zip(linears, xs)]) / rows
        threads, t_attn1 = torch.get_num_threads(), None
        if dev.type == "cpu" and threads > 1:  # how much the kernel gains from more than one core
            torch.set_num_threads(1)
            try:
                t_attn1 = per_call(attn) / rows
            finally:
                torch.set_num_threads(threads)
    print(f"where the time goes: a batch-1 forward costs {1000 * t_pre:.1f} ms preprocessing + vision and "
          f"{1000 * t_lm:.1f} ms LM ({1000 * t_lm / L:.2f} ms per layer); the engine costs "
          f"{1000 * engine_row_layer_s:.3f} ms per (row, layer): batching gain {t_lm / L / engine_row_layer_s:.1f}x, "
          f"layer reuse {2 * L / (L + 1):.2f}x")
    n = (L - 1) * (L - 2) / (2 * L)
    bound = ref_s / (n * (t_attn + t_lin)) if n > 0 else float("inf")  # L <= 2: nothing is needed
    print(f"bound: at the engine's batch shape ({rows} rows x {T} tokens) the attention kernel costs "
          f"{1000 * t_attn:.3f} ms per (row, layer) ({1e6 * t_attn / H:.1f} us per (row, head), head_dim {D}) and "
          f"the layer's {len(linears)} linear layers {1000 * t_lin:.3f} ms; an exact method needs both in "
          f"{n:.2f} layers per (sample, head) on average, so in one process it can be at most {bound:.1f}x "
          f"faster than the reference on this machine, even if all else were free"
          if n > 0 else "bound: none at 2 layers or fewer (no layer after the ablated one needs every position)")
    if t_attn1 is not None:
        print(f"the attention kernel with 1 thread: {1e6 * t_attn1 / H:.1f} us per (row, head); {threads} threads "
              f"make it {t_attn1 / t_attn:.3g}x faster")
    return bound


def agreement_part(a, samples, sp: dict):
    from vseam.models import load_adapter

    organism = Path(a.organism)
    if (organism / "config.json").exists():
        import json

        arch = "instructblip" if "instructblip" in json.loads((organism / "config.json").read_text()).get(
            "model_type", "") else "llava"
        org = load_adapter({"arch": arch, "path": str(organism), "dtype": "float32", "device": "cpu"})
        where = f"trained organism ({organism})"
    else:
        org = load_adapter({"arch": "llava", "path": "tiny:llava", "dtype": "float32", "device": "cpu"})
        where = f"tiny random llava (no trained organism at {organism} yet)"
    agr, s_exact = agreement(org, samples[:a.agreement_samples], a.batch_size, a.rows)
    print(f"\nagreement of attribution patching with exact scores on the {where}, "
          f"{a.agreement_samples} samples ({s_exact.n_correct} baseline-correct):")
    print_agreement(org, agr)
    n_heads = org.num_layers * org.num_heads
    k = min(10, n_heads)
    print(f"  ({org.num_layers} layers x {org.num_heads} heads: two random top-{k} lists share {k * k / n_heads:.1f} "
          f"heads on average{'; the overlap says little here' if n_heads < 40 else ''})")
    rho, ov = agr[(a.atp_alpha, a.atp_space)]["signed"][:2]
    rho0 = agr[(0.0, a.atp_space)]["signed"][0]

    def f(x):
        return "nan" if x is None else (f"{x:.3g}" if isinstance(x, float) and abs(x) < 1e-3 else
                                        (f"{x:.3f}" if isinstance(x, float) else str(x)))

    summary = dict(exact_speedup=f"{sp['exact_speedup']:.2f}", max_abs_diff=f"{sp['max_abs_diff']:.3g}",
                   atp_speedup=f"{sp['atp_speedup']:.2f}", spearman=f(rho), top10_overlap=f(ov),
                   atp_alpha=a.atp_alpha, atp_space=a.atp_space, spearman_alpha0=f(rho0),
                   deep_spearman=f(sp.get("deep_spearman")), deep_top10_overlap=f(sp.get("deep_top10_overlap")),
                   exact_speedup_cpu=f"{sp['exact_speedup_cpu']:.2f}", atp_speedup_cpu=f"{sp['atp_speedup_cpu']:.2f}",
                   exact_bound=f"{sp['exact_bound']:.1f}")
    if sp["exact_procs"]:
        summary[f"exact_speedup_{sp['exact_procs']}procs"] = f"{sp['exact_speedup_procs']:.2f}"
    print(" ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    sys.exit(main())
