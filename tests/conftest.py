"""Shared fixtures: tiny random LLaVA / InstructBLIP adapters and a few drawn samples (no download)."""

from __future__ import annotations

import os
from pathlib import Path

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
# A test's tier is the folder it lives in (declared, never read from its code):
#   unit/         no model (neither a tiny random VLM nor the organism is built or loaded), no child process;
#                 functions, configs, readers, statistics, drawn worlds; well under a second each.
#   integration/  in-process runs on tiny random models of the real HF classes or the shipped organism,
#                 and the jobs' run_* functions (a helper child process such as a lock holder is allowed); seconds.
#   e2e/          an entry point run whole as a user runs it: train.py, analyze.py, a benchmarks/ or scripts/
#                 file, torchrun, pip install; in a child process, or through its main(argv) where the test
#                 checks what the user gets (printed lines, one-line errors, exit status).
# `slow` is apart from the tier: a test of more than ~20 s carries @pytest.mark.slow in any folder and is
# left out of the default run (`pytest -m slow` runs them). `pytest -m unit` takes seconds; `-m "not e2e"`
# leaves out the entry-point runs. A test file outside the three folders is an error, not a guess.
TIERS = ("unit", "integration", "e2e")
_HERE = Path(__file__).resolve().parent


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


@pytest.fixture(scope="module")
def pope(tmp_path_factory):
    """The organism's POPE analog, 6 questions per split (one image: 3 present + 3 absent objects), in POPE's own format (images included), drawn afresh
    for each test module."""
    from vseam.world.pope import write_pope

    root = tmp_path_factory.mktemp("pope")
    write_pope(root, n_per_split=6, seed=0)
    return root


def heads_cfg(world, out, *extra):
    """A ``analyze.py heads`` config on the tiny LLaVA over ``world``: one sample per category, small
    batches and chunks (``out=None``: no ``out_dir`` set)."""
    from vseam.config import load_config

    return load_config(["model=tiny-llava", "logger=none", f"data.root={world}", "data.limit=1",
                        "data.batch_size=2", "attribution.chunk_size=2", "attribution.progress=false",
                        *([f"out_dir={out}"] if out else []), *extra])


def _tier(item) -> str:
    """The tier folder ``item``'s file lives in; a UsageError naming the file when it is in none."""
    path = Path(str(item.path)).resolve()
    parts = path.relative_to(_HERE).parts if path.is_relative_to(_HERE) else ()
    if len(parts) < 2 or parts[0] not in TIERS:
        raise pytest.UsageError(f"{path}: a test file lives in one of tests/{{{','.join(TIERS)}}}/ (its tier; "
                                "see tests/conftest.py), not here")
    return parts[0]


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = _tier(item)
        other = {m.name for m in item.iter_markers()} & set(TIERS) - {tier}
        if other:
            raise pytest.UsageError(f"{item.nodeid}: marked {sorted(other)} in tests/{tier}/; the folder is the tier")
        item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> str:
    """The world of the random-draw tests (8 questions per category, seed 5), drawn afresh for each module."""
    from vseam.world.write import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, n_per_category=8, seed=5)
    return str(root)


def draws_args(world_root: str, out, *extra: str) -> list[str]:
    """``train.py`` arguments on the tiny LLaVA over ``world_root`` (K = 2 + 2 heads, 16 samples scored)."""
    return ["model=tiny-llava", f"data.root={world_root}", "data.world_seed=5", f"out_dir={out}", "logger=none",
            "trainer.accelerator=cpu", "data.batch_size=8", "modulation.k_pos=2", "modulation.k_neg=2",
            "modulation.attribution_limit=16", *extra]


def trace_cfg(out, *args):
    """An ``analyze.py trace`` config on the organism: one pair of two categories, chunks of one, CSV logger."""
    from vseam.config import load_config

    return load_config([f"out_dir={out}", "logger=csv", "trace.limit=1", "trace.chunk_size=1",
                        "data.categories=[Shape,Color]",
                        "trace.progress=false", "trace.plot_pairs=1", "data.batch_size=2", *args])


def train_args(world, out, *extra):
    """``train.py`` arguments on the tiny LLaVA over the world of ``trained`` (K = 1 + 1 heads, 12 samples scored)."""
    return ["model=tiny-llava", "logger=none", f"data.root={world}", "data.world_seed=3", "modulation.k_pos=1",
            "modulation.k_neg=1", "modulation.attribution_limit=12", f"out_dir={out}", *extra]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A tiny learned modulation (one step) and the world it was trained on: (world root, modulation file,
    what training printed). Shared by the leak-free evaluation, resume and exact-vs-estimate tests."""
    import contextlib
    import io

    from vseam.config import load_config
    from vseam.modulation.run import run_train
    from vseam.world.write import write_world

    root = tmp_path_factory.mktemp("world14")
    write_world(root, n_per_category=6, seed=3)  # runs on it say data.world_seed=3 (ensure_world checks)
    out = root / "train"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        run_train(load_config(train_args(root, out, "modulation.methods=[learned]", "trainer.max_steps=1")))
    return root, out / "modulation.safetensors", printed.getvalue()


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
