"""Learned per-head modulation of a frozen VLM (docs/method.md#learned-modulation): key-head selection, the LightningModule
and DataModule of ``python train.py``, and the controls and baselines it is compared with (the random-head
draws trained together, ``draws``; the bias-only baseline and peft adapters, ``baselines``), the job
(``run``, ``job``, ``methods``) and what it writes (``outputs``: rows, statistics, tables). Saved modulations are
read and written by ``vseam.interventions`` (next to ``HeadModulation``); head scores are
``vseam.attribution.HeadScores``."""

from vseam.modulation.heads import heuristic_scales, random_heads, select_key_heads

__all__ = ["heuristic_scales", "random_heads", "select_key_heads"]
