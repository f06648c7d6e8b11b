"""LightningModule that trains a tiny VLM from scratch on the organism world (answer-token cross-entropy).

The forward pass is the evaluation adapter's own (vision side -> merged embeddings -> language model,
positions counted over real tokens), so the trained model is scored exactly as it was trained.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from vseam.organism.encode import lm_logits, model_inputs
from vseam.world.scene import COLORS, SIZES, TEXTURES

LEVELS = ("object", "attribute", "relation")


def vision_encoder(model: torch.nn.Module) -> torch.nn.Module:
    """The vision tower of a VLM, found by structure: the first submodule whose class is a ``*VisionModel``
    (``CLIPVisionModel`` in LLaVA, ``InstructBlipVisionModel`` in InstructBLIP)."""
    for _, m in model.named_modules():
        if type(m).__name__.endswith("VisionModel"):
            return m
    raise ValueError(f"no *VisionModel submodule in {type(model).__name__}")


class OrganismModule(L.LightningModule):
    def __init__(self, adapter, lr: float = 2e-3, weight_decay: float = 0.01, warmup_steps: int = 100,
                 max_steps: int = 2000, min_lr_ratio: float = 0.05, dense_loss_weight: float = 0.0, log=None,
                 position_loss_weight: float = 0.0, position_loss_layers: str = "all", grid: int = 3,
                 attribute_loss_weight: float = 0.0):
        super().__init__()
        self.adapter = adapter
        # registered here so Lightning sees (and trains) the parameters. The model stays in eval mode,
        # as the adapter left it: no dropout (the Q-Former's 0.1 only slows these small runs down), so
        # a training step and a scoring pass compute the same function.
        self.model = adapter.model
        self.lr, self.weight_decay = lr, weight_decay
        self.warmup_steps, self.max_steps, self.min_lr_ratio = warmup_steps, max_steps, min_lr_ratio
        self.history: list[dict] = []  # learning curve: one entry per validation
        self.dense_loss_weight = dense_loss_weight
        self.log_fn = log  # called with each learning-curve entry (progress of long runs)
        self._loss_ema: float | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []
        # Position read-outs (training only, not part of the saved model): linear heads that make every
        # image token's state name its cell's row and column, at the language model's input (the
        # projector output; "0"), after LM layers ("1", ..., "all") and / or at the vision tower's patch
        # outputs ("vision"). Without them the projector output carries no position at all, so a lookup
        # from a shape word to its image token finds what, never where.
        self.position_loss_weight, self.grid = position_loss_weight, grid
        # With attribute_loss_weight > 0 the same read-outs also name the colour, texture and size of the
        # object in each cell (empty cells ignored): the attribute level otherwise trails far behind.
        self.attribute_loss_weight = attribute_loss_weight
        n_attr = len(COLORS) + len(TEXTURES) + len(SIZES) if attribute_loss_weight > 0 else 0
        self.position_layers: list[int] = []
        self.position_vision = False
        self.position_heads = torch.nn.ModuleDict()
        if position_loss_weight > 0:
            n_layers = adapter.model.config.text_config.num_hidden_layers
            parts = [v.strip() for v in str(position_loss_layers).split(",") if v.strip()]
            self.position_vision = "vision" in parts
            parts = [v for v in parts if v != "vision"]
            self.position_layers = list(range(n_layers + 1)) if parts == ["all"] else [int(v) for v in parts]
            d = adapter.model.config.text_config.hidden_size
            for i in self.position_layers:
                self.position_heads[str(i)] = torch.nn.Linear(d, 2 * grid + n_attr)
            if self.position_vision:
                self.position_heads["vision"] = torch.nn.Linear(adapter.model.config.vision_config.hidden_size,
                                                                2 * grid + n_attr)
        self._position_states: list[tuple[str, torch.Tensor]] = []

    def forward(self, batch: dict) -> torch.Tensor:
        return lm_logits(self.adapter, batch)

    def dense_logits(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits at the last position [B, V], at the image tokens [B, n_cells, V], at the key words [B, K, V]."""
        from vseam.models.base import Encoded

        a = self.adapter
        captured = {}

        def keep(mod, args, out) -> None:  # returns None: the module's output is left as it is
            captured["vision"] = out[0]

        handle = vision_encoder(a.model).register_forward_hook(keep) if self.position_vision else None
        try:
            emb = a.embed(Encoded(model_inputs(batch), [], batch["target"]))
        finally:
            if handle is not None:
                handle.remove()
        out = a.decoder(inputs_embeds=emb.inputs_embeds, attention_mask=emb.attention_mask,
                        position_ids=emb.position_ids, use_cache=False,
                        output_hidden_states=bool(self.position_layers))
        hidden = out.last_hidden_state
        visual = a.visual_token_mask(batch["input_ids"])
        n = batch["cell_target"].shape[1]
        cells = hidden[visual].view(hidden.shape[0], -1, hidden.shape[-1])[:, :n]
        key = hidden[torch.arange(hidden.shape[0])[:, None], batch["key_pos"]]
        self._position_states = [(str(i), out.hidden_states[i][visual].view(hidden.shape[0], -1, hidden.shape[-1])[:, :n])
                                 for i in self.position_layers]
        if self.position_vision:  # the vision tower's patch outputs, after its CLS token
            self._position_states.append(("vision", captured["vision"][:, 1:1 + n]))
        return a.lm_head(hidden[:, -1]), a.lm_head(cells), a.lm_head(key)

    def position_loss(self, n_cells: int, cell_attr: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy of each image token's row and column (cell k = row k // grid, column k % grid),
        and (``cell_attr`` [B, n, 3]: colour, texture and size index, -100 where the cell is empty) of the
        attributes of the object there; each averaged over the read-out layers."""
        k = torch.arange(n_cells, device=self.device)
        row, col = k // self.grid, k % self.grid
        g = self.grid
        widths = (len(COLORS), len(TEXTURES), len(SIZES))
        total, attr = 0.0, torch.zeros((), device=self.device)
        for name, states in self._position_states:
            logits = self.position_heads[name](states)  # [B, n, 2*grid (+ colours + textures + sizes)]
            b = logits.shape[0]
            total = total + F.cross_entropy(logits[..., :g].flatten(0, 1), row.repeat(b)) \
                          + F.cross_entropy(logits[..., g:2 * g].flatten(0, 1), col.repeat(b))
            if self.attribute_loss_weight > 0 and cell_attr is not None:
                start = 2 * g
                for j, width in enumerate(widths):
                    attr = attr + F.cross_entropy(logits[..., start:start + width].flatten(0, 1),
                                                  cell_attr[..., j].flatten(), ignore_index=-100)
                    start += width
        n = max(1, len(self._position_states))
        return total / n, attr / n

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        position, attr = 0.0, 0.0
        if self.dense_loss_weight > 0 and "cell_target" in batch:
            # Dense supervision, two read-outs through the LM head: image token k (cell k for LLaVA,
            # query k for InstructBLIP) names the shape in cell k, and the question's key word (the
            # shape or colour it looks up) predicts what the lookup finds there. The lookup is what
            # the answer needs and what a single last-position target teaches only slowly.
            logits, cell_logits, key_logits = self.dense_logits(batch)
            cell_loss = F.cross_entropy(cell_logits.flatten(0, 1), batch["cell_target"].flatten())
            key_loss = F.cross_entropy(key_logits.flatten(0, 1), batch["key_target"].flatten(), ignore_index=-100)
            self.log_dict({"train/cell_loss": cell_loss, "train/key_loss": key_loss}, batch_size=len(batch["target"]))
            dense = cell_loss + key_loss
            if len(self.position_heads):
                position, attr = self.position_loss(batch["cell_target"].shape[1], batch.get("cell_attr"))
                self.log("train/position_loss", position, batch_size=len(batch["target"]))
                if self.attribute_loss_weight > 0:
                    self.log("train/attribute_loss", attr, batch_size=len(batch["target"]))
        else:
            logits, dense = self(batch), 0.0
        loss = F.cross_entropy(logits, batch["target"])
        acc = (logits.argmax(-1) == batch["target"]).float().mean()
        v = float(loss.detach())
        self._loss_ema = v if self._loss_ema is None else 0.95 * self._loss_ema + 0.05 * v
        self.log_dict({"train/loss": loss, "train/acc": acc}, prog_bar=True, batch_size=len(batch["target"]))
        return loss + self.dense_loss_weight * dense + self.position_loss_weight * position \
            + self.attribute_loss_weight * attr

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self(batch)
        self._val.append(((logits.argmax(-1) == batch["target"]).cpu(), batch["level_index"].cpu()))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        correct = torch.cat([c for c, _ in self._val]).float()
        level = torch.cat([lv for _, lv in self._val])
        self._val.clear()
        accs = {name: float(correct[level == i].mean()) for i, name in enumerate(LEVELS) if (level == i).any()}
        entry = {"step": int(self.global_step), "train_loss": self._loss_ema,
                 **{f"val_acc/{k}": v for k, v in accs.items()},
                 "val_acc/min_level": min(accs.values()), "val_acc/mean": float(correct.mean())}
        self.history.append(entry)
        if self.log_fn is not None:
            self.log_fn(" ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in entry.items()))
        self.log_dict({k: v for k, v in entry.items() if k.startswith("val_acc")}, prog_bar=True)

    def lr_factor(self, step: int) -> float:
        """Linear warm-up, then cosine decay to ``min_lr_ratio`` at ``max_steps``."""
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        t = min(1.0, (step - self.warmup_steps) / max(1, self.max_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    def configure_optimizers(self):
        decay, no_decay = [], []
        extra = self.position_heads.named_parameters(prefix="position_heads")
        for name, p in [*self.model.named_parameters(), *extra]:
            if p.requires_grad:
                # norms, biases and embeddings are not decayed (the usual transformer recipe)
                (no_decay if p.dim() < 2 or "embed" in name else decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": self.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=self.lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
