"""Configuration: composition, overrides, validation errors that name the key, CLI help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vseam.config import CONFIG_DIR, GROUPS, ConfigError, group_choices, load_config, save_config

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("group", GROUPS)
def test_every_group_file_matches_the_schema(group):
    choices = group_choices(group)
    assert choices, f"configs/{group}/ is empty"
    for choice in choices:
        cfg = load_config([f"{group}={choice}"])
        assert group in cfg


def test_defaults_and_overrides():
    cfg = load_config([])
    assert cfg.model.name == "organism-llava" and cfg.data.format == "organism"
    cfg = load_config(["model=llava-1.5-7b", "trainer.devices=8", "trainer.strategy=ddp", "seed=3"])
    assert cfg.model.path == "llava-hf/llava-1.5-7b-hf" and cfg.model.arch == "llava"
    assert cfg.trainer.devices == 8 and cfg.trainer.strategy == "ddp" and cfg.seed == 3
    # what a W&B sweep agent passes (${args_no_hyphens}), and the same with dashes
    assert load_config(["--trainer.max_epochs=2"]).trainer.max_epochs == 2


@pytest.mark.parametrize("argv, pattern", [
    (["trainer.devicez=2"], r"unknown key 'trainer.devicez'.*devices"),
    (["modell.path=x"], r"unknown key 'modell'.*'model'"),
    (["trainer.max_epochs=many"], r"trainer.max_epochs"),
    (["model=llava-13b"], r"model='llava-13b'.*llava-1.5-7b"),
    (["model.path"], r"not key=value"),
])
def test_errors_name_the_key(argv, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(argv)


def test_bad_key_in_a_group_file_names_the_file(tmp_path):
    for g in GROUPS:
        (tmp_path / g).mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  model: broken\n")
    (tmp_path / "model" / "broken.yaml").write_text("arch: llava\npaht: x\n")
    with pytest.raises(ConfigError, match=r"broken.yaml.*'model.paht'"):
        load_config([], config_dir=tmp_path)


def test_saved_config_reloads(tmp_path):
    cfg = load_config(["model=tiny-instructblip"])
    path = save_config(cfg, tmp_path)
    again = OmegaConf.merge(OmegaConf.structured(type(OmegaConf.to_object(cfg))), OmegaConf.load(path))
    assert again.model.arch == "instructblip"


def test_every_yaml_key_is_commented():
    # the run configuration's files (configs/sweep.yaml is W&B's schema, commented per parameter)
    paths = [CONFIG_DIR / "config.yaml"] + [p for g in GROUPS for p in (CONFIG_DIR / g).glob("*.yaml")]
    for path in paths:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped in ("{}",) or stripped.startswith("- "):
                continue
            if stripped.endswith(":") and not stripped.startswith("#"):
                continue  # a mapping header; its keys carry the comments
            assert "#" in line, f"{path.relative_to(ROOT)}:{i} has no comment: {line!r}"


def _run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_cli_help_lists_analyses_and_groups():
    r = _run("analyze.py", "--help")
    assert r.returncode == 0
    for word in ("heads", "edit", "eval", "model", "llava-1.5-7b", "organism-llava"):
        assert word in r.stdout
    r = _run("train.py", "--help")
    assert r.returncode == 0 and "modulation" in r.stdout


def test_cli_config_errors_exit_before_loading_a_model():
    r = _run("train.py", "trainer.devicez=2")
    assert r.returncode != 0 and "trainer.devicez" in r.stderr
    r = _run("analyze.py", "nosuch")
    assert r.returncode != 0 and "heads" in r.stderr
