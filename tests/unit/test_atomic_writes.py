"""Atomic writes (vseam.utils.io) leave files with the permissions a plain write gives."""

from __future__ import annotations

import os


def test_atomic_writes_keep_normal_permissions(tmp_path):
    import torch

    from vseam.utils.io import save_safetensors, write_json, write_text

    old = os.umask(0o022)
    try:
        paths = [write_text(tmp_path / "a.txt", "x"), write_json(tmp_path / "b.json", {"a": 1}),
                 save_safetensors(tmp_path / "c.safetensors", {"t": torch.zeros(2)})]
    finally:
        os.umask(old)
    for p in paths:
        assert oct(p.stat().st_mode & 0o777) == oct(0o644), p
