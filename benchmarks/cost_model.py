"""Cost model of head attribution for the real job (issue 17, section 2), on paper: the multiply-adds each
method must do for LLaVA-1.5-7B and InstructBLIP-Vicuna-7B (from their configs, counted as in
``attribution_scale.counted_work``), turned into GPU-hours and wall time on 1 and 8 GPUs at an assumed
sustained bfloat16 throughput, and the activation memory of one ablated copy, so that
``attribution.rows_per_forward`` can be chosen.

Assumptions (all on the command line): ``--tflops`` peak dense bf16 of the GPU (H100 SXM 80 GB: 989;
A100 80 GB: 312), ``--mfu`` the fraction of it sustained (0.5: large GEMMs, the engine's rows x tokens are
>= 30k for LLaVA); 8 GPUs shard the samples (no communication but one gather at the end), so 8x;
``--rescore`` heads re-scored exactly after the estimate (``attribution.rescore_top_k=10`` re-scores the
union of the positive, negative and signed top-10: at most 30); the classic estimate (``atp_alpha=0``) is one
forward and one backward (input gradients only: the weights are frozen, so the backward costs about one
forward) of the language model per sample plus the vision side, the default (``atp_path=layer``,
``atp_alpha=0.5``) one clean forward and a forward and backward per layer (L = 32 groups); prompt lengths ``--llava-tokens`` (576 image tokens + a
GQA question in the template) and ``--instructblip-tokens`` (32 query tokens + the question). The
reference's time is its compute only (it also preprocesses every image 1,024 times), so it is a lower bound.

    python benchmarks/cost_model.py                    # the README's table (H100 80 GB, 50% of peak)
    python benchmarks/cost_model.py --tflops 312       # A100 80 GB
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_scale import counted_work, layer_macs  # noqa: E402

GQA_SUBSETS = {"Animal": 1000, "Indoor": 1000, "Vehicle": 1000, "Color": 1456, "Material": 1115, "Action": 1000,
               "Spatial": 1000}  # SPEC section 4: seed subsets of 1000 each, Color 1456, Material 1115
PARAMS_7B = {"llava-1.5-7b": 7.06e9, "instructblip-vicuna-7b": 7.91e9}


def configs(llava_tokens: int, ib_tokens: int):
    """(name, config-like object, T, image tokens) of the two real models, built from their published widths."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    llama = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32)
    llava = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                                       num_attention_heads=16, image_size=336, patch_size=14),
                        text_config=LlamaConfig(**llama, vocab_size=32064))
    # InstructBLIP: EVA ViT-g/14 at 224 (1408 wide, 39 layers, MLP 6144) + the Q-Former, counted separately
    ib = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39,
                                                    num_attention_heads=16, image_size=224, patch_size=14),
                     text_config=LlamaConfig(**llama, vocab_size=32001))
    box = lambda c: type("M", (), {"config": c})()  # noqa: E731
    return [("llava-1.5-7b", box(llava), llava_tokens, 576), ("instructblip-vicuna-7b", box(ib), ib_tokens, 32)]


def qformer_macs(queries: int = 32, text: int = 20, d: int = 768, mlp: int = 3072, layers: int = 12,
                 cross_every: int = 2, enc_tokens: int = 257, enc_d: int = 1408) -> float:
    """InstructBLIP's Q-Former (queries + instruction text; cross-attention to the image every 2nd layer)
    and its language projection 768 -> 4096."""
    n = queries + text
    self_layer = n * (4 * d * d + 2 * d * mlp) + 2 * d * n * n
    cross = queries * (2 * d * d) + enc_tokens * (2 * enc_d * d) + 2 * d * queries * enc_tokens
    return layers * self_layer + (layers // cross_every) * cross + queries * d * 4096


def activation_bytes_per_copy(T: int, d: int = 4096, mlp: int = 11008, heads: int = 32, bytes_: int = 2,
                              math_attention: bool = False) -> float:
    """Peak live activations of one ablated copy inside one decoder layer (no gradients): in the MLP the
    residual, its norm, gate, up and act(gate) and their product (2d + 4I per token); in attention the
    residual, norm, q, k, v, rotated q and k and the output (8d per token), plus the H x T x T scores of
    the math kernel (not with flash / memory-efficient sdpa). The larger of the two."""
    mlp_phase = T * (2 * d + 4 * mlp)
    attn_phase = T * 8 * d + (heads * T * T if math_attention else 0)
    return max(mlp_phase, attn_phase) * bytes_


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of one GPU")
    ap.add_argument("--mfu", type=float, default=0.5, help="sustained fraction of the peak")
    ap.add_argument("--gpu-gb", type=float, default=80.0)
    ap.add_argument("--rescore", type=int, default=30, help="heads re-scored exactly after the estimate")
    ap.add_argument("--llava-tokens", type=int, default=600)
    ap.add_argument("--instructblip-tokens", type=int, default=52)
    ap.add_argument("--per-copy-mib", type=float, default=None,
                    help="measured activation MiB per ablated copy at the LLaVA prompt length (replaces the formula)")
    a = ap.parse_args(argv)
    flops = a.tflops * 1e12 * a.mfu  # sustained FLOP/s
    print(f"assumed: {a.tflops:g} TFLOP/s peak bf16 x {a.mfu:g} sustained = {flops / 1e12:.0f} TFLOP/s per GPU; "
          f"8 GPUs = 8x (samples sharded); estimate + exact re-scoring of {a.rescore} heads; 2 FLOP per multiply-add\n")
    header = (f"| model | samples | method | PFLOP | GPU-hours | wall, 1 GPU | wall, 8 GPUs |\n"
              f"|---|---|---|---|---|---|---|")
    print(header)
    mem_lines = []
    for name, m, T, n_img in configs(a.llava_tokens, a.instructblip_tokens):
        w = counted_work(m, T, n_img)
        tc = m.config.get_text_config()
        L, H = tc.num_hidden_layers, tc.num_attention_heads
        lay = w["layer"]
        side = w["vision"] + w["projector"]
        if name.startswith("instructblip"):
            side = w["vision"] + qformer_macs()
        ref = side + L * lay + w["logits_all"]  # one full forward, every position's logits
        exact = H * sum(L - l for l in range(L)) * lay + L * H * tc.hidden_size * tc.vocab_size  # per sample
        exact += side + L * lay  # the sample's one vision pass and clean pass
        lm = L * lay + tc.hidden_size * tc.vocab_size  # one language-model pass, last-position logits
        atp = side + 2 * lm  # forward + input-gradient backward at the clean run
        atp_layer = side + lm + 2 * L * lm  # a clean forward, then a forward + backward per layer
        resc = a.rescore * (L + 1) / 2 * lay  # re-scored heads at the average depth
        per_sample = {"reference loop": L * H * ref, "exact engine": exact,
                      "estimate (clean run, 1 pass) + re-scoring": atp + resc,
                      f"estimate (default: {L} passes) + re-scoring": atp_layer + resc}
        for scope, n in (("1 category", 1000), ("7 GQA subsets", sum(GQA_SUBSETS.values()))):
            for method, macs in per_sample.items():
                total = 2 * macs * n
                hours = total / flops / 3600
                print(f"| {name} | {scope} ({n:,}) | {method} | {total / 1e15:,.0f} | {hours:,.2f} | "
                      f"{_fmt_h(hours)} | {_fmt_h(hours / 8)} |")
        per_copy = activation_bytes_per_copy(T)
        if a.per_copy_mib and name == "llava-1.5-7b":
            per_copy = a.per_copy_mib * 2 ** 20
        clean = L * T * tc.hidden_size * 2  # the recorded layer inputs of one sample
        free = a.gpu_gb * 1e9 - 2 * PARAMS_7B[name] - 4e9  # weights in bf16, ~4 GB context / workspace
        mem_lines.append(f"{name} at {T} tokens: {per_copy / 2 ** 20:.1f} MiB per ablated copy, {clean / 2 ** 20:.0f} MiB "
                         f"of recorded layer inputs per sample; {free / 1e9:.0f} GB free after the bf16 weights -> "
                         f"{int(free / 2 / per_copy):,} copies fit with half the memory kept free")
    print()
    for line in mem_lines:
        print(line)


def _fmt_h(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.0f} min"
    return f"{hours * 3600:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
