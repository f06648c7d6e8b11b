"""Checks of every configuration value that can be checked without the model: run before a model
loads, each failure a ``ConfigError`` naming the key, the value and what is valid.

The schema (``vseam.config``) already stops unknown keys and wrong types; this adds the values:
choices, ranges, device counts and combinations that cannot train. What needs the model (K against the
model's number of heads) is said by the run once the model is loaded (``say_k_fits``).
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from vseam.config import ConfigError
from vseam.utils.devices import ACCELERATORS

ARCHS = ("llava", "instructblip", "llava-next", "qwen2-vl",
         "qwen2.5-vl", "qwen3-vl",
         "gemma3", "paligemma",
         "llava-onevision", "idefics3", "smolvlm", "internvl")  # vseam.models.ADAPTERS (tests/test_architectures.py)
ANSWER_DEFINITIONS = ("project", "reference")  # vseam.models.base.ANSWER_DEFINITIONS
DTYPES = ("float32", "bfloat16", "float16")
FORMATS = ("organism", "gqa", "pope", "cocoqa")
WORLD_SPLITS = ("train", "val", "test")
ABLATIONS = ("mean", "zero")
ATTRIBUTION_METHODS = ("exact", "atp")  # attribution.sweep runs these
TOWERS = ("language", "vision")  # attribution.tower: whose heads are scored (VLMAdapter.stack)
ATP_SPACES = ("logodds", "prob")  # attribution.patching linearises in these
ATP_PATHS = ("all", "index", "layer")  # attribution.patching: the heads ablated together where the gradient is taken
FIELD_METHODS = ("pai", "vaf", "vhr", "ict", "vti", "adhh", "spin", "vcd")  # vseam.modulation.field.METHODS
NEED_A_FILE = ("ict", "vti", "adhh")  # field methods estimated from data by train.py: eval.checkpoint names their file
MODULATION_METHODS = ("none", "heuristic", "learned", "random", "bias", "lora", "ia3", *FIELD_METHODS)
EVAL_METHODS = ("none", *FIELD_METHODS)  # eval.method: the field methods eval applies
ICT_TYPES = ("image", "object", "both")  # vseam.modulation.field.activation: the levels of ICT
TRACE_BLOCKS = ("attn", "mlp", "resid")  # tracing.engine patches these block outputs
TRACE_GROUPS = ("image", "question", "last")  # tracing.positions finds these groups of positions
TRACE_DIRECTIONS = ("denoise", "noise")
SCALES = ("scalar", "vector", "none")
SELECTS = ("key", "all")
SCHEDULERS = ("constant", "cosine")
PRECISIONS = ("32-true", "32", "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true")
MONITORS = ("val/loss", "val/acc")
MONITOR_MODES = ("min", "max")
LOGGER_KINDS = ("wandb", "csv", "none")
LOGGER_MODES = ("offline", "online", "disabled")
PROMPT_WRITERS = ("rules", "llm")
RELATION_MASKS = ("both", "subject", "object")
EDIT_DTYPES = ("auto", *DTYPES)


def _choice(key: str, value: Any, valid: Iterable) -> None:
    valid = tuple(valid)
    if value not in valid:
        raise ConfigError(f"{key}={value!r}: expected one of {list(valid)}")


def _at_least(key: str, value: Any, low: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or not value >= low:
        raise ConfigError(f"{key}={value!r}: expected a number >= {low}{' or null' if allow_none else ''}")


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
                        num_nodes=int(getattr(tc, "num_nodes", 1) or 1))
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
    if lg.kind == "wandb" and lg.mode == "online" and not wandb_key_found():
        raise ConfigError("logger.mode=online: no W&B API key found (WANDB_API_KEY, `wandb login`, ~/.netrc) and no "
                          "terminal to ask for one: run `wandb login` or set WANDB_API_KEY, or use "
                          "logger.mode=offline (sync later with `wandb sync`)")


def validate(cfg: Any, command: str) -> None:
    """Raise ``ConfigError`` for the first value of ``cfg`` that cannot work for ``command``
    (train | heads | eval | edit | ablate | overlap | report | study | trace)."""
    m, d, a, mc, tc, lg, e = cfg.model, cfg.data, cfg.attribution, cfg.modulation, cfg.trainer, cfg.logger, cfg.edit
    if m.arch is not None:  # null: the checkpoint's model_type says, when the model loads
        _choice("model.arch", m.arch, ARCHS)
    _choice("model.dtype", m.dtype, DTYPES)
    _choice("trainer.accelerator", tc.accelerator, ACCELERATORS)  # the one device key (models, Trainer, Fabric)
    if str(tc.accelerator) in ("gpu", "cuda"):  # every job places its model there: a machine without one is told now
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={tc.accelerator}: this machine has no CUDA device; use "
                              f"trainer.accelerator=cpu (or auto)")
    _choice("model.answer_definition", m.answer_definition, ANSWER_DEFINITIONS)
    _choice("data.format", d.format, FORMATS)
    _choice("data.world_split", d.world_split, WORLD_SPLITS)
    _at_least("data.batch_size", d.batch_size, 1)
    _at_least("data.num_workers", d.num_workers, 0)
    _at_least("data.limit", d.limit, 1, allow_none=True)
    _at_least("data.n_per_category", d.n_per_category, 1)
    if not 0.0 <= float(d.max_skip_fraction) <= 1.0:
        raise ConfigError(f"data.max_skip_fraction={d.max_skip_fraction!r}: expected a share in [0, 1]")
    _choice("logger.kind", lg.kind, LOGGER_KINDS)
    _choice("logger.mode", lg.mode, LOGGER_MODES)
    _logger(lg)
    _at_least("modulation.norm_every", mc.norm_every, 0)
    checks: dict[str, Callable[[], None]] = {"heads": lambda: _attribution(a, tc), "train": lambda: _train(cfg),
                                             "eval": lambda: _eval(cfg), "edit": lambda: _edit(e),
                                             "ablate": lambda: (_attribution(a, tc), check_study(cfg.study)),
                                             "overlap": lambda: (_attribution(a, tc), check_study(cfg.study)),
                                             "report": lambda: None,
                                             "study": lambda: (_attribution(a, tc), check_study(cfg.study),
                                                               cfg.study.trace and _trace(cfg.trace, tc)),
                                             "trace": lambda: _trace(cfg.trace, tc)}
    if command not in checks:
        raise ValueError(f"unknown command {command!r}")
    if a.tower != "language" and command in ("train", "ablate", "overlap", "study"):
        raise ConfigError(f"attribution.tower={a.tower}: only `analyze.py heads` scores the vision tower's heads; "
                          f"`{command}` uses the language model's (attribution.tower=language)")
    checks[command]()


def _attribution(a: Any, tc: Any) -> None:
    check_attribution(a)
    _at_least("trainer.torch_threads", tc.torch_threads, 0)
    _devices(tc)


def check_attribution(a: Any) -> None:
    """The ``attribution`` group (also what train.py uses to compute its head scores)."""
    _choice("attribution.method", a.method, ATTRIBUTION_METHODS)
    _choice("attribution.ablation", a.ablation, ABLATIONS)
    _choice("attribution.atp_space", a.atp_space, ATP_SPACES)
    _choice("attribution.atp_path", a.atp_path, ATP_PATHS)
    _choice("attribution.tower", a.tower, TOWERS)
    if a.tower == "vision" and a.method != "exact":
        raise ConfigError(f"attribution.tower=vision is scored by the exact engine only: set attribution.method=exact "
                          f"(got {a.method!r})")
    for key in ("top_k", "rows_per_forward", "chunk_size"):
        _at_least(f"attribution.{key}", a[key], 1)
    if not 0.0 <= float(a.atp_alpha) < 1.0:
        raise ConfigError(f"attribution.atp_alpha={a.atp_alpha}: expected 0 <= alpha < 1 (0 = classic attribution "
                          "patching at the clean run, 0.5 = midpoint of the all-heads ablation path)")
    _at_least("attribution.rescore_top_k", a.rescore_top_k, 0)
    if int(a.rescore_top_k) > 0 and a.method != "atp":
        raise ConfigError(f"attribution.rescore_top_k={a.rescore_top_k} re-scores an estimate exactly: it needs "
                          f"attribution.method=atp (got {a.method!r})")


def check_study(st: Any) -> None:
    """The ``study`` group (ablation study, overlap analysis, the study's models)."""
    from vseam.config import CONFIG_DIR

    _choice("study.ablation", st.ablation, ABLATIONS)
    _choice("study.heads_from", st.heads_from, ("all", "category"))
    for key in ("k", "k_random", "overlap_k"):
        vals = st[key]
        if vals is None and key == "k_random":
            continue
        if not vals or any(int(v) < 1 for v in vals):
            raise ConfigError(f"study.{key}={None if vals is None else list(vals)!r}: expected a non-empty list "
                              f"of positive integers")
    _at_least("study.random_trials", st.random_trials, 1)
    _at_least("study.n_permutations", st.n_permutations, 1)
    _at_least("study.n_bootstrap", st.n_bootstrap, 1)
    _at_least("study.min_samples", st.min_samples, 1)
    if not 0.0 < float(st.alpha) < 1.0:
        raise ConfigError(f"study.alpha={st.alpha!r}: expected a significance level in (0, 1)")
    models = list(st.models)
    missing = [m for m in models if not (CONFIG_DIR / "model" / f"{m}.yaml").exists()]
    if not models or missing:
        raise ConfigError(f"study.models={models!r}: {'empty' if not models else f'no configs/model/ file for {missing}'}; "
                          f"choices: {sorted(p.stem for p in (CONFIG_DIR / 'model').glob('*.yaml'))}")


def _train(cfg: Any) -> None:
    mc, tc = cfg.modulation, cfg.trainer
    methods = list(mc.methods)
    if not methods:
        raise ConfigError(f"modulation.methods is empty: expected some of {list(MODULATION_METHODS)}")
    unknown = [x for x in methods if x not in MODULATION_METHODS]
    if unknown:
        raise ConfigError(f"modulation.methods={methods}: unknown {unknown}; expected some of {list(MODULATION_METHODS)}")
    if len(set(methods)) != len(methods):
        raise ConfigError(f"modulation.methods={methods}: a method is named twice")
    _choice("modulation.scale", mc.scale, SCALES)
    _choice("modulation.select", mc.select, SELECTS)
    _choice("modulation.scheduler", mc.scheduler, SCHEDULERS)
    if mc.scale == "none" and not mc.offset and any(x in ("learned", "random") for x in methods):
        raise ConfigError("modulation.scale=none with modulation.offset=false leaves the learned / random "
                          "modulation nothing to learn: turn one of them on")
    for key in ("k_pos", "k_neg", "warmup_steps", "weight_decay", "l1"):
        _at_least(f"modulation.{key}", mc[key], 0)
    if mc.select == "key" and int(mc.k_pos) + int(mc.k_neg) == 0 and any(x in ("learned", "random") for x in methods):
        raise ConfigError("modulation.k_pos=0 and modulation.k_neg=0 select no key head to modulate")
    _at_least("modulation.k_random", mc.k_random, 1, allow_none=True)
    _at_least("modulation.random_draws", mc.random_draws, 1)
    _at_least("modulation.draws_together", mc.draws_together, 1, allow_none=True)
    _at_least("modulation.draws_workers", mc.draws_workers, 1, allow_none=True)
    _at_least("modulation.attribution_limit", mc.attribution_limit, 1, allow_none=True)
    for key in ("lr", "baseline_lr"):
        if not float(mc[key]) > 0:
            raise ConfigError(f"modulation.{key}={mc[key]!r}: expected a learning rate > 0")
    _at_least("modulation.lora_r", mc.lora_r, 1)
    v, t = float(mc.val_fraction), float(mc.test_fraction)
    if not (0 < v < 1 and 0 < t < 1 and v + t < 1):
        raise ConfigError(f"modulation.val_fraction={v}, modulation.test_fraction={t}: each must be in (0, 1) "
                          f"and their sum below 1")
    check_field_methods(mc, methods)
    if int(tc.max_epochs) < 1 and int(tc.max_steps) < 1:
        raise ConfigError(f"trainer.max_epochs={tc.max_epochs} (and trainer.max_steps={tc.max_steps}): expected "
                          f"max_epochs >= 1 or max_steps >= 1")
    if int(tc.max_steps) == 0 or int(tc.max_steps) < -1:
        raise ConfigError(f"trainer.max_steps={tc.max_steps}: expected >= 1, or -1 to run max_epochs")
    for key in ("accumulate_grad_batches", "check_val_every_n_epoch", "log_every_n_steps"):
        _at_least(f"trainer.{key}", tc[key], 1)
    for key in ("limit_train_batches", "limit_val_batches"):
        if not float(tc[key]) > 0:
            raise ConfigError(f"trainer.{key}={tc[key]!r}: expected a fraction in (0, 1] or a number of batches >= 1")
    _choice("trainer.accelerator", tc.accelerator, ACCELERATORS)
    _choice("trainer.precision", str(tc.precision), PRECISIONS)
    _choice("trainer.monitor", tc.monitor, MONITORS)
    _choice("trainer.monitor_mode", tc.monitor_mode, MONITOR_MODES)
    _at_least("trainer.num_sanity_val_steps", tc.num_sanity_val_steps, 0)
    _at_least("trainer.torch_threads", tc.torch_threads, 0)
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


def _layers(key: str, value: Any, depth: int) -> None:
    rng = list(value) if value is not None else []
    if len(rng) != 2 or any(not isinstance(v, int) for v in rng) or not 0 <= rng[0] < rng[1] <= depth:
        raise ConfigError(f"modulation.{key}={rng!r}: expected [start, end) with 0 <= start < end <= "
                          f"modulation.field_depth={depth}")


def _share(key: str, value: Any, low: float, high: float, open_low: bool = False) -> None:
    v = float(value)
    if not ((low < v) if open_low else (low <= v)) or not v <= high:
        raise ConfigError(f"modulation.{key}={value!r}: expected a number in {'(' if open_low else '['}{low}, {high}]")


def check_field_methods(mc: Any, methods: Iterable[str]) -> None:
    """The hyperparameters of the field's methods (``vseam.modulation.field``) named in ``methods``, before a model
    loads; nothing for a method not named. Layer ranges are of a ``modulation.field_depth``-layer model."""
    named = set(methods) & set(FIELD_METHODS)
    if not named:
        return
    _at_least("modulation.field_depth", mc.field_depth, 1)
    _at_least("modulation.field_heads", mc.field_heads, 1)
    depth = int(mc.field_depth)
    if "pai" in named:
        _at_least("modulation.pai_alpha", mc.pai_alpha, 0)
        _at_least("modulation.pai_gamma", mc.pai_gamma, 1)
        _share("pai_beta", mc.pai_beta, 0, 1, open_low=True)
        _layers("pai_layers", mc.pai_layers, depth)
    if "vaf" in named:
        _at_least("modulation.vaf_enhance", mc.vaf_enhance, 0)
        _at_least("modulation.vaf_suppress", mc.vaf_suppress, 0)
        _layers("vaf_layers", mc.vaf_layers, depth)
    if "vhr" in named:
        if not float(mc.vhr_alpha) > 0:
            raise ConfigError(f"modulation.vhr_alpha={mc.vhr_alpha!r}: expected a scale > 0 (the paper's 2; 1 = no "
                              f"change)")
        _layers("vhr_layers", mc.vhr_layers, depth)
    if "ict" in named:
        _at_least("modulation.ict_num_heads", mc.ict_num_heads, 1)
        _at_least("modulation.ict_alpha", mc.ict_alpha, 0)
        _choice("modulation.ict_type", mc.ict_type, ICT_TYPES)
        _at_least("modulation.ict_samples", mc.ict_samples, 2, allow_none=True)
        if not float(mc.ict_blur_radius) > 0:
            raise ConfigError(f"modulation.ict_blur_radius={mc.ict_blur_radius!r}: expected a blur radius > 0 (pixels)")
    if "vti" in named:
        for key in ("vti_alpha_text", "vti_alpha_image"):
            _at_least(f"modulation.{key}", mc[key], 0)
        if float(mc.vti_alpha_text) == 0 and float(mc.vti_alpha_image) == 0:
            raise ConfigError("modulation.vti_alpha_text=0 and modulation.vti_alpha_image=0: VTI would steer nothing")
        _at_least("modulation.vti_num_demos", mc.vti_num_demos, 2)  # a principal direction needs two differences
        if not 0.0 < float(mc.vti_mask_ratio) < 1.0:
            raise ConfigError(f"modulation.vti_mask_ratio={mc.vti_mask_ratio!r}: expected a share of patches in (0, 1)")
        _at_least("modulation.vti_num_trials", mc.vti_num_trials, 1)
    if "adhh" in named:
        _at_least("modulation.adhh_k", mc.adhh_k, 1)
        _share("adhh_threshold", mc.adhh_threshold, 0, 1)
    if "spin" in named:
        _share("spin_keep", mc.spin_keep, 0, 1, open_low=True)
        _share("spin_damp", mc.spin_damp, 0, 1)
        _layers("spin_layers", mc.spin_layers, depth)
    if "vcd" in named:
        _at_least("modulation.vcd_alpha", mc.vcd_alpha, 0)
        _share("vcd_beta", mc.vcd_beta, 0, 1, open_low=True)
        if not 0 <= int(mc.vcd_noise_step) <= 999:
            raise ConfigError(f"modulation.vcd_noise_step={mc.vcd_noise_step!r}: expected a diffusion step in [0, 999]")


def _eval(cfg: Any) -> None:
    from pathlib import Path

    ev = cfg.eval
    _choice("eval.method", ev.method, EVAL_METHODS)
    if ev.checkpoint and not Path(str(ev.checkpoint)).is_file():
        raise ConfigError(f"eval.checkpoint={ev.checkpoint}: no such file (expected a modulation.safetensors "
                          f"written by train.py{'' if ev.method == 'none' else f', or its methods/{ev.method}.safetensors'})")
    if ev.method in NEED_A_FILE and not ev.checkpoint:
        raise ConfigError(f"eval.method={ev.method} is estimated on a train split by train.py: set eval.checkpoint to "
                          f"the methods/{ev.method}.safetensors of that run")
    if ev.method != "none" and not ev.checkpoint:  # from the hyperparameters alone
        check_field_methods(cfg.modulation, [ev.method])


def _edit(e: Any) -> None:
    _choice("edit.prompt_writer", e.prompt_writer, PROMPT_WRITERS)
    if e.prompt_writer == "llm" and not e.llm_model:
        raise ConfigError("edit.prompt_writer=llm needs edit.llm_model (a text-generation model id or folder)")
    _choice("edit.relation_mask", e.relation_mask, RELATION_MASKS)
    _choice("edit.dtype", e.dtype, EDIT_DTYPES)
    for key in ("steps", "batch_size", "filter_batch_size", "resolution"):
        _at_least(f"edit.{key}", e[key], 1)
    if int(e.resolution) % 8:
        raise ConfigError(f"edit.resolution={e.resolution}: expected a multiple of 8 (the inpainting VAE's stride)")
    for key in ("mask_margin", "mask_margin_px", "sam_dilate_px"):
        _at_least(f"edit.{key}", e[key], 0)


def _trace(t: Any, tc: Any) -> None:
    _choice("trace.direction", t.direction, TRACE_DIRECTIONS)
    for key, valid in (("blocks", TRACE_BLOCKS), ("groups", TRACE_GROUPS)):
        values = list(t[key])
        bad = [v for v in values if v not in valid]
        if bad or (key == "blocks" and not values) or len(set(values)) != len(values):
            raise ConfigError(f"trace.{key}={values!r}: expected a non-empty list of distinct names from {list(valid)}"
                              if key == "blocks" else f"trace.{key}={values!r}: expected distinct names from {list(valid)}")
    if not t.tokenwise and not list(t.groups):
        raise ConfigError("trace.tokenwise=false with trace.groups=[]: nothing to trace")
    for key in ("rows_per_forward", "chunk_size", "lens_top_k"):
        _at_least(f"trace.{key}", t[key], 1)
    _at_least("trace.limit", t.limit, 1, allow_none=True)
    _at_least("trace.plot_pairs", t.plot_pairs, 0)
    _at_least("trainer.torch_threads", tc.torch_threads, 0)
    _devices(tc)


def say_k_fits(k: int, key: str, num_layers: int, num_heads: int, say: Callable[[str], None] = print) -> int:
    """``min(k, L*H)``; when ``k`` is larger, say so (the run goes on with every head, it is not hidden)."""
    total = int(num_layers) * int(num_heads)
    if int(k) > total:
        say(f"note: {key}={k} is larger than the model's {total} heads ({num_layers} layers x {num_heads}); "
            f"using all {total}")
        return total
    return int(k)
