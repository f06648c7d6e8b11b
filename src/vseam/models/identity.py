"""Which model a result was made with: its id / path and a content hash of its weights.

Every result file (head scores, a saved modulation) records ``model_identity(adapter)``; a file is
applied to a model only when the hashes agree (``check_same_model``), so a modulation learned on one
checkpoint is never silently applied to another checkpoint of the same shape.

The hash is of the weight files as stored (``*.safetensors`` / ``*.bin``, by name): independent of the
dtype or device the model is loaded in. Files in the Hugging Face cache are named by their sha256
already (LFS blobs), so a cached hub model costs nothing to hash; a local folder is read once per
process. A ``tiny:<arch>`` random build is hashed from its tensors.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_CACHE: dict[tuple, str] = {}


class ModelMismatchError(ValueError):
    """A result file made with another model's weights (or one that does not say which)."""


def _file_sha256(path: Path) -> str:
    real = path.resolve()
    if re.fullmatch(r"[0-9a-f]{64}", real.name) and real.parent.name == "blobs":
        return real.name  # an LFS blob of the Hugging Face cache is named by its sha256
    st = real.stat()
    key = (str(real), st.st_size, st.st_mtime_ns)
    if key not in _CACHE:
        h = hashlib.sha256()
        with open(real, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
        _CACHE[key] = h.hexdigest()
    return _CACHE[key]


def folder_weights_sha256(folder: str | Path) -> str:
    """sha256 over (name, sha256) of the weight files of a model folder."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.name.endswith(WEIGHT_SUFFIXES) and p.is_file())
    if not files:
        raise FileNotFoundError(f"model folder {folder} holds no weight file ({', '.join(WEIGHT_SUFFIXES)})")
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{_file_sha256(p)}\n".encode())
    return h.hexdigest()


def state_dict_sha256(model: Any) -> str:
    """sha256 of a module's tensors (names, shapes and float32 values), for models without files."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu", torch.float32).contiguous()
        h.update(f"{name}:{tuple(t.shape)}\n".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _resolve_folder(path: str, local_files_only: bool) -> Path | None:
    p = Path(path).expanduser()
    if p.is_dir():
        return p
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True,
                                      allow_patterns=[f"*{s}" for s in WEIGHT_SUFFIXES]))
    except Exception:  # not cached as a snapshot: hash the loaded tensors instead
        return None


def model_identity(path: str, name: str, model: Any, local_files_only: bool = False) -> dict[str, str]:
    """``{"id", "path", "weights_sha256"}`` of a loaded model."""
    folder = None if str(path).startswith("tiny:") else _resolve_folder(str(path), local_files_only)
    sha = folder_weights_sha256(folder) if folder is not None else state_dict_sha256(model)
    return {"id": str(name), "path": str(path), "weights_sha256": sha}


def weights_sha256(adapter: Any) -> str:
    """The sha256 of ``adapter``'s weights: the one ``load_adapter`` recorded in ``adapter.identity``, or
    (an adapter built another way) of its tensors, recorded then. What a result or a resumable run's
    progress fingerprint names, so that numbers of other weights are never reused or accepted."""
    ident = getattr(adapter, "identity", None)
    if ident is None:
        ident = adapter.identity = {}
    if not ident.get("weights_sha256"):
        ident["weights_sha256"] = state_dict_sha256(adapter.model)
    return str(ident["weights_sha256"])


def check_same_model(saved: dict[str, Any], adapter: Any, where: str, *, allow: bool = False,
                     say: Callable[[str], None] = print) -> None:
    """Refuse a result file made with another model's weights, or one that does not name its weights,
    unless ``allow`` (``modulation.allow_other_model=true``), in which case it is said and goes on."""
    mine = getattr(adapter, "identity", None) or {}
    theirs = saved.get("weights_sha256")
    if theirs and mine.get("weights_sha256") == theirs:
        return
    if not theirs:
        problem = f"{where} does not record the weights it was made with (model {saved.get('id') or '?'})"
    else:
        problem = (f"{where} was made with model {saved.get('id') or '?'} ({saved.get('path') or '?'}, weights "
                   f"sha256 {theirs[:12]}), but this model is {mine.get('id', '?')} ({mine.get('path', '?')}, "
                   f"weights sha256 {str(mine.get('weights_sha256', '?'))[:12]})")
    if not allow:
        raise ModelMismatchError(f"{problem}; set modulation.allow_other_model=true to use it anyway")
    say(f"WARNING: {problem}; used anyway (modulation.allow_other_model=true)")

