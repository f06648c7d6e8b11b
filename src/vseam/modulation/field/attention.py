"""The field's attention-level hallucination methods (PAI, VAF, SPIN, AD-HH, VCD), registered in ``field.METHODS``,
all through the one intervention mechanism (``vseam.interventions``: the pre-softmax ``attn_scores`` and the
``attn_pattern`` sites) and the scorer's contrastive next-token scoring (``vseam.evaluation.score.Contrast``).

Every method here is training-free at test time and acts on one question's one forward pass (two for the
contrastive ones). The answer is one token, so each paper's decoding-time method reduces to the next-token
distribution at the answer position: an edit of "the current token's query" is an edit of the last position's
query, and contrastive decoding is a contrast of the next-token logits.

- ``pai``: PAI, "Paying More Attention to Image" (Liu, Zheng, Chen; ECCV 2024; github.com/LALBJ/PAI,
  ``attention.py`` and ``CFG.py``). In layers [2, 32) every head's pre-softmax score of the last query to each
  image token becomes ``s + alpha * |s|`` (alpha 0.2), and the next-token log-probabilities are contrasted with
  those of the image-free input, ``gamma * l(x) - (gamma - 1) * l(x')`` (gamma 1.1), under the plausibility
  cutoff 0.1 (``CFGLogits``). The image-free input here is the prompt's tokens without the image's (PAI's
  ``neg_promt``: the tokens before and after the image, joined; ``core.image_free``); it runs without the
  attention edit (PAI sets ``use_cfg`` for it). Differences: one next-token step instead of sampling; the image
  span is the tokens the processor put there (``adapter.visual_token_mask``), not a fixed 576 from index 35.
- ``vaf``: Visual Amplification Fusion, ClearSight (Yin et al.; CVPR 2025; github.com/ustc-hyin/ClearSight,
  ``visaug/inference/AttnAdapter.py``). In the middle layers [9, 15) the pre-softmax scores of the queries after the
  image to the image tokens are multiplied by 1.15 and those to the system prompt (every token before the image)
  by 0.95. Differences: the paper's system prompt is LLaVA's 35-token one; here it is whatever text the model's
  prompt puts before the image (for LLaVA-1.5's prompt, docs/method.md#prompts: ``<s> USER:``); on a model that puts none there
  (InstructBLIP's query tokens lead) VAF is refused.
- ``spin``: SPIN, image-guided head suppression (Sarkar et al.; EMNLP 2025; github.com/YUECHE77/SPIN,
  ``attentionSPIN.py``). In layers [0, 32), per sample, the heads are ranked by the sum over the image tokens of
  the last query's pre-softmax scores (the paper's code ranks on these logits; its std normalisation and softmax
  over heads keep the order), the top ``int(0.8 * H)`` kept and the other heads' outputs at the last position
  multiplied by 0.1 (``small_num_mask``), before ``o_proj``. Defaults: the repository's POPE command.
- ``adhh``: AD-HH, adaptive deactivation of hallucination heads (Yang, Li, Cao, Xu; ICLR 2025;
  github.com/TianyunYoung/Hallucination-Attribution, ``identify_attention_head.py``, ``modeling_llama.py``).
  Attribution on the train split: each head zero-ablated (the exact engine), its influence on an answer the
  model gives; the hallucination heads are the top 20 by the mean influence on wrong answers minus that on
  right ones. At test time, for each such head, when the last query's attention to the text after the image
  sums to >= 0.4, those attention probabilities are set to zero (not renormalised, as in the paper's code).
  Differences: the paper's "hallucinated tokens" are CHAIR's hallucinated objects in captions; here they are the
  train split's wrong answers. The project scores the gold answer's probability p (docs/method.md#answer-tokens), so the
  influence on a wrong answer is read as ``p_ablated - p`` (the paper's ``p(pred) - p_ablated(pred)``, equal
  when the two answers hold the probability mass, as yes / no do).
- ``vcd``: Visual Contrastive Decoding (Leng et al.; CVPR 2024; github.com/DAMO-NLP-SG/VCD,
  ``vcd_utils/vcd_sample.py``, ``vcd_add_noise.py``). Next-token logits contrasted with those of the same
  prompt with a distorted image, ``(1 + alpha) * l(x) - alpha * l(x')`` (alpha 1), under the adaptive
  plausibility cutoff ``log(beta) + max l(x)`` (beta 0.1); the distortion is the forward diffusion at step 500
  of 1000 (VCD's sigmoid beta schedule) applied to the processor's pixel values. Differences: the Gaussian noise
  is drawn per sample from a generator seeded by the run's seed and the sample's id (the same distorted image in
  every method and run), not from the global RNG; one next-token step instead of sampling.

Layer ranges are written for a ``modulation.field_depth``-layer model (LLaVA-1.5-7B's 32) and scaled to the
model's depth (``core.model_layers``); each method's hyperparameters as applied (and AD-HH's heads) are what its
file holds (``field``: the paths from a config, a file and ``train.py``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from vseam.data.sample import Sample
from vseam.evaluation.score import Contrast
from vseam.interventions import AttentionEdit, Read, check_heads
from vseam.models.base import Embedded, Encoded
from vseam.models.cache import Batch, EmbeddingCache
from vseam.modulation.field.core import (
    Applied,
    Estimate,
    Method,
    NotApplicableError,
    image_free,
    model_layers,
    span,
    token_roles,
)


# ------------------------------------------------------------------------------------------ edits
@dataclass
class SpinGate:
    """SPIN at the ``z`` site of ``layer``: the heads ranked per sample by the sum over the image keys of the last
    query's pre-softmax scores (read at ``attn_scores`` of the same layer, earlier in the same forward), the
    top ``keep`` kept, the others' outputs at the last position multiplied by ``damp``."""

    layer: int
    image: torch.Tensor  # bool [B, T]
    keep: int
    damp: float
    site: str = "z"

    def apply(self, z: torch.Tensor, cache) -> torch.Tensor:
        scores = cache["attn_scores", self.layer][:, :, -1, :]  # [B, H, K]
        image = self.image.to(scores.device)[:, None, :]
        rank_on = torch.where(image, scores.float(), 0.0).sum(-1)  # [B, H]
        factor = torch.full_like(rank_on, float(self.damp))
        if self.keep > 0:
            factor.scatter_(1, rank_on.topk(self.keep, dim=1).indices, 1.0)
        z = z.clone()
        z[:, -1] = z[:, -1] * factor[:, :, None].to(z.dtype)
        return z


@dataclass
class TextDeactivation:
    """AD-HH at the ``attn_pattern`` site of ``layer``: for each of ``heads`` whose last-query attention to the
    ``text`` keys sums to at least ``threshold``, those attention probabilities set to zero (not renormalised)."""

    layer: int
    heads: list[int]
    text: torch.Tensor  # bool [B, T]: the text after the image
    threshold: float
    site: str = "attn_pattern"

    def apply(self, p: torch.Tensor, cache) -> torch.Tensor:
        B, H, _, K = p.shape
        text = self.text.to(p.device)[:, None, :]  # [B, 1, K]
        mass = torch.where(text, p[:, :, -1, :], 0.0).sum(-1)  # [B, H]
        chosen = torch.zeros(B, H, dtype=torch.bool, device=p.device)
        chosen[:, self.heads] = True
        off = (chosen & (mass >= self.threshold))[:, :, None] & text  # [B, H, K]
        p = p.clone()
        p[:, :, -1, :] = p[:, :, -1, :].masked_fill(off, 0.0)
        return p


# ------------------------------------------------------------------------------------------ VCD's distortion
def diffusion_noise(x: torch.Tensor, step: int, generator: torch.Generator) -> torch.Tensor:
    """VCD's ``add_diffusion_noise``: the forward diffusion ``sqrt(abar_t) x + sqrt(1 - abar_t) eps`` at ``step`` of
    1000, betas ``sigmoid(linspace(-6, 6, 1000)) * (0.5e-2 - 1e-5) + 1e-5``; eps from ``generator``. A tile of
    [..., tiles, C, H, W] pixel values that is all zeros is a processor's padding (Idefics3 and SmolVLM tell their
    real images that way) and stays zero."""
    betas = torch.sigmoid(torch.linspace(-6, 6, 1000, dtype=torch.float64)) * (0.5e-2 - 1e-5) + 1e-5
    abar = torch.cumprod(1 - betas, 0)[int(step)]
    eps = torch.randn(x.shape, generator=generator, dtype=torch.float32)
    out = (abar.sqrt().float() * x.detach().float().cpu() + (1 - abar).sqrt().float() * eps).to(device=x.device,
                                                                                                 dtype=x.dtype)
    if x.dim() >= 4:
        padding = (x == 0).flatten(-3).all(-1)
        out = torch.where(padding[..., None, None, None], x, out)
    return out


def _generator(seed: int, *ids: str) -> torch.Generator:
    digest = hashlib.sha256(f"{int(seed)}:{'|'.join(ids)}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))


def distort(step: int, seed: int) -> Callable[[Encoded, Sequence[Sample]], Encoded]:
    """An ``EmbeddingCache`` transform: the pixel values noised (``diffusion_noise``), each image with its own
    generator seeded by ``seed`` and the sample's id; a packed batch without an image axis (Qwen2-VL's
    patches) with one generator seeded by the batch's ids."""
    def transform(enc: Encoded, samples: Sequence[Sample]) -> Encoded:
        inputs = dict(enc.inputs)
        pv = inputs.get("pixel_values")
        if pv is None:
            raise NotApplicableError("vcd: the processor gives no pixel_values to distort")
        if pv.shape[0] == len(samples):
            pv = torch.stack([diffusion_noise(pv[i], step, _generator(seed, s.id)) for i, s in enumerate(samples)])
        else:
            pv = diffusion_noise(pv, step, _generator(seed, *[s.id for s in samples]))
        inputs["pixel_values"] = pv
        return Encoded(inputs, enc.answer_ids, enc.target, enc.ids, enc.correct_ids)
    return transform


# ------------------------------------------------------------------------------------------ the methods
def pai(adapter, alpha: float, layers: list[int], gamma: float, beta: float) -> Applied:
    def make(batch: Batch) -> list:
        r = token_roles(batch, "pai")
        return [AttentionEdit(l, queries=r["last"], keys=r["image"], amplify=float(alpha)) for l in layers] \
            if alpha else []

    contrast = None
    if gamma != 1:
        def second(samples, batch: Batch) -> Embedded:
            token_roles(batch, "pai")  # refuses a batch without image tokens
            return image_free(batch.emb, batch.visual)
        contrast = Contrast(float(gamma) - 1, second, float(beta), log_probs=True, name="the image-free input")
    return Applied("pai", {"alpha": float(alpha), "layers": layers, "gamma": float(gamma), "beta": float(beta)},
                   f"pre-softmax scores of the last query to the image tokens, every head of {span(layers)} "
                   f"(s + {alpha:g}|s|); next-token log-probabilities contrasted with the image-free input "
                   f"(gamma {gamma:g}, cutoff {beta:g})",
                   {"forward_passes": 1 + (contrast is not None), "vision_passes": 1,
                    "note": "the second pass is the prompt without its image tokens" if contrast else ""},
                   edits=make, contrast=contrast)


def vaf(adapter, enhance: float, suppress: float, layers: list[int]) -> Applied:
    def make(batch: Batch) -> list:
        r = token_roles(batch, "vaf")
        if not bool(r["before"].any(1).all()):
            raise NotApplicableError(f"vaf: the model ({adapter.name}) puts no text before the image's tokens in "
                                     f"{int((~r['before'].any(1)).sum())} of {len(r['before'])} prompts: VAF suppresses "
                                     f"attention to the system prompt there")
        return [e for l in layers for e in (AttentionEdit(l, queries=r["after"], keys=r["image"], scale=float(enhance)),
                                            AttentionEdit(l, queries=r["after"], keys=r["before"],
                                                          scale=float(suppress)))]
    return Applied("vaf", {"enhance": float(enhance), "suppress": float(suppress), "layers": layers},
                   f"pre-softmax scores of the queries after the image, every head of {span(layers)}: to the image "
                   f"tokens x{enhance:g}, to the text before the image (system prompt) x{suppress:g}",
                   {"forward_passes": 1, "vision_passes": 1}, edits=make)


def spin(adapter, keep: float, damp: float, layers: list[int]) -> Applied:
    k = int(float(keep) * adapter.num_heads)  # the paper's int(routed_head * num_heads)

    def make(batch: Batch) -> list:
        image = token_roles(batch, "spin")["image"]
        return [e for l in layers for e in (Read(layers=[l], site="attn_scores"), SpinGate(l, image, k, float(damp)))]
    return Applied("spin", {"keep": float(keep), "damp": float(damp), "layers": layers, "kept_heads": k},
                   f"outputs of the heads at the last position, {span(layers)}: per question the {k} of "
                   f"{adapter.num_heads} heads of each layer with the most image attention kept, the others x{damp:g}",
                   {"forward_passes": 1, "vision_passes": 1}, edits=make)


def adhh(adapter, heads: list[tuple[int, int]], threshold: float, influence: torch.Tensor | None = None) -> Applied:
    check_heads(heads, adapter.num_layers, adapter.num_heads, "AD-HH's hallucination heads")
    by_layer: dict[int, list[int]] = {}
    for l, h in heads:
        by_layer.setdefault(int(l), []).append(int(h))

    def make(batch: Batch) -> list:
        text = token_roles(batch, "adhh")["after"]
        return [TextDeactivation(l, hs, text, float(threshold)) for l, hs in sorted(by_layer.items())]
    tensors = {"heads": torch.tensor([[int(l), int(h)] for l, h in heads], dtype=torch.long).reshape(-1, 2)}
    if influence is not None:
        tensors["influence"] = influence.float()
    return Applied("adhh", {"k": len(heads), "threshold": float(threshold), "heads": [list(map(int, h)) for h in heads]},
                   f"attention probabilities of the last query to the text after the image, {len(heads)} "
                   f"hallucination heads: zeroed where they sum to >= {threshold:g}",
                   {"forward_passes": 1, "vision_passes": 1}, edits=make, tensors=tensors)


def vcd(adapter, alpha: float, beta: float, noise_step: int, seed: int, cache_enabled: bool = True) -> Applied:
    distorted = EmbeddingCache(adapter, enabled=cache_enabled, transform=distort(int(noise_step), int(seed)))

    def second(samples, batch: Batch) -> Embedded:
        return distorted.batch(list(samples)).emb
    contrast = Contrast(float(alpha), second, float(beta), log_probs=False, name="the distorted image")
    return Applied("vcd", {"alpha": float(alpha), "beta": float(beta), "noise_step": int(noise_step), "seed": int(seed)},
                   f"next-token logits contrasted with the same prompt on the image noised at diffusion step "
                   f"{noise_step} (alpha {alpha:g}, cutoff {beta:g})",
                   {"forward_passes": 2, "vision_passes": 2, "note": "the second pass encodes the distorted image"},
                   contrast=contrast)


# ------------------------------------------------------------------------------------------ AD-HH's attribution
def hallucination_influence(prob: torch.Tensor, correct: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """AD-HH's contrastive influence [L, H] from the exact engine's per-sample values: the mean over wrong answers
    of ``p_ablated - p`` (how much the head raised the wrong answer, read off the gold answer's probability p)
    minus the mean over right answers of ``p - p_ablated`` (how much it raised the right one)."""
    correct = correct.bool()
    drop = prob.double()[:, None, None] - ablated.double()
    return ((-drop[~correct]).mean(0) - drop[correct].mean(0)).float()


def estimate_adhh(job, name: str) -> Estimate | None:
    """AD-HH's hallucination heads on ``job``'s train split (``modulation.attribution_limit`` samples, zero ablation,
    the exact engine; progress under ``<out_dir>/progress-adhh``): the top ``modulation.adhh_k`` by the
    contrastive influence; None (said) when the split has no wrong or no right answer."""
    from vseam.attribution.scores import top_k
    from vseam.modulation.job import say
    from vseam.modulation.run import attribution_subset, sweep_heads
    from vseam.validate import say_k_fits

    cfg, a = job.cfg, job.adapter
    mc = cfg.modulation
    k = say_k_fits(int(mc.adhh_k), "modulation.adhh_k", a.num_layers, a.num_heads, say)
    subset = attribution_subset(job.splits["train"], mc.attribution_limit, int(cfg.seed))
    acfg = cfg.attribution.copy()
    acfg.method, acfg.ablation, acfg.rescore_top_k, acfg.tower = "exact", "zero", 0, "language"
    say(f"[adhh] attributing heads on {len(subset)} train samples (zero ablation of each of the "
        f"{a.num_layers * a.num_heads} heads, exact)")
    scores = sweep_heads(cfg, acfg, a, subset, job.cache, job.out / "progress-adhh", job.fabric)
    ps = scores.per_sample
    n_wrong, n_right = int((~ps.correct.bool()).sum()), int(ps.correct.bool().sum())
    if n_wrong == 0 or n_right == 0:
        say(f"[adhh] skipped: of {len(ps.ids)} train samples the model answers {n_right} right and {n_wrong} wrong; "
            f"AD-HH's attribution contrasts both")
        return None
    influence = hallucination_influence(ps.prob, ps.correct, ps.ablated)
    heads = [(r["layer"], r["head"]) for r in top_k(influence, k)]
    by_id = {s.id: s for s in subset}
    applied = adhh(a, heads, float(mc.adhh_threshold), influence)
    return Estimate(applied.hyperparameters, applied.tensors, [by_id[i] for i in ps.ids if i in by_id],
                    f"head attribution on {len(ps.ids)} train samples: 1 + {a.num_layers * a.num_heads} zero-ablated "
                    f"forward passes each",
                    {"attributed_on": {"n": len(ps.ids), "wrong": n_wrong, "right": n_right},
                     "influence_of_heads": [float(influence[l, h]) for l, h in heads]})


# ------------------------------------------------------------------------------------------ registered
def _layers(mc, key: str, adapter) -> list[int]:
    return model_layers(mc[key], int(mc.field_depth), adapter.num_layers)


PAI = Method(build=lambda a, hp, t, cached: pai(a, hp["alpha"], list(hp["layers"]), hp["gamma"], hp["beta"]),
             configure=lambda a, mc, seed: {"alpha": float(mc.pai_alpha), "layers": _layers(mc, "pai_layers", a),
                                            "gamma": float(mc.pai_gamma), "beta": float(mc.pai_beta)})
VAF = Method(build=lambda a, hp, t, cached: vaf(a, hp["enhance"], hp["suppress"], list(hp["layers"])),
             configure=lambda a, mc, seed: {"enhance": float(mc.vaf_enhance), "suppress": float(mc.vaf_suppress),
                                            "layers": _layers(mc, "vaf_layers", a)})
SPIN = Method(build=lambda a, hp, t, cached: spin(a, hp["keep"], hp["damp"], list(hp["layers"])),
              configure=lambda a, mc, seed: {"keep": float(mc.spin_keep), "damp": float(mc.spin_damp),
                                             "layers": _layers(mc, "spin_layers", a)})
ADHH = Method(build=lambda a, hp, t, cached: adhh(a, [tuple(int(v) for v in row) for row in t["heads"].tolist()],
                                                  hp["threshold"], t.get("influence")),
              estimate=estimate_adhh, check=lambda job, batch: token_roles(batch, "adhh"))
VCD = Method(build=lambda a, hp, t, cached: vcd(a, hp["alpha"], hp["beta"], hp["noise_step"], hp["seed"], cached),
             configure=lambda a, mc, seed: {"alpha": float(mc.vcd_alpha), "beta": float(mc.vcd_beta),
                                            "noise_step": int(mc.vcd_noise_step), "seed": int(seed)},
             check=lambda job, batch: None)  # the pixel values only
