"""Validation before the model loads: a bad value fails naming its key and nothing is written; cross-key rules;
every draw of the shipped sweep passes and fits the default model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vseam.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("command,bad,key", [
    ("train", "model.dtype=float33", "model.dtype"),
    ("train", "data.batch_size=0", "data.batch_size"),
    ("train", "trainer.max_epochs=0", "trainer.max_epochs"),
    ("train", "trainer.devices=0", "trainer.devices"),
    ("train", "modulation.k_pos=-1", "modulation.k_pos"),
    ("train", "modulation.scale=scalr", "modulation.scale"),
    ("train", "attribution.method=exactt", "attribution.method"),
    ("train", "modulation.methods=[learned,lorra]", "modulation.methods"),
    ("train", "modulation.lr=0", "modulation.lr"),
    ("heads", "attribution.top_k=0", "attribution.top_k"),
    ("heads", "trainer.accelerator=gpu0", "trainer.accelerator"),
    ("edit", "edit.resolution=500", "edit.resolution"),
    ("eval", "logger.kind=tensorboard", "logger.kind"),
])
def test_bad_values_fail_before_the_model_loads_naming_the_key(tmp_path, monkeypatch, command, bad, key):
    import vseam.models
    from vseam.cli import analyze_main, train_main

    monkeypatch.setattr(vseam.models, "load_adapter", lambda *a, **k: pytest.fail("model loaded"))
    out = tmp_path / "out"
    args = ["logger=none", f"out_dir={out}", bad]
    with pytest.raises(SystemExit, match=f"config error: {key}="):
        train_main(args) if command == "train" else analyze_main([command, *args])
    assert not out.exists()  # nothing written for a refused run, config.yaml included


def test_scale_none_without_offset_is_refused(tmp_path):
    from vseam.cli import train_main

    with pytest.raises(SystemExit, match="modulation.scale=none with modulation.offset=false"):
        train_main(["logger=none", f"out_dir={tmp_path / 'o'}", "modulation.scale=none", "modulation.offset=false"])


def test_k_above_the_model_heads_is_said_not_hidden(capsys):
    from vseam.validate import say_k_fits

    assert say_k_fits(20, "modulation.k_pos", 3, 4) == 12
    assert "modulation.k_pos=20 is larger than the model's 12 heads" in capsys.readouterr().out
    assert say_k_fits(3, "modulation.k_pos", 3, 4) == 3 and capsys.readouterr().out == ""


def test_no_draw_of_the_shipped_sweep_fails_on_the_default_model(monkeypatch):
    """Every combination of the sweep's discrete values (and both ends of each range) passes validation
    and fits the heads of train.py's default model. The sweep logs online (its controller reads each run's
    metric), so it runs where ``wandb agent`` runs: on a machine with a W&B key, as this test sets."""
    import itertools

    import yaml

    import vseam.validate
    from vseam.validate import validate

    monkeypatch.setattr(vseam.validate, "wandb_key_found", lambda: True)

    sweep = yaml.safe_load((ROOT / "configs" / "sweep.yaml").read_text())
    grid = {}
    for k, v in sweep["parameters"].items():
        grid[k] = v["values"] if "values" in v else [v["value"]] if "value" in v else [v["min"], v["max"]]
    from vseam.config import CONFIG_GROUPS

    choices = {k: v.pop() for k, v in grid.items() if k in CONFIG_GROUPS and len(v) == 1}  # group=choice (logger: wandb)
    grid = {k: v for k, v in grid.items() if k not in choices}
    base = load_config([f"{k}={v}" for k, v in choices.items()], top="train.yaml")
    cfg_json = json.loads((ROOT / base.model.path / "config.json").read_text())["text_config"]
    heads = cfg_json["num_hidden_layers"] * cfg_json["num_attention_heads"]
    from omegaconf import OmegaConf

    n = 0
    for combo in itertools.product(*grid.values()):
        argv = [f"{k}={v}" for k, v in zip(grid, combo)]
        cfg = OmegaConf.merge(base, OmegaConf.from_dotlist(argv))  # load_config's last step, without re-reading
        validate(cfg, "train")
        assert cfg.modulation.k_pos + cfg.modulation.k_neg <= heads, argv
        n += 1
    assert n == len(list(itertools.product(*grid.values()))) >= 2 * 4 * 4 * 2 * 2 * 3
    last = load_config([f"{k}={v}" for k, v in choices.items()] + argv, top="train.yaml")
    validate(last, "train")  # the real parse of the last draw
