"""The one intervention mechanism (per-head edits at the ``o_proj`` input, hidden-state hook points of every
decoder layer, attention patterns) and saved modulations."""

from vseam.interventions.checkpoint import load_modulation, read_modulation, save_modulation
from vseam.interventions.heads import (
    HIDDEN_SITES, SITES, Ablate, GroupedHeadModulation, HeadCache, HeadModulation, HeadShapeError, LogitBias, Patch,
    Read, block_modules, check_heads, intervene,
)
from vseam.interventions.lean import check_last_position, last_position_only, lean_attention

__all__ = ["Ablate", "Patch", "Read", "HeadModulation", "GroupedHeadModulation", "LogitBias", "HeadCache",
           "intervene", "HeadShapeError", "check_heads", "load_modulation", "read_modulation", "save_modulation",
           "block_modules", "SITES", "HIDDEN_SITES", "last_position_only", "check_last_position", "lean_attention"]
