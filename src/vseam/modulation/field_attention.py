"""The field's attention-level hallucination methods, as rows of ``train.py`` (``modulation.methods``) and options of
``analyze.py eval`` (``eval.method``), all through the one intervention mechanism (``vseam.interventions``) and the
scorer's contrastive next-token scoring (``vseam.evaluation.score.Contrast``).

Every method here is training-free at test time and acts on one question's one forward pass (two for the
contrastive ones). The answer is one token, so each paper's decoding-time method reduces to the next-token
distribution at the answer position: an edit of "the current token's query" is an edit of the last position's
query, and contrastive decoding is a contrast of the next-token logits.

- ``pai``: PAI, "Paying More Attention to Image" (Liu, Zheng, Chen; ECCV 2024; github.com/LALBJ/PAI,
  ``attention.py`` and ``CFG.py``). In layers [2, 32) every head's pre-softmax score of the last query to each
  image token becomes ``s + alpha * |s|`` (alpha 0.2), and the next-token log-probabilities are contrasted with
  those of the image-free input, ``gamma * l(x) - (gamma - 1) * l(x')`` (gamma 1.1), under the plausibility
  cutoff 0.1 (``CFGLogits``). The image-free input here is the prompt's tokens without the image's (PAI's
  ``neg_promt``: the tokens before and after the image, joined), positions counted afresh; it runs without the
  attention edit (PAI sets ``use_cfg`` for it). Differences: one next-token step instead of sampling; the image
  span is the tokens the processor put there (``adapter.visual_token_mask``), not a fixed 576 from index 35.
- ``vaf``: Visual Amplification Fusion, ClearSight (Yin et al.; CVPR 2025; github.com/ustc-hyin/ClearSight,
  ``visaug/inference/AttnAdapter.py``). In the middle layers [9, 15) the pre-softmax scores of the queries after the
  image to the image tokens are multiplied by 1.15 and those to the system prompt (every token before the image)
  by 0.95. Differences: the paper's system prompt is LLaVA's 35-token one; here it is whatever text the model's
  prompt puts before the image (for LLaVA-1.5's SPEC prompt: ``<s> USER:``); on a model that puts none there
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
  train split's wrong answers. The project scores the gold answer's probability p (SPEC section 0), so the
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
model's depth (``model_layers``). Each method's file (``methods/<name>.safetensors``, ``save_method``) records
its hyperparameters as applied (and AD-HH's heads), so ``analyze.py eval eval.method=<name>
eval.checkpoint=<file>`` applies the same thing to other data.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence, get_args

import torch

from vseam.config import FieldAttentionMethod
from vseam.data.sample import Sample, sample_key
from vseam.evaluation.score import Contrast
from vseam.interventions import AttentionEdit, HeadShapeError, Read, check_heads
from vseam.interventions.checkpoint import load_method, save_method
from vseam.models.base import Embedded, Encoded, position_ids_from_mask
from vseam.models.cache import Batch, EmbeddingCache
from vseam.utils.errors import UserError

NAMES = get_args(FieldAttentionMethod)  # pai, vaf, spin, adhh, vcd: the choices of modulation.methods they add


class NotApplicableError(UserError, ValueError):
    """A method asked for on a model (or data) it does not apply to."""


# ------------------------------------------------------------------------------------------ positions
def model_layers(span: Sequence[int], depth: int, num_layers: int) -> list[int]:
    """The model's layers for a range ``[start, end)`` written for a ``depth``-layer model: each end scaled by
    ``num_layers / depth`` and rounded half up, at least one layer (the same share of the stack)."""
    start, end = (int(math.floor(int(v) * num_layers / int(depth) + 0.5)) for v in span)
    start = min(max(start, 0), num_layers - 1)
    return list(range(start, min(max(end, start + 1), num_layers)))


def token_roles(batch: Batch, method: str) -> dict[str, torch.Tensor]:
    """Bool [B, T] per role of each (left-padded) row: ``image`` (the image's tokens), ``before`` (text before the
    first image token: the system prompt), ``after`` (text after the last one: the question and the answer's
    template), ``last`` (the last position, where the answer is read)."""
    if batch.visual is None:
        raise NotApplicableError(f"{method}: the model's language-model inputs are not the processor's tokens, so "
                                 f"its image tokens cannot be found (adapter.visual_token_mask)")
    real = batch.emb.attention_mask.bool()
    image = batch.visual.to(real.device) & real
    if not bool(image.any(1).all()):
        raise NotApplicableError(f"{method}: {int((~image.any(1)).sum())} of {len(image)} questions have no image token in "
                                 f"the language model's input: the method acts on attention to the image")
    T = image.shape[1]
    idx = torch.arange(T, device=real.device)[None]
    first = torch.where(image, idx, T).min(1, keepdim=True).values
    last_image = torch.where(image, idx, -1).max(1, keepdim=True).values
    last = torch.zeros_like(real)
    last[:, -1] = True
    return {"image": image, "before": real & ~image & (idx < first), "after": real & ~image & (idx > last_image),
            "last": last}


def image_free(batch: Batch) -> Embedded:
    """The language model's input without the image's tokens (PAI's image-free prompt: the tokens before and after
    the image, joined), left-padded again, positions counted over the kept tokens as a text-only prompt's are."""
    emb = batch.emb
    keep = emb.attention_mask.bool() & ~batch.visual.to(emb.attention_mask.device)
    n = keep.sum(1)
    W = int(n.max())
    B = keep.shape[0]
    x = emb.inputs_embeds.new_zeros(B, W, emb.inputs_embeds.shape[-1])
    mask = emb.attention_mask.new_zeros(B, W)
    extra = {k: v.new_zeros(*v.shape[:-1], W) for k, v in emb.extra.items()}
    for i in range(B):
        k = int(n[i])
        x[i, W - k:] = emb.inputs_embeds[i, keep[i]]
        mask[i, W - k:] = 1
        for name, v in emb.extra.items():
            extra[name][i, ..., W - k:] = v[i][..., keep[i]]
    pos = position_ids_from_mask(mask)
    if emb.position_ids.dim() == 3:  # M-RoPE [B, k, T]: a text-only prompt's positions are the same on every axis
        pos = pos[:, None].expand(-1, emb.position_ids.shape[1], -1).contiguous()
    return Embedded(x, mask, pos.to(emb.position_ids.dtype), extra)


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


# ------------------------------------------------------------------------------------------ a method, applied
@dataclass
class Applied:
    """One method ready to score: ``for_batch(batch)`` makes its edits of a batch, ``contrast`` its second input;
    ``hyperparameters`` as applied, ``changes`` what it changes, ``cost`` its forward passes per question,
    ``tensors`` what it estimated (saved with it)."""

    name: str
    hyperparameters: dict[str, Any]
    changes: str
    cost: dict[str, Any]
    make: Callable[[Batch], list] = lambda batch: []  # noqa: E731
    contrast: Contrast | None = None
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def for_batch(self, batch: Batch) -> list:
        return self.make(batch)

    def summary(self) -> dict:
        """The fields of the method's row (``summary.json``) and of ``eval_results.json``."""
        return {"hyperparameters": self.hyperparameters, "changes": self.changes, "cost": self.cost, **self.extra}

    def save(self, path, adapter, extra: dict | None = None):
        return save_method(path, self.name, hyperparameters=self.hyperparameters, tensors=self.tensors,
                           model=adapter.name, num_layers=adapter.num_layers, num_heads=adapter.num_heads,
                           head_dim=adapter.head_dim, identity=adapter.identity, extra=extra)


def _span(layers: list[int]) -> str:
    return f"layer {layers[0]}" if len(layers) == 1 else f"layers {layers[0]}-{layers[-1]}"


def pai(adapter, alpha: float, layers: list[int], gamma: float, beta: float) -> Applied:
    def make(batch: Batch) -> list:
        r = token_roles(batch, "pai")
        return [AttentionEdit(l, queries=r["last"], keys=r["image"], amplify=float(alpha)) for l in layers] \
            if alpha else []

    contrast = None
    if gamma != 1:
        def second(samples, batch: Batch) -> Embedded:
            token_roles(batch, "pai")  # refuses a batch without image tokens
            return image_free(batch)
        contrast = Contrast(float(gamma) - 1, second, float(beta), log_probs=True, name="the image-free input")
    return Applied("pai", {"alpha": float(alpha), "layers": layers, "gamma": float(gamma), "beta": float(beta)},
                   f"pre-softmax scores of the last query to the image tokens, every head of {_span(layers)} "
                   f"(s + {alpha:g}|s|); next-token log-probabilities contrasted with the image-free input "
                   f"(gamma {gamma:g}, cutoff {beta:g})",
                   {"forward_passes": 1 + (contrast is not None), "vision_passes": 1,
                    "note": "the second pass is the prompt without its image tokens" if contrast else ""},
                   make, contrast)


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
                   f"pre-softmax scores of the queries after the image, every head of {_span(layers)}: to the image "
                   f"tokens x{enhance:g}, to the text before the image (system prompt) x{suppress:g}",
                   {"forward_passes": 1, "vision_passes": 1}, make)


def spin(adapter, keep: float, damp: float, layers: list[int]) -> Applied:
    k = int(float(keep) * adapter.num_heads)  # the paper's int(routed_head * num_heads)

    def make(batch: Batch) -> list:
        image = token_roles(batch, "spin")["image"]
        return [e for l in layers for e in (Read(layers=[l], site="attn_scores"), SpinGate(l, image, k, float(damp)))]
    return Applied("spin", {"keep": float(keep), "damp": float(damp), "layers": layers, "kept_heads": k},
                   f"outputs of the heads at the last position, {_span(layers)}: per question the {k} of "
                   f"{adapter.num_heads} heads of each layer with the most image attention kept, the others x{damp:g}",
                   {"forward_passes": 1, "vision_passes": 1}, make)


def adhh(adapter, heads: list[tuple[int, int]], threshold: float, influence: torch.Tensor | None = None,
         extra: dict | None = None) -> Applied:
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
                   {"forward_passes": 1, "vision_passes": 1}, make, None, tensors, dict(extra or {}))


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


# ------------------------------------------------------------------------------------------ from config / file
def from_config(name: str, adapter, mc, seed: int, cache_enabled: bool = True) -> Applied:
    """Method ``name`` from the ``modulation.*`` hyperparameters (training-free methods only)."""
    depth, L = int(mc.field_depth), adapter.num_layers
    if name == "pai":
        return pai(adapter, float(mc.pai_alpha), model_layers(mc.pai_layers, depth, L), float(mc.pai_gamma),
                   float(mc.pai_beta))
    if name == "vaf":
        return vaf(adapter, float(mc.vaf_enhance), float(mc.vaf_suppress), model_layers(mc.vaf_layers, depth, L))
    if name == "spin":
        return spin(adapter, float(mc.spin_keep), float(mc.spin_damp), model_layers(mc.spin_layers, depth, L))
    if name == "vcd":
        return vcd(adapter, float(mc.vcd_alpha), float(mc.vcd_beta), int(mc.vcd_noise_step), seed, cache_enabled)
    if name == "adhh":
        raise NotApplicableError("adhh attributes its heads on a train split (train.py): apply its file with "
                                 "eval.checkpoint=<run>/methods/adhh.safetensors")
    raise ValueError(f"unknown field method {name!r}; expected one of {NAMES}")


def from_file(name: str, path, adapter, allow_other_model: bool = False, cache_enabled: bool = True) -> Applied:
    """Method ``name`` as a ``train.py`` run saved it (``methods/<name>.safetensors``): the hyperparameters (layers
    as applied there) and what it estimated, checked to be made for this model."""
    tensors, info = load_method(path, adapter, name, allow_other_model=allow_other_model)
    hp = info["hyperparameters"]
    try:
        if name == "pai":
            out = pai(adapter, hp["alpha"], list(hp["layers"]), hp["gamma"], hp["beta"])
        elif name == "vaf":
            out = vaf(adapter, hp["enhance"], hp["suppress"], list(hp["layers"]))
        elif name == "spin":
            out = spin(adapter, hp["keep"], hp["damp"], list(hp["layers"]))
        elif name == "vcd":
            out = vcd(adapter, hp["alpha"], hp["beta"], hp["noise_step"], hp["seed"], cache_enabled)
        elif name == "adhh":
            heads = [tuple(int(v) for v in row) for row in tensors["heads"].tolist()]
            out = adhh(adapter, heads, hp["threshold"], tensors.get("influence"))
        else:
            raise ValueError(f"unknown field method {name!r}; expected one of {NAMES}")
    except KeyError as e:
        raise NotApplicableError(f"{name} file {path} lacks {e}: saved by another version of the method") from None
    bad = [l for l in out.hyperparameters.get("layers", []) if not 0 <= int(l) < adapter.num_layers]
    if bad:
        raise HeadShapeError(f"{name} file {path} names layers {bad}; the model has {adapter.num_layers}")
    out.extra["file"] = str(path)
    out.extra["seen"] = info["extra"].get("seen")
    return out


# ------------------------------------------------------------------------------------------ AD-HH's attribution
def hallucination_influence(prob: torch.Tensor, correct: torch.Tensor, ablated: torch.Tensor) -> torch.Tensor:
    """AD-HH's contrastive influence [L, H] from the exact engine's per-sample values: the mean over wrong answers
    of ``p_ablated - p`` (how much the head raised the wrong answer, read off the gold answer's probability p)
    minus the mean over right answers of ``p - p_ablated`` (how much it raised the right one)."""
    correct = correct.bool()
    drop = prob.double()[:, None, None] - ablated.double()
    return ((-drop[~correct]).mean(0) - drop[correct].mean(0)).float()


def attribute_adhh(job, k: int) -> tuple[list[tuple[int, int]], torch.Tensor, dict] | None:
    """Hallucination heads on ``job``'s train split (``modulation.attribution_limit`` samples, zero ablation, the
    exact engine; progress under ``<out_dir>/progress-adhh``); None (said) when the split has no wrong or no
    right answer."""
    from vseam.attribution.scores import top_k
    from vseam.modulation.job import say
    from vseam.modulation.run import attribution_subset, sweep_heads

    cfg = job.cfg
    subset = attribution_subset(job.splits["train"], cfg.modulation.attribution_limit, int(cfg.seed))
    acfg = cfg.attribution.copy()
    acfg.method, acfg.ablation, acfg.rescore_top_k, acfg.tower = "exact", "zero", 0, "language"
    say(f"[adhh] attributing heads on {len(subset)} train samples (zero ablation of each of the "
        f"{job.adapter.num_layers * job.adapter.num_heads} heads, exact)")
    scores = sweep_heads(cfg, acfg, job.adapter, subset, job.cache, job.out / "progress-adhh", job.fabric)
    ps = scores.per_sample
    n_wrong, n_right = int((~ps.correct.bool()).sum()), int(ps.correct.bool().sum())
    if n_wrong == 0 or n_right == 0:
        say(f"[adhh] skipped: of {len(ps.ids)} train samples the model answers {n_right} right and {n_wrong} wrong; "
            f"AD-HH's attribution contrasts both")
        return None
    influence = hallucination_influence(ps.prob, ps.correct, ps.ablated)
    heads = [(r["layer"], r["head"]) for r in top_k(influence, k)]
    by_id = {s.id: s for s in subset}
    info = {"attributed_on": {"n": len(ps.ids), "wrong": n_wrong, "right": n_right},
            "influence_of_heads": [float(influence[l, h]) for l, h in heads]}
    return heads, influence, info, {"train": [sample_key(by_id[i]) for i in ps.ids if i in by_id]}


# ------------------------------------------------------------------------------------------ train.py's rows
def check_applicable(job) -> None:
    """Refuse, before any method runs, a field method of ``modulation.methods`` the model does not apply to (one
    line naming the method and why), from a batch of two test questions."""
    names = [m for m in job.cfg.modulation.methods if m in NAMES and m != "vcd"]  # vcd needs pixel values only
    if not names:
        return
    batch = job.cache.batch(list(job.splits["test"][:2]))
    for name in names:
        if name == "adhh":
            token_roles(batch, name)
        else:
            from_config(name, job.adapter, job.cfg.modulation, int(job.cfg.seed)).for_batch(batch)


def run_method(job, method: str):
    """``train.py``'s row of a field method: applied (AD-HH: after its attribution on the train split) and scored
    on the test and validation splits; its file saved as ``<out_dir>/methods/<method>.safetensors``."""
    from vseam.modulation.job import Outcome, say
    from vseam.utils.ranks import is_rank_zero
    from vseam.validate import say_k_fits

    cfg, a = job.cfg, job.adapter
    mc = cfg.modulation
    seen = None
    if method == "adhh":
        k = say_k_fits(int(mc.adhh_k), "modulation.adhh_k", a.num_layers, a.num_heads, say)
        found = attribute_adhh(job, k)
        if found is None:
            return None
        heads, influence, info, seen = found
        n = info["attributed_on"]["n"]
        info["setup"] = (f"head attribution on {n} train samples: 1 + {a.num_layers * a.num_heads} zero-ablated forward "
                         f"passes each")
        applied = adhh(a, heads, float(mc.adhh_threshold), influence, info)
        applied.cost = {**applied.cost, "setup": info.pop("setup")}
    else:
        applied = from_config(method, a, mc, int(cfg.seed), bool(mc.cache_embeddings))
    test, val = job.evaluate(applied, contrast=applied.contrast)
    row = applied.summary()
    if is_rank_zero():
        path = applied.save(job.out / "methods" / f"{method}.safetensors", a,
                            extra={"data": cfg.data.name, **({"seen": seen} if seen else {})})
        row["file"] = str(path)
        say(f"[{method}] {applied.changes}; apply it to other data: python analyze.py eval eval.method={method} "
            f"eval.checkpoint={path}")
    return Outcome(test, val, 0, row)
