"""Build an adapter from a model config: a hub id, a local folder, or a tiny random build (``tiny:ARCH``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vseam.models.base import VLMAdapter, check_answer_definition
from vseam.models.instructblip import InstructBlipAdapter
from vseam.models.llava import LlavaAdapter
from vseam.utils.devices import torch_device
from vseam.utils.paths import PACKAGE_DIR, is_shipped_name, shipped

ADAPTERS: dict[str, type[VLMAdapter]] = {"llava": LlavaAdapter, "instructblip": InstructBlipAdapter}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFoundError(RuntimeError):
    """The model is neither a local folder nor in the local Hugging Face cache (offline)."""


def load_adapter(cfg: Any, device: str | None = None) -> VLMAdapter:
    """Load the model named by ``cfg`` (a ModelConfig or mapping) onto ``device`` (``trainer.accelerator``'s
    names or a torch device; None = the mapping's ``device`` entry, else auto) and wrap it in its adapter."""
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    arch = get("arch")
    if arch not in ADAPTERS:
        raise ValueError(f"model.arch={arch!r}: expected one of {sorted(ADAPTERS)}")
    path = str(get("path"))
    if not path.startswith("tiny:"):
        if is_shipped_name(path) and not shipped(path).exists():
            raise ModelNotFoundError(
                f"model.path={path}: a shipped checkpoint, but it is neither under the working directory nor in "
                f"the package ({PACKAGE_DIR / path}); rebuild it with scripts/build_organism.py or reinstall vseam")
        path = str(shipped(path))
    dtype = DTYPES[get("dtype", "float32")]
    device = torch_device(device or get("device", "auto") or "auto")
    template = get("prompt_template", None) or None
    answer_definition = check_answer_definition(get("answer_definition", "project") or "project")
    if path.startswith("tiny:"):
        from vseam.models.tiny import FULL_WIDTH_ARCH, build_full_width, build_tiny_instructblip, build_tiny_llava

        kind, seed = path[len("tiny:"):], int(get("seed", 0) or 0)
        if kind in FULL_WIDTH_ARCH:  # tiny:llava-1.5-7b: the real widths, 2 language + 2 vision layers
            if FULL_WIDTH_ARCH[kind] != arch:
                raise ValueError(f"model.path={path!r} is a {FULL_WIDTH_ARCH[kind]} model but model.arch={arch!r}")
            model, processor = build_full_width(kind, seed=seed)
        elif kind in ADAPTERS:
            if kind != arch:
                raise ValueError(f"model.path={path!r} is a {kind} model but model.arch={arch!r}")
            model, processor = (build_tiny_llava if arch == "llava" else build_tiny_instructblip)(seed=seed)
        else:
            raise ValueError(f"model.path={path!r}: expected tiny:<arch> ({sorted(ADAPTERS)}) or a full-width "
                             f"random build tiny:<name> ({sorted(FULL_WIDTH_ARCH)})")
    else:
        model, processor = _from_pretrained(path, arch, dtype=dtype, device_map=get("device_map", None),
                                            local_files_only=bool(get("local_files_only", False)),
                                            attn_implementation=get("attn_implementation", None))
    model.requires_grad_(False)
    from vseam.models.identity import model_identity

    # hashed before any dtype cast: the identity is the checkpoint's, whatever dtype it runs in
    identity = model_identity(path, get("name", None) or path, model, bool(get("local_files_only", False)))
    if get("device_map", None) is None:
        model.to(device=device, dtype=dtype)
    adapter = ADAPTERS[arch](model, processor, template=template, name=get("name", None) or path,
                             answer_definition=answer_definition)
    adapter.identity = identity
    return adapter


def _from_pretrained(path: str, arch: str, *, dtype, device_map, local_files_only: bool, attn_implementation):
    from transformers import AutoProcessor, InstructBlipForConditionalGeneration, LlavaForConditionalGeneration

    model_cls = {"llava": LlavaForConditionalGeneration, "instructblip": InstructBlipForConditionalGeneration}[arch]
    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    is_local = Path(path).expanduser().exists()
    kwargs: dict = {"local_files_only": offline or is_local, "trust_remote_code": False}
    try:
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        model = model_cls.from_pretrained(path, dtype=dtype, device_map=device_map,
                                          attn_implementation=attn_implementation, **kwargs)
    except (OSError, ValueError) as e:
        if is_local:
            raise ModelNotFoundError(f"model folder {path!r} is incomplete or unreadable: {e}") from e
        if isinstance(e, ValueError):
            raise
        raise ModelNotFoundError(
            f"model {path!r} is not available offline. Download it on a machine with internet, e.g. "
            f"`hf download {path} --local-dir models/{path.split('/')[-1]}`, then either "
            f"set model.path=models/{path.split('/')[-1]} or put it in the Hugging Face cache "
            f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')})."
        ) from e
    return model, processor
