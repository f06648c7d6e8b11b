"""Shared fixtures: tiny random LLaVA / InstructBLIP adapters and a few drawn samples (no download)."""

from __future__ import annotations

import inspect
import os
import re

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import pytest
import torch
from PIL import Image

from vseam.data import Sample

torch.set_num_threads(min(2, torch.get_num_threads()))

QUESTIONS = [
    ("Is there a circle?", "Yes"),
    ("What color is the big square on the left of the table?", "red"),
    ("Is the cat under the car?", "no"),
    ("Which animal is this?", "giraffe"),  # a multi-token answer in the tiny vocabulary
]


def make_images(n: int, size: int = 32, seed: int = 0) -> list[Image.Image]:
    rng = np.random.RandomState(seed)
    return [Image.fromarray(rng.randint(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


@pytest.fixture(scope="session")
def samples() -> list[Sample]:
    ims = make_images(len(QUESTIONS))
    return [Sample(id=f"s{i}", question=q, answer=a, image=im, category="Test", level="object")
            for i, ((q, a), im) in enumerate(zip(QUESTIONS, ims))]


def _adapter(arch: str):
    from vseam.models import load_adapter

    return load_adapter({"arch": arch, "path": f"tiny:{arch}", "dtype": "float32", "device": "cpu", "seed": 0})


@pytest.fixture(scope="session")
def tiny_llava():
    return _adapter("llava")


@pytest.fixture(scope="session")
def tiny_instructblip():
    return _adapter("instructblip")


@pytest.fixture(scope="session", params=["llava", "instructblip"])
def tiny_adapter(request, tiny_llava, tiny_instructblip):
    return {"llava": tiny_llava, "instructblip": tiny_instructblip}[request.param]


def wandb_run_data(root, keys: list[str], timeout: float = 120.0) -> bytes:
    """The bytes of the one offline W&B transaction log under ``root``, once it holds every key.

    ``run.finish()`` returns before wandb-core has necessarily flushed the ``.wandb`` file (the stream
    closes asynchronously in the service process); ``wandb.teardown()`` shuts the service down and
    waits for it, and a short poll covers a slow machine. Returns the bytes; fails naming the missing keys.
    """
    import time
    from pathlib import Path

    import wandb

    wandb.teardown()
    deadline = time.monotonic() + timeout
    while True:
        files = list(Path(root).rglob("run-*.wandb"))
        assert len(files) <= 1, f"expected one offline W&B run under {root}, found {files}"
        data = files[0].read_bytes() if files else b""
        missing = [k for k in keys if k.encode() not in data]
        if files and not missing:
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"W&B run under {root}: files={files}, keys missing after {timeout} s: {missing}")
        time.sleep(0.5)


# ------------------------------------------------------------------------------------------- test tiers
# unit: no model; integration: tiny or organism models in-process; e2e: CLI / scripts in subprocesses;
# slow: minutes (not in the default run). `pytest -m unit` takes seconds; `pytest -m "not e2e"` skips the
# subprocess runs; `pytest -m slow` is the slow tier. A test's tier is its explicit marker, else read from
# what its body does.
_MODEL_USE = re.compile(r"load_adapter|tiny_llava|tiny_instructblip|tiny_adapter|tiny_pipe|run_train|run_heads|"
                        r"run_eval|run_edit|run_study|run_trace|train_main|analyze_main|vseam\.load\(|_adapter\(|"
                        r"score_heads|build_tiny|organism_adapter|FrozenVLMModule")
TIERS = ("unit", "integration", "e2e", "slow")


def small_world(tmp_path_factory, n_per_category: int = 2):
    """An organism world of ``n_per_category`` questions per category in a fresh temporary folder."""
    from vseam.world.write import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, n_per_category=n_per_category, seed=0)
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A small organism world (2 questions per category), drawn afresh for each test module."""
    return small_world(tmp_path_factory)


def heads_cfg(world, out, *extra):
    """A ``analyze.py heads`` config on the tiny LLaVA over ``world``: one sample per category, small
    batches and chunks (``out=None``: no ``out_dir`` set)."""
    from vseam.config import load_config

    return load_config(["model=tiny-llava", "logger=none", f"data.root={world}", "data.limit=1",
                        "data.batch_size=2", "attribution.chunk_size=2", "attribution.progress=false",
                        *([f"out_dir={out}"] if out else []), *extra])


def _tier(item) -> str:
    marks = {m.name for m in item.iter_markers()}
    for tier in ("slow", "e2e", "integration", "unit"):
        if tier in marks:
            return tier
    try:
        source = inspect.getsource(item.function)
    except (OSError, TypeError):
        return "integration"
    if "subprocess" in source:
        return "e2e"
    fixtures = " ".join(getattr(item, "fixturenames", ()))
    return "integration" if _MODEL_USE.search(source) or _MODEL_USE.search(fixtures) else "unit"


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = _tier(item)
        if tier not in {m.name for m in item.iter_markers()}:
            item.add_marker(getattr(pytest.mark, tier))


def chromium() -> str | None:
    """The headless browser the rendering tests use (Debian's ``chromium``; ``.ci/run`` installs it), or None."""
    import shutil

    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def chromium_flags(browser: str, profile) -> list[str]:
    """Chromium headless, with nothing that reaches for the network (this machine has none), in its own
    empty profile folder ``profile``."""
    return [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", "--virtual-time-budget=10000", f"--user-data-dir={profile}"]
