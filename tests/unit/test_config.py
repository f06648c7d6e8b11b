"""Configuration: composition, overrides, validation errors that name the key, CLI help."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from vseam.config import (
    ANALYZE_TOP,
    CONFIG_DIR,
    CONFIG_GROUPS,
    TRAIN_TOP,
    ConfigError,
    RootConfig,
    group_choices,
    load_config,
    save_config,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("group", CONFIG_GROUPS)
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
    (["model.device=cuda"], r"model.device is now trainer.accelerator"),
    (["logger.norm_every=2"], r"logger.norm_every is now modulation.norm_every"),
    (["modulation.checkpoint=m.safetensors"], r"modulation.checkpoint is now eval.checkpoint"),
    (["modulation.allow_overlap=true"], r"modulation.allow_overlap is now eval.allow_overlap"),
    (["trainer.seed=1"], r"trainer.seed is now seed \(the one seed of a run\)"),
    (["edit.seed=1"], r"edit.seed is now seed"),
])
def test_errors_name_the_key(argv, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(argv)


def test_bad_key_in_a_group_file_names_the_file(tmp_path):
    for g in CONFIG_GROUPS:
        (tmp_path / g).mkdir()
    (tmp_path / ANALYZE_TOP).write_text("defaults:\n  model: broken\n")
    (tmp_path / "model" / "broken.yaml").write_text("arch: llava\npaht: x\n")
    with pytest.raises(ConfigError, match=r"broken.yaml.*'model.paht'"):
        load_config([], config_dir=tmp_path)


def test_a_moved_key_in_a_group_file_names_the_file_and_the_new_key(tmp_path):
    (tmp_path / "trainer").mkdir()
    (tmp_path / ANALYZE_TOP).write_text("defaults:\n  trainer: old\n")
    (tmp_path / "trainer" / "old.yaml").write_text("seed: 3\n")
    with pytest.raises(ConfigError, match=r"old.yaml: trainer.seed is now seed"):
        load_config([], config_dir=tmp_path)


def test_eval_checkpoint_is_checked_before_a_model_loads(tmp_path):
    from vseam.validate import validate

    cfg = load_config([f"eval.checkpoint={tmp_path / 'none.safetensors'}"])
    with pytest.raises(ConfigError, match=r"eval.checkpoint=.*none.safetensors: no such file"):
        validate(cfg, "eval")
    validate(load_config([]), "eval")  # no checkpoint: the model alone


def test_saved_config_reloads(tmp_path):
    cfg = load_config(["model=tiny-instructblip"])
    path = save_config(cfg, tmp_path)
    again = OmegaConf.merge(OmegaConf.structured(type(OmegaConf.to_object(cfg))), OmegaConf.load(path))
    assert again.model.arch == "instructblip"


SWEEP = CONFIG_DIR / "sweep.yaml"  # W&B's sweep schema, commented per parameter; checked on its own
TOPS = (TRAIN_TOP, ANALYZE_TOP)  # one top-level file per entry point


def _config_files() -> list[Path]:
    """Every YAML file under configs/ but the sweep: a file added later is checked without naming it here."""
    return sorted(p for p in CONFIG_DIR.rglob("*.yaml") if p != SWEEP)


def test_every_yaml_file_is_read_by_load_config():
    """A YAML file outside the entry points' top-level files and configs/<group>/ would be read by nothing (and
    checked by nothing)."""
    for path in _config_files():
        rel = path.relative_to(CONFIG_DIR)
        assert str(rel) in TOPS or (len(rel.parts) == 2 and rel.parts[0] in CONFIG_GROUPS), (
            f"configs/{rel} is neither a top-level file {TOPS} nor a choice of a group {CONFIG_GROUPS}")


def _comment_of(line: str) -> str | None:
    """The comment text of a ``key: value  # comment`` line: the part after a `` #`` whose removal leaves
    the same YAML value (a ``#`` inside a quoted value is not a comment), or None."""
    import re

    import yaml

    whole = yaml.safe_load(line)
    for m in re.finditer(r"\s#", line):
        try:
            if yaml.safe_load(line[:m.start()]) == whole and line[m.end():].strip():
                return line[m.end():].strip()
        except yaml.YAMLError:
            continue
    return None


def _quotes(path: Path) -> dict[str, tuple[int, object]]:
    """``# key: value`` lines (quoted defaults): key -> (line number, value)."""
    import re

    import yaml

    out = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m = re.match(r"^# ([a-z_][a-z_0-9]*): ", line)
        if m:
            try:
                out[m.group(1)] = (i, yaml.safe_load(line[2:])[m.group(1)])
            except yaml.YAMLError:
                continue
    return out


def _schema_defaults(path: Path) -> dict:
    tree = OmegaConf.to_container(OmegaConf.structured(RootConfig))
    if path.parent == CONFIG_DIR:  # a top-level file: the keys outside the groups
        return {k: v for k, v in tree.items() if not isinstance(v, dict)}
    return tree[path.parent.name]


def test_every_yaml_key_is_commented():
    for path in _config_files():
        for i, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#") or stripped in ("{}",) or stripped.startswith("- "):
                continue
            if stripped.endswith(":") and not stripped.startswith("#"):
                continue  # a mapping header; its keys carry the comments
            assert _comment_of(line), f"{path.relative_to(ROOT)}:{i} has no comment: {line!r}"


def test_comment_check_is_not_fooled_by_a_hash_in_a_value():
    assert _comment_of('image_pattern: "{imageId}.jpg"  # file name') == "file name"
    assert _comment_of('image_pattern: "a #b.jpg"') is None
    assert _comment_of("steps: 50 #") is None


def _check_quotes(path: Path) -> None:
    defaults = _schema_defaults(path)
    for key, (line, value) in _quotes(path).items():
        assert key in defaults, f"{path.relative_to(path.parents[1])}:{line} quotes unknown key {key!r}"
        assert value == defaults[key], (f"{path.relative_to(path.parents[1])}:{line} quotes {key}: {value!r}, the "
                                        f"code's default (src/vseam/config.py) is {defaults[key]!r}")


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_quoted_defaults_in_yaml_equal_the_code(path):
    """Defaults live in the dataclasses of vseam.config; a YAML file only quotes them (in comments) or
    sets its own values. A quote that disagrees with the code fails here."""
    _check_quotes(path)


def test_a_drifted_quote_is_caught(tmp_path):
    """The check itself: a quote that says k_pos: 10 while the code says 3 fails."""
    (tmp_path / "modulation").mkdir()
    bad = tmp_path / "modulation" / "default.yaml"
    bad.write_text("# k_pos: 10                     # top-K positive heads\n")
    with pytest.raises(AssertionError, match="quotes k_pos: 10.*default.*is 3"):
        _check_quotes(bad)


@pytest.mark.parametrize("top_file", TOPS)
def test_default_choice_files_quote_every_key(top_file):
    """Each entry point's top-level file picks a file for every group and documents its own keys; the files
    analyze.yaml picks by default document every key of their group (set or quoted). The others (train.py's
    data=organism-pope, eval's held-out world) are recipes that set what differs."""
    import yaml

    top = yaml.safe_load((CONFIG_DIR / top_file).read_text())
    assert set(top["defaults"]) == set(CONFIG_GROUPS), f"{top_file} picks no file for {sorted(set(CONFIG_GROUPS) - set(top['defaults']))}"
    paths = [CONFIG_DIR / top_file]
    if top_file == ANALYZE_TOP:
        paths += [CONFIG_DIR / g / f"{c}.yaml" for g, c in top["defaults"].items()]
    for path in paths:
        active = {k for k in (yaml.safe_load(path.read_text()) or {}) if k not in ("defaults", "analyses")}
        missing = set(_schema_defaults(path)) - active - set(_quotes(path))
        assert not missing, f"{path.relative_to(ROOT)} neither sets nor quotes {sorted(missing)}"


def _restated(path: Path) -> list[str]:
    import yaml

    defaults = _schema_defaults(path)
    active = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
    return [f"{path.relative_to(path.parents[1])} sets {k}: {v!r}, the code's default; quote it in a comment instead"
            for k, v in active.items() if k in defaults and v == defaults[k]]


@pytest.mark.parametrize("path", [p for p in _config_files() if p.parent.name != "model"],
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_file_restates_a_default_as_its_own_value(path):
    """An active line is the file's own setting; one equal to the code's default is a second home for the
    default (it would not follow a change in the code). Model files are exempt: each describes one
    checkpoint in full (its arch, dtype and weight seed belong to the checkpoint, whatever the defaults)."""
    assert not _restated(path), _restated(path)[0]


def _default_claims(path: Path) -> list[tuple[int, str, object]]:
    """``(default: X)`` in the comment of a ``key: value`` line (active or quoted): (line, key, X); the
    claim ends at `` = `` or ``;`` (``(default: null = the same list as k)`` claims null)."""
    import re

    import yaml

    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        m, claim = re.match(r"^(?:# )?([a-z_][a-z_0-9]*):", line), re.search(r"\(default:?\s*([^)]*)\)", line)
        if m and claim:
            out.append((i, m.group(1), yaml.safe_load(re.split(r"\s=\s|;", claim.group(1))[0].strip())))
    return out


def _check_default_claims(path: Path) -> None:
    defaults = _schema_defaults(path)
    for line, key, value in _default_claims(path):
        assert key in defaults and value == defaults[key], (
            f"{path.relative_to(path.parents[1])}:{line} says {key} defaults to {value!r}; the code's default "
            f"(src/vseam/config.py) is {defaults.get(key, '(no such key)')!r}")


@pytest.mark.parametrize("path", _config_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_default_claims_in_comments_equal_the_code(path):
    _check_default_claims(path)


def test_drifted_claims_and_restated_defaults_are_caught(tmp_path):
    """The checks themselves, on files with a wrong ``(default: X)`` and a restated default."""
    (tmp_path / "study").mkdir()
    bad = tmp_path / "study" / "x.yaml"
    bad.write_text("ablation: zero  # zero-masking (default: zero)\n")
    with pytest.raises(AssertionError, match="says ablation defaults to 'zero'.*is 'mean'"):
        _check_default_claims(bad)
    bad.write_text("k: [5]  # (default: [1, 3, 5])\nk_random: [10]  # (default: null = the same list as k)\n")
    _check_default_claims(bad)
    bad.write_text("ablation: mean  # mean ablation\nk: [5]  # five\n")
    assert _restated(bad) == ["study/x.yaml sets ablation: 'mean', the code's default; quote it in a comment instead"]


def test_sweep_parameters_are_config_keys_with_valid_values():
    """Every parameter configs/sweep.yaml sweeps is a key (or group) of the schema, and each of its values
    composes (what the agent passes as key=value)."""
    import yaml

    params = yaml.safe_load(SWEEP.read_text())["parameters"]
    tree = OmegaConf.to_container(OmegaConf.structured(RootConfig))
    for key, spec in params.items():
        if key not in CONFIG_GROUPS:
            node = tree
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, f"configs/sweep.yaml sweeps {key!r}: no such key"
                node = node[part]
        values = spec.get("values") or ([spec["value"]] if "value" in spec else [spec["min"], spec["max"]])
        for v in values:
            load_config([f"{key}={str(v).lower() if isinstance(v, bool) else v}"])


def test_one_device_key():
    from vseam.utils.devices import torch_device

    assert torch_device("cpu") == "cpu" and torch_device("gpu", [1]) == "cuda:1" and torch_device("gpu", 2) == "cuda"
    assert torch_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="trainer.accelerator='tpu9'"):
        torch_device("tpu9")
    assert "device" not in load_config([]).model and "device" not in load_config([]).edit
