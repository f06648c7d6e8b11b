"""vseam: causal interpretability of vision-language models (V-SEAM) on PyTorch Lightning.

The notebook API (everything the command-line jobs use, one call each)::

    import vseam

    model = vseam.load("organism-llava")              # a config name, a model folder, a hub id or tiny:llava
    samples = vseam.load_samples("organism")          # a data config name (+ key overrides)
    out = model.run(samples[:8])                      # answers, probabilities, correctness
    out = model.run(samples[:8], vseam.Ablate(layer=0, heads=[1]))   # with an intervention
    out, cache = model.run_with_cache(samples[:2])    # cache[l]: the o_proj input z [B, T, H, D] of layer l
    q = vseam.prompt(image, "What color is the square?")             # a free-form prompt, no answer needed
    scores = vseam.score_heads(model, samples, method="exact")        # HeadScores (positive / negative / signed)

Imports are lazy, so ``import vseam`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from vseam.attribution.scores import HeadScores
    from vseam.data.sample import Sample
    from vseam.interventions.hooks import ActivationCache
    from vseam.models.base import VLMAdapter

__version__ = "0.1.0"

__all__ = ["load", "Model", "Output", "sample", "prompt", "load_samples", "read_benchmark", "score_heads",
           "load_head_scores", "top_k", "load_config", "Ablate", "Patch", "Read", "HeadModulation",
           "intervene", "HeadScores"]

_LAZY = {  # name -> module it lives in (the one home; re-exported here for notebooks)
    "Ablate": "vseam.interventions.hooks", "Patch": "vseam.interventions.hooks", "Read": "vseam.interventions.hooks",
    "HeadModulation": "vseam.interventions.hooks", "intervene": "vseam.interventions.hooks",
    "HeadScores": "vseam.attribution.scores", "top_k": "vseam.attribution.scores",
    "load_head_scores": "vseam.attribution.outputs", "load_config": "vseam.config",
    "read_benchmark": "vseam.data.readers",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vseam' has no attribute {name!r}")


@dataclass
class Output:
    """What ``Model.run`` returns, per sample in order. ``prob`` / ``correct`` are None for a prompt
    without an answer."""

    ids: list[str]
    pred_token: list[str]  # the arg-max token at the last position, as text (``red``, not the piece ``▁red``)
    prob: list[float | None]  # probability of the answer's tokens (docs/method.md#answer-tokens)
    correct: list[bool | None]  # the arg-max token is one of the answer's tokens
    logits: Any  # [N, V] last-position logits (float32, CPU)

    @property
    def accuracy(self) -> float | None:
        scored = [c for c in self.correct if c is not None]
        return sum(scored) / len(scored) if scored else None


class Model:
    """A loaded VLM for notebooks: ``run`` / ``run_with_cache`` / ``intervene`` / ``score_heads``.

    ``model.adapter`` is the ``VLMAdapter`` every job uses (prompt template, answer tokens, structure).
    """

    def __init__(self, adapter: VLMAdapter):
        self.adapter = adapter

    def __repr__(self) -> str:
        a = self.adapter
        return f"Model({a.name!r}: {a.arch}, {a.num_layers} layers x {a.num_heads} heads x {a.head_dim})"

    @property
    def num_layers(self) -> int:
        return self.adapter.num_layers

    @property
    def num_heads(self) -> int:
        return self.adapter.num_heads

    def intervene(self, *edits):
        """A context manager applying ``edits`` (``Ablate``, ``Patch``, ``Read``, ``HeadModulation``)."""
        from vseam.interventions.hooks import intervene

        return intervene(self.adapter, *edits)

    def run(self, samples: Sample | Sequence[Sample], *edits, batch_size: int = 8) -> Output:
        """Last-position predictions for ``samples`` (with ``edits`` applied while it runs)."""
        return self._run(_as_list(samples), edits, batch_size)[0]

    def run_with_cache(self, samples: Sample | Sequence[Sample], *edits,
                       layers: Sequence[int] | None = None) -> tuple[Output, ActivationCache]:
        """``run`` in one batch, also returning the per-head ``o_proj`` inputs (``cache[l]``: [B, T, H, D],
        left-padded as the batch was) of ``layers`` (all when None), after ``edits``."""
        from vseam.interventions.hooks import Read

        samples = _as_list(samples)
        return self._run(samples, (*edits, Read(layers=layers)), max(1, len(samples)))

    def score_heads(self, samples: Sequence[Sample], method: str = "exact", **kwargs) -> HeadScores:
        return score_heads(self, samples, method=method, **kwargs)

    def _run(self, samples: list, edits: tuple, batch_size: int):
        import torch

        from vseam.interventions.hooks import intervene
        from vseam.models.base import answer_stats

        a = self.adapter
        ids, tokens, probs, corrects, logits_all = [], [], [], [], []
        cache = None  # no sample, no cache
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            enc = a.encode(chunk).to(a.device)
            with torch.no_grad(), intervene(a, *edits) as batch_cache:
                logits = a.last_logits(enc).float()
            cache = batch_cache  # the last batch's (run_with_cache runs one)
            prob, correct, _ = answer_stats(logits, enc.answer_mask(logits.shape[-1]))
            pred = logits.argmax(-1).tolist()
            ids += enc.ids
            tokens += a.token_text(pred)
            for i in range(len(chunk)):
                has_answer = bool(enc.answer_ids[i])
                probs.append(float(prob[i]) if has_answer else None)
                corrects.append(bool(correct[i]) if has_answer else None)
            logits_all.append(logits.cpu())
        logits = torch.cat(logits_all) if logits_all else torch.zeros(0, a.vocab_size)
        return Output(ids, tokens, probs, corrects, logits), cache


def load(model: str = "organism-llava", *overrides: str, device: str = "auto", **keys: Any) -> Model:
    """A model by config name (``configs/model/<name>.yaml``: ``organism-llava``, ``llava-1.5-7b``, ...),
    or by folder / hub id / ``tiny:<arch>`` (the architecture is the checkpoint's ``model_type``'s unless ``arch=``).
    ``overrides`` are ``model.key=value`` strings, ``keys`` set model keys (``dtype="bfloat16"``);
    ``device`` is ``trainer.accelerator``'s vocabulary (auto | cpu | gpu) or a torch device."""
    from vseam.config import group_choices, load_config
    from vseam.models.loading import load_adapter

    if model in group_choices("model"):
        cfg = load_config([f"model={model}", *overrides, *(f"model.{k}={v}" for k, v in keys.items())]).model
    else:
        arch = keys.pop("arch", None)
        cfg = load_config([f"model.path={model}", *([f"model.arch={arch}"] if arch else []), f"model.name={model}",
                           *overrides, *(f"model.{k}={v}" for k, v in keys.items())]).model
    return Model(load_adapter(cfg, device=device))


def sample(image: Any, question: str, answer: str | None = None, *, id: str | None = None,
           category: str | None = None, level: str | None = None) -> Sample:
    """A sample from an image (a PIL image or a file path), a question and its answer (None: a free-form
    prompt, run for its prediction only)."""
    from pathlib import Path

    from vseam.data.sample import Sample

    is_path = isinstance(image, (str, Path))
    _made.append(question)
    return Sample(id=id or f"sample-{len(_made)}",
                  question=question, answer=answer, image_path=str(image) if is_path else None,
                  image=None if is_path else image, benchmark="notebook", category=category, level=level)


_made: list[str] = []  # samples made here, for their default ids


def prompt(image: Any, text: str, **kwargs: Any) -> Sample:
    """A free-form prompt about an image (no gold answer): ``model.run`` gives its prediction."""
    return sample(image, text, None, **kwargs)


def load_samples(data: str = "organism", *overrides: str, **keys: Any) -> list:
    """The samples of a data config (``configs/data/<name>.yaml``; the organism world is built on first
    use) with ``data.key=value`` overrides or keyword keys (``n_per_category=4``, ``root="w"``)."""
    from vseam.config import load_config
    from vseam.data.load import DUPLICATE
    from vseam.data.load import load_samples as _load
    from vseam.world.write import ensure_world

    cfg = load_config([f"data={data}", *overrides, *(f"data.{k}={_cli(v)}" for k, v in keys.items())])
    ensure_world(cfg.data)
    samples = _load(cfg.data)
    kept = [s for s in samples if not s.meta.get(DUPLICATE)]  # data.duplicate_ids=drop: the first of each id
    if len(kept) < len(samples):
        print(f"note: dropped {len(samples) - len(kept)} sample(s) whose id repeats an earlier one "
              f"(data.duplicate_ids=drop)", flush=True)
    return kept


def score_heads(model: Model | VLMAdapter, samples: Sequence[Sample], method: str = "exact",
                **kwargs: Any) -> HeadScores:
    """Head attribution over ``samples`` (``vseam.attribution.score_heads``). Keys of the ``attribution``
    config group (``method`` exact | atp, ``ablation``, ``chunk_size``, ``atp_alpha``, ``progress``, ...) are
    its settings, the others their defaults; ``progress_dir`` saves every chunk there and resumes; further
    keywords (``batch_size``, ``max_skip_fraction``, ``cache``, ``on_chunk``) go to the sweep."""
    from dataclasses import fields

    from vseam.attribution.sweep import score_heads as _score
    from vseam.config import AttributionConfig
    from vseam.runtime import Runtime

    keys = {f.name for f in fields(AttributionConfig)}
    settings = {"method": method, **{k: kwargs.pop(k) for k in list(kwargs) if k in keys}}
    if "progress_dir" in kwargs:
        kwargs["runtime"] = Runtime(kwargs.pop("progress_dir"))
    adapter = model.adapter if isinstance(model, Model) else model
    return _score(adapter, list(samples), settings, **kwargs)


def _as_list(samples) -> list:
    from vseam.data.sample import Sample

    return [samples] if isinstance(samples, Sample) else list(samples)


def _cli(value: Any) -> str:
    """A Python value as an OmegaConf dotlist value."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return "null" if value is None else str(value)
