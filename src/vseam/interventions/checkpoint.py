"""Save and load a learned modulation on its own: the per-head parameters, the head list and the model id
and shape, as one small safetensors file (a few KB), never the VLM; and, in the same way, what another method
of ``train.py`` made (``save_method``: the field's methods, ``vseam.modulation.field``): its name,
hyperparameters and whatever it estimated (tensors), for ``analyze.py eval eval.method=<name>``.

Any run (evaluation, analysis) applies a saved modulation with ``load_modulation(path, adapter)`` and
``intervene(adapter, modulation)``. Loading onto a model of another shape fails with a clear message;
onto another checkpoint of the same shape (another weights hash) it is refused unless asked for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vseam.interventions.hooks import HeadModulation, HeadShapeError, check_heads
from vseam.utils.io import BadFileError, read_safetensors, save_safetensors

FORMAT = "vseam.modulation/1"


def modulation_tensors(mod: HeadModulation) -> dict[str, torch.Tensor]:
    out = {"layer_index": mod.layer_index, "head_index": mod.head_index}
    if mod.scale is not None:
        out["scale"] = mod.scale
    if mod.offset is not None:
        out["offset"] = mod.offset
    return {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu() for k, v in out.items()}


def save_modulation(path: str | Path, mod: HeadModulation, *, model: str, num_layers: int, num_heads: int,
                    identity: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> Path:
    """Write ``mod`` with its head list, the model's id and shape and ``identity`` (path, weights hash:
    ``adapter.identity``); safetensors metadata is str -> str."""
    meta = {
        "format": FORMAT,
        "model": str(model),
        "model_path": str((identity or {}).get("path", "")),
        "weights_sha256": str((identity or {}).get("weights_sha256", "")),
        "num_layers": str(num_layers),
        "num_heads": str(num_heads),
        "head_dim": str(mod.head_dim),
        "scale": mod.scale_kind,
        "offset": str(mod.offset is not None).lower(),
        "heads": json.dumps(mod.heads),
        "extra": json.dumps(extra or {}),
    }
    return save_safetensors(path, modulation_tensors(mod), metadata=meta)


def read_modulation(path: str | Path) -> tuple[HeadModulation, dict[str, Any]]:
    """The modulation stored in ``path`` and its metadata (model, num_layers, num_heads, head_dim, ...)."""
    path = Path(path)
    tensors, meta = read_safetensors(path, "modulation file")
    if meta.get("format") != FORMAT:
        raise BadFileError(f"{path}: not a vseam modulation file (format {meta.get('format')!r}, expected {FORMAT!r})")
    try:
        heads = [tuple(h) for h in json.loads(meta["heads"])]
        mod = HeadModulation(heads, int(meta["head_dim"]), scale=meta["scale"], offset=meta["offset"] == "true")
        with torch.no_grad():
            if mod.scale is not None:
                mod.scale.copy_(tensors["scale"])
            if mod.offset is not None:
                mod.offset.copy_(tensors["offset"])
        info = {"model": meta["model"], "model_path": meta.get("model_path", ""),
                "weights_sha256": meta.get("weights_sha256", ""), "num_layers": int(meta["num_layers"]), "num_heads": int(meta["num_heads"]),
                "head_dim": int(meta["head_dim"]), "heads": heads, "extra": json.loads(meta.get("extra", "{}"))}
    except (KeyError, ValueError, TypeError, RuntimeError) as e:
        raise BadFileError(f"modulation file {path} is damaged: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    for name in ("scale", "offset"):
        t = getattr(mod, name)
        if t is not None and not torch.isfinite(t).all():
            raise BadFileError(f"modulation file {path}: {name} holds NaN or infinite values")
    return mod, info


def check_fits(info: dict[str, Any], num_layers: int, num_heads: int, head_dim: int, where: str) -> None:
    """Raise ``HeadShapeError`` when a saved modulation was made for another model shape."""
    saved = (info["num_layers"], info["num_heads"], info["head_dim"])
    if saved != (num_layers, num_heads, head_dim):
        raise HeadShapeError(
            f"{where} was trained on model {info.get('model') or '?'} with {saved[0]} layers x {saved[1]} heads x "
            f"head_dim {saved[2]}; this model has {num_layers} x {num_heads} x {head_dim}. A modulation only "
            f"applies to a model of the shape it was trained on.")
    check_heads(info["heads"], num_layers, num_heads, where)


def load_modulation(path: str | Path, adapter=None, *, trainable: bool = False,
                    allow_other_model: bool = False) -> HeadModulation:
    """Read a saved modulation; with ``adapter``, check that it was made with this model's weights (else
    refuse, unless ``allow_other_model``) and fits its shape, and move it to the model's device."""
    from vseam.models.identity import check_same_model

    mod, info = read_modulation(path)
    if adapter is not None:
        check_fits(info, adapter.num_layers, adapter.num_heads, adapter.head_dim, f"modulation {path}")
        check_same_model({"id": info["model"], "path": info["model_path"], "weights_sha256": info["weights_sha256"]},
                         adapter, f"modulation {path}", allow=allow_other_model)
        mod = mod.to(adapter.device)
    mod.requires_grad_(trainable)
    return mod


METHOD_FORMAT = "vseam.method/1"


def save_method(path: str | Path, method: str, *, hyperparameters: dict[str, Any], tensors: dict[str, torch.Tensor],
                model: str, num_layers: int, num_heads: int, head_dim: int, identity: dict[str, str] | None = None,
                extra: dict[str, Any] | None = None) -> Path:
    """Write what ``method`` made for one model: its hyperparameters (JSON), its tensors (heads it chose, values
    it estimated; may be none), the model's id, shape and weights hash (``adapter.identity``) and ``extra`` (e.g.
    the samples it was estimated on, ``seen``)."""
    meta = {"format": METHOD_FORMAT, "method": str(method), "hyperparameters": json.dumps(hyperparameters),
            "model": str(model), "model_path": str((identity or {}).get("path", "")),
            "weights_sha256": str((identity or {}).get("weights_sha256", "")), "num_layers": str(num_layers),
            "num_heads": str(num_heads), "head_dim": str(head_dim), "heads": json.dumps([]),
            "extra": json.dumps(extra or {})}
    return save_safetensors(path, {k: v.detach().cpu() for k, v in tensors.items()}, metadata=meta)


def read_method(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and the facts (method, hyperparameters, model, shape, extra) of a ``save_method`` file."""
    path = Path(path)
    tensors, meta = read_safetensors(path, "method file")
    if meta.get("format") != METHOD_FORMAT:
        what = "a learned modulation (apply it with eval.method=none)" if meta.get("format") == FORMAT else \
            f"format {meta.get('format')!r}"
        raise BadFileError(f"{path}: not a vseam method file ({what}; expected {METHOD_FORMAT!r})")
    try:
        info = {"method": meta["method"], "hyperparameters": json.loads(meta["hyperparameters"]),
                "model": meta["model"], "model_path": meta.get("model_path", ""),
                "weights_sha256": meta.get("weights_sha256", ""), "num_layers": int(meta["num_layers"]),
                "num_heads": int(meta["num_heads"]), "head_dim": int(meta["head_dim"]), "heads": [],
                "extra": json.loads(meta.get("extra", "{}"))}
    except (KeyError, ValueError, TypeError) as e:
        raise BadFileError(f"method file {path} is damaged: {type(e).__name__}: {str(e).splitlines()[0]}") from None
    return tensors, info


def load_method(path: str | Path, adapter, method: str, *, allow_other_model: bool = False
                ) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A ``save_method`` file of ``method``, checked to be made for this model's shape and weights (else refused,
    the weights unless ``allow_other_model``)."""
    from vseam.models.identity import check_same_model

    tensors, info = read_method(path)
    if info["method"] != method:
        raise BadFileError(f"{path} was saved by method {info['method']!r}, not {method!r} (eval.method={method})")
    check_fits(info, adapter.num_layers, adapter.num_heads, adapter.head_dim, f"{method} file {path}")
    check_same_model({"id": info["model"], "path": info["model_path"], "weights_sha256": info["weights_sha256"]},
                     adapter, f"{method} file {path}", allow=allow_other_model)
    return tensors, info


def seen_samples(path: str | Path) -> dict[str, list[str]] | None:
    """The content keys of the samples a saved modulation or method file was trained, selected or estimated on
    (``extra.seen``: split -> keys), None when it records none."""
    _, meta = read_safetensors(path, "saved file")
    try:
        return json.loads(meta.get("extra", "{}")).get("seen")
    except ValueError:
        raise BadFileError(f"saved file {path}: its metadata 'extra' is not JSON") from None
