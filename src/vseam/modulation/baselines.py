"""Baselines of the learned head modulation on the same data and split: parameter-efficient adapters from
``peft`` on the language model only (LoRA, IA3), and the bias-only baseline (``logit_bias_for``: learned
biases on the answer logits, no head at all).

The adapter goes onto a deep copy of the VLM, so the frozen model that the other methods share stays
untouched (for a 7B model on one GPU that copy doubles memory: leave lora / ia3 out of
``modulation.methods`` there, or run them alone). Only language-model modules are targeted, so the
cached vision-side embeddings stay valid.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from vseam.evaluation.score import yes_no_forms
from vseam.interventions import LogitBias


def decoder_module_names(adapter, suffixes: Sequence[str]) -> list[str]:
    """Full names (in ``adapter.model``) of the decoder's linear layers whose name ends in one of ``suffixes``."""
    prefix = next(n for n, m in adapter.model.named_modules() if m is adapter.decoder)
    names = [f"{prefix}.{n}" if prefix else n for n, m in adapter.decoder.named_modules()
             if isinstance(m, nn.Linear) and n.split(".")[-1] in suffixes]
    if not names:
        raise ValueError(f"no language-model linear layer named {list(suffixes)} in {type(adapter.model).__name__}")
    return names


def peft_copy(adapter, kind: str, *, r: int = 4, alpha: int = 8, dropout: float = 0.0,
              lora_targets: Sequence[str] = ("q_proj", "v_proj"),
              ia3_targets: Sequence[str] = ("k_proj", "v_proj", "down_proj"),
              ia3_feedforward: Sequence[str] = ("down_proj",)):
    """A new adapter over a deep copy of the model with a LoRA or IA3 adapter; only its parameters train."""
    from peft import IA3Config, LoraConfig, inject_adapter_in_model

    if kind == "lora":
        targets = decoder_module_names(adapter, lora_targets)
        config = LoraConfig(r=int(r), lora_alpha=int(alpha), lora_dropout=float(dropout), target_modules=targets,
                            bias="none")
    elif kind == "ia3":
        targets = decoder_module_names(adapter, ia3_targets)
        ff = [t for t in targets if t.split(".")[-1] in ia3_feedforward]
        config = IA3Config(target_modules=targets, feedforward_modules=ff)
    else:
        raise ValueError(f"peft baseline {kind!r}: expected lora or ia3")
    model = copy.deepcopy(adapter.model)
    model.requires_grad_(False)
    model = inject_adapter_in_model(config, model)
    for name, p in model.named_parameters():
        # peft names its parameters lora_A / lora_B / ia3_l; everything else stays frozen.
        p.requires_grad_(any(tag in name for tag in ("lora_", "ia3_")))
    new = type(adapter)(model, adapter.processor, template=adapter.template, name=adapter.name)
    return new


def logit_bias_for(adapter, samples: Sequence) -> LogitBias:
    """The bias-only baseline's edit for the answers of ``samples`` (the train split), ``LogitBias``: one
    scalar on the yes-vs-no margin (the yes and no tokens: the probability ids of the gold yes / no answers
    under the model's answer definition, e.g. ``▁Yes ▁yes ▁YES``) and one scalar per other answer word (its
    gold first token), all zero at the start."""
    yes, no, words = set(), set(), set()
    for a in sorted({str(s.answer) for s in samples if s.answer is not None}):
        forms = yes_no_forms(a)
        if forms is None:
            words.add(adapter.answer_tokens(a)[1])
        else:
            (yes if a.lower() == "yes" else no).update(adapter.answer_tokens(a)[0])
    if not (yes and no):  # a lone yes or no answer has no margin to move: a word like the others
        words |= yes | no
        yes, no = set(), set()
    return LogitBias(sorted(yes), sorted(no), sorted(words - yes - no))


def count_trainable(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
