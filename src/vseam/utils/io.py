"""Atomic writers for result files (temp file + rename), so a killed run never leaves half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vseam.utils.errors import UserError


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; rename it onto ``path`` when the body succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        # mkstemp makes 0600 (and some writers recreate the file): give it the usual mode, 0644 under umask 022
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, path)
    except OSError as e:
        raise named(e, path, tmp_path) from None
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def named(e: OSError, path: str | os.PathLike, tmp: str | os.PathLike | None = None) -> OSError:
    """``e`` naming ``path`` when it names no file or only the temporary file written in its place (a full
    disk, a read-only folder), so the message says which result could not be written."""
    if e.errno is None or (e.filename is not None and (tmp is None or str(e.filename) != str(tmp))):
        return e
    return type(e)(e.errno, e.strerror, str(path))


def _umask() -> int:
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(obj, indent=indent, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, records: list[dict]) -> None:
    """Append records to a JSON-lines file (each line is written whole and flushed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(path, "a") as f:
            for rec in records:
                f.write(json.dumps(rec, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise named(e, path) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file; a torn last line (from a killed writer) is ignored."""
    out = []
    path = Path(path)
    if not path.exists():
        return out
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:
                break
            raise ValueError(f"{path}: line {i + 1} is not valid JSON") from e
    return out


class BadFileError(UserError, ValueError):
    """A file that exists but cannot be used (truncated, corrupt, of the wrong kind); the message names it."""


def read_safetensors(path: str | os.PathLike, what: str = "file") -> tuple[dict, dict[str, str]]:
    """The tensors and metadata of a safetensors file; a missing, truncated or corrupt file raises one line
    naming the file and what is wrong (``FileNotFoundError`` / ``BadFileError``), never a bare decoder error."""
    from safetensors import safe_open

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types (and OSError) for a damaged file
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadFileError(f"{what} {path} is unreadable: not a complete safetensors file "
                           f"({path.stat().st_size} bytes; {detail})") from None
    return tensors, meta


def load_torch_checkpoint(path: str | os.PathLike, what: str = "checkpoint", map_location: Any = "cpu") -> dict:
    """``torch.load`` of a checkpoint this project wrote; a truncated or corrupt file raises one line naming it."""
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadFileError(f"{what} {path} is unreadable: truncated or not a torch checkpoint "
                           f"({path.stat().st_size} bytes; {detail})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise BadFileError(f"{what} {path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def save_safetensors(path: str | os.PathLike, tensors: dict, metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    from vseam.utils.errors import said_full

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(tensors, str(tmp), metadata=metadata)
        except Exception as e:  # safetensors says a full disk in its own error type: name the file as an OSError would
            code = said_full(e)
            if code is None:
                raise
            raise OSError(code, os.strerror(code), str(path)) from e
    return Path(path)


def save_figure(path: str | os.PathLike, fig, dpi: int = 120) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def _json_default(o: Any):
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    try:
        import torch

        if isinstance(o, torch.Tensor):
            return o.tolist()
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
