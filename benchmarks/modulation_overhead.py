"""What learned head modulation costs: step time against a plain frozen model, and its parameter count.

1. Step overhead, on one batch of a LLaVA-shaped model (random weights; sizes below): a plain frozen
   forward + backward (gradient to the input embeddings, so backward runs through every layer) against
   the same forward + backward with K heads modulated (hooks at K layers' ``o_proj`` inputs) plus the
   AdamW step on the modulation parameters. Target: <= 1.2x. Also shown: the step as training really
   runs it (gradients only to the modulation, so backward stops at the first modulated layer).
2. Trainable fraction at K = 20 on a 7B-shaped LLaVA-1.5 config: the model's parameter count comes from
   a build on the ``meta`` device (no memory, no download). Target: <= 0.01 %.

Run: ``python benchmarks/modulation_overhead.py [--repeats 20] [--layers 8] [--hidden 256] [--batch 8]``.
The last line is machine-readable: ``step_overhead=.. trainable_fraction=..``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from vseam.interventions import HeadModulation, intervene
from vseam.models.llava import LlavaAdapter
from vseam.models.tiny import build_tiny_llava
from vseam.modulation.heads import random_heads


def llava_7b_param_count() -> int:
    """Parameters of LLaVA-1.5-7B (CLIP ViT-L/14-336 + projector + Vicuna-7B), built on the meta device."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                       num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=32000)
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(cfg)
    return sum(p.numel() for p in model.parameters())


def modulation_params(k: int, head_dim: int, scale: str = "scalar", offset: bool = True) -> int:
    """Exactly what ``HeadModulation`` allocates for K heads (checked against a real instance)."""
    mod = HeadModulation([(0, h) for h in range(k)], head_dim, scale=scale, offset=offset)
    return sum(p.numel() for p in mod.parameters())


def _timed(fn, repeats: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=8, help="language-model layers of the timing model")
    ap.add_argument("--heads", type=int, default=8, help="attention heads of the timing model")
    ap.add_argument("--hidden", type=int, default=128, help="hidden size of the timing model")
    ap.add_argument("--batch", type=int, default=8, help="samples per step")
    ap.add_argument("--question-tokens", type=int, default=24, help="text tokens per sample (plus the image tokens)")
    ap.add_argument("--k", type=int, default=20, help="modulated heads (top-K positive + negative)")
    ap.add_argument("--repeats", type=int, default=15, help="timed steps per variant (median reported)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: stable timings on a shared CPU); 0 = leave as is")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)

    model, processor = build_tiny_llava(hidden_size=a.hidden, num_layers=a.layers, num_heads=a.heads,
                                        num_kv_heads=a.heads, image_size=64, patch_size=8)
    model.requires_grad_(False)
    adapter = LlavaAdapter(model, processor, name="llava-shaped")
    L, H, D = adapter.shape
    k = min(a.k, L * H)
    heads = random_heads(L, H, k, seed=0)
    # Fixed language-model inputs (the cached vision-side embeddings of training): [B, T, d].
    T = 64 + a.question_tokens
    emb_x = torch.randn(a.batch, T, a.hidden) * 0.02
    mask = torch.ones(a.batch, T, dtype=torch.long)
    pos = torch.arange(T).expand(a.batch, -1)
    target = torch.randint(0, adapter.vocab_size, (a.batch,))
    from vseam.models.base import Embedded

    def run(x):
        return adapter.lm_logits(Embedded(x, mask, pos)).float()

    def plain():
        x = emb_x.clone().requires_grad_(True)
        F.cross_entropy(run(x), target).backward()

    mod = HeadModulation(heads, D, scale="scalar", offset=True)
    opt = torch.optim.AdamW(mod.parameters(), lr=1e-2)

    def modulated(input_grad: bool = True):
        x = emb_x.clone().requires_grad_(input_grad)
        opt.zero_grad(set_to_none=True)
        with intervene(adapter, mod):
            loss = F.cross_entropy(run(x), target)
            loss.backward()
        opt.step()

    # Interleave the variants' rounds so slow phases of a shared CPU hit both alike.
    t_plain, t_mod, t_train = [], [], []
    rounds = 5
    for _ in range(rounds):
        t_plain.append(_timed(plain, max(1, a.repeats // rounds)))
        t_mod.append(_timed(modulated, max(1, a.repeats // rounds)))
        t_train.append(_timed(lambda: modulated(False), max(1, a.repeats // rounds)))
    tp, tm, tt = statistics.median(t_plain), statistics.median(t_mod), statistics.median(t_train)
    overhead = tm / tp

    total_7b = llava_7b_param_count()
    n_mod = modulation_params(20, 128, "scalar", True)
    n_mod_vec = modulation_params(20, 128, "vector", True)
    frac = n_mod / total_7b
    print(f"timing model: LLaVA-shaped, {L} layers x {H} heads x {D}, hidden {a.hidden}, batch {a.batch} x {T} tokens, "
          f"K={k} modulated heads, {torch.get_num_threads()} threads, median of {a.repeats} steps")
    print(f"  plain frozen forward+backward (grad to inputs):     {tp * 1e3:8.2f} ms")
    print(f"  modulated forward+backward+AdamW (grad to inputs):  {tm * 1e3:8.2f} ms  ({overhead:.3f}x)")
    print(f"  modulated training step as run (grad to params):    {tt * 1e3:8.2f} ms  ({tt / tp:.3f}x)")
    print(f"7B-shaped LLaVA-1.5: {total_7b:,d} parameters; K=20 modulation (scalar scale + offset, head_dim 128): "
          f"{n_mod:,d} = {100 * frac:.6f} % (per-dim scale: {n_mod_vec:,d} = {100 * n_mod_vec / total_7b:.6f} %)")
    print(f"targets: step_overhead <= 1.2 ({'met' if overhead <= 1.2 else 'MISSED'}), "
          f"trainable_fraction <= 1e-4 ({'met' if frac <= 1e-4 else 'MISSED'})")
    print(f"step_overhead={overhead:.3f} trainable_fraction={frac:.3e}")
    return {"step_overhead": overhead, "trainable_fraction": frac, "plain_s": tp, "modulated_s": tm, "train_s": tt}


if __name__ == "__main__":
    main()
