"""The LightningModule of the training job: a frozen VLM plus a few trainable parameters (the per-head
modulation, the bias-only baseline's logit bias, or a LoRA / IA3 adapter for the baselines). It only
wires steps, metrics and optimizers; the edit itself is one of ``vseam.interventions`` (``HeadModulation``,
``LogitBias``) applied with ``intervene``. The random-head draws train in ``modulation.draws``.

Loss: cross-entropy of the gold answer's first token at the last position (docs/method.md#answer-tokens), plus an
optional L1 penalty on ``scale - 1`` so that training itself can rank heads (as LoFiT does).
Checkpoints hold only the trainable parameters and the modulation's head list (a few KB).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import ExitStack, nullcontext
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from vseam.data.sample import Sample
from vseam.interventions import HeadModulation, intervene
from vseam.models.base import Embedded
from vseam.models.cache import Batch, EmbeddingCache


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; the message names the step. Earlier checkpoints are left as they are."""


class FrozenVLMModule(L.LightningModule):
    """Trains ``modulation`` (an edit of ``vseam.interventions`` with parameters: ``HeadModulation``,
    ``LogitBias``), or the parameters that ``adapter.model`` marks trainable (peft baselines)."""

    def __init__(self, adapter, modulation: nn.Module | None = None, *, lr: float = 1e-2,
                 weight_decay: float = 0.0, l1: float = 0.0, scheduler: str = "constant", warmup_steps: int = 0,
                 cache: EmbeddingCache | None = None, gradient_checkpointing: bool = False, method: str = "learned",
                 norm_every: int = 10):
        super().__init__()
        self.adapter = adapter  # not an nn.Module: the model is registered below, once
        self.vlm = adapter.model  # registered so that .to(device) and precision plugins reach it
        self.modulation = modulation
        self.lr, self.weight_decay, self.l1 = float(lr), float(weight_decay), float(l1)
        self.scheduler_kind, self.warmup_steps = scheduler, int(warmup_steps)
        self.method = method
        self.norm_every = int(norm_every)
        self.cache = cache if cache is not None else EmbeddingCache(adapter)
        self.gradient_checkpointing = gradient_checkpointing
        # Saved checkpoints hold only these keys; loading others' keys is not expected (strict off).
        self.strict_loading = False
        if modulation is not None:
            self.trainable_keys = sorted(k for k in self.state_dict() if k.startswith("modulation."))
        else:
            self.trainable_keys = sorted(n for n, p in self.named_parameters() if p.requires_grad)
        if not any(p.requires_grad for p in self.parameters()):
            raise ValueError(f"method {method!r}: nothing to train (every parameter is frozen)")
        if gradient_checkpointing:
            # Non-reentrant: the inputs (cached embeddings) need no grad, gradients still reach the hooks.
            kw = {"use_reentrant": False}
            if hasattr(self.vlm, "activation_checkpointing_enable"):  # transformers >= 5.2 name
                self.vlm.activation_checkpointing_enable(activation_checkpointing_kwargs=kw)
            else:
                self.vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kw)
        V = adapter.vocab_size
        self.train_acc = MulticlassAccuracy(num_classes=V, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes=V, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=V, average="micro")

    # ------------------------------------------------------------------ frozen model stays frozen
    def train(self, mode: bool = True):
        super().train(mode)
        # Lightning calls .train() at fit start; the VLM must stay in eval mode (no dropout, frozen norms).
        self.vlm.eval()
        if mode and self.gradient_checkpointing:
            # HF layers checkpoint only in training mode; Llama layers have no dropout (attention_dropout=0).
            for layer in self.adapter.layers:
                layer.train(True)
        return self

    def num_trainable(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    # ------------------------------------------------------------------ steps
    def logits(self, batch: Batch, keep_hooks: bool = False) -> torch.Tensor:
        """Last-position logits of ``batch`` with the modulation applied (``forward_logits``)."""
        return self.forward_logits(batch.emb, keep_hooks)

    def forward_logits(self, emb: Embedded, keep_hooks: bool = False) -> torch.Tensor:
        """Last-position logits of the language-model inputs ``emb`` with the modulation applied.

        ``keep_hooks``: leave the modulation hooks on until ``release_hooks()`` (called after backward),
        because gradient checkpointing re-runs the layers, hooks included, during the backward pass.
        """
        if self.modulation is None:
            return self.adapter.lm_logits(emb).float()
        if not keep_hooks:
            with self.forward_context(), intervene(self.adapter, self.modulation):
                return self.adapter.lm_logits(emb).float()
        self.release_hooks()
        self._hooks = ExitStack()
        self._hooks.enter_context(self.forward_context())
        self._hooks.enter_context(intervene(self.adapter, self.modulation))
        return self.adapter.lm_logits(emb).float()

    def forward_context(self):
        """A context the modulated forward runs in (with the hooks): none here; the random draws run the
        last-position forward (``modulation.draws``)."""
        return nullcontext()

    def release_hooks(self) -> None:
        stack, self._hooks = getattr(self, "_hooks", None), None
        if stack is not None:
            stack.close()

    def on_after_backward(self) -> None:
        self.release_hooks()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.release_hooks()  # also when no backward ran (e.g. a skipped step)
        if not isinstance(self.modulation, HeadModulation) or self.norm_every <= 0 or \
                self.global_step % self.norm_every:
            return
        self.log_dict({f"{self.method}/{k}": v for k, v in head_norms(self.modulation).items()}, on_step=True,
                      on_epoch=False, batch_size=len(batch))

    def teardown(self, stage: str) -> None:
        self.release_hooks()  # never leave hooks on the shared model, also after an exception

    def l1_penalty(self) -> torch.Tensor:
        if self.l1 <= 0 or getattr(self.modulation, "scale", None) is None:
            return torch.zeros((), device=self.device)
        return self.l1 * (self.modulation.scale - 1).abs().sum()

    def _step(self, samples: Sequence[Sample], stage: str):
        batch = self.cache.batch(samples, device=self.device)
        logits = self.logits(batch, keep_hooks=stage == "train")
        ce = F.cross_entropy(logits, batch.target)
        pred = logits.argmax(-1)
        # A prediction counts as correct when it is any accepted answer token (model.answer_definition).
        correct = batch.correct_mask(logits.shape[-1]).gather(1, pred[:, None]).squeeze(1)
        metric = getattr(self, f"{stage}_acc")
        metric(torch.where(correct, batch.target, pred), batch.target)
        return ce, metric, len(samples)

    def training_step(self, samples, batch_idx):
        ce, metric, n = self._step(samples, "train")
        reg = self.l1_penalty()
        loss = ce + reg
        if not torch.isfinite(loss):
            self.release_hooks()
            raise NonFiniteLossError(
                f"non-finite training loss ({loss.item()}) at step {self.global_step} (epoch {self.current_epoch}, "
                f"batch {batch_idx}) of method {self.method!r}; stopping. The last good checkpoint is kept.")
        self.log(f"{self.method}/train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=n)
        self.log(f"{self.method}/train/ce", ce, on_step=True, on_epoch=False, batch_size=n)
        # the learning rate under the method's own name (one Lightning logger serves every method)
        if self._trainer is not None and self.trainer.optimizers:
            self.log(f"{self.method}/lr", float(self.trainer.optimizers[0].param_groups[0]["lr"]), on_step=True,
                     on_epoch=False, batch_size=n)
        if self.l1 > 0:
            self.log(f"{self.method}/train/l1", reg, on_step=True, on_epoch=False, batch_size=n)
        self.log(f"{self.method}/train/acc", metric, on_step=False, on_epoch=True, batch_size=n)
        return loss

    def validation_step(self, samples, batch_idx):
        ce, metric, n = self._step(samples, "val")
        self.log(f"{self.method}/val/loss", ce, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=n)
        self.log(f"{self.method}/val/acc", metric, on_epoch=True, prog_bar=True, batch_size=n)

    def test_step(self, samples, batch_idx):
        ce, metric, n = self._step(samples, "test")
        self.log(f"{self.method}/test/loss", ce, on_epoch=True, sync_dist=True, batch_size=n)
        self.log(f"{self.method}/test/acc", metric, on_epoch=True, batch_size=n)


    # ------------------------------------------------------------------ optimizer
    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        if self.scheduler_kind == "constant" and self.warmup_steps <= 0:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warm = self.warmup_steps

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            if self.scheduler_kind == "cosine":
                return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
            return 1.0

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ checkpoints: trainable keys only
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        keep = set(self.trainable_keys)
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        info = {"method": self.method, "model": self.adapter.name, "shape": list(self.adapter.shape)}
        if isinstance(self.modulation, HeadModulation):
            info.update(heads=self.modulation.heads, scale=self.modulation.scale_kind,
                        offset=self.modulation.offset is not None)
        checkpoint["vseam"] = info

    def load_trained(self, path: str) -> None:
        """Load a checkpoint written by this module (its trainable keys only); fail on a mismatch."""
        from vseam.utils.io import load_torch_checkpoint

        ckpt = load_torch_checkpoint(path, f"{self.method} checkpoint", map_location=self.device)
        info = ckpt.get("vseam", {})
        if list(info.get("shape", self.adapter.shape)) != list(self.adapter.shape):
            raise ValueError(f"checkpoint {path} was made for a model of shape {info['shape']} (layers, heads, "
                             f"head_dim); this model is {list(self.adapter.shape)}")
        if isinstance(self.modulation, HeadModulation) and \
                [tuple(h) for h in info.get("heads", self.modulation.heads)] != self.modulation.heads:
            raise ValueError(f"checkpoint {path} modulates other heads than this module")
        state = ckpt["state_dict"]
        missing = sorted(set(self.trainable_keys) - set(state))
        if missing:
            raise KeyError(f"checkpoint {path} lacks trainable keys {missing[:5]}")
        self.load_state_dict(state, strict=False)


def head_norms(mod: HeadModulation) -> dict[str, float]:
    """Per-head |scale - 1| and |offset| (L2 over the head dimension), keyed ``heads/L{l}H{h}/...``."""
    out = {}
    with torch.no_grad():
        for i, (l, h) in enumerate(mod.heads):
            if mod.scale is not None:
                out[f"heads/L{l}H{h}/scale_dev"] = float((mod.scale[i] - 1).norm())
            if mod.offset is not None:
                out[f"heads/L{l}H{h}/offset_norm"] = float(mod.offset[i].norm())
    return out
