"""The run's folder (``out_dir``): one run's results, never two runs' mixed.

A run without ``out_dir`` gets a new folder ``runs/<command>/<date-time>-<pid>-<random>``, created
exclusively, so runs started in the same second (parallel sweep agents) get folders of their own.
DDP launchers re-run the command line in child processes; the launching process names its folder in
the environment (``VSEAM_OUT_DIR``) and the children (ranks > 0) write into it. Processes a cluster
launcher starts (torchrun, SLURM's srun: several nodes) share no environment: they need an explicit
``out_dir`` that every node reaches.

An explicit ``out_dir`` that already holds results is accepted only when its ``config.yaml`` equals
this run's config (except the keys in ``IGNORED``, which do not change any number): the run then
resumes there. Another config, or files without a ``config.yaml``, are refused with the differing
keys named. A folder holds results when it holds any file besides its run's bookkeeping
(``BOOKKEEPING``: ``config.yaml``, the lock, the logger's files and its W&B run id): a run that stopped
on an error before it wrote anything leaves a folder that takes a corrected configuration (said).
While a run holds its folder, ``.lock`` is locked (``flock``: the lock ends with the process, so a
killed run leaves no stale lock) and a second run on it is refused; the run removes ``.lock`` when it
ends, also on an error. ``config.yaml`` is written only once the folder is accepted.
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vseam.utils import errors
from vseam.utils.errors import UserError

OUT_DIR_ENV = "VSEAM_OUT_DIR"
LOCK = ".lock"
CONFIG = "config.yaml"
# keys that change no result: where it is written, how it is logged and shown, how much is done per forward
IGNORED = ("out_dir", "run_name", "logger", "attribution.progress", "attribution.resume", "edit.progress",
           "trainer.enable_progress_bar", "attribution.rows_per_forward", "data.num_workers",
           "eval.allow_overlap", "modulation.allow_other_model", "study.resume",
           "trace.progress", "trace.resume",
           "trace.rows_per_forward")


class RunFolderError(UserError, RuntimeError):
    """``out_dir`` holds another run's results, or another run is using it."""


# a run's own files, not results: its config, its lock, the logger's files (logs/) and W&B run ids
WANDB_IDS = "wandb_run_ids.json"  # vseam.utils.tracking: job -> W&B run id, so a resumed run resumes its W&B run
BOOKKEEPING = (CONFIG, LOCK, "logs", WANDB_IDS)

_HELD: dict[str, int] = {}  # resolved folder -> file descriptor of its locked .lock (this process)


def new_run_dir(command: str, root: str | Path = "runs") -> Path:
    """Create and return a folder ``<root>/<command>/<date-time>-<pid>-<random>`` no other run has."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    for _ in range(100):
        path = Path(root) / command / f"{stamp}-{os.getpid()}-{secrets.token_hex(2)}"
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RunFolderError(f"could not create a fresh folder under {Path(root) / command}")  # pragma: no cover


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out


def _comparable(yaml_text: str) -> dict[str, Any]:
    import yaml

    flat = _flat(yaml.safe_load(yaml_text) or {})
    return {k: v for k, v in flat.items() if not any(k == i or k.startswith(i + ".") for i in IGNORED)}


def config_yaml(cfg: Any) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(cfg, resolve=True)


def config_diff(saved_yaml: str, cfg: Any) -> list[str]:
    """``key: saved -> now`` for every result-relevant key that differs between a saved config and ``cfg``."""
    a, b = _comparable(saved_yaml), _comparable(config_yaml(cfg))
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>")]


def _lock(out: Path) -> int:
    import fcntl

    path = out / LOCK
    for _ in range(100):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunFolderError(f"out_dir {out} is not writable ({e.strerror}): choose a folder you can write "
                                 f"(out_dir=...)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunFolderError(f"out_dir {out} is in use by another run (pid {holder}); wait for it or choose "
                                 f"another out_dir") from None
        try:  # the lock file may have been removed by the run that just ended: lock the one that is there
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    else:  # pragma: no cover
        raise RunFolderError(f"out_dir {out}: could not lock {path}")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def holds_results(out: str | Path) -> bool:
    """Whether ``out`` holds any file besides a run's bookkeeping (``BOOKKEEPING``): results, or the progress
    of a run that was stopped (an empty folder, such as a progress folder never written to, is none)."""
    out = Path(out)
    return any(p.is_file() or p.is_symlink() for top in out.iterdir() if top.name not in BOOKKEEPING
               for p in ([top] if not top.is_dir() or top.is_symlink() else top.rglob("*")))


def launched_processes() -> int:
    """How many processes a cluster launcher started for this run (torchrun: ``WORLD_SIZE``; SLURM's ``srun``:
    ``SLURM_STEP_NUM_TASKS``); 1 otherwise (Lightning's own launcher passes its folder on, ``OUT_DIR_ENV``)."""
    for var in ("WORLD_SIZE", "SLURM_STEP_NUM_TASKS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 1:
            return int(value)
    return 1


def claim(cfg: Any, command: str) -> tuple[Path, bool]:
    """Accept ``cfg.out_dir`` for this run (or create a fresh one, set back into ``cfg``), lock it and write
    ``config.yaml``. Returns the folder and whether this call took it (False: held already, or rank > 0)."""
    inherited = os.environ.get(OUT_DIR_ENV)
    from vseam.utils.ranks import is_rank_zero

    if not cfg.out_dir and not inherited and launched_processes() > 1:
        raise RunFolderError(f"this is one of {launched_processes()} processes started by torchrun or srun, and each "
                             f"would make a fresh folder of its own: give them one, out_dir=<a folder every node "
                             f"reaches>")
    if not is_rank_zero():
        if inherited and not cfg.out_dir:
            cfg.out_dir = inherited
        out = Path(cfg.out_dir or inherited or ".")
        out.mkdir(parents=True, exist_ok=True)
        return out, False
    if not cfg.out_dir:
        cfg.out_dir = str(new_run_dir(command))
    out = Path(cfg.out_dir)
    key = str(out.resolve())
    if key in _HELD:
        return out, False
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"out_dir {out} is a file, not a folder: choose another out_dir (or leave it unset "
                             f"for a fresh folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"out_dir {out} cannot be created ({e.strerror}{': ' + str(e.filename) if e.filename else ''}): "
                             f"choose a folder you can write (out_dir=...)") from None
    fd = _lock(out)
    try:
        present = sorted(p.name for p in out.iterdir() if p.name != LOCK)
        saved = out / CONFIG
        if present and not saved.exists():
            raise RunFolderError(f"out_dir {out} already holds files ({', '.join(present[:4])}) but no {CONFIG}: "
                                 f"they are not this run's; choose another out_dir (or leave it unset)")
        if saved.exists():
            diff = config_diff(saved.read_text(), cfg)
            if diff and holds_results(out):
                raise RunFolderError(
                    f"out_dir {out} holds the results of a run with another configuration ({'; '.join(diff[:6])}"
                    f"{'; ...' if len(diff) > 6 else ''}); results are never merged: choose another out_dir "
                    f"(or leave it unset for a fresh folder)")
            if diff:  # a run that stopped before writing anything: its folder takes the corrected configuration
                print(f"out_dir {out}: the run found there wrote no results; taking it for this configuration "
                      f"({'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''})", flush=True)
                (out / WANDB_IDS).unlink(missing_ok=True)  # that run's W&B run is not this one's
            else:
                print(f"out_dir {out}: same configuration as the run found there; resuming it", flush=True)
        from vseam.utils.io import write_text

        write_text(saved, config_yaml(cfg))
    except BaseException:
        _unlock(out, fd)
        raise
    _HELD[key] = fd
    os.environ[OUT_DIR_ENV] = str(out)
    errors.LAST_RUN_FOLDER = out  # named by a disk-full error whose writer did not name its file
    return out, True


def _unlock(out: Path, fd: int) -> None:
    """Remove ``.lock`` (still holding it, so no other run holds that file) and close it."""
    try:
        (Path(out) / LOCK).unlink(missing_ok=True)
    except OSError:  # a folder made read-only meanwhile: the lock still ends with the descriptor
        pass
    os.close(fd)


def release(out: str | Path) -> None:
    """Unlock a folder this process claimed and remove its ``.lock``."""
    fd = _HELD.pop(str(Path(out).resolve()), None)
    if fd is not None:
        _unlock(Path(out), fd)
    if os.environ.get(OUT_DIR_ENV) == str(out):
        os.environ.pop(OUT_DIR_ENV, None)


@contextmanager
def run_folder(cfg: Any, command: str) -> Iterator[Path]:
    """``claim`` for the body of a run; the lock is released when the body ends (also on error)."""
    out, took = claim(cfg, command)
    try:
        yield out
    finally:
        if took:
            release(out)
