"""Damaged files are named, not read: a truncated progress chunk, a damaged modulation file, a corrupt training
checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def test_a_truncated_progress_chunk_is_named(tiny_llava, samples, tmp_path):
    from vseam.attribution.sweep import Sweep
    from vseam.runtime import Runtime
    from vseam.utils.io import BadFileError

    Sweep(tiny_llava, samples[:2], {"chunk_size": 2}, runtime=Runtime(tmp_path)).run()
    chunk = tmp_path / "exact-chunk00000.safetensors"
    _truncate(chunk)
    with pytest.raises(BadFileError, match=f"progress chunk {chunk} is unreadable: not a complete safetensors file"
                                           ".*delete it to recompute"):
        Sweep(tiny_llava, samples[:2], {"chunk_size": 2}, runtime=Runtime(tmp_path)).run()


@pytest.mark.parametrize("damage", ["truncated", "garbage", "nan"])
def test_a_damaged_modulation_file_is_named(tiny_llava, tmp_path, damage):
    import torch

    from vseam.interventions import HeadModulation
    from vseam.interventions.checkpoint import read_modulation, save_modulation
    from vseam.utils.io import BadFileError

    mod = HeadModulation([(0, 1)], tiny_llava.head_dim, scale="scalar")
    if damage == "nan":
        with torch.no_grad():
            mod.offset.fill_(float("nan"))
    path = save_modulation(tmp_path / "m.safetensors", mod, model="tiny", num_layers=2, num_heads=4)
    if damage == "truncated":
        _truncate(path)
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01not a safetensors file")
    want = {"truncated": "is unreadable", "garbage": "is unreadable", "nan": "offset holds NaN"}[damage]
    with pytest.raises(BadFileError, match=f"{path}.*{want}|{want}.*{path}") as e:
        read_modulation(path)
    assert "\n" not in str(e.value)


def test_a_corrupt_training_checkpoint_is_named(tmp_path):
    import torch

    from vseam.utils.io import BadFileError, load_torch_checkpoint

    path = tmp_path / "best.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(100)}}, path)
    assert "state_dict" in load_torch_checkpoint(path)
    _truncate(path)
    with pytest.raises(BadFileError, match=f"checkpoint {path} is unreadable: truncated"):
        load_torch_checkpoint(path)
