"""Command-line entry points behind ``train.py`` and ``analyze.py``: parse, validate, dispatch."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

from vseam.config import ANALYZE_TOP, TRAIN_TOP, ConfigError, describe_groups, env_defaults, load_config, top_defaults

# name -> (module, function, one-line description). Each function takes the resolved config.
ANALYSES: dict[str, tuple[str, str, str]] = {
    "heads": ("vseam.attribution.run", "run_heads", "head attribution: positive / negative / signed L x H scores"),
    "edit": ("vseam.editing.run", "run_edit", "semantic editing of real images and the effective-edit filter"),
    "eval": ("vseam.modulation.apply", "run_eval",
             "score a model (optionally modulated, or with a field method) on GQA / POPE / COCO-QA"),
    "ablate": ("vseam.study.ablation", "run_ablate", "ablation study: top-K positive / negative vs K random heads"),
    "overlap": ("vseam.study.run", "run_overlap", "cross-level overlap of per-category head sets, with tests"),
    "report": ("vseam.study.report", "run_report", "one self-contained HTML report of a results folder"),
    "study": ("vseam.study.run", "run_study", "heads per category + ablation + overlap + report, both archs"),
    "trace": ("vseam.tracing.run", "run_trace", "causal tracing (attn / mlp / resid x layer x token) and logit lens of edit pairs"),
}

# Each entry point's defaults are its top-level file: configs/analyze.yaml (its ``analyses:`` block: eval
# scores a fresh organism world by default) and configs/train.yaml.


def _resolve(module: str, func: str) -> Callable:
    try:
        return getattr(importlib.import_module(module), func)
    except (ImportError, AttributeError) as e:
        raise SystemExit(f"{module}.{func} is not available: {e}") from e


def _help(prog: str, usage: str, extra: str = "") -> str:
    return (f"usage: {usage}\n\n{extra}config groups (group=choice; files in configs/<group>/):\n{describe_groups()}\n\n"
            "any key: a.b=value (e.g. trainer.devices=8 modulation.k_pos=20 out_dir=runs/x); "
            "keys and their meaning: configs/*/*.yaml\n")


def analyze_main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    analyses = "analyses:\n" + "\n".join(f"  {k:<8} {v[2]}" for k, v in ANALYSES.items()) + "\n\n"
    usage = "python analyze.py ANALYSIS [group=choice ...] [key=value ...]"
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_help("analyze.py", usage, analyses))
        raise SystemExit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in ANALYSES:
        raise SystemExit(f"unknown analysis {name!r}; choices: {', '.join(ANALYSES)}")
    return _run(name, *ANALYSES[name][:2], rest, ANALYZE_TOP, name)


def train_main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(_help("train.py", "python train.py [group=choice ...] [key=value ...]",
                    "Learns per-head scales and offsets of the key heads of a frozen VLM (docs/method.md#learned-modulation).\n"
                    f"train.py's own defaults (configs/{TRAIN_TOP}): {top_defaults(TRAIN_TOP)}\n\n"))
        raise SystemExit(0)
    return _run("train", "vseam.modulation.run", "run_train", argv, TRAIN_TOP)


def _run(command: str, module: str, func: str, argv: list[str], top: str, analysis: str | None = None) -> dict:
    env_defaults()
    from vseam.validate import validate

    try:
        cfg = load_config(argv, top=top, analysis=analysis)
        validate(cfg, command)  # every value that can be checked without the model, before it loads
    except ConfigError as e:
        raise SystemExit(f"config error: {e}") from None
    fn = _resolve(module, func)
    # the run accepts (or refuses) its out_dir itself, before its model loads; config.yaml is written then
    return fn(cfg)


def script(main: Callable[[list[str]], Any], argv: list[str] | None = None) -> None:
    """Run ``main`` as a command: an error raised on purpose (a bad key, file, folder, model; see
    ``vseam.utils.errors``) and an OS error of a file print one line ``error: ...`` on stderr and exit with
    status 1 (Ctrl-C: 130), without a traceback unless ``VSEAM_TRACEBACK=1`` or ``--traceback``; any other
    error keeps its traceback. Under DDP rank zero reports; the other ranks exit with the same status."""
    import os

    from vseam.utils.errors import TRACEBACK_ENV, user_message, want_traceback
    from vseam.utils.ranks import is_rank_zero

    argv = list(sys.argv[1:] if argv is None else argv)
    if "--traceback" in argv:
        argv = [a for a in argv if a != "--traceback"]
        os.environ[TRACEBACK_ENV] = "1"  # DDP children re-run the command line and inherit the environment

    def fail(message: str, status: int = 1) -> None:
        if is_rank_zero():
            print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(status)

    try:
        main(argv)
    except KeyboardInterrupt:
        if want_traceback():
            raise
        fail("interrupted; the same command resumes the run from what it saved", 130)
    except SystemExit as e:
        if not isinstance(e.code, str) or want_traceback():
            raise
        message = " ".join(line.strip() for line in e.code.splitlines() if line.strip())
        fail(message.removeprefix("config error: "))
    except Exception as e:
        message = user_message(e)
        if message is None or want_traceback():
            raise
        fail(message)


def train_script() -> None:
    """``python train.py`` and the ``vseam-train`` console script (exits with what ``script`` says)."""
    script(train_main)


def analyze_script() -> None:
    """``python analyze.py`` and the ``vseam-analyze`` console script."""
    script(analyze_main)
