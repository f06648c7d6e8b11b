"""Ground truth for mechanism checks on the organism: what the world knows that a real benchmark does not.

- ``absence_probe``: a linear probe on the image tokens at the language model's input (the projector
  output for LLaVA, the projected queries for InstructBLIP) that decodes whether the queried object is
  absent. When it is near perfect on the questions the model gets wrong, the failure is not missing
  visual features: the information is there and the wrong heads win.
- ``attention_mass``: for every head, the attention mass from the last position to the image tokens
  that hold the queried object(s) (the world knows them: object in cell k = image token k), and
  ``mass_score_correlation``, its per-category Spearman correlation with the heads' positive scores.
- ``plant_defect``: a known bias added to one head's slice at the ``o_proj`` input (through the one
  intervention mechanism, ``vseam.interventions``), along the direction that pushes the answer toward
  "Yes": a defect with a known location for head attribution to find and modulation to undo.

The checks that need head attribution and modulation on top of these (the per-category correlation
with positive scores, the planted-defect experiment) are in ``vseam.study.ground_truth``, a layer up.

Image token k of LLaVA is patch k (cells are patches, row-major). For InstructBLIP, query k is bound
to cell k only by the organism's training (its dense loss), so there the token-to-cell map is learned,
not exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from vseam.interventions import HeadModulation
from vseam.world.questions import EXISTENCE


# ------------------------------------------------------------------------------------- inputs
@torch.no_grad()
def image_token_states(adapter, samples: Sequence, batch_size: int = 64) -> torch.Tensor:
    """[N, n_image_tokens, d]: the language model's input at the image (query) tokens of each sample."""
    out = []
    for i in range(0, len(samples), batch_size):
        enc = adapter.encode(samples[i:i + batch_size])
        emb = adapter.embed(enc)
        visual = adapter.visual_token_mask(enc.inputs["input_ids"].to(adapter.device))
        n = int(visual[0].sum())
        if not bool((visual.sum(1) == n).all()):
            raise ValueError("samples of one batch have different numbers of image tokens")
        out.append(emb.inputs_embeds[visual].view(len(enc.ids), n, -1).float().cpu())
    return torch.cat(out)


# ------------------------------------------------------------------------------------- the probe
@dataclass
class ProbeResult:
    accuracy: float  # on the test items
    n: int
    per_object: dict[str, float]  # test accuracy per queried object
    train_accuracy: float

    def to_dict(self) -> dict:
        return {"accuracy": self.accuracy, "n": self.n, "per_object": self.per_object,
                "train_accuracy": self.train_accuracy}


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, l2: float = 1e-3, steps: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression (LBFGS, L2) on standardised features; returns (w, b) in the raw feature space."""
    mu, sd = x.mean(0), x.std(0).clamp(min=1e-6)
    z = (x - mu) / sd
    w = torch.zeros(x.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z @ w + b, y.float()) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    w_raw = (w / sd).detach()
    return w_raw, (b - (mu * w_raw).sum()).detach()


def absence_probe(adapter, train_items: Sequence, test_items: Sequence) -> ProbeResult:
    """One linear probe per queried object on the image tokens at the LM input, pooled over tokens
    (per feature: their sum and their maximum), trained on ``train_items`` and scored on ``test_items``
    (Existence world items; label: the object is absent).

    Pooling keeps the probe blind to where the object is. The sum alone dilutes one object's token
    among nine (0.935 on the 8,000-step LLaVA's held-out adversarial questions); with the maximum
    beside it 0.98; the nine tokens concatenated overfit 150 items per object (0.79).
    """
    def feats(items):
        states = image_token_states(adapter, [it.sample() for it in items])
        return torch.cat([states.sum(1), states.amax(1)], dim=1)

    def labels(items):
        return torch.tensor([it.scene.find(it.change["object"]) is None for it in items])

    xtr, ytr, xte, yte = feats(train_items), labels(train_items), feats(test_items), labels(test_items)
    obj_tr = [it.change["object"] for it in train_items]
    obj_te = [it.change["object"] for it in test_items]
    correct_te = torch.zeros(len(test_items), dtype=torch.bool)
    correct_tr = torch.zeros(len(train_items), dtype=torch.bool)
    per_object = {}
    for o in sorted(set(obj_te)):
        tr = torch.tensor([x == o for x in obj_tr])
        te = torch.tensor([x == o for x in obj_te])
        if tr.sum() < 4 or ytr[tr].unique().numel() < 2:
            raise ValueError(f"absence probe: too few or one-class training items for {o!r} ({int(tr.sum())})")
        w, b = _fit_logistic(xtr[tr], ytr[tr])
        correct_tr[tr] = ((xtr[tr] @ w + b > 0) == ytr[tr])
        correct_te[te] = ((xte[te] @ w + b > 0) == yte[te])
        per_object[o] = float(correct_te[te].float().mean())
    return ProbeResult(float(correct_te.float().mean()), len(test_items), per_object, float(correct_tr.float().mean()))


# ------------------------------------------------------------------------------------- attention mass
@contextmanager
def eager_attention(model):
    """Attention weights need the eager kernel; restore the model's own afterwards."""
    before = model.config._attn_implementation
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(before)


def object_cells(item) -> list[int]:
    """Image-token indices (row-major cells) of the objects a world item asks about: the involved
    objects, and for an Existence question the queried object when it is there (none when absent)."""
    scene = item.scene
    if item.category == EXISTENCE:
        idx = scene.find(item.change["object"])
        return [] if idx is None else [scene.objects[idx].row * scene.grid + scene.objects[idx].col]
    return [scene.objects[i].row * scene.grid + scene.objects[i].col for i in item.involved]


@torch.no_grad()
def attention_mass(adapter, items: Sequence, batch_size: int = 32) -> tuple[torch.Tensor, list[int]]:
    """[N, L, H]: attention from the last position to the image tokens of the queried object(s),
    summed over those tokens; and the indices of the items that had such tokens (the others, e.g.
    an Existence question about an absent object, are left out and not in the tensor)."""
    keep = [i for i, it in enumerate(items) if object_cells(it)]
    rows = []
    with eager_attention(adapter.model):
        for s in range(0, len(keep), batch_size):
            chunk = [items[i] for i in keep[s:s + batch_size]]
            enc = adapter.encode([it.sample() for it in chunk])
            emb = adapter.embed(enc)
            out = adapter.decoder(inputs_embeds=emb.inputs_embeds, attention_mask=emb.attention_mask,
                                  position_ids=emb.position_ids, use_cache=False, output_attentions=True)
            if out.attentions is None or any(a is None for a in out.attentions):
                raise RuntimeError("the language model returned no attention weights")
            att = torch.stack([a[:, :, -1].float() for a in out.attentions], 1)  # [B, L, H, T]
            visual = adapter.visual_token_mask(enc.inputs["input_ids"].to(adapter.device))
            for b, it in enumerate(chunk):
                cols = visual[b].nonzero().squeeze(1)
                cells = object_cells(it)
                if int(max(cells)) >= len(cols):
                    raise ValueError(f"{it.id}: cell {max(cells)} but only {len(cols)} image tokens")
                rows.append(att[b][:, :, cols[cells]].sum(-1).cpu())
    return (torch.stack(rows) if rows else torch.zeros(0, adapter.num_layers, adapter.num_heads)), keep


# ------------------------------------------------------------------------------------- planted defect
def yes_direction(adapter, layer: int, head: int) -> torch.Tensor:
    """[D]: the direction in head (layer, head)'s slice of the ``o_proj`` input whose direct path to
    the logits raises "Yes" over "No" (o_proj's slice columns, transposed, times the unembedding
    difference; the final norm's per-channel weight included), unit norm."""
    yes = adapter.answer_token_ids("Yes")[1]
    no = adapter.answer_token_ids("No")[1]
    W = adapter.lm_head.weight.detach().float()
    diff = W[yes] - W[no]
    norm = getattr(adapter.decoder, "norm", None)
    if norm is not None and getattr(norm, "weight", None) is not None:
        diff = diff * norm.weight.detach().float()
    D = adapter.head_dim
    w_o = adapter.o_proj(layer).weight.detach().float()[:, head * D:(head + 1) * D]  # [d, D]
    v = w_o.T @ diff
    return v / v.norm().clamp(min=1e-12)


# The planted defect of the shipped organism per architecture: (layer, head, strength). At strength 45
# it costs 0.38 (LLaVA) / 0.24 (InstructBLIP) of the accuracy on balanced yes/no questions; 15 cost
# nothing on the 8,000-step builds (30: 0.06 on LLaVA).
PLANTED_DEFECT = {"llava": (3, 5, 45.0), "instructblip": (3, 5, 45.0)}


def plant_defect(adapter, layer: int, head: int, strength: float) -> HeadModulation:
    """A fixed (untrainable) edit adding ``strength`` x ``yes_direction`` to head (layer, head)'s slice
    at every position: use it as ``with intervene(adapter, defect): ...``."""
    mod = HeadModulation([(layer, head)], adapter.head_dim, scale="none", offset=True, trainable=False)
    with torch.no_grad():
        mod.offset.copy_(strength * yes_direction(adapter, layer, head)[None].to(mod.offset.dtype))
    return mod.to(adapter.device)


# ------------------------------------------------------------------------------------- planted heads
@dataclass(frozen=True)
class PlantedHeads:
    """A weight-level defect in specific heads: each head's value projection (its rows of ``v_proj``)
    multiplied by ``factor``, so its slice at the ``o_proj`` input is ``factor`` x what it was. Only a
    scale of 1 / ``factor`` on exactly those heads' slices undoes it (learned modulation's scale can);
    an offset or another head cannot, since the extra output depends on the input. Mean ablation of such
    a head removes its defect, so head attribution can find it among the negative heads."""

    heads: tuple[tuple[int, int], ...]
    factor: float

    def to_dict(self) -> dict:
        return {"heads": [list(h) for h in self.heads], "factor": self.factor}

    @classmethod
    def from_dict(cls, d: dict) -> PlantedHeads:
        return cls(tuple(tuple(int(v) for v in h) for h in d["heads"]), float(d["factor"]))


def value_rows(adapter, layer: int, head: int) -> slice:
    """The rows of layer ``layer``'s ``v_proj`` that make head ``head``'s values (one key/value head per
    query head; with grouped keys and values a head has no values of its own)."""
    if adapter.num_kv_heads != adapter.num_heads:
        raise ValueError(f"{adapter.num_kv_heads} key/value heads for {adapter.num_heads} query heads: a head's "
                         f"values are shared, so they cannot be planted per head")
    D = adapter.head_dim
    return slice(head * D, (head + 1) * D)


@torch.no_grad()
def plant_heads(adapter, planted: PlantedHeads) -> None:
    """Apply ``planted`` to ``adapter``'s weights in place (``v_proj`` rows, and their bias if any)."""
    for layer, head in planted.heads:
        if not (0 <= layer < adapter.num_layers and 0 <= head < adapter.num_heads):
            raise ValueError(f"planted head ({layer}, {head}) outside the model's {adapter.num_layers} x "
                             f"{adapter.num_heads} heads")
        v = adapter.attention(layer).v_proj
        rows = value_rows(adapter, layer, head)
        v.weight[rows] *= planted.factor
        if v.bias is not None:
            v.bias[rows] *= planted.factor


# The planted heads of the shipped organism per architecture (``checkpoints/organism/<arch>-planted``,
# written by ``python scripts/build_organism.py --planted``): two heads whose values are multiplied by
# ``factor``, chosen so that each alone costs about as much (llava: 0.14 / 0.13, instructblip: 0.16 /
# 0.18 of 144 questions' accuracy at x 8), so a random head set holding one of them undoes only half of
# the defect (a first choice, llava (1, 2) + (3, 5), put nearly all of it on (1, 2): 27 of 99 random
# 6-head sets held it, and 12 matched the key heads). Together: llava 0.868 -> 0.611, instructblip 0.917
# -> 0.556; exact attribution ranks them first and second among the negative heads. What it costs and
# what recovers it: ``scripts/organism_mechanisms.py`` and ``python train.py model=organism-<arch>-planted``.
PLANTED_HEADS = {"llava": PlantedHeads(((1, 6), (2, 3)), 8.0), "instructblip": PlantedHeads(((1, 5), (2, 0)), 8.0)}
