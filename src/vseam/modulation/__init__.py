"""Learned per-head modulation of a frozen VLM (SPEC section 3): key-head selection, the LightningModule
and DataModule of ``python train.py``, saved modulations, and the baselines it is compared with."""

from vseam.modulation.checkpoint import load_modulation, read_modulation, save_modulation
from vseam.modulation.heads import (
    HeadScores, HeadShapeError, check_heads, heuristic_scales, load_head_scores, random_heads, select_key_heads,
)

__all__ = ["load_modulation", "read_modulation", "save_modulation", "HeadScores", "HeadShapeError", "check_heads",
           "heuristic_scales", "load_head_scores", "random_heads", "select_key_heads"]
