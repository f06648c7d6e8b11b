"""The one device resolution: ``trainer.accelerator`` (Lightning's names) -> the torch device a model goes to."""

from __future__ import annotations

from typing import Any, Literal, get_args

Accelerator = Literal["auto", "cpu", "gpu", "cuda", "mps"]  # the type of trainer.accelerator (vseam.config)
ACCELERATORS = get_args(Accelerator)


def torch_device(accelerator: str = "auto", devices: Any = None) -> str:
    """``auto``: CUDA when available, else CPU; ``gpu`` / ``cuda``: CUDA (``cuda:N`` when ``devices`` is a
    list naming one id); ``cpu`` / ``mps`` as named. A torch device string (``cuda:1``) passes through."""
    import torch

    acc = str(accelerator)
    if acc.startswith("cuda:") or acc.startswith("mps:"):
        return acc
    if acc not in ACCELERATORS:
        raise ValueError(f"trainer.accelerator={acc!r}: expected one of {list(ACCELERATORS)}")
    if acc == "auto":
        acc = "cuda" if torch.cuda.is_available() else "cpu"
    if acc in ("gpu", "cuda"):
        ids = None if devices is None or isinstance(devices, (int, str)) else list(devices)
        return f"cuda:{int(ids[0])}" if ids and len(ids) == 1 else "cuda"
    return acc
