"""The one intervention mechanism (per-head edits at the ``o_proj`` input, hidden-state hook points of every
decoder layer, attention scores and patterns) and saved modulations."""

from vseam.interventions.checkpoint import load_modulation, read_modulation, save_modulation
from vseam.interventions.heads import (
    ATTENTION_SITES, HIDDEN_SITES, SITES, Ablate, AttentionEdit, GroupedHeadModulation, HeadCache, HeadModulation,
    HeadShapeError, LogitBias, Patch, Read, Steer, block_modules, check_heads, intervene,
)
from vseam.interventions.lean import check_last_position, last_position_only, lean_attention

__all__ = ["Ablate", "Patch", "Read", "AttentionEdit", "Steer", "HeadModulation", "GroupedHeadModulation", "LogitBias",
           "HeadCache", "intervene", "HeadShapeError", "check_heads", "load_modulation", "read_modulation", "save_modulation",
           "block_modules", "SITES", "HIDDEN_SITES", "ATTENTION_SITES", "last_position_only", "check_last_position",
           "lean_attention"]
