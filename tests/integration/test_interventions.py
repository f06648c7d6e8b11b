"""The per-head intervention mechanism against hand-written references, on tiny LLaVA and InstructBLIP."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vseam.interventions import Ablate, HeadModulation, Patch, Read, intervene


class LoopAblatedOProj(nn.Module):
    """Reference: the o_proj input edited head by head with a Python loop, then the original o_proj."""

    def __init__(self, o_proj: nn.Linear, num_heads: int, head: int, mode: str, rows=None):
        super().__init__()
        self.o_proj, self.H, self.head, self.mode, self.rows = o_proj, num_heads, head, mode, rows

    def forward(self, x):
        D = x.shape[-1] // self.H
        x = x.clone()
        for b in range(x.shape[0]):
            if self.rows is not None and b not in self.rows:
                continue
            slices = [x[b, :, h * D:(h + 1) * D].clone() for h in range(self.H)]
            if self.mode == "zero":
                new = torch.zeros_like(slices[self.head])
            else:
                others = [slices[h] for h in range(self.H) if h != self.head]
                new = sum(others) / len(others)
            x[b, :, self.head * D:(self.head + 1) * D] = new
        return self.o_proj(x)


def _with_reference(adapter, layer, module):
    attn = adapter.attention(layer)
    original = attn.o_proj
    attn.o_proj = module
    return original


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_ablation_equals_hand_written_layer(tiny_adapter, samples, mode):
    a = tiny_adapter
    emb = a.embed(a.encode(samples))
    for layer, head in [(0, 1), (1, 3)]:
        with intervene(a, Ablate(layer, [head], mode=mode)):
            got = a.lm_logits(emb)
        original = _with_reference(a, layer, LoopAblatedOProj(a.o_proj(layer), a.num_heads, head, mode))
        try:
            ref = a.lm_logits(emb)
        finally:
            a.attention(layer).o_proj = original
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
        assert (got - a.lm_logits(emb)).abs().max() > 1e-6  # the ablation changed something


@pytest.mark.parametrize("mode", ["mean", "zero"])
def test_ablation_strength_interpolates(tiny_llava, samples, mode):
    """strength s moves the chosen heads' slices s of the way to their ablated values: 0 = clean, 1 (float
    or tensor) = the full ablation, per-(sample, head) strengths act row by row, and a wrong shape fails."""
    a = tiny_llava
    B, H = len(samples), a.num_heads
    emb = a.embed(a.encode(samples))
    clean = a.lm_logits(emb)
    with intervene(a, Ablate(1, [2], mode=mode)):
        full = a.lm_logits(emb)
    with intervene(a, Ablate(1, [2], mode=mode, strength=torch.ones(H))):
        torch.testing.assert_close(a.lm_logits(emb), full, atol=1e-6, rtol=0)
    with intervene(a, Ablate(1, [2], mode=mode, strength=0.0)):
        assert torch.equal(a.lm_logits(emb), clean)
    # the slice itself is interpolated linearly: read it after a half ablation
    with intervene(a, Read([1])) as c0:
        a.lm_logits(emb)
    with intervene(a, Ablate(1, [2], mode=mode, strength=0.25), Read([1])) as c1:
        a.lm_logits(emb)
    z = c0[1]
    target = torch.zeros_like(z[:, :, 2]) if mode == "zero" else (z.sum(2) - z[:, :, 2]) / (H - 1)
    torch.testing.assert_close(c1[1][:, :, 2], z[:, :, 2] + 0.25 * (target - z[:, :, 2]))
    torch.testing.assert_close(c1[1][:, :, :2], z[:, :, :2], atol=0, rtol=0)  # other heads untouched
    # per-(sample, head) strength [B, H]: sample 0 fully ablated, the others clean
    s = torch.zeros(B, H)
    s[0] = 1.0
    with intervene(a, Ablate(1, [2], mode=mode, strength=s)):
        rows = a.lm_logits(emb)
    torch.testing.assert_close(rows[0], full[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(rows[1:], clean[1:], atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="strength of shape"):
        with intervene(a, Ablate(1, [2], strength=torch.ones(B + 1, H))):
            a.lm_logits(emb)


def test_identity_modulation_is_bit_identical(tiny_adapter, samples):
    a = tiny_adapter
    emb = a.embed(a.encode(samples))
    base = a.lm_logits(emb)
    for scale in ("scalar", "vector"):
        mod = HeadModulation([(0, 0), (0, 2), (1, 3)], a.head_dim, scale=scale, offset=True)
        with intervene(a, mod):
            out = a.lm_logits(emb)
        assert torch.equal(out, base)


def test_modulation_matches_manual_rescale(tiny_llava, samples):
    a = tiny_llava
    emb = a.embed(a.encode(samples[:2]))
    mod = HeadModulation([(1, 2)], a.head_dim, scale="vector", offset=True)
    with torch.no_grad():
        mod.scale.uniform_(0.5, 1.5)
        mod.offset.normal_()
    with intervene(a, mod):
        got = a.lm_logits(emb)

    D = a.head_dim

    class Manual(nn.Module):
        def __init__(self, o):
            super().__init__()
            self.o = o

        def forward(self, x):
            x = x.clone()
            x[..., 2 * D:3 * D] = x[..., 2 * D:3 * D] * mod.scale[0] + mod.offset[0]
            return self.o(x)

    original = _with_reference(a, 1, Manual(a.o_proj(1)))
    try:
        ref = a.lm_logits(emb)
    finally:
        a.attention(1).o_proj = original
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


def test_hooks_removed_after_context_and_after_exception(tiny_adapter, samples):
    a = tiny_adapter

    def n_hooks():
        return sum(len(a.o_proj(l)._forward_pre_hooks) for l in range(a.num_layers))

    with intervene(a, Ablate(0, [1]), Read()):
        assert n_hooks() == a.num_layers
    assert n_hooks() == 0
    with pytest.raises(RuntimeError, match="boom"):
        with intervene(a, Ablate(1, [0]), HeadModulation([(0, 1)], a.head_dim)):
            assert n_hooks() == 2
            raise RuntimeError("boom")
    assert n_hooks() == 0


def test_per_sample_heads_equal_separate_runs(tiny_adapter, samples):
    a = tiny_adapter
    emb = a.embed(a.encode(samples))
    B = len(samples)
    mask = torch.zeros(B, a.num_heads, dtype=torch.bool)
    for b in range(B):
        mask[b, b % a.num_heads] = True
    with intervene(a, Ablate(1, mask)):
        batched = a.lm_logits(emb)
    for b in range(B):
        single_emb = a.embed(a.encode([samples[b]]))
        with intervene(a, Ablate(1, [b % a.num_heads])):
            single = a.lm_logits(single_emb)
        torch.testing.assert_close(batched[b:b + 1], single, atol=1e-5, rtol=1e-5)


def test_patch_from_cache(tiny_llava, samples):
    a = tiny_llava
    enc = a.encode(samples[:2])
    emb = a.embed(enc)
    with intervene(a, Read(layers=[1])) as cache:
        base = a.lm_logits(emb)
    z = cache[1]
    assert z.shape == (2, emb.inputs_embeds.shape[1], a.num_heads, a.head_dim)
    # patching a run with its own cache changes nothing
    with intervene(a, Patch(1, z, heads=list(range(a.num_heads)))):
        same = a.lm_logits(emb)
    torch.testing.assert_close(same, base, atol=0, rtol=0)
    # patching head 2 of sample 0 with sample 1's slice: only row 0 changes
    swapped = z.flip(0)
    mask = torch.tensor([[False, False, True, False], [False] * 4])
    with intervene(a, Patch(1, swapped, heads=mask)):
        out = a.lm_logits(emb)
    assert not torch.allclose(out[0], base[0])
    torch.testing.assert_close(out[1], base[1], atol=0, rtol=0)


def test_read_gradients_match_autograd(tiny_llava, samples):
    a = tiny_llava
    emb = a.embed(a.encode(samples[:2]))
    with intervene(a, Read(grad=True)) as cache:
        out = a.lm_logits(emb)[:, 7].sum()
        out.backward()
    g0 = cache.grad(0)
    # the same gradient through a zero offset on every head of layer 0
    mod = HeadModulation([(0, h) for h in range(a.num_heads)], a.head_dim, scale="none", offset=True)
    T = emb.inputs_embeds.shape[1]
    with intervene(a, mod):
        a.lm_logits(emb)[:, 7].sum().backward()
    # the offset's gradient is the position- and batch-summed gradient of z
    torch.testing.assert_close(mod.offset.grad, g0.sum((0, 1)), atol=1e-5, rtol=1e-4)
    assert g0.shape[1] == T


def test_only_modulation_gets_gradients(tiny_llava, samples):
    a = tiny_llava
    enc = a.encode(samples[:2])
    mod = HeadModulation([(0, 1), (1, 0)], a.head_dim, scale="scalar")
    with intervene(a, mod):
        logits = a.last_logits(enc)
    torch.nn.functional.cross_entropy(logits, enc.target).backward()
    assert mod.scale.grad is not None and mod.offset.grad is not None
    assert all(p.grad is None for p in a.model.parameters())


def test_bad_interventions_fail_clearly(tiny_llava, samples):
    a = tiny_llava
    emb = a.embed(a.encode(samples[:2]))
    with pytest.raises(ValueError, match="layer 5"):
        with intervene(a, Ablate(5, [0])):
            pass
    with pytest.raises(ValueError, match="4 heads"):
        with intervene(a, HeadModulation([(0, 7)], a.head_dim)):
            a.lm_logits(emb)
    with pytest.raises(ValueError, match="head_dim"):
        with intervene(a, HeadModulation([(0, 1)], a.head_dim * 2)):
            a.lm_logits(emb)
    with pytest.raises(ValueError, match="mode"):
        Ablate(0, [0], mode="resample")
