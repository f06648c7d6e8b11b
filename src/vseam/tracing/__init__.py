"""Causal tracing of clean / edited pairs (attention block, MLP block, residual stream x layer x position,
and groups of positions) and the logit lens: ``python analyze.py trace`` (file schema in ``vseam.tracing.run``)."""

from vseam.tracing.engine import BLOCK_SITES, BLOCKS, DIRECTIONS, PairTrace, TraceEngine, effects, logit_lens
from vseam.tracing.positions import GROUPS, Layout, layouts

__all__ = ["TraceEngine", "PairTrace", "effects", "logit_lens", "layouts", "Layout", "BLOCKS", "BLOCK_SITES",
           "GROUPS", "DIRECTIONS"]
