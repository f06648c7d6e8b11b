"""End-to-end tests of the training job (``run_train`` / ``python train.py``) on a tiny random LLaVA and a
small organism world: the summary and files it writes, the W&B sweep agent's exact argv, 2-process DDP
against 1 process, and clear errors for head lists of another shape."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from vseam.config import load_config
from vseam.interventions import HeadShapeError
from vseam.interventions.checkpoint import load_modulation, read_modulation

from conftest import wandb_run_data

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def world_root(tmp_path_factory) -> str:
    from vseam.world.write import write_world

    root = tmp_path_factory.mktemp("world")
    write_world(root, n_per_category=14, seed=5)
    return str(root)


def _tiny_args(world_root: str, out: Path) -> list[str]:
    return ["model=tiny-llava", f"data.root={world_root}", "data.world_seed=5", f"out_dir={out}", "trainer.accelerator=cpu",
            "data.batch_size=8", "modulation.k_pos=2", "modulation.k_neg=2", "modulation.attribution_limit=24",
            "modulation.random_draws=3"]


def _env() -> dict:
    env = dict(os.environ, WANDB_MODE="offline", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return env


def _head_scores_file(path: Path, L: int = 2, H: int = 4, identity: dict | None = None) -> Path:
    g = torch.Generator().manual_seed(0)
    pos, neg = torch.rand(L, H, generator=g), torch.rand(L, H, generator=g)
    path.write_text(json.dumps({"model": "tiny", "method": "exact", "num_layers": L, "num_heads": H,
                                "weights_sha256": (identity or {}).get("weights_sha256"),
                                "positive": pos.tolist(), "negative": neg.tolist(), "signed": (pos - neg).tolist()}))
    return path


def test_run_train_compares_every_method_and_writes_its_files(tmp_path, world_root, capsys):
    from vseam.modulation.run import run_train

    out = tmp_path / "run"
    cfg = load_config(_tiny_args(world_root, out) + ["logger=wandb", "logger.mode=offline", "modulation.norm_every=1",
                                                     "trainer.max_epochs=2", "modulation.lr=0.05"])
    summary = run_train(cfg)
    printed = capsys.readouterr().out
    assert set(summary["methods"]) == {"none", "heuristic", "learned", "random", "bias", "lora", "ia3"}
    for name in summary["methods"]:
        assert name in printed
    assert set(summary["stats"]["vs_learned"]) == {"none", "heuristic", "bias", "lora", "ia3"}
    assert summary["stats"]["random_heads"]["n_draws"] == 3
    m = summary["methods"]
    assert m["none"]["trainable_params"] == 0 and m["heuristic"]["trainable_params"] == 0
    k = len(summary["key_heads"]["all"])
    assert k > 0 and m["learned"]["trainable_params"] == k * (1 + 8)  # scalar scale + offset of head_dim 8
    assert m["random"]["trainable_params"] == m["learned"]["trainable_params"]
    assert m["lora"]["trainable_params"] > m["learned"]["trainable_params"] > 0
    assert set(m["learned"]["test"]["by_level"]) == {"object", "attribute", "relation"}
    assert m["learned"]["test"]["n"] == summary["splits"]["test"]
    assert m["learned"]["steps"] > 0 and m["learned"]["best_checkpoint"]
    assert summary["head_scores"]["dataset"].endswith(":train") and summary["head_scores"]["n"] == 24
    used = json.loads((out / "head_scores_used.json").read_text())
    assert used["num_layers"] == 2 and used["dataset"].endswith(":train")
    from vseam.world.questions import CATEGORIES

    # a draw over the categories, not a prefix of the split (ordered by category, ~8 train samples each: a
    # prefix of 24 would hold 3 or 4 of the nine; a random 24 of ~72 may miss one)
    assert len(summary["head_scores"]["categories"]) >= len(CATEGORIES) - 1
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["methods"]["learned"]["test"] == m["learned"]["test"]
    mod, info = read_modulation(out / "modulation.safetensors")
    assert [tuple(h) for h in summary["key_heads"]["all"]] == mod.heads
    assert (out / "modulation.safetensors").stat().st_size < 10_000
    assert all(p.stat().st_size < 20_000 for p in (out / "checkpoints" / "learned").glob("*.ckpt"))
    preds = (out / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == 6 * summary["splits"]["test"]  # every method but the random draws (random_draws.json)
    # the offline W&B run holds the config, losses, lr, per-head norms and the tables
    l, h = summary["key_heads"]["all"][0]
    wandb_run_data(out / "logs", ["learned/train/loss", "learned/val/acc", "lr-AdamW", "learned/lr", "lora/lr",
                                  "key_heads", "key_heads/heatmap", f"learned/heads/L{l}H{h}/scale_dev",
                                  f"learned/heads/L{l}H{h}/offset_norm", "lora/test/acc", "comparison", "before_after",
                                  "k_pos"])


def test_train_scores_heads_through_the_sweep_and_resumes(tmp_path, world_root, monkeypatch):
    """train.py's head scores come from the attribution sweep: attribution.method=atp is honoured, chunks
    are saved under <out_dir>/progress, and a second run in the same folder reuses them."""
    from vseam.attribution import load_head_scores
    from vseam.attribution.sweep import Sweep
    from vseam.modulation.run import run_train

    out = tmp_path / "run"
    args = _tiny_args(world_root, out) + ["logger=none", "modulation.methods=[none,heuristic]",
                                          "attribution.method=atp", "attribution.chunk_size=8"]
    first = run_train(load_config(args))
    assert first["head_scores"]["method"] == "atp" and first["head_scores"]["n"] == 24
    assert len(list((out / "progress").glob("atp-chunk*.safetensors"))) == 3
    used = load_head_scores(out / "head_scores_used.json")  # the same schema as analyze.py heads
    assert used.method == "atp" and used.shape == (2, 4) and used.n == 24

    def no_compute(self, c, on_progress=None):
        raise AssertionError(f"chunk {c} recomputed although its saved progress matches")

    monkeypatch.setattr(Sweep, "compute_chunk", no_compute)
    again = run_train(load_config(args))
    assert again["methods"]["heuristic"] == first["methods"]["heuristic"]
    torch.testing.assert_close(load_head_scores(out / "head_scores_used.json").signed, used.signed)


def test_head_list_for_another_shape_fails_before_training(tmp_path, world_root):
    from vseam.modulation.run import run_train

    scores = _head_scores_file(tmp_path / "head_scores.json", L=32, H=32)
    cfg = load_config(_tiny_args(world_root, tmp_path / "run") + ["logger=none", f"modulation.head_scores={scores}"])
    with pytest.raises(HeadShapeError, match="32 layers x 32 heads.*this model has 2 x 4"):
        run_train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_sweep_agent_argv_runs_train_py(tmp_path, world_root):
    """Build the command exactly as ``wandb agent`` does from configs/sweep.yaml and run it."""
    from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

    sweep = yaml.safe_load((REPO / "configs" / "sweep.yaml").read_text())
    assert sweep["command"] == ["${env}", "${interpreter}", "${program}", "${args_no_hyphens}"]
    swept = {"modulation.lr", "modulation.k_pos", "modulation.k_neg", "modulation.scale", "modulation.offset",
             "modulation.l1"}
    assert swept <= set(sweep["parameters"])
    # One point of the search space, as the sweep controller would send it (first value / range minimum) ...
    params = {k: (v["values"][0] if "values" in v else v.get("value", v.get("min")))
              for k, v in sweep["parameters"].items()}
    params["modulation.offset"] = False  # a bool exactly as the agent formats it ("False")
    params["modulation.scale"] = "vector"
    # ... plus a smoke-test model and data, as a user would add fixed `value:` parameters to the sweep file.
    for a in _tiny_args(world_root, tmp_path / "run") + ["trainer.max_steps=3", "logger=none"]:
        key, value = a.split("=", 1)
        params[key] = value
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in params.items()}})
    sweep_vars = {**args, "interpreter": ["python"], "program": [sweep["program"]], "env": ["/usr/bin/env"]}
    argv = []
    for c in create_sweep_command(list(sweep["command"])):
        argv += sweep_vars[c[2:-1]] if c.startswith("${") else [c]
    assert "modulation.offset=False" in argv and "modulation.methods=[learned]" in argv
    env = _env()
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert list(summary["methods"]) == ["learned"]
    mod, _ = read_modulation(tmp_path / "run" / "modulation.safetensors")
    assert mod.offset is None and mod.scale.shape == (len(mod.heads), 8)
    assert summary["head_scores"]["source"] == "computed"


def test_ddp_two_processes_end_with_the_parameters_of_one(tmp_path, world_root, tiny_llava):
    """Same global batch (8) on 1 process and on 2 gloo processes of 4 each: same learned parameters."""
    scores = _head_scores_file(tmp_path / "head_scores.json", identity=tiny_llava.identity)
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"ddp{n}"
        argv = [sys.executable, "train.py", *_tiny_args(world_root, out), "logger=none", "modulation.methods=[learned]",
                f"modulation.head_scores={scores}", "modulation.scale=vector", "modulation.lr=0.05",
                "trainer.max_steps=5", f"trainer.devices={n}", f"trainer.strategy={'ddp' if n > 1 else 'auto'}"]
        proc = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("written:") == 1  # only rank 0 writes (and prints) results
        runs[n] = load_modulation(out / "modulation.safetensors")
        assert json.loads((out / "summary.json").read_text())["methods"]["learned"]["steps"] == 5
    a, b = runs[1], runs[2]
    assert a.heads == b.heads
    assert not torch.allclose(a.scale, torch.ones_like(a.scale))  # it did train
    torch.testing.assert_close(a.scale, b.scale, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.offset, b.offset, atol=1e-5, rtol=1e-4)


def test_train_head_scores_shard_over_the_ranks(tmp_path, world_root, tiny_llava, monkeypatch):
    """Under DDP (a launched Fabric) train.py's head-score sweep computes only its rank's chunks (the
    sweep's own split, ``rank_chunks``) and gathers the others': rank 1 of 2, gathering nothing, holds
    exactly the samples of its chunks."""
    from vseam.data.load import load_samples
    from vseam.models.cache import EmbeddingCache
    from vseam.modulation.run import obtain_head_scores
    from vseam.runtime import Ranks, chunk_bounds, rank_chunks

    class Rank1Of2:
        global_rank, world_size = 1, 2

        def barrier(self):
            pass

    monkeypatch.setattr(Ranks, "gather", lambda self, mine: list(mine))  # no process group here
    cfg = load_config(_tiny_args(world_root, tmp_path) + ["logger=none", "attribution.chunk_size=4",
                                                          "attribution.progress=false"])
    train = load_samples(cfg.data)[:16]
    scores = obtain_head_scores(cfg, tiny_llava, train, EmbeddingCache(tiny_llava), tmp_path, Rank1Of2())
    bounds = chunk_bounds(16, 4)
    mine = [train[i].id for c in rank_chunks(len(bounds), 1, 2) for i in range(*bounds[c])]
    assert scores.per_sample.ids == mine and len(mine) == 8
    assert scores.meta["world_size"] == 2


@pytest.mark.slow  # two interpreter start-ups and a gloo group; ~1-2 min on 2 shared cores
def test_ddp_train_computes_the_head_scores_of_one_process(tmp_path, world_root):
    """train.py with no head scores under 2-process DDP: the sweep runs sharded over both ranks, and its
    matrices (head_scores_used.json), key heads and heuristic row equal those of 1 process."""
    runs = {}
    for n in (1, 2):
        out = tmp_path / f"ddp{n}"
        argv = [sys.executable, "train.py", *_tiny_args(world_root, out), "logger=none", "attribution.chunk_size=4",
                "attribution.progress=false", "modulation.methods=[heuristic,learned]", "trainer.max_steps=2",
                f"trainer.devices={n}", f"trainer.strategy={'ddp' if n > 1 else 'auto'}"]
        proc = subprocess.run(argv, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.count("written:") == 1 and proc.stdout.count("computing head scores") == 1
        runs[n] = (json.loads((out / "head_scores_used.json").read_text()), json.loads((out / "summary.json").read_text()))
    (one, s1), (two, s2) = runs[1], runs[2]
    assert (one["world_size"], two["world_size"]) == (1, 2)
    for key in ("positive", "negative", "signed", "n_correct", "n_incorrect"):
        assert one[key] == two[key], key
    assert s1["key_heads"] == s2["key_heads"]
    assert s1["methods"]["heuristic"]["test"] == s2["methods"]["heuristic"]["test"]
    assert s2["methods"]["learned"]["steps"] == 2


@pytest.mark.slow
def test_default_train_py_on_the_organism(tmp_path):
    """`python train.py` with no arguments but out_dir: the shipped organism, every method, 99 random draws."""
    from vseam.config import load_config as _load

    model_dir = REPO / _load([]).model.path
    if not (model_dir / "config.json").exists():
        pytest.skip(f"the organism checkpoint {model_dir} is not built (scripts/build_organism.py)")
    proc = subprocess.run([sys.executable, "train.py", f"out_dir={tmp_path}", "logger=csv"], cwd=REPO, env=_env(),
                          capture_output=True, text=True, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    m = summary["methods"]
    assert set(m) == {"none", "heuristic", "learned", "random", "bias", "lora", "ia3"}
    assert summary["stats"]["random_heads"]["n_draws"] == 99 and m["random"]["mean_of_draws"] == 99
    for name in m:
        assert name in proc.stdout
        assert set(m[name]["test"]["by_level"]) == {"object", "attribute", "relation"}
    # the learned modulation must not be worse than the frozen model on held-out data (beyond 2 points,
    # about one standard error at 360 test questions: float differences across machines may move a few)
    assert m["learned"]["test"]["accuracy"] >= m["none"]["test"]["accuracy"] - 0.02
    assert m["learned"]["trainable_params"] / summary["total_params"] < 1e-3


def test_run_level_nan_stop_names_the_step_and_the_kept_checkpoint(tmp_path, world_root, tiny_llava, monkeypatch):
    """A run whose loss turns NaN after one good epoch exits naming the step and the checkpoint it kept."""
    from lightning.pytorch.callbacks import Callback

    from vseam.data.load import load_samples
    from vseam.interventions import HeadModulation
    from vseam.models.cache import EmbeddingCache
    from vseam.modulation import job as run_mod
    from vseam.modulation.data import ModulationDataModule, split_samples

    cfg = load_config(_tiny_args(world_root, tmp_path) + ["logger=none", "trainer.max_epochs=3"])
    splits = split_samples(load_samples(cfg.data), 0.15, 0.3, seed=0)
    dm = ModulationDataModule(splits, batch_size=8)
    steps_per_epoch = -(-len(splits["train"]) // 8)

    class Diverge(Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.current_epoch == 1 and batch_idx == 2:
                with torch.no_grad():
                    pl_module.modulation.scale.fill_(float("inf"))

    real_build = run_mod.build_trainer

    def build_with_divergence(*a, **kw):
        trainer, ckpt = real_build(*a, **kw)
        trainer.callbacks.append(Diverge())
        return trainer, ckpt

    mod = HeadModulation([(0, 1), (1, 2)], tiny_llava.head_dim)
    monkeypatch.setattr(run_mod, "build_trainer", build_with_divergence)
    with pytest.raises(SystemExit) as exc:
        run_mod.fit(cfg, "learned", tiny_llava, mod, dm, tmp_path, None, EmbeddingCache(tiny_llava), 0.01)
    msg = str(exc.value)
    assert f"at step {steps_per_epoch + 2}" in msg and "learned" in msg
    kept = msg.split("last good checkpoint: ")[1].strip()
    state = torch.load(kept, weights_only=False)
    assert state["epoch"] == 0 and torch.isfinite(state["state_dict"]["modulation.scale"]).all()
