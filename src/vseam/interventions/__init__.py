"""The one per-head intervention mechanism at the language model's ``o_proj`` input, and saved modulations."""

from vseam.interventions.checkpoint import load_modulation, read_modulation, save_modulation
from vseam.interventions.heads import (
    Ablate, HeadCache, HeadModulation, HeadShapeError, Patch, Read, check_heads, intervene,
)

__all__ = ["Ablate", "Patch", "Read", "HeadModulation", "HeadCache", "intervene", "HeadShapeError", "check_heads",
           "load_modulation", "read_modulation", "save_modulation"]
