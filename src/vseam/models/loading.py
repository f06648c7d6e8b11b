"""Build an adapter from a model config: a hub id, a local folder, or a tiny random build (``tiny:ARCH``).

``ADAPTERS`` is the registry of architectures (``model.arch``). Without ``model.arch`` the architecture is
the one serving the checkpoint's ``config.model_type`` (``arch_for_model_type``); an explicit value wins.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from vseam.models.base import VLMAdapter, check_answer_definition
from vseam.models.gemma3 import Gemma3Adapter
from vseam.models.idefics3 import Idefics3Adapter
from vseam.models.instructblip import InstructBlipAdapter
from vseam.models.internvl import InternVLAdapter
from vseam.models.llava import LlavaAdapter
from vseam.models.llava_next import LlavaNextAdapter
from vseam.models.llava_onevision import LlavaOnevisionAdapter
from vseam.models.paligemma import PaliGemmaAdapter
from vseam.models.qwen2_5_vl import Qwen2_5_VLAdapter
from vseam.models.qwen2_vl import Qwen2VLAdapter
from vseam.models.qwen3_vl import Qwen3VLAdapter
from vseam.models.smolvlm import SmolVLMAdapter
from vseam.utils.devices import torch_device
from vseam.utils.paths import PACKAGE_DIR, is_shipped_name, shipped

ADAPTERS: dict[str, type[VLMAdapter]] = {a.arch: a for a in (LlavaAdapter, InstructBlipAdapter, LlavaNextAdapter,
                                                                Qwen2VLAdapter,
                                                                Qwen2_5_VLAdapter, Qwen3VLAdapter,
                                                                Gemma3Adapter, PaliGemmaAdapter,
                                                                LlavaOnevisionAdapter, Idefics3Adapter, SmolVLMAdapter,
                                                                InternVLAdapter)}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelNotFoundError(RuntimeError):
    """The model is neither a local folder nor in the local Hugging Face cache (offline)."""


def supported() -> str:
    """The architectures and the checkpoint model types each serves, for messages."""
    return ", ".join(f"{arch} ({'/'.join(a.model_types)})" for arch, a in sorted(ADAPTERS.items()))


def arch_for_model_type(model_type: str, where: str = "the checkpoint") -> str:
    """The ``model.arch`` serving checkpoints of ``config.model_type`` = ``model_type``."""
    for arch, a in ADAPTERS.items():
        if model_type in a.model_types:
            return arch
    raise ValueError(f"{where}: model_type {model_type!r} is not a supported architecture; supported (model.arch "
                     f"(model_type)): {supported()}")


def check_arch(arch: Any) -> str:
    """``arch`` when it names an adapter, else a ValueError listing the supported ones."""
    if arch not in ADAPTERS:
        raise ValueError(f"model.arch={arch!r}: expected one of {sorted(ADAPTERS)} (model_types: {supported()}), "
                         f"or null to read it from the checkpoint")
    return str(arch)


def load_adapter(cfg: Any, device: str | None = None) -> VLMAdapter:
    """Load the model named by ``cfg`` (a ModelConfig or mapping) onto ``device`` (``trainer.accelerator``'s
    names or a torch device; None = the mapping's ``device`` entry, else auto) and wrap it in its adapter."""
    get = cfg.get if hasattr(cfg, "get") else (lambda k, d=None: getattr(cfg, k, d))
    arch = get("arch", None) or None
    if arch is not None:
        check_arch(arch)
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
    local_files_only = bool(get("local_files_only", False))
    if path.startswith("tiny:"):
        from vseam.models.tiny import FULL_WIDTH_ARCH, TINY_BUILDERS, build_full_width

        kind, seed = path[len("tiny:"):], int(get("seed", 0) or 0)
        built = FULL_WIDTH_ARCH.get(kind) or (kind if kind in TINY_BUILDERS else None)
        if built is None:
            raise ValueError(f"model.path={path!r}: expected tiny:<arch> ({sorted(TINY_BUILDERS)}) or a full-width "
                             f"random build tiny:<name> ({sorted(FULL_WIDTH_ARCH)})")
        if arch is not None and built != arch:
            raise ValueError(f"model.path={path!r} is a {built} model but model.arch={arch!r}")
        arch = built
        if kind in FULL_WIDTH_ARCH:  # tiny:llava-1.5-7b: the real widths, 2 language + 2 vision layers
            model, processor = build_full_width(kind, seed=seed)
        else:
            model, processor = TINY_BUILDERS[kind](seed=seed)
    else:
        arch = arch or arch_of_checkpoint(path, local_files_only)
        model, processor = _from_pretrained(path, arch, dtype=dtype, device_map=get("device_map", None),
                                            local_files_only=local_files_only,
                                            attn_implementation=get("attn_implementation", None))
    model.requires_grad_(False)
    from vseam.models.identity import model_identity

    # hashed before any dtype cast: the identity is the checkpoint's, whatever dtype it runs in
    identity = model_identity(path, get("name", None) or path, model, local_files_only)
    if get("device_map", None) is None:
        model.to(device=device, dtype=dtype)
    adapter = ADAPTERS[arch](model, processor, template=template, name=get("name", None) or path,
                             answer_definition=answer_definition)
    adapter.identity = identity
    return adapter


def _hub_kwargs(path: str, local_files_only: bool) -> tuple[dict, bool]:
    offline = local_files_only or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    is_local = Path(path).expanduser().exists()
    return {"local_files_only": offline or is_local, "trust_remote_code": False}, is_local


def _not_found(path: str, is_local: bool, e: Exception) -> Exception:
    if is_local:
        return ModelNotFoundError(f"model folder {path!r} is incomplete or unreadable: {e}")
    return ModelNotFoundError(
        f"model {path!r} is not available offline. Download it on a machine with internet, e.g. "
        f"`hf download {path} --local-dir models/{path.split('/')[-1]}`, then either "
        f"set model.path=models/{path.split('/')[-1]} or put it in the Hugging Face cache "
        f"(HF_HOME={os.environ.get('HF_HOME', '~/.cache/huggingface')}).")


def arch_of_checkpoint(path: str, local_files_only: bool = False) -> str:
    """The ``model.arch`` of the checkpoint at ``path`` (hub id or folder), from its ``config.model_type``."""
    from transformers import AutoConfig

    kwargs, is_local = _hub_kwargs(path, local_files_only)
    try:
        model_type = AutoConfig.from_pretrained(path, **kwargs).model_type
    except OSError as e:
        raise _not_found(path, is_local, e) from e
    return arch_for_model_type(model_type, where=f"model.path={path} (model.arch not set)")


def _from_pretrained(path: str, arch: str, *, dtype, device_map, local_files_only: bool, attn_implementation):
    import transformers
    from transformers import AutoProcessor

    model_cls = getattr(transformers, ADAPTERS[arch].hf_class)
    kwargs, is_local = _hub_kwargs(path, local_files_only)
    try:
        processor = AutoProcessor.from_pretrained(path, **kwargs)
        model = model_cls.from_pretrained(path, dtype=dtype, device_map=device_map,
                                          attn_implementation=attn_implementation, **kwargs)
    except (OSError, ValueError) as e:
        if isinstance(e, ValueError) and not is_local:
            raise
        raise _not_found(path, is_local, e) from e
    return model, processor
