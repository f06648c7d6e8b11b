"""The field's activation-level hallucination methods (VHR, ICT, VTI), registered in ``field.METHODS``.

Each acts through the one intervention mechanism (``vseam.interventions``: the heads' outputs at ``z``, hidden
states, the vision tower's hidden states), with its paper's default hyperparameters (``modulation.vhr_*``,
``ict_*``, ``vti_*``; validated before the model loads, ``validate.check_field_methods``). What a method
estimates (ICT, VTI), it estimates on the train split only. The answer is one token, so each method acts on the
forward pass that predicts it (the papers' generation-time settings reduce to that pass).

- **VHR** (He et al., "Cracking the Code of Hallucination in LVLMs with Vision-aware Head Divergence", ACL 2025;
  github.com/jinghan1he/VHR): per question, in one forward pass of two rows (with the image, and the same prompt
  with the image's tokens removed), at each reinforced layer in turn: the vision-aware head divergence
  ``VHD = |A(image, text) - A(text)|`` of every head at the last position (Eq. 4), outliers zeroed where both VHD
  and ``TA = |A(text)|^2`` exceed their layer's mean + std (Eq. 6), and the heads with VHD above the layer's
  median scaled by alpha (Eq. 7), in both rows, at every position, before the next layer (the paper's
  "layer by layer"). Layers: the second and the last 14 of LLaVA's 32 (InstructBLIP: the last 18), scaled to the
  model's depth as every field method's layer range (``modulation.vhr_layers``, ``core.model_layers``), alpha 2.
  Followed: the paper's Section 3.2, Eqs. 4, 6, 7 and Algorithm 1 (the repository could not be read here).
- **ICT** (Chen et al., "ICT: Image-Object Cross-Level Trusted Intervention", CVPR 2025; github.com/THU-BPM/ICT,
  ``ICT/val_ict_pope.py``, ``ICT/get_vectors/*.py``): per head, the activations at the answer token of
  ``prompt + gold answer`` on the clean image (trusted) and on a degraded one (untrusted): the whole image
  Gaussian-blurred (image level), or only the queried object's box blurred (object level; the box is the
  sample's first ``object_positions`` entry: GQA's and the organism world's annotation, where the paper uses
  Grounding DINO; samples without one take no part in the object level). A logistic probe per head, 2-fold
  cross-validated, ranks the heads; the top ``num_heads`` of each level are shifted at the last position by
  ``alpha * std * u``, u the unit difference of the trusted and untrusted means, std that of the activations
  along u (``num_heads`` 256 of LLaVA-1.5-7B's 1024 heads, the same share of another model's: 12 of the
  organism's 48, ``core.model_heads``), alpha 8. The paper's formula shifts head outputs before W_o (here: site ``z``); its code edits
  ``o_proj``'s output viewed as 128 chunks of 32 (``num_heads = 128`` in ``val_ict_pope.py``). The code pairs
  "no" questions differently (image level: the wrong answer on the clean image; object level: the whole image
  blurred); here every sample contributes clean vs degraded. Probes: L2 logistic regression (C = 1, sklearn's
  default, solved exactly by Newton's method) instead of sklearn's saga.
- **VTI** (Liu, Ye, Zou, "Reducing Hallucinations in Vision-Language Models via Latent Space Steering", ICLR
  2025; github.com/shengliu66/VTI, ``vti_utils/utils.py``, ``vti_utils/llm_layers.py``): on ``num_demos`` train
  samples, the visual direction of each vision layer and token is the mean + first principal component of the
  differences between the hidden states averaged over ``num_trials`` copies of the image with ``mask_ratio`` of
  its patches set to the image's mean and those of the clean image; the textual direction is that of the
  language model's hidden states at the last token of ``prompt + gold answer`` minus ``prompt + a wrong
  answer`` (the paper's captions without and with hallucinated objects; here the answer and a wrong one: the
  opposite yes/no, or another answer word of the category). At inference each layer's MLP output x becomes
  ``|x| * normalize(x/|x| + 0.1 * alpha * d/|d|)`` (``VTILayer``), at every position, in the vision tower
  (alpha_image) and the language model (alpha_text). The code runs one PCA over the layers and tokens of a
  reshaped (not transposed) array; here one per layer and token. Defaults: the repository's experiment command
  (alpha 0.9 / 0.9, 70 demos, mask ratio 0.99, 50 trials).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from vseam.data.sample import MissingImageError, Sample, load_image
from vseam.evaluation.score import yes_no_forms
from vseam.interventions import HeadShapeError, Read, Steer, intervene
from vseam.models.base import Embedded
from vseam.models.cache import Batch
from vseam.modulation.field.core import (
    Applied,
    Estimate,
    Method,
    NotApplicableError,
    image_free,
    model_heads,
    model_layers,
    token_roles,
)
from vseam.modulation.job import Job, say

VTI_SCALE = 0.1  # VTILayer's fixed factor on the direction (vti_utils/llm_layers.py)
ICT_LEVELS = ("image", "object")


# ------------------------------------------------------------------------------------- the LM inputs
def _left_pad(emb: Embedded, T: int) -> Embedded:
    pad = T - emb.attention_mask.shape[1]
    if pad == 0:
        return emb
    x = emb.inputs_embeds
    return Embedded(torch.cat([x.new_zeros(x.shape[0], pad, x.shape[-1]), x], 1),
                    torch.cat([emb.attention_mask.new_zeros(x.shape[0], pad), emb.attention_mask], 1),
                    torch.cat([emb.position_ids.new_zeros(*emb.position_ids.shape[:-1], pad), emb.position_ids], -1),
                    {k: torch.cat([v.new_zeros(*v.shape[:-1], pad), v], -1) for k, v in emb.extra.items()})


def stack_rows(a: Embedded, b: Embedded) -> Embedded:
    """The rows of ``a`` then those of ``b`` in one left-padded batch."""
    T = max(a.attention_mask.shape[1], b.attention_mask.shape[1])
    a, b = _left_pad(a, T), _left_pad(b, T)
    return Embedded(torch.cat([a.inputs_embeds, b.inputs_embeds]), torch.cat([a.attention_mask, b.attention_mask]),
                    torch.cat([a.position_ids, b.position_ids]),
                    {k: torch.cat([a.extra[k], b.extra[k]]) for k in a.extra})


def append_token(adapter, emb: Embedded, token_ids: torch.Tensor) -> Embedded:
    """``emb`` with one text token per row appended (``token_ids`` [B]: e.g. the answer's first token), at the
    position after the row's largest (a text token after an image, as M-RoPE counts it); extras zero (text)."""
    ids = token_ids.to(emb.inputs_embeds.device).long()
    if bool((ids < 0).any()):
        raise ValueError("append_token: a row has no token to append (a sample without an answer)")
    tok = adapter.model.get_input_embeddings()(ids)[:, None].to(emb.inputs_embeds.dtype)
    pos = emb.position_ids
    nxt = pos.reshape(pos.shape[0], -1).amax(-1) + 1
    nxt = nxt.reshape(-1, *([1] * (pos.dim() - 1))).expand(*pos.shape[:-1], 1)
    return Embedded(torch.cat([emb.inputs_embeds, tok], 1),
                    torch.cat([emb.attention_mask, emb.attention_mask.new_ones(ids.shape[0], 1)], 1),
                    torch.cat([pos, nxt], -1),
                    {k: torch.cat([v, v.new_zeros(*v.shape[:-1], 1)], -1) for k, v in emb.extra.items()})


@dataclass
class _Last:
    """An item of ``intervene`` that keeps the last position of a site at one layer ([B, ...], float32, CPU)."""

    layer: int
    site: str
    store: dict

    def apply(self, x: torch.Tensor, cache) -> torch.Tensor:
        self.store[self.layer] = x[:, -1].detach().float().cpu()
        return x


def _draw(samples: Sequence, n: int | None, seed: int) -> list:
    """At most ``n`` of ``samples`` (all when None or fewer), a seeded draw kept in the split's order."""
    samples = list(samples)
    if n is None or len(samples) <= int(n):
        return samples
    keep = sorted(random.Random(seed).sample(range(len(samples)), int(n)))
    return [samples[i] for i in keep]


def _images(samples: Sequence[Sample], method: str) -> tuple[list[Sample], list]:
    """The samples whose image opens and their images; the others are said (a counted skip)."""
    kept, images, missing = [], [], []
    for s in samples:
        try:
            images.append(load_image(s))
        except MissingImageError as e:
            missing.append(str(e))
            continue
        kept.append(s)
    if missing:
        say(f"[{method}] skipped {len(missing)} of {len(samples)} train samples whose image is missing (first: {missing[0]})")
    return kept, images


# ------------------------------------------------------------------------------------------- VHR
class VisionAwareHeads:
    """VHR at one layer (site ``z``) of a batch of 2B rows: B questions with their image, then the same B without
    it (``core.image_free``). At the last position: VHD (Eq. 4), its outliers zeroed (Eq. 6), the heads above the
    layer's median VHD (Eq. 7) scaled by ``alpha`` in both rows of the question, at every position. ``record``
    (a dict) collects the chosen heads per layer, bool [B, H] per batch."""

    site = "z"

    def __init__(self, layer: int, alpha: float, record: dict | None = None):
        self.layer, self.alpha, self.record = int(layer), float(alpha), record

    def apply(self, z: torch.Tensor, cache) -> torch.Tensor:
        N = z.shape[0]
        if N % 2:
            raise ValueError(f"VHR at layer {self.layer}: a batch of {N} rows is not questions with and without "
                             f"their image")
        B = N // 2
        with_image, text = z[:B, -1].float(), z[B:, -1].float()  # [B, H, D]
        vhd = (with_image - text).norm(dim=-1)  # [B, H]
        ta = text.pow(2).sum(-1)
        outlier = ((vhd > vhd.mean(-1, keepdim=True) + vhd.std(-1, keepdim=True))
                   & (ta > ta.mean(-1, keepdim=True) + ta.std(-1, keepdim=True)))
        vhd = vhd.masked_fill(outlier, 0.0)
        chosen = vhd > vhd.median(-1, keepdim=True).values
        if self.record is not None:
            self.record.setdefault(self.layer, []).append(chosen.cpu())
        scale = torch.where(chosen, self.alpha, 1.0).to(z.dtype).repeat(2, 1)  # [2B, H]
        return z * scale[:, None, :, None]


class VisionAwareForward:
    """VHR's forward of a batch (``Applied.forward``): the B questions with their image and the same B without it
    (``core.image_free``) in one batch of 2B rows, ``VisionAwareHeads`` at every reinforced layer; the logits of
    the B questions with their image. ``record``: the heads chosen per layer (bool [B, H] per batch)."""

    def __init__(self, adapter, layers: Sequence[int], alpha: float):
        self.adapter, self.layers, self.alpha = adapter, [int(l) for l in layers], float(alpha)
        self.record: dict[int, list[torch.Tensor]] = {}

    def __call__(self, batch: Batch) -> torch.Tensor:
        token_roles(batch, "vhr")  # refuses rows without image tokens: VHD compares with the image-free row
        both = stack_rows(batch.emb, image_free(batch.emb, batch.visual))
        with intervene(self.adapter, *[VisionAwareHeads(l, self.alpha, self.record) for l in self.layers]):
            return self.adapter.lm_logits(both)[:batch.target.shape[0]]

    def observed(self) -> dict:
        """The row's account of the heads it chose: per layer the mean number a question and each head's share."""
        chosen = {l: torch.cat(v).float() for l, v in sorted(self.record.items())}
        return {"heads_per_layer": {str(l): round(float(c.sum(1).mean()), 3) for l, c in chosen.items()},
                "head_frequency": {str(l): [round(float(x), 4) for x in c.mean(0)] for l, c in chosen.items()}}


def vhr(adapter, alpha: float, layers: Sequence[int]) -> Applied:
    """VHR (He et al., ACL 2025, github.com/jinghan1he/VHR): per question, the vision-aware heads of each reinforced
    layer (VHD above the layer's median, outliers zeroed) scaled by ``alpha``; no data, two rows of the language
    model per question (with and without the image)."""
    layers = sorted(int(l) for l in layers)
    fwd = VisionAwareForward(adapter, layers, alpha)
    return Applied("vhr", {"alpha": float(alpha), "layers": layers},
                   f"the outputs of the vision-aware half of the heads of layers {layers} (chosen per question), "
                   f"times {float(alpha)}",
                   {"forward_passes": 2, "vision_passes": 1,
                    "note": "one pass of two rows: the question with and without its image's tokens"},
                   forward=fwd, observed=fwd.observed)


def vhr_configure(adapter, mc, seed: int) -> dict:
    """VHR's layers: ``modulation.vhr_layers`` scaled to the model's depth and, with ``vhr_layer_one``, the second."""
    layers = set(model_layers(mc.vhr_layers, int(mc.field_depth), adapter.num_layers))
    if bool(mc.vhr_layer_one) and adapter.num_layers > 1:
        layers.add(1)
    return {"alpha": float(mc.vhr_alpha), "layers": sorted(layers)}


# ------------------------------------------------------------------------------------------- tensors
def _hidden_size(adapter) -> int:
    return int(adapter.model.config.get_text_config().hidden_size)


def check_tensors(method: str, tensors: dict[str, torch.Tensor], adapter) -> None:
    """Raise ``HeadShapeError`` when a method's tensors do not fit ``adapter`` beyond its L x H x D (which
    ``load_method`` checks): VTI's directions of the language model [L, d] and of the vision tower [Lv, T, dv],
    ICT's [L, H, D]."""
    want = {}
    if method == "vti":
        if "text_direction" in tensors:
            want["text_direction"] = (adapter.num_layers, _hidden_size(adapter))
        if "vision_direction" in tensors:
            v = adapter.vision
            want["vision_direction"] = (v.num_layers, None, int(v.o_proj(0).out_features))
    elif method == "ict":
        for level in ICT_LEVELS:
            if f"{level}_direction" in tensors:
                want[f"{level}_direction"] = (adapter.num_layers, adapter.num_heads, adapter.head_dim)
    for name, shape in want.items():
        got = tuple(tensors[name].shape)
        if len(got) != len(shape) or any(w is not None and g != w for g, w in zip(got, shape)):
            raise HeadShapeError(f"{method}: {name} of shape {list(got)} does not fit this model "
                                 f"({[s if s is not None else 'T' for s in shape]}): it was made for a model of "
                                 f"another shape")


# ------------------------------------------------------------------------------------------- ICT
def _box(sample: Sample) -> tuple[int, int, int, int] | None:
    """The queried object's box (x0, y0, x1, y1): the first ``object_positions`` entry, when the sample has one."""
    boxes = (sample.meta or {}).get("object_positions") or []
    if not boxes:
        return None
    b = boxes[0]
    x0, y0 = int(math.floor(b["x"])), int(math.floor(b["y"]))
    x1, y1 = int(math.ceil(b["x"] + b["w"])), int(math.ceil(b["y"] + b["h"]))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def degrade(image, radius: float, box: tuple[int, int, int, int] | None = None):
    """ICT's untrusted image: Gaussian-blurred whole (image level) or inside ``box`` only (object level)."""
    from PIL import ImageFilter

    blurred = image.filter(ImageFilter.GaussianBlur(radius=radius))
    if box is None:
        return blurred
    x0, y0 = max(0, box[0]), max(0, box[1])
    x1, y1 = min(image.width, box[2]), min(image.height, box[3])
    out = image.copy()
    if x1 > x0 and y1 > y0:
        out.paste(blurred.crop((x0, y0, x1, y1)), (x0, y0))
    return out


@torch.no_grad()
def head_activations(adapter, samples: Sequence[Sample], images: Sequence, batch_size: int) -> torch.Tensor:
    """Every head's output (site ``z``) at the answer token of ``prompt + gold answer``: [N, L, H, D] (CPU)."""
    out = []
    for i in range(0, len(samples), batch_size):
        enc = adapter.encode(samples[i:i + batch_size], images=images[i:i + batch_size]).to(adapter.device)
        emb = append_token(adapter, adapter.embed(enc), enc.target)
        store: dict = {}
        with intervene(adapter, *[_Last(l, "z", store) for l in range(adapter.num_layers)]):
            adapter.lm_hidden(emb)
        out.append(torch.stack([store[l] for l in range(adapter.num_layers)], 1))
    return torch.cat(out)


def fit_logistic(X: torch.Tensor, y: torch.Tensor, C: float = 1.0, max_iter: int = 100,
                 tol: float = 1e-9) -> tuple[torch.Tensor, torch.Tensor]:
    """P independent L2-regularised logistic regressions (sklearn's objective, intercept unpenalised:
    ``0.5 |w|^2 + C * sum log-loss``), solved together by damped Newton steps. ``X`` [P, N, D], ``y`` [N] in
    {0, 1}; returns ``w`` [P, D], ``b`` [P]."""
    X = X.double()
    y = y.double().to(X.device)
    P, N, D = X.shape
    Xa = torch.cat([X, X.new_ones(P, N, 1)], -1)
    pen = X.new_ones(D + 1)
    pen[-1] = 0.0
    theta = X.new_zeros(P, D + 1)

    def objective(th):
        s = torch.einsum("pnd,pd->pn", Xa, th)
        return C * (torch.nn.functional.softplus(s) - y * s).sum(-1) + 0.5 * (pen * th * th).sum(-1)

    for _ in range(max_iter):
        s = torch.einsum("pnd,pd->pn", Xa, theta)
        p = torch.sigmoid(s)
        grad = C * torch.einsum("pn,pnd->pd", p - y, Xa) + pen * theta
        hess = C * (Xa * (p * (1 - p))[..., None]).transpose(1, 2) @ Xa + torch.diag_embed(pen + 1e-10).expand(P, -1, -1)
        step = torch.linalg.solve(hess, grad)
        f0, dec, t = objective(theta), (grad * step).sum(-1), X.new_ones(P)
        for _ in range(60):  # backtracking (Armijo), each problem on its own
            ok = objective(theta - t[:, None] * step) <= f0 - 1e-4 * t * dec
            if bool(ok.all()):
                break
            t = torch.where(ok, t, t / 2)
        theta = theta - t[:, None] * step
        if float((t[:, None] * step).abs().max()) < tol:
            break
    return theta[:, :D], theta[:, D]


def probe_accuracy(trusted: torch.Tensor, untrusted: torch.Tensor, seed: int, chunk: int = 64) -> torch.Tensor:
    """ICT's head ranking: per unit (``trusted`` [N, P, D], ``untrusted`` [M, P, D]) the mean held-out accuracy of a
    logistic probe telling the two apart, over 2 folds of a seeded shuffle (the code's ``KFold(2)``): [P]. The
    units are fitted ``chunk`` at a time (memory: a 7B model has 1024 heads)."""
    y = torch.cat([torch.zeros(len(trusted)), torch.ones(len(untrusted))]).double()
    g = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(y), generator=g)
    y = y[perm]
    half = (len(y) + 1) // 2  # KFold(2): the first fold takes the odd sample
    folds = [(slice(half, None), slice(0, half)), (slice(0, half), slice(half, None))]
    P = trusted.shape[1]
    acc = torch.zeros(P, dtype=torch.float64)
    for p0 in range(0, P, chunk):
        sl = slice(p0, p0 + chunk)
        X = torch.cat([trusted[:, sl], untrusted[:, sl]])[perm].double()
        for train, test in folds:
            w, b = fit_logistic(X[train].transpose(0, 1), y[train])
            pred = (torch.einsum("npd,pd->np", X[test], w) + b) > 0
            acc[sl] += (pred == y[test, None].bool()).double().mean(0) / len(folds)
    return acc


def ict_level(trusted: torch.Tensor, untrusted: torch.Tensor, num_heads: int, seed: int) -> dict[str, torch.Tensor]:
    """One ICT level from activations [N, L, H, D] (trusted) and [M, L, H, D] (untrusted): the unit direction of
    every head (trusted mean minus untrusted mean), the std of all activations along it, the probes' accuracy
    and the ``num_heads`` heads of highest accuracy (``selected``)."""
    N, L, H, D = trusted.shape
    t, u = trusted.reshape(N, L * H, D), untrusted.reshape(len(untrusted), L * H, D)
    com = t.mean(0, dtype=torch.float64) - u.mean(0, dtype=torch.float64)
    unit = com / com.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    proj = torch.cat([torch.einsum("npd,pd->np", x.double(), unit) for x in (t, u)])
    std = proj.std(0, unbiased=False)
    acc = probe_accuracy(t, u, seed)
    top = torch.sort(acc, descending=True, stable=True).indices[:num_heads]
    selected = torch.zeros(L * H, dtype=torch.uint8)
    selected[top] = 1
    return {"direction": unit.reshape(L, H, D).float(), "std": std.reshape(L, H).float(),
            "accuracy": acc.reshape(L, H).float(), "selected": selected.reshape(L, H)}


def estimate_ict(job: Job, name: str) -> Estimate | None:
    """ICT's directions and heads on ``modulation.ict_samples`` train samples: the heads whose probes best tell clean
    from blurred images (whole image; the queried object's box); None (said) where the data cannot give them."""
    a, mc, seed = job.adapter, job.cfg.modulation, int(job.cfg.seed)
    bs, radius = int(job.cfg.data.batch_size), float(mc.ict_blur_radius)
    levels = list(ICT_LEVELS) if mc.ict_type == "both" else [str(mc.ict_type)]
    subset, images = _images(_draw(job.splits["train"], mc.ict_samples, seed), name)
    boxed = [i for i, s in enumerate(subset) if _box(s) is not None]
    if "object" in levels and len(boxed) < 2:
        why = (f"the object level needs the queried object's box (object_positions, as GQA and the organism world "
               f"annotate; the paper detects it with Grounding DINO): {len(boxed)} of {len(subset)} train samples have one")
        if levels == ["object"]:
            say(f"[ict] refused: {why}")
            return None
        say(f"[ict] {why}: only the image level runs (modulation.ict_type=image says so without this note)")
        levels = ["image"]
    if len(subset) < 4:
        say(f"[ict] refused: {len(subset)} readable train samples; the 2-fold probes need at least 4")
        return None
    depth, per_layer = int(mc.field_depth), int(mc.field_heads)
    k = model_heads(int(mc.ict_num_heads), depth, per_layer, a.num_layers, a.num_heads)
    if k != int(mc.ict_num_heads):
        say(f"[ict] modulation.ict_num_heads={mc.ict_num_heads} of the {depth * per_layer} heads of a "
            f"modulation.field_depth x field_heads = {depth} x {per_layer} model is {k} of this model's "
            f"{a.num_layers * a.num_heads} (the same share) per level")
    say(f"[ict] estimating the {' and '.join(levels)} level directions on {len(subset)} train samples")
    clean = head_activations(a, subset, images, bs)
    tensors, row = {}, {}
    for level in levels:
        if level == "image":
            trusted, untrusted = clean, head_activations(a, subset, [degrade(im, radius) for im in images], bs)
        else:
            trusted = clean[boxed]
            untrusted = head_activations(a, [subset[i] for i in boxed],
                                         [degrade(images[i], radius, _box(subset[i])) for i in boxed], bs)
        res = ict_level(trusted, untrusted, k, seed)
        tensors.update({f"{level}_{key}": v for key, v in res.items()})
        sel = res["selected"].nonzero().tolist()
        row[f"{level}_pairs"] = int(len(trusted))
        row[f"{level}_heads"] = sorted(sel, key=lambda lh: -float(res["accuracy"][lh[0], lh[1]]))
        row[f"{level}_probe_accuracy"] = {"max": round(float(res["accuracy"].max()), 4),
                                          "mean_selected": round(float(res["accuracy"][res["selected"].bool()].mean()), 4)}
    row["fixed_params"] = int(sum(int(tensors[f"{lv}_selected"].sum()) for lv in levels) * a.head_dim)
    hyper = {"alpha": float(mc.ict_alpha), "num_heads": k, "type": str(mc.ict_type), "levels": levels,
             "blur_radius": radius, "samples": len(subset)}
    return Estimate(hyper, tensors, subset,
                    f"{1 + len(levels)} forward passes per train sample (clean, "
                    f"{' and '.join(lv + '-blurred' for lv in levels)}) and 2 probes per head and level", row)


def ict(adapter, hyper: dict, tensors: dict[str, torch.Tensor]) -> Applied:
    """ICT (Chen et al., CVPR 2025, github.com/THU-BPM/ICT) from what it estimated: the selected heads of each level
    shifted at the last position by ``alpha`` x std x the unit clean-minus-blurred direction."""
    check_tensors("ict", tensors, adapter)
    L, H = adapter.num_layers, adapter.num_heads
    shift = torch.zeros(L, H, adapter.head_dim)
    for level in hyper["levels"]:
        sel = tensors[f"{level}_selected"].bool()
        shift += sel[..., None] * tensors[f"{level}_std"][..., None] * tensors[f"{level}_direction"]
    edits = [Steer(l, shift[l].to(adapter.device), site="z", strength=float(hyper["alpha"]), positions="last")
             for l in range(L) if bool(shift[l].abs().sum() > 0)]
    levels = list(hyper["levels"])
    return Applied("ict", dict(hyper),
                   f"the answer position's output of {hyper['num_heads']} heads per level ({', '.join(levels)}), shifted",
                   {"forward_passes": 1, "vision_passes": 1}, edits=lambda batch: edits, tensors=dict(tensors))


# ------------------------------------------------------------------------------------------- VTI
def pca_direction(diffs: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """VTI's direction of each group from differences [N, G, M] (N demos): the mean difference plus the first
    principal component (unit, its sign as ``svd_flip`` sets it: the demo of largest |score| scores positive),
    [G, M] (``vti_utils/utils.py``, ``obtain_*_vti``: ``components_.sum(1) + mean_``); ``chunk`` groups at a time."""
    out = []
    for g0 in range(0, diffs.shape[1], chunk):
        X = diffs[:, g0:g0 + chunk].transpose(0, 1).double()  # [G, N, M]
        mean = X.mean(1, keepdim=True)
        U, _, Vh = torch.linalg.svd(X - mean, full_matrices=False)
        u0 = U[:, :, 0]  # [G, N]
        sign = torch.sign(u0.gather(1, u0.abs().argmax(1, keepdim=True)))  # [G, 1]
        out.append((mean[:, 0] + sign * Vh[:, 0]).float())
    return torch.cat(out)


def wrong_answer(sample: Sample, answers_by_category: dict[str, list[str]], rng: random.Random) -> str | None:
    """VTI's hallucinated counterpart of the gold answer: the opposite yes/no (in the gold's case), else another
    answer word of the sample's category (seeded draw); None when there is none."""
    forms = yes_no_forms(sample.answer)
    if forms is not None:
        return forms[1] if sample.answer.strip().lower() == "yes" else forms[0]
    others = [w for w in answers_by_category.get(sample.category or "", []) if w.lower() != (sample.answer or "").lower()]
    return rng.choice(others) if others else None


def _vision_refusal(adapter, sample: Sample) -> str | None:
    """Why VTI's visual direction (masked patches of a [C, H, W] image, one direction per vision token) does not
    apply to ``adapter``; None when it does."""
    try:
        _ = adapter.vision  # raises for a model without a vision tower
    except ValueError as e:
        return f"no vision tower to steer ({e})"
    pixels = adapter.encode([sample]).inputs.get("pixel_values")
    patch = adapter.patch_size
    if pixels is None or pixels.dim() != 4:
        return (f"{adapter.arch}'s processor gives pixel_values of shape {None if pixels is None else tuple(pixels.shape)}, "
                f"not one [C, H, W] image a sample (tiles or packed patches), whose patches VTI masks")
    if not patch or pixels.shape[-1] % patch or pixels.shape[-2] % patch:
        return f"the vision tower's patch size ({patch}) does not tile the {tuple(pixels.shape[-2:])} image"
    return None


def masked_copies(pixels: torch.Tensor, patch: int, ratio: float, trials: int, generator: torch.Generator) -> torch.Tensor:
    """``trials`` copies of one image [C, H, W] with ``int(ratio * patches)`` random patches set to the image's
    per-channel mean (``vti_utils/utils.py``, ``mask_patches``): [trials, C, H, W]."""
    C, H, W = pixels.shape
    rows, cols = H // patch, W // patch
    n = rows * cols
    k = int(ratio * n)
    masked = torch.zeros(trials, n, dtype=torch.bool)
    for t in range(trials):
        masked[t, torch.randperm(n, generator=generator)[:k]] = True
    where = masked.reshape(trials, rows, cols).repeat_interleave(patch, 1).repeat_interleave(patch, 2)
    where = torch.nn.functional.pad(where, (0, W - cols * patch, 0, H - rows * patch))
    mean = pixels.float().mean(dim=(1, 2)).to(pixels.dtype)
    return torch.where(where[:, None], mean[None, :, None, None], pixels[None])


@torch.no_grad()
def _vision_states(adapter, enc) -> torch.Tensor:
    """Every vision layer's output for the images of ``enc``: [B, Lv, T, dv] (CPU, float32)."""
    with intervene(adapter.vision, Read(site="resid_post")) as cache:
        adapter.embed(enc)
    return cache.stack("resid_post").float().cpu().transpose(0, 1)


@torch.no_grad()
def visual_direction(adapter, demos: Sequence[Sample], images: Sequence, ratio: float, trials: int, seed: int,
                     batch_size: int) -> torch.Tensor:
    """VTI's visual direction [Lv, T, dv]: per layer and token, mean + first principal component over the demos of
    (hidden state averaged over masked copies) minus (hidden state of the clean image)."""
    g = torch.Generator().manual_seed(int(seed))
    diffs = []
    for s, im in zip(demos, images):
        enc = adapter.encode([s], images=[im]).to(adapter.device)
        clean = _vision_states(adapter, enc)[0]
        copies = masked_copies(enc.inputs["pixel_values"][0].cpu(), int(adapter.patch_size), ratio, trials, g)
        total = torch.zeros_like(clean)
        for i in range(0, trials, batch_size):
            part = copies[i:i + batch_size]
            inputs = {k: v.repeat(len(part), *([1] * (v.dim() - 1))) for k, v in enc.inputs.items()}
            inputs["pixel_values"] = part.to(adapter.device)
            total += _vision_states(adapter, type(enc)(inputs, enc.answer_ids * len(part), enc.target.repeat(len(part)))).sum(0)
        diffs.append(total / trials - clean)
    d = torch.stack(diffs)  # [N, Lv, T, dv]
    N, Lv, T, dv = d.shape
    return pca_direction(d.reshape(N, Lv * T, dv)).reshape(Lv, T, dv)


@torch.no_grad()
def _lm_states(adapter, samples, images, tokens: torch.Tensor) -> torch.Tensor:
    """The language model's hidden states at a token appended to each prompt: the embedding (layer 0's input)
    and every layer's output, [B, L + 1, d] (CPU, float32)."""
    enc = adapter.encode(samples, images=images).to(adapter.device)
    emb = append_token(adapter, adapter.embed(enc), tokens)
    store_pre: dict = {}
    store: dict = {}
    with intervene(adapter, _Last(0, "resid_pre", store_pre),
                   *[_Last(l, "resid_post", store) for l in range(adapter.num_layers)]):
        adapter.lm_hidden(emb)
    return torch.stack([store_pre[0]] + [store[l] for l in range(adapter.num_layers)], 1)


def textual_direction(adapter, demos: Sequence[Sample], images: Sequence, wrong: Sequence[str],
                      batch_size: int) -> torch.Tensor:
    """VTI's textual direction [L, d]: mean + first principal component over the demos of the hidden states (all
    layers flattened, the embeddings included as in the code) at the gold answer minus those at a wrong answer."""
    diffs = []
    for i in range(0, len(demos), batch_size):
        chunk, ims = list(demos[i:i + batch_size]), list(images[i:i + batch_size])
        gold = torch.tensor([adapter.answer_tokens(s.answer)[1] for s in chunk])
        bad = torch.tensor([adapter.answer_tokens(w)[1] for w in wrong[i:i + batch_size]])
        diffs.append(_lm_states(adapter, chunk, ims, gold) - _lm_states(adapter, chunk, ims, bad))
    d = torch.cat(diffs)  # [N, L + 1, d]
    N, L1, dm = d.shape
    return pca_direction(d.reshape(N, 1, L1 * dm))[0].reshape(L1, dm)[1:]


def estimate_vti(job: Job, name: str) -> Estimate | None:
    """VTI's directions on ``modulation.vti_num_demos`` train samples (masked vs clean images; gold vs wrong
    answers); None (said) when fewer than two samples have a wrong answer to contrast."""
    a, mc, seed = job.adapter, job.cfg.modulation, int(job.cfg.seed)
    bs = int(job.cfg.data.batch_size)
    train = job.splits["train"]
    by_cat: dict[str, list[str]] = {}
    for s in train:
        if s.answer and yes_no_forms(s.answer) is None and s.answer not in by_cat.setdefault(s.category or "", []):
            by_cat[s.category or ""].append(s.answer)
    rng = random.Random(seed)
    eligible = []
    for s in train:
        w = wrong_answer(s, by_cat, rng)
        if w is not None and a.answer_tokens(w)[1] != a.answer_tokens(s.answer)[1]:
            eligible.append((s, w))
    drawn = dict((s.id, w) for s, w in _draw(eligible, int(mc.vti_num_demos), seed))
    demos, images = _images([s for s, _ in eligible if s.id in drawn], name)
    wrong = [drawn[s.id] for s in demos]
    if len(demos) < 2:
        say(f"[vti] refused: {len(demos)} train samples with a wrong answer to contrast; the directions need 2")
        return None
    tensors = {}
    if float(mc.vti_alpha_image) > 0:
        say(f"[vti] estimating the visual direction on {len(demos)} train images x {mc.vti_num_trials} masked copies")
        tensors["vision_direction"] = visual_direction(a, demos, images, float(mc.vti_mask_ratio),
                                                       int(mc.vti_num_trials), seed, bs)
    if float(mc.vti_alpha_text) > 0:
        say(f"[vti] estimating the textual direction on {len(demos)} train samples (gold vs wrong answer)")
        tensors["text_direction"] = textual_direction(a, demos, images, wrong, bs)
    hyper = {"alpha_text": float(mc.vti_alpha_text), "alpha_image": float(mc.vti_alpha_image),
             "num_demos": len(demos), "mask_ratio": float(mc.vti_mask_ratio), "num_trials": int(mc.vti_num_trials)}
    steered = sorted(k.split("_")[0] for k in tensors)
    setup = f"{len(demos)} train samples: " + " and ".join(
        {"text": "2 forward passes each (gold, wrong answer)",
         "vision": f"{1 + int(mc.vti_num_trials)} vision passes each"}[x] for x in steered)
    return Estimate(hyper, tensors, demos, setup, {"fixed_params": int(sum(t.numel() for t in tensors.values()))})


def vti(adapter, hyper: dict, tensors: dict[str, torch.Tensor]) -> Applied:
    """VTI (Liu, Ye, Zou, ICLR 2025, github.com/shengliu66/VTI) from its directions: every layer's MLP output in the
    vision tower and the language model rotated towards them (``Steer(mode="rotate")``, VTILayer)."""
    check_tensors("vti", tensors, adapter)
    dev = adapter.device
    lm = [] if "text_direction" not in tensors else [
        Steer(l, tensors["text_direction"][l].to(dev), site="mlp_out", mode="rotate",
              strength=VTI_SCALE * float(hyper["alpha_text"])) for l in range(tensors["text_direction"].shape[0])]
    vision = [] if "vision_direction" not in tensors else [
        Steer(l, tensors["vision_direction"][l].to(dev), site="mlp_out", mode="rotate",
              strength=VTI_SCALE * float(hyper["alpha_image"])) for l in range(tensors["vision_direction"].shape[0])]
    steered = sorted(k.split("_")[0] for k in tensors)
    return Applied("vti", dict(hyper), "every layer's MLP output, rotated towards a direction: "
                   + " and ".join({"text": "language model", "vision": "vision tower"}[x] for x in steered),
                   {"forward_passes": 1, "vision_passes": 1}, edits=(lambda batch: lm) if lm else None,
                   vision_edits=vision, tensors=dict(tensors), extra={"steered": steered})


def vti_check(job: Job, batch: Batch) -> None:
    """VTI's visual direction (``modulation.vti_alpha_image`` > 0) needs one [C, H, W] image a sample."""
    if float(job.cfg.modulation.vti_alpha_image) > 0:
        why = _vision_refusal(job.adapter, job.splits["test"][0])
        if why:
            raise NotApplicableError(f"vti: {why}; modulation.vti_alpha_image=0 steers the language model alone")


# ------------------------------------------------------------------------------------------- registered
VHR = Method(build=lambda a, hp, t, cached: vhr(a, hp["alpha"], hp["layers"]), configure=vhr_configure,
             check=lambda job, batch: token_roles(batch, "vhr"))
ICT = Method(build=lambda a, hp, t, cached: ict(a, hp, t), estimate=estimate_ict, check=lambda job, batch: None)
VTI = Method(build=lambda a, hp, t, cached: vti(a, hp, t), estimate=estimate_vti, check=vti_check)
