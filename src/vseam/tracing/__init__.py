"""Causal tracing of clean / edited pairs (attention block, MLP block, residual stream x layer x position,
and groups of positions) and the logit lens: ``python analyze.py trace`` (file schema in ``vseam.tracing.run``).
The choices of ``trace.blocks`` / ``groups`` / ``direction`` are the types of ``vseam.config.TraceConfig``."""

from vseam.tracing.engine import BLOCK_SITES, PairTrace, TraceEngine, effects, logit_lens
from vseam.tracing.positions import POSITION_GROUPS, Layout, layouts

__all__ = ["TraceEngine", "PairTrace", "effects", "logit_lens", "layouts", "Layout", "BLOCK_SITES", "POSITION_GROUPS"]
