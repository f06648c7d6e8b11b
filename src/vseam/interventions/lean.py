"""Run the language model for its last position only: ``last_position_only(adapter)``.

``adapter.lm_logits`` reads the final hidden state at the last position; in the last decoder layer that
position needs every position's keys and values, but nothing else of the other positions. While the
context is active the last layer computes attention for the last query only (the attention function is
wrapped through transformers' ``AttentionInterface``; the mask keeps its last row), and its ``o_proj``
and MLP block (found by structure, ``block_modules``) see the last position only: a forward pre-hook
crops their input to it, and the residual additions broadcast the one position back over the others.
So the last layer's outputs at the other positions are NOT the model's: only the last position is, and
only ``lm_logits`` (or a loss on it) may be read inside the context. The edits of ``intervene`` at ``z``
that act per position (``HeadModulation``, ``GroupedHeadModulation``) compose with it; an edit with a
position mask does not.

It can also choose the attention implementation of every layer for the duration (``attention="eager"``:
the model's own eager attention function). On CPU at the organism's shape (head_dim 8, ~30 tokens, 128
rows) eager is faster than sdpa's CPU kernel, forward and backward (``benchmarks/random_draws.py``
prints the step cost of each). ``lean_attention(adapter)`` says which one the draws use.

Nothing here is assumed to hold for an architecture: ``check_last_position`` compares the context's
logits with the plain forward's on a batch (with the edits applied) and says where they differ, and a
caller that gets ``False`` runs the plain forward instead (``modulation.draws`` does).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import torch
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from vseam.interventions.hooks import block_modules, intervene

_PREFIX = "vseam_last_position|"  # registered attention names: the prefix + the wrapped implementation
_FLAG = "_vseam_last_query"  # set on the last layer's attention module while the context is active


def _wrapped(module, impl: str):
    """The attention function ``impl`` for ``module``: "eager" is the model file's own
    ``eager_attention_forward`` (the default every HF attention module falls back to), others transformers'."""
    if impl == "eager":
        fn = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
        if fn is None:
            raise RuntimeError(f"{type(module).__name__} has no eager_attention_forward in its modeling file")
        return fn
    return ALL_ATTENTION_FUNCTIONS[impl]


def _last_query(impl: str):
    def attention(module, query, key, value, attention_mask, *args, **kwargs):
        fn = _wrapped(module, impl)
        T = query.shape[2]  # [B, H, T, D]
        mask_ok = attention_mask is None or (isinstance(attention_mask, torch.Tensor) and attention_mask.dim() == 4
                                             and attention_mask.shape[-2] == T)
        if not getattr(module, _FLAG, False) or T < 2 or not mask_ok:
            return fn(module, query, key, value, attention_mask, *args, **kwargs)
        mask = None if attention_mask is None else attention_mask[:, :, -1:]
        out, weights = fn(module, query[:, :, -1:], key, value, mask, *args, **kwargs)  # out [B, 1, H, D]
        return out.expand(out.shape[0], T, *out.shape[2:]), weights  # the module crops it again at o_proj
    return attention


def _register(impl: str) -> str:
    name = _PREFIX + impl
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _last_query(impl))
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[impl])  # the same mask as impl's
    return name


def _configs(target) -> list:
    """The configs whose ``_attn_implementation`` the decoder and its attention modules read."""
    found = [getattr(target.decoder, "config", None)] + [getattr(target.attention(l), "config", None)
                                                         for l in range(target.num_layers)]
    return list({id(c): c for c in found if c is not None}.values())


def current_attention(target) -> str:
    return getattr(getattr(target.decoder, "config", None), "_attn_implementation", None) or "eager"


def lean_attention(adapter) -> str:
    """The attention implementation the draws train with: eager on CPU (faster at small head dims,
    measured on the organism), the model's own elsewhere."""
    return "eager" if adapter.device.type == "cpu" else current_attention(adapter)


def _crop(module, args):
    return (args[0][:, -1:],) + tuple(args[1:])


@contextmanager
def last_position_only(target, attention: str | None = None) -> Iterator[None]:
    """While the body runs, the language model of ``target`` (an adapter) computes only what its last
    position's output needs (module docstring), with ``attention`` (an implementation name: "eager",
    "sdpa"; None = the model's current one) in every layer. Everything is restored on exit."""
    impl = attention or current_attention(target)
    if impl.startswith(_PREFIX):
        raise RuntimeError("last_position_only is already active on this model")
    name = _register(impl)
    last = target.num_layers - 1
    configs = _configs(target)
    before = [c._attn_implementation for c in configs]
    att = target.attention(last)
    with ExitStack() as stack:
        for c in configs:
            c._attn_implementation = name
        stack.callback(lambda: [setattr(c, "_attn_implementation", b) for c, b in zip(configs, before)])
        setattr(att, _FLAG, True)
        stack.callback(delattr, att, _FLAG)
        for module in (target.o_proj(last), block_modules(target, last)["mlp_out"]):
            stack.callback(module.register_forward_pre_hook(_crop).remove)
        yield


@torch.no_grad()
def check_last_position(target, emb, *edits, attention: str | None = None) -> tuple[bool, str]:
    """Whether ``last_position_only`` gives the plain forward's last-position logits on ``emb`` (an
    ``Embedded``) with ``edits`` applied, and what was found (the max abs difference, or the error).
    Agreement is within 1e-4 of the logits' scale in float32 (another attention kernel rounds differently),
    2e-2 in half precision."""
    with intervene(target, *edits):
        plain = target.lm_logits(emb).float()
    try:
        with last_position_only(target, attention), intervene(target, *edits):
            lean = target.lm_logits(emb).float()
    except Exception as e:  # an architecture the crop does not fit (shapes): not for this model
        return False, f"{type(e).__name__}: {e}"
    diff = float((lean - plain).abs().max())
    tol = (1e-4 if target.dtype == torch.float32 else 2e-2) * (1.0 + float(plain.abs().max()))
    return bool(diff <= tol), f"max |difference| of the logits {diff:.2g} (tolerance {tol:.2g})"
