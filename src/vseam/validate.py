"""Checks before a model loads that span several keys, the machine or files: run before a model loads,
each failure a ``ConfigError`` naming the keys, the values and what is valid.

A key's own choices and bounds live at its field in ``vseam.config`` (its ``Literal`` type, its
``checked(...)``): OmegaConf refuses another choice when the configuration is composed, and
``check_values`` runs the rest first here. What needs the model (K against the model's number of heads)
is said by the run once the model is loaded (``say_k_fits``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, get_args

from vseam.config import ConfigError, EvalMethod, FieldMethod, ModulationMethod, check_values

FIELD_METHODS = get_args(FieldMethod)  # vseam.modulation.field.METHODS (tests/integration/test_field.py keeps them equal)
MODULATION_METHODS = get_args(ModulationMethod)
EVAL_METHODS = get_args(EvalMethod)

NEED_A_FILE = ("ict", "vti", "adhh")  # field methods estimated from data by train.py (field.METHODS' needs_file): eval.checkpoint names their file

def _devices(tc: Any) -> int:
    """Checks ``trainer.devices`` and returns the number of processes it starts (``world_size``)."""
    d = tc.devices
    if isinstance(d, str) and d != "auto" and not d.lstrip("-").isdigit():
        raise ConfigError(f"trainer.devices={d!r}: expected a positive number, a list of device ids, or auto")
    if isinstance(d, (int, str)) and str(d).lstrip("-").isdigit():
        n = int(d)
        if n < 1 and n != -1:
            raise ConfigError(f"trainer.devices={d!r}: expected a positive number of devices (or -1 / auto = all)")
    elif not isinstance(d, str):
        ids = list(d)
        if not ids or any(not str(i).isdigit() for i in ids):
            raise ConfigError(f"trainer.devices={list(d)!r}: expected a non-empty list of device ids")
        n = len(ids)
    else:
        n = 0  # auto
    if str(tc.accelerator) in ("gpu", "cuda") and n > 0:
        import torch

        have = torch.cuda.device_count()
        if n > have:
            raise ConfigError(f"trainer.devices={d!r} with trainer.accelerator={tc.accelerator}: this machine has "
                              f"{have} CUDA device(s)")
    return world_size(tc)  # what Lightning refuses on this machine is said now, before a process starts


def world_size(tc: Any) -> int:
    """The number of processes ``trainer.accelerator`` / ``devices`` / ``strategy`` start on this machine, as
    Lightning resolves them (no process is started); a combination it refuses is a ``ConfigError`` naming
    the keys. One process (the default) is known without asking Lightning."""
    d, acc, strategy = tc.devices, str(tc.accelerator), str(tc.strategy)
    if str(d) == "1" and strategy == "auto" and acc in ("auto", "cpu"):
        return 1
    from lightning.fabric import Fabric

    try:
        fabric = Fabric(accelerator=acc, devices=d if isinstance(d, (int, str)) else list(d), strategy=strategy,
                        num_nodes=int(tc.num_nodes))
    except Exception as e:  # Lightning's own message says what does not fit (MisconfigurationException, ...)
        detail = " ".join(str(e).split()) or type(e).__name__
        raise ConfigError(f"trainer.accelerator={acc} trainer.devices={d!r} trainer.strategy={strategy}: not "
                          f"possible on this machine ({detail})") from None
    return int(fabric.world_size)


def wandb_key_found() -> bool:
    """Whether W&B will find an API key (as ``wandb login`` looks: ``WANDB_API_KEY``, an identity token
    file, a settings file's ``api_key``, ``~/.netrc``) or can ask for one (a terminal)."""
    import configparser
    import netrc
    import os
    import sys
    from pathlib import Path
    from urllib.parse import urlparse

    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb")
    for settings in (config_dir / "settings", Path("wandb") / "settings"):
        parser = configparser.ConfigParser()
        try:
            parser.read(settings)
        except configparser.Error:
            continue
        if parser.has_option("default", "api_key"):
            return True
    host = urlparse(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    rc = os.environ.get("NETRC") or str(Path.home() / ".netrc")
    try:
        if Path(rc).exists() and netrc.netrc(rc).authenticators(host):
            return True
    except (OSError, netrc.NetrcParseError):
        pass
    return sys.stdin is not None and sys.stdin.isatty()


def _logger(lg: Any) -> None:
    if lg.kind == "wandb" and lg.mode == "online" and not wandb_key_found():  # kind, mode and the machine
        raise ConfigError("logger.mode=online: no W&B API key found (WANDB_API_KEY, `wandb login`, ~/.netrc) and no "
                          "terminal to ask for one: run `wandb login` or set WANDB_API_KEY, or use "
                          "logger.mode=offline (sync later with `wandb sync`)")


def validate(cfg: Any, command: str) -> None:
    """Raise ``ConfigError`` for the first value of ``cfg`` that cannot work for ``command``
    (train | heads | eval | edit | ablate | overlap | report | study | trace): every field's own checks
    (``vseam.config.check_values``), then those across keys, the machine and files."""
    check_values(cfg)
    a, tc = cfg.attribution, cfg.trainer
    if str(tc.accelerator) in ("gpu", "cuda"):  # every job places its model there: a machine without one is told now
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={tc.accelerator}: this machine has no CUDA device; use "
                              f"trainer.accelerator=cpu (or auto)")
    _logger(cfg.logger)
    checks: dict[str, Callable[[], None]] = {"heads": lambda: _attribution(a, tc), "train": lambda: _train(cfg),
                                             "eval": lambda: _eval(cfg), "edit": lambda: _edit(cfg.edit),
                                             "ablate": lambda: (_attribution(a, tc), _study(cfg.study)),
                                             "overlap": lambda: (_attribution(a, tc), _study(cfg.study)),
                                             "report": lambda: None,
                                             "study": lambda: (_attribution(a, tc), _study(cfg.study),
                                                               cfg.study.trace and _trace(cfg.trace, tc)),
                                             "trace": lambda: _trace(cfg.trace, tc)}
    if command not in checks:
        raise ValueError(f"unknown command {command!r}")
    if a.tower != "language" and command in ("train", "ablate", "overlap", "study"):
        raise ConfigError(f"attribution.tower={a.tower}: only `analyze.py heads` scores the vision tower's heads; "
                          f"`{command}` uses the language model's (attribution.tower=language)")
    checks[command]()


def _attribution(a: Any, tc: Any) -> None:
    """The ``attribution`` group's keys together (also what train.py uses to compute its head scores)."""
    if a.tower == "vision" and a.method != "exact":
        raise ConfigError(f"attribution.tower=vision is scored by the exact engine only: set attribution.method=exact "
                          f"(got {a.method!r})")
    if int(a.rescore_top_k) > 0 and a.method != "atp":
        raise ConfigError(f"attribution.rescore_top_k={a.rescore_top_k} re-scores an estimate exactly: it needs "
                          f"attribution.method=atp (got {a.method!r})")
    _devices(tc)


def _study(st: Any) -> None:
    """The study's models: each a file of configs/model/."""
    from vseam.config import CONFIG_DIR

    models = list(st.models)
    missing = [m for m in models if not (CONFIG_DIR / "model" / f"{m}.yaml").exists()]
    if not models or missing:
        raise ConfigError(f"study.models={models!r}: {'empty' if not models else f'no configs/model/ file for {missing}'}; "
                          f"choices: {sorted(p.stem for p in (CONFIG_DIR / 'model').glob('*.yaml'))}")


def _train(cfg: Any) -> None:
    mc, tc = cfg.modulation, cfg.trainer
    methods = list(mc.methods)
    if mc.scale == "none" and not mc.offset and any(x in ("learned", "random") for x in methods):
        raise ConfigError("modulation.scale=none with modulation.offset=false leaves the learned / random "
                          "modulation nothing to learn: turn one of them on")
    if mc.select == "key" and int(mc.k_pos) + int(mc.k_neg) == 0 and any(x in ("learned", "random") for x in methods):
        raise ConfigError("modulation.k_pos=0 and modulation.k_neg=0 select no key head to modulate")
    v, t = float(mc.val_fraction), float(mc.test_fraction)
    if not v + t < 1:
        raise ConfigError(f"modulation.val_fraction={v}, modulation.test_fraction={t}: each must be in (0, 1) "
                          f"and their sum below 1")
    check_field_methods(mc, methods)
    if int(tc.max_epochs) < 1 and int(tc.max_steps) < 1:
        raise ConfigError(f"trainer.max_epochs={tc.max_epochs} (and trainer.max_steps={tc.max_steps}): expected "
                          f"max_epochs >= 1 or max_steps >= 1")
    if int(tc.max_steps) == 0 or int(tc.max_steps) < -1:
        raise ConfigError(f"trainer.max_steps={tc.max_steps}: expected >= 1, or -1 to run max_epochs")
    processes = _devices(tc)
    if int(cfg.data.batch_size) % processes:
        # the DataModule splits each global batch over the processes (the same batches on 1 or N of them)
        raise ConfigError(f"data.batch_size={cfg.data.batch_size} (the global batch) is not divisible by the {processes} "
                          f"processes of trainer.devices={tc.devices!r}: choose a batch size divisible by {processes} "
                          f"or other trainer.devices")
    # the head scores train.py computes go through the attribution settings: they are checked too
    if mc.select == "key" or "heuristic" in methods:
        _attribution(cfg.attribution, tc)
    a, k = cfg.attribution, max(int(mc.k_pos), int(mc.k_neg))
    if (not mc.head_scores and mc.select == "key" and any(x in ("learned", "random") for x in methods)
            and a.method == "atp" and 0 < int(a.rescore_top_k) < k):
        # key heads of an estimate-plus-exact result are ranked among its exact heads only (modulation.heads)
        raise ConfigError(f"attribution.rescore_top_k={a.rescore_top_k} re-scores fewer heads exactly than "
                          f"modulation.k_pos={mc.k_pos} / modulation.k_neg={mc.k_neg} key heads ask for: the key "
                          f"heads are ranked on exact scores only; set attribution.rescore_top_k >= {k}")


def _layers(key: str, value: Any, depth: int, of: str) -> None:
    rng = list(value) if value is not None else []
    if len(rng) != 2 or any(not isinstance(v, int) for v in rng) or not 0 <= rng[0] < rng[1] <= depth:
        raise ConfigError(f"modulation.{key}={rng!r}: expected [start, end) with 0 <= start < end <= {of}")


def check_field_methods(mc: Any, methods: Iterable[str]) -> None:
    """The layer ranges of the field's methods named in ``methods`` (``vseam.modulation.field``), of a
    ``modulation.field_depth``-layer model, and VTI's two strengths together, before a model loads; nothing for a
    method not named (the other hyperparameters are checked at their fields in ``vseam.config``)."""
    named = set(methods) & set(FIELD_METHODS)
    depth = int(mc.field_depth)
    for name in ("pai", "vaf", "vhr", "spin"):
        if name in named:
            _layers(f"{name}_layers", mc[f"{name}_layers"], depth, f"modulation.field_depth={depth}")
    if "vti" in named and float(mc.vti_alpha_text) == 0 and float(mc.vti_alpha_image) == 0:
        raise ConfigError("modulation.vti_alpha_text=0 and modulation.vti_alpha_image=0: VTI would steer nothing")


def _eval(cfg: Any) -> None:
    from pathlib import Path

    ev = cfg.eval
    if ev.checkpoint and not Path(str(ev.checkpoint)).is_file():
        raise ConfigError(f"eval.checkpoint={ev.checkpoint}: no such file (expected a modulation.safetensors "
                          f"written by train.py{'' if ev.method == 'none' else f', or its methods/{ev.method}.safetensors'})")
    if ev.method in NEED_A_FILE and not ev.checkpoint:
        raise ConfigError(f"eval.method={ev.method} is estimated on a train split by train.py: set eval.checkpoint to "
                          f"the methods/{ev.method}.safetensors of that run")
    if ev.method != "none" and not ev.checkpoint:  # from the hyperparameters alone
        check_field_methods(cfg.modulation, [ev.method])


def _edit(e: Any) -> None:
    if e.prompt_writer == "llm" and not e.llm_model:
        raise ConfigError("edit.prompt_writer=llm needs edit.llm_model (a text-generation model id or folder)")


def _trace(t: Any, tc: Any) -> None:
    if not t.tokenwise and not list(t.groups):
        raise ConfigError("trace.tokenwise=false with trace.groups=[]: nothing to trace")
    _devices(tc)


def say_k_fits(k: int, key: str, num_layers: int, num_heads: int, say: Callable[[str], None] = print) -> int:
    """``min(k, L*H)``; when ``k`` is larger, say so (the run goes on with every head, it is not hidden)."""
    total = int(num_layers) * int(num_heads)
    if int(k) > total:
        say(f"note: {key}={k} is larger than the model's {total} heads ({num_layers} layers x {num_heads}); "
            f"using all {total}")
        return total
    return int(k)
