"""``python analyze.py eval eval.method=<name>``: one of the field's methods applied to a model on any data, with the
statistics of ``analyze.py eval`` against the frozen model on the same questions.

A training-free method (``pai``, ``vaf``, ``spin``, ``vcd``) runs from its ``modulation.*`` hyperparameters alone,
its layer ranges scaled to the model's depth; with ``eval.checkpoint`` (the ``methods/<name>.safetensors`` a
``train.py`` run saved) it runs as that run applied it. A method estimated from data (``adhh``) needs its file.
A file is checked to be of the method named, of this model's shape and weights, and not estimated on the
samples being scored (``eval.allow_overlap``), as a learned modulation is. ``APPLY`` maps a method name to
``(name, cfg, adapter) -> Applied`` (``field_attention.Applied``: the edits of each batch, an optional contrast).
"""

from __future__ import annotations

from typing import Callable

from vseam.modulation import field_attention


def _field_attention(name: str, cfg, adapter) -> field_attention.Applied:
    mc = cfg.modulation
    if cfg.eval.checkpoint:
        return field_attention.from_file(name, cfg.eval.checkpoint, adapter,
                                          allow_other_model=bool(mc.allow_other_model))
    return field_attention.from_config(name, adapter, mc, int(cfg.seed))


APPLY: dict[str, Callable] = {name: _field_attention for name in field_attention.NAMES}


def build(cfg, adapter) -> field_attention.Applied:
    """The method ``eval.method`` names, applied to ``adapter``."""
    return APPLY[str(cfg.eval.method)](str(cfg.eval.method), cfg, adapter)


def run_eval(cfg) -> dict:
    """``analyze.py eval``: ``vseam.evaluation.run.run_eval``, with ``eval.method`` when one is named."""
    from vseam.evaluation.run import run_eval as evaluate_run

    return evaluate_run(cfg, build=build if str(cfg.eval.method) != "none" else None)
