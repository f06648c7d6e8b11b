"""The one intervention mechanism (per-head edits at the ``o_proj`` input, hidden-state hook points of every
decoder layer, attention scores and patterns; ``hooks``), replaying a pass from a recorded layer with edits
(``replay``), and saved modulations."""

from vseam.interventions.checkpoint import load_modulation, read_modulation, save_modulation
from vseam.interventions.hooks import (
    ATTENTION_SITES,
    HIDDEN_SITES,
    SITES,
    Ablate,
    ActivationCache,
    AttentionEdit,
    GroupedHeadModulation,
    HeadModulation,
    HeadShapeError,
    LogitBias,
    Patch,
    Read,
    Steer,
    block_modules,
    check_heads,
    intervene,
)
from vseam.interventions.lean import check_last_position, last_position_only, lean_attention
from vseam.interventions.replay import CleanRun, clean_run, length_batches, length_groups, run_from_layer

__all__ = ["Ablate", "Patch", "Read", "AttentionEdit", "Steer", "HeadModulation", "GroupedHeadModulation", "LogitBias",
           "ActivationCache", "intervene", "HeadShapeError", "check_heads", "load_modulation", "read_modulation",
           "save_modulation", "block_modules", "SITES", "HIDDEN_SITES", "ATTENTION_SITES", "CleanRun", "clean_run",
           "run_from_layer", "length_groups", "length_batches", "last_position_only", "check_last_position",
           "lean_attention"]
