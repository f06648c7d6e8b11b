"""The parts of a VLM that analyses reach, found by structure, not by attribute names of one version.

A ``Stack`` is one transformer stack seen the way the intervention mechanism (``vseam.interventions``)
sees it: its layers, each layer's attention block and the attention's output projection (whose input
is the H head outputs side by side), the head count, and the final norm when the stack has one. The
language model's decoder and the vision tower's encoder are both stacks, so ``Read`` / ``Patch`` /
``Ablate`` reach either with the same code.

How the parts are found, for any ``*ForConditionalGeneration`` of transformers 5.x:

- the language model: ``model.get_decoder()`` (transformers' own lookup), the vision tower:
  ``model.get_encoder(modality="image")``; inside each, the **stack** is the one ``nn.ModuleList`` whose
  layers each hold exactly one attention block (a direct child of an ``...Attention`` class holding
  linear layers);
- a layer's **output projection**: the last linear layer registered in its attention block (``o_proj``,
  ``out_proj``, ``proj``, ``projection``: q / k / v come first in every implementation), checked against
  the head count (its input width must be a multiple of it);
- the **final norm** of the language model: the decoder's one direct child with parameters that is
  neither the stack, an embedding nor a holder of linear layers;
- the **projector / connector**: the last child with parameters, beside the vision tower and the language
  model, of the module holding both (LLaVA's ``multi_modal_projector``, InstructBLIP's
  ``language_projection``, Gemma 3's weight-only projector); when there is none, the vision tower's last
  child with parameters after its stack, module lists aside (Qwen2-VL's ``merger``, not Qwen3-VL's
  ``deepstack_merger_list``).

The LM head is ``model.get_output_embeddings()``.
"""

from __future__ import annotations

from torch import nn


def _holds_linear(module: nn.Module) -> bool:
    return any(isinstance(m, nn.Linear) for m in module.modules())


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def attention_block(layer: nn.Module) -> nn.Module | None:
    """The layer's one attention block: a direct child of an ``...Attention`` class that holds linear
    layers; None when there is none or several (a cross-attention layer is not a plain stack layer)."""
    found = [c for c in layer.children() if type(c).__name__.endswith("Attention") and _holds_linear(c)]
    return found[0] if len(found) == 1 else None


def output_projection(attention: nn.Module) -> nn.Linear:
    """The attention block's output projection: the last linear layer it registers."""
    linears = [m for m in attention.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(attention).__name__} holds no linear layer")
    return linears[-1]


def find_stacks(root: nn.Module) -> list[tuple[str, nn.Module, nn.ModuleList]]:
    """(name, owner, layers) of every ``nn.ModuleList`` under ``root`` whose items each hold one attention block."""
    out = []
    for name, owner in root.named_modules():
        for child_name, child in owner.named_children():
            if isinstance(child, nn.ModuleList) and len(child) > 0 and all(
                    attention_block(layer) is not None for layer in child):
                out.append((f"{name}.{child_name}" if name else child_name, owner, child))
    return out


def _one_stack(root: nn.Module, what: str, model: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    stacks = find_stacks(root)
    if not stacks:
        raise ValueError(f"{type(model).__name__}: no {what} found (no module list of layers that each hold one "
                         f"attention block)")
    if len(stacks) > 1:
        raise ValueError(f"{type(model).__name__}: several {what}s found: {[n for n, _, _ in stacks]}")
    return stacks[0][1], stacks[0][2]


def _config_value(config, *keys, default=None):
    for k in keys:
        v = getattr(config, k, None)
        if v is not None:
            return v
    return default


class Stack:
    """One transformer stack (the language model's decoder or the vision tower's encoder) as the
    intervention mechanism sees it: ``layers``, ``attention(l)``, ``o_proj(l)`` (the output projection),
    ``num_layers``, ``num_heads``, ``head_dim``, ``decoder`` (the module owning the layers: its config
    switches the attention implementation), ``norm`` (final norm or None), ``causal`` (decoder: attention
    patterns must not look ahead), ``projector`` (the vision side's connector, site ``proj_out``)."""

    def __init__(self, owner: nn.Module, layers: nn.ModuleList, num_heads: int, *, norm: nn.Module | None = None,
                 causal: bool = True, projector: nn.Module | None = None, name: str = "stack"):
        self.decoder = owner
        self.layers = layers
        self.num_layers = len(layers)
        self.num_heads = int(num_heads)
        self.norm = norm
        self.causal = causal
        self.projector = projector
        self.name = name
        self._attn = [attention_block(layer) for layer in layers]
        self._out = [output_projection(a) for a in self._attn]
        width = self._out[0].in_features
        if width % self.num_heads:
            raise ValueError(f"{name}: the attention output projection's input width {width} is not a multiple of "
                             f"{self.num_heads} heads")
        self.head_dim = width // self.num_heads

    def attention(self, layer: int) -> nn.Module:
        return self._attn[layer]

    def o_proj(self, layer: int) -> nn.Linear:
        return self._out[layer]

    @property
    def shape(self) -> tuple[int, int, int]:
        """(num_layers, num_heads, head_dim)."""
        return self.num_layers, self.num_heads, self.head_dim

    def __repr__(self) -> str:
        return f"Stack({self.name}: {self.num_layers} layers x {self.num_heads} heads x {self.head_dim})"


def find_decoder(model: nn.Module) -> nn.Module:
    """The language model's decoder: the module owning the one stack of layers under ``model.get_decoder()``
    (the whole model when it has no such method). Vision towers and Q-Formers are not under it."""
    root = model.get_decoder() if callable(getattr(model, "get_decoder", None)) else model
    owner, _ = _one_stack(root, "decoder", model)
    return owner


def final_norm(decoder: nn.Module, stack: nn.ModuleList) -> nn.Module:
    """The decoder's final norm: its one direct child with parameters that is neither the stack, an
    embedding, nor a holder of linear layers."""
    found = [c for c in decoder.children() if c is not stack and not isinstance(c, nn.Embedding)
             and _has_parameters(c) and not _holds_linear(c)]
    if len(found) != 1:
        raise ValueError(f"{type(decoder).__name__}: expected one final norm, found {[type(c).__name__ for c in found]}")
    return found[0]


def language_stack(model: nn.Module) -> Stack:
    """The language model's decoder as a ``Stack`` (with its final norm)."""
    decoder = find_decoder(model)
    _, layers = _one_stack(decoder, "decoder", model)
    heads = _config_value(model.config.get_text_config(), "num_attention_heads")
    return Stack(decoder, layers, heads, norm=final_norm(decoder, layers), causal=True, name="language model")


def _ancestors(model: nn.Module, target: nn.Module) -> list[nn.Module]:
    """The modules from ``model`` down to ``target`` (both included)."""
    names = {id(m): n for n, m in model.named_modules()}
    name = names.get(id(target))
    if name is None:
        raise ValueError(f"{type(target).__name__} is not a submodule of {type(model).__name__}")
    path, node = [model], model
    for part in [p for p in name.split(".") if p]:
        node = getattr(node, part)
        path.append(node)
    return path


def find_projector(model: nn.Module, tower: nn.Module, decoder: nn.Module, tower_layers: nn.ModuleList) -> nn.Module:
    """The module whose output the model merges into the language model's inputs (module docstring)."""
    up_tower, up_decoder = _ancestors(model, tower), _ancestors(model, decoder)
    common = [a for a, b in zip(up_tower, up_decoder) if a is b][-1]
    on_paths = {id(m) for m in up_tower + up_decoder}
    beside = [c for c in common.children() if id(c) not in on_paths and _has_parameters(c)]
    if beside:
        return beside[-1]
    children = list(tower.children())
    idx = next((i for i, c in enumerate(children) if any(m is tower_layers for m in c.modules())), None)
    after = [] if idx is None else [c for c in children[idx + 1:]
                                    if _has_parameters(c) and not isinstance(c, nn.ModuleList)]
    if not after:
        raise ValueError(f"{type(model).__name__}: no projector found beside or inside the vision tower")
    return after[-1]


def vision_stack(model: nn.Module) -> Stack:
    """The vision tower's encoder as a ``Stack`` (bidirectional attention), with the projector / connector."""
    getter = getattr(model, "get_encoder", None)
    tower = getter(modality="image") if callable(getter) else None
    if tower is None or tower is model:
        raise ValueError(f"{type(model).__name__}: no vision tower found (model.get_encoder(modality='image'))")
    owner, layers = _one_stack(tower, "vision encoder", model)
    vcfg = getattr(model.config, "vision_config", None) or tower.config
    heads = _config_value(vcfg, "num_attention_heads", "num_heads")
    if heads is None:
        raise ValueError(f"{type(model).__name__}: the vision config names no head count")
    projector = find_projector(model, tower, find_decoder(model), layers)
    return Stack(owner, layers, heads, norm=None, causal=False, projector=projector, name="vision tower")
