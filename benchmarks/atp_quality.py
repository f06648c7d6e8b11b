"""Attribution patching's quality against the exact scores on a trained model (docs/benchmarks.md#estimate-quality): the
signed Spearman and top-10 overlap of the estimate for each choice of where its gradient is taken
(``attribution.atp_alpha`` and ``attribution.atp_path``: the clean run; the midpoint of the path that
ablates every head together, a layer's heads together, or head g of every layer together), each with its
cost in forward + backward passes per batch and its measured time; the exact signed score next to the
clean gradient's per head; and, with ``--frozen-attention`` (LLaVA only), why the clean gradient misses:
the exact single-head ablations again with every later layer's attention pattern frozen at the clean
run's, against the clean gradient with the patterns detached (what AtP*'s recomputed softmax could
recover is the difference between the full and the frozen ablation).

    python benchmarks/atp_quality.py                                       # model=organism-llava (the default organism)
    python benchmarks/atp_quality.py --model organism-instructblip         # a model config, or a checkpoint folder
    python benchmarks/atp_quality.py --model organism-llava --seed 1       # other samples (another world seed)
    python benchmarks/atp_quality.py --model random:32x32 --samples 4      # attribution_speed.py's deep random grid

The last line is machine-readable: the default estimate's and the classic one's figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_speed import bench_adapter, embedded_batches, exact_grid, world_samples  # noqa: E402

from vseam.attribution.patching import estimated_ablated_probs  # noqa: E402
from vseam.attribution.scores import head_scores, top_k_overlap  # noqa: E402
from vseam.config import AttributionConfig  # noqa: E402
from vseam.interventions import Ablate, intervene  # noqa: E402
from vseam.models import load_adapter  # noqa: E402
from vseam.models.base import answer_stats  # noqa: E402
from vseam.stats import spearman  # noqa: E402

# (name, atp_path, atp_alpha)
POINTS = [("clean run (alpha 0)", "all", 0.0), ("midpoint, all heads together", "all", 0.5),
          ("midpoint, a layer's heads together", "layer", 0.5),
          ("midpoint, head g of every layer", "index", 0.5)]


def model_config(name: str) -> dict:
    """A model config by name (``configs/model/<name>.yaml``) or a checkpoint folder, in float32 on the CPU."""
    if Path(name).is_dir() or name.startswith("tiny:"):
        mcfg = {"arch": "instructblip" if "instructblip" in name else "llava", "path": name}
    else:
        from omegaconf import OmegaConf

        from vseam.config import load_config

        mcfg = OmegaConf.to_container(load_config([f"model={name}"]).model, resolve=True)
    return {**mcfg, "dtype": "float32", "device": "cpu"}


def passes(path: str, alpha: float, L: int, H: int) -> str:
    if alpha == 0:
        return "1 fwd + 1 bwd"
    n = {"all": 1, "layer": L, "index": H}[path]
    return f"{n + 1} fwd + {n} bwd"  # one clean forward without gradients, then a pass per group


def estimate(adapter, samples, path, alpha, batch_size):
    return torch.cat([estimated_ablated_probs(adapter, emb, mask, alpha=alpha, path=path)[0]
                      for mask, emb in embedded_batches(adapter, samples, batch_size)])


def frozen_attention(adapter, samples, batch_size):
    """(p_abl [N, L, H] of each single-head mean ablation with every later layer's attention pattern frozen
    at the clean run's, the clean log-odds gradient's p_abl with every pattern detached): LLaVA (Llama) only.

    A diagnostic, not a method: it swaps transformers' Llama eager attention function for one that records,
    replays or detaches the softmax while this runs (the intervention mechanism reads patterns, never
    writes them), and restores it after."""
    from transformers.models.llama import modeling_llama as ml

    state = {"mode": None, "store": {}, "layer": -1}
    orig = ml.eager_attention_forward

    def attention(module, query, key, value, attention_mask, scaling, dropout=0.0, **kw):
        out, w = orig(module, query, key, value, attention_mask, scaling, dropout, **kw)
        li = module.layer_idx
        if state["mode"] == "record":
            state["store"][li] = w.detach()
        elif (state["mode"] == "frozen" and li > state["layer"]) or state["mode"] == "detach":
            w = state["store"][li] if state["mode"] == "frozen" else w.detach()
            v = ml.repeat_kv(value, module.num_key_value_groups)
            out = torch.matmul(w, v).transpose(1, 2).contiguous()
        return out, w

    L, H = adapter.num_layers, adapter.num_heads
    configs = {id(c): c for c in [adapter.decoder.config] + [adapter.attention(l).config for l in range(L)]}
    before = {k: c._attn_implementation for k, c in configs.items()}
    ml.eager_attention_forward = attention
    try:
        for c in configs.values():
            c._attn_implementation = "eager"
        frozen, detached = [], []
        for mask, emb in embedded_batches(adapter, samples, batch_size):
            with torch.no_grad():
                state["mode"], state["store"] = "record", {}
                adapter.lm_logits(emb)
                state["mode"] = "frozen"
                out = torch.zeros(emb.inputs_embeds.shape[0], L, H)
                for l in range(L):
                    state["layer"] = l
                    for h in range(H):
                        with intervene(adapter, Ablate(l, [h])):
                            out[:, l, h] = answer_stats(adapter.lm_logits(emb), mask)[0].float().cpu()
            frozen.append(out)
            state["mode"] = "detach"
            detached.append(estimated_ablated_probs(adapter, emb, mask, alpha=0.0)[0])
    finally:
        ml.eager_attention_forward = orig
        for k, c in configs.items():
            c._attn_implementation = before[k]
    return torch.cat(frozen), torch.cat(detached)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="organism-llava",
                    help="a model config name (configs/model), a checkpoint folder, or random:LxH")
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--seed", type=int, default=0, help="world seed of the organism-world samples")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--frozen-attention", action="store_true", help="the diagnostic of why the clean gradient misses")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    if a.model.startswith("random:"):  # the speed benchmark's untrained LLaVA-shaped grid, hidden 64
        layers, heads = (int(x) for x in a.model[len("random:"):].split("x"))
        mcfg = {"path": f"random, {layers} layers x {heads} heads, hidden 64"}
        adapter = bench_adapter(argparse.Namespace(layers=layers, heads=heads, hidden=64, device="cpu", dtype="float32"))
    else:
        mcfg = model_config(a.model)
        adapter = load_adapter(mcfg)
    samples = world_samples(Path(tempfile.mkdtemp(prefix="vseam-atpq-")) / "world", a.samples, seed=a.seed)
    t = time.process_time()
    exact, p, c = exact_grid(adapter, samples, a.batch_size, 64)
    t_exact = time.process_time() - t
    s_ex = head_scores(p, c, exact)
    L, H = adapter.num_layers, adapter.num_heads
    k = min(10, L * H)
    default = (AttributionConfig.atp_path, AttributionConfig.atp_alpha)
    print(f"model: {a.model} ({mcfg['path']}, {L} x {H} = {L * H} heads), {len(samples)} samples of world seed "
          f"{a.seed} ({s_ex.n_correct} baseline-correct); baseline p: 5% {float(p.quantile(0.05)):.4f}, median "
          f"{float(p.median()):.4f}, 95% {float(p.quantile(0.95)):.4f}; two random top-{k} lists share {k * k / (L * H):.1f}")
    print(f"  exact engine: {t_exact:.1f} s CPU")
    results = {}
    for name, path, alpha in POINTS:
        t = time.process_time()
        s = head_scores(p, c, estimate(adapter, samples, path, alpha, a.batch_size))
        dt = time.process_time() - t
        results[(path, alpha)] = s
        rho, ov = spearman(s_ex.signed, s.signed), top_k_overlap(s_ex.signed, s.signed, k)
        pos = f"{spearman(s_ex.positive, s.positive):.3f}" if s_ex.positive is not None else "undefined"
        mark = "  <- the default" if (path, alpha) == default or (alpha == 0 and default[1] == 0) else ""
        print(f"  {name:36} atp_path={path:5} atp_alpha={alpha:<3}  signed Spearman {rho:.3f}, top-{k} overlap "
              f"{ov}/{k}; positive Spearman {pos}; {passes(path, alpha, L, H)}, {dt:.1f} s CPU{mark}")
    clean = results[("all", 0.0)]
    ratio = (s_ex.signed / clean.signed).flatten()
    print(f"exact signed / clean estimate per head: median {float(ratio.median()):.1f}x, range "
          f"{float(ratio.min()):.1f}x to {float(ratio.max()):.1f}x")
    for l in range(min(L, 8)):
        print(f"  layer {l}: exact " + " ".join(f"{x:7.4f}" for x in s_ex.signed[l].tolist()[:8])
              + " | clean estimate " + " ".join(f"{x:7.4f}" for x in clean.signed[l].tolist()[:8]))
    if a.frozen_attention:
        if adapter.arch != "llava":
            raise SystemExit("--frozen-attention: LLaVA (Llama attention) only")
        frozen, detached = frozen_attention(adapter, samples, a.batch_size)
        s_fr, s_det = head_scores(p, c, frozen), head_scores(p, c, detached)
        print(f"later attention patterns frozen at the clean run's: exact vs frozen-pattern ablation signed Spearman "
              f"{spearman(s_ex.signed, s_fr.signed):.3f}; frozen-pattern ablation vs the clean gradient with patterns "
              f"detached {spearman(s_fr.signed, s_det.signed):.3f}")
        top = sorted(range(L * H), key=lambda i: -float(s_ex.signed.flatten()[i]))[:5]
        for i in top:
            l, h = divmod(i, H)
            print(f"  head ({l}, {h}): exact {float(s_ex.signed[l, h]):7.4f}, patterns frozen {float(s_fr.signed[l, h]):7.4f}, "
                  f"clean gradient {float(clean.signed[l, h]):7.4f}, patterns detached {float(s_det.signed[l, h]):7.4f}")
    d = results[default] if default[1] != 0 else clean
    print(f"spearman_default={spearman(s_ex.signed, d.signed):.3f} top{k}_default={top_k_overlap(s_ex.signed, d.signed, k)} "
          f"atp_path={default[0]} atp_alpha={default[1]} spearman_clean={spearman(s_ex.signed, clean.signed):.3f} "
          f"top{k}_clean={top_k_overlap(s_ex.signed, clean.signed, k)} heads={L * H} seed={a.seed} samples={len(samples)}")


if __name__ == "__main__":
    sys.exit(main())
