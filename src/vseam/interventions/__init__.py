"""The one per-head intervention mechanism at the language model's ``o_proj`` input."""

from vseam.interventions.heads import Ablate, HeadCache, HeadModulation, Patch, Read, intervene

__all__ = ["Ablate", "Patch", "Read", "HeadModulation", "HeadCache", "intervene"]
