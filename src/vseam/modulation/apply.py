"""``python analyze.py eval eval.method=<name>``: one of the field's methods (``field.METHODS``: ``pai``, ``vaf``,
``vhr``, ``ict``, ``vti``, ``adhh``, ``spin``, ``vcd``) applied to a model on any data, with the statistics of
``analyze.py eval`` against the frozen model on the same questions.

A method that needs no data (``pai``, ``vaf``, ``vhr``, ``spin``, ``vcd``) runs from its ``modulation.*``
hyperparameters alone, its layer ranges scaled to the model; with ``eval.checkpoint`` (the
``methods/<name>.safetensors`` a ``train.py`` run saved) it runs as that run applied it. A method estimated from
data (``ict``, ``vti``, ``adhh``) needs its file. A file is checked to be of the method named, of this model's
shape and weights, and not estimated on the samples being scored (``eval.allow_overlap``), as a learned
modulation is (``field.from_file``, ``evaluation.run``).
"""

from __future__ import annotations

from vseam.modulation import field


def build(cfg, adapter) -> field.Applied:
    """The method ``eval.method`` names, applied to ``adapter``: from ``eval.checkpoint`` when set, else from its keys."""
    name = str(cfg.eval.method)
    if cfg.eval.checkpoint:
        return field.from_file(name, cfg.eval.checkpoint, adapter,
                               allow_other_model=bool(cfg.modulation.allow_other_model))
    return field.from_config(name, adapter, cfg.modulation, int(cfg.seed))


def run_eval(cfg) -> dict:
    """``analyze.py eval``: ``vseam.evaluation.run.run_eval``, with ``eval.method`` when one is named."""
    from vseam.evaluation.run import run_eval as evaluate_run

    return evaluate_run(cfg, build=build if str(cfg.eval.method) != "none" else None)
