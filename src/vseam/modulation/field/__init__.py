"""The field's hallucination methods (docs/guides/train.md#the-fields-hallucination-methods) as one system: PAI, VAF, VHR, ICT, VTI, AD-HH, SPIN and VCD, each
a row of ``train.py`` (``modulation.methods``) and an option of ``analyze.py eval`` (``eval.method``).

Every method is registered once, in ``METHODS`` (name -> ``core.Method``: how it is built from its
hyperparameters and tensors, and either how its hyperparameters come from the ``modulation.*`` keys or how it is
estimated on a train split), and every method, however made, is one ``core.Applied``: the edits it makes of a
batch, edits of the vision tower, a contrast, or a replacement forward, scored the same way by every consumer
(``evaluate(adapter, samples, **applied.scoring(adapter, cache))``). The paths:

- ``from_config(name, adapter, mc, seed)``: a method that needs no data (PAI, VAF, VHR, SPIN, VCD) from its keys,
  its layer ranges (written for LLaVA-1.5-7B, ``modulation.field_depth`` layers of ``field_heads`` heads) scaled
  to the model (``core.model_layers``, ``core.model_heads``);
- ``from_file(name, path, adapter)``: any method as a ``train.py`` run saved it (``<out_dir>/methods/<name>
  .safetensors``: hyperparameters as applied, tensors, the model's identity and the train samples it was
  estimated on), refused when the file is another method's, of another model's shape or weights;
- ``run_method(job, name)``: ``train.py``'s row (estimated on the train split only, scored on the test and
  validation splits, its file saved); ``check_applicable(job)``: every named method refused, before any runs,
  on a model it does not apply to.

The methods' own code, with each paper's source and where the project's version differs from its code:
``field.attention`` (PAI, VAF, SPIN, AD-HH, VCD: attention scores and patterns, contrastive next-token
scoring) and ``field.activation`` (VHR, ICT, VTI: head outputs, hidden states, the vision tower's hidden
states). Hyperparameters are validated before a model loads (``validate.check_field_methods``).
"""

from __future__ import annotations

from vseam.data.sample import sample_key
from vseam.interventions import HeadShapeError
from vseam.interventions.checkpoint import load_method
from vseam.modulation.field.activation import ICT, VHR, VTI
from vseam.modulation.field.attention import ADHH, PAI, SPIN, VAF, VCD
from vseam.modulation.field.core import (
    Applied,
    Estimate,
    Method,
    NotApplicableError,
    image_free,
    model_heads,
    model_layers,
    token_roles,
)

METHODS: dict[str, Method] = {"pai": PAI, "vaf": VAF, "vhr": VHR, "ict": ICT, "vti": VTI, "adhh": ADHH, "spin": SPIN,
                              "vcd": VCD}

__all__ = ["METHODS", "Applied", "Estimate", "Method", "NotApplicableError", "check_applicable", "from_config",
           "from_file", "image_free", "model_heads", "model_layers", "run_method", "token_roles"]


def _method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown field method {name!r}; expected one of {list(METHODS)}")
    return METHODS[name]


def from_config(name: str, adapter, mc, seed: int, cache_enabled: bool = True) -> Applied:
    """Method ``name`` from the ``modulation.*`` hyperparameters (methods that need no data only)."""
    m = _method(name)
    if m.needs_file:
        raise NotApplicableError(f"{name} is estimated on a train split by train.py: apply its file with "
                                 f"eval.checkpoint=<run>/methods/{name}.safetensors")
    return m.build(adapter, m.configure(adapter, mc, int(seed)), {}, cache_enabled)


def from_file(name: str, path, adapter, allow_other_model: bool = False, cache_enabled: bool = True) -> Applied:
    """Method ``name`` as a ``train.py`` run saved it (``methods/<name>.safetensors``): its hyperparameters as applied
    there and what it estimated, checked to be ``name``'s and made for this model (shape; weights unless
    ``allow_other_model``). ``extra``: the file and the train samples it was estimated on (``seen``: none for a
    method that needs no data)."""
    m = _method(name)
    tensors, info = load_method(path, adapter, name, allow_other_model=allow_other_model)
    try:
        out = m.build(adapter, info["hyperparameters"], tensors, cache_enabled)
    except KeyError as e:
        raise NotApplicableError(f"{name} file {path} lacks {e}: saved by another version of the method") from None
    except HeadShapeError as e:
        raise HeadShapeError(f"{name} file {path}: {e}") from None
    bad = [l for l in out.hyperparameters.get("layers", []) if not 0 <= int(l) < adapter.num_layers]
    if bad:
        raise HeadShapeError(f"{name} file {path} names layers {bad}; the model has {adapter.num_layers}")
    seen = info["extra"].get("seen")
    out.extra.update(file=str(path), seen={} if seen is None and not m.needs_file else seen)
    return out


def check_applicable(job) -> None:
    """Refuse, before any method runs, a field method of ``modulation.methods`` the model does not apply to (one
    line naming the method and why), from a batch of two test questions: each method's ``check``, else the edits
    it makes of that batch."""
    mc = job.cfg.modulation
    names = [m for m in mc.methods if m in METHODS]
    if not names:
        return
    batch = job.cache.batch(list(job.splits["test"][:2]))
    for name in names:
        m = METHODS[name]
        if m.check is not None:
            m.check(job, batch)
        else:
            from_config(name, job.adapter, mc, int(job.cfg.seed)).for_batch(batch)


def run_method(job, name: str):
    """``train.py``'s row of field method ``name``: made from its keys or estimated on the train split (None when the
    data cannot give it, said), scored on the test and validation splits, its file saved as
    ``<out_dir>/methods/<name>.safetensors`` with the train samples it was estimated on."""
    from vseam.modulation.job import Outcome, say
    from vseam.utils.ranks import is_rank_zero

    cfg, a = job.cfg, job.adapter
    m = _method(name)
    if m.needs_file:
        est = m.estimate(job, name)
        if est is None:
            return None
    else:
        est = Estimate(m.configure(a, cfg.modulation, int(cfg.seed)), {}, [], "")
    applied = m.build(a, est.hyperparameters, est.tensors, bool(cfg.modulation.cache_embeddings))
    if est.setup:
        applied.cost = {**applied.cost, "setup": est.setup}
    applied.extra.update(est.row)
    test, val = job.evaluate(**applied.scoring(a, job.cache))
    row = applied.summary()
    if is_rank_zero():
        path = applied.save(job.out / "methods" / f"{name}.safetensors", a,
                            extra={"data": cfg.data.name, "seen": {"train": [sample_key(s) for s in est.seen]},
                                   "seen_ids": {"train": [s.id for s in est.seen]}})
        row["file"] = str(path)
        say(f"[{name}] {applied.changes}; apply it to other data: python analyze.py eval eval.method={name} "
            f"eval.checkpoint={path}")
    return Outcome(test, val, 0, row)
