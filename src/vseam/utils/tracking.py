"""Experiment tracking of every job (``train.py``, ``analyze.py heads / eval / edit``), from ``cfg.logger``:
W&B (offline unless ``logger.mode=online``), CSV files, or nothing.

One ``Tracker`` per run. Its Lightning logger (``tracker.lightning``: a ``WandbLogger`` or
``CSVLogger``, None for ``logger.kind=none``) is what a ``Trainer`` logs to; jobs without a Trainer log
through the same object, so every job names its runs, folders and tags the same way: W&B run
``<job>-<out_dir name>`` (or ``run_name``) with tag and job type ``<job>``; files under
``<out_dir>/logs`` (or ``logger.save_dir``): ``<job>/version_0/metrics.csv`` for CSV, plus one
``<table>.csv`` per logged table. Only rank zero writes (Lightning's loggers are rank-zero-only
themselves; the extras here check ``is_rank_zero``).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vseam.utils.ranks import is_rank_zero

KINDS = ("wandb", "csv", "none")


class Tracker:
    """The run's tracker: ``log`` metrics, ``table``, ``images``, ``summary``, ``artifact``, ``finish``."""

    def __init__(self, cfg: Any, out_dir: str | Path, job: str):
        lc = _field(cfg, "logger")
        self.kind = str(_field(lc, "kind", "none"))
        if self.kind not in KINDS:
            raise ValueError(f"logger.kind={self.kind!r}: expected one of {list(KINDS)}")
        mode = str(_field(lc, "mode", "offline"))
        if self.kind == "wandb" and mode == "disabled":
            self.kind = "none"
        self.job = job
        self.save_dir = Path(_field(lc, "save_dir") or Path(out_dir) / "logs")
        self.online = self.kind == "wandb" and mode == "online"
        self._summary: dict[str, Any] = {}
        self.lightning = None
        self.run_id: str | None = None  # the W&B run's id (kept in the run folder: a resumed run resumes it)
        if self.kind == "csv":
            from lightning.pytorch.loggers import CSVLogger

            self.lightning = CSVLogger(str(self.save_dir), name=job)
        elif self.kind == "wandb":
            from lightning.pytorch.loggers import WandbLogger

            if is_rank_zero():
                self.save_dir.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run_id = wandb_run_id(out_dir, job)
            self.lightning = WandbLogger(
                project=_field(lc, "project", "vseam"), entity=_field(lc, "entity"),
                name=_field(cfg, "run_name") or run_name(job, out_dir), save_dir=str(self.save_dir),
                mode=mode, tags=[*list(_field(lc, "tags") or []), job], job_type=job, log_model=False,
                config=_plain(cfg), id=self.run_id, resume="allow")
            # Lightning passes wandb.init anonymous=None, which wandb >= 0.22 warns about on every run
            getattr(self.lightning, "_wandb_init", {}).pop("anonymous", None)

    @property
    def _wandb_run(self):
        """The W&B run on rank zero (started on first use), None otherwise."""
        return self.lightning.experiment if self.kind == "wandb" and is_rank_zero() else None

    @property
    def log_dir(self) -> Path:
        return Path(self.lightning.log_dir) if self.kind == "csv" else self.save_dir

    def log(self, metrics: dict[str, Any], step: int | None = None) -> None:
        if self.lightning is not None and is_rank_zero():
            self.lightning.log_metrics(metrics, step)

    def table(self, key: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """A table: a ``wandb.Table`` under ``key``, or ``<log_dir>/<key>.csv``."""
        if self.kind == "wandb" and is_rank_zero():
            self.lightning.log_table(key=key, columns=list(columns), data=[list(r) for r in rows])
        elif self.kind == "csv" and is_rank_zero():
            self._write_csv(key, list(columns), rows)

    def images(self, paths: dict[str, str | Path]) -> None:
        """Images already written to disk (W&B only: for CSV they are in the run folder)."""
        run = self._wandb_run
        if run is not None and paths:
            import wandb

            run.log({k: wandb.Image(str(p)) for k, p in paths.items()})

    def summary(self, values: dict[str, Any]) -> None:
        """Final values of the run: the W&B summary, or ``<log_dir>/summary.csv``."""
        run = self._wandb_run
        if run is not None:
            run.summary.update({k: v for k, v in values.items() if v is not None})
        elif self.kind == "csv" and is_rank_zero():
            self._summary.update(values)
            self._write_csv("summary", ["metric", "value"], list(self._summary.items()))

    def artifact(self, path: str | Path, name: str, kind: str) -> None:
        """Upload a file as a W&B artifact (online runs only)."""
        run = self._wandb_run
        if run is not None and self.online and Path(path).exists():
            import wandb

            art = wandb.Artifact(name, type=kind)
            art.add_file(str(path))
            run.log_artifact(art)

    def finish(self, status: str = "success") -> None:
        """Flush and close the run (also when the job runs in-process, e.g. in a notebook)."""
        if self.lightning is None or not is_rank_zero():
            return
        self.lightning.finalize(status)
        run = self._wandb_run
        if run is not None:
            run.finish()

    def _write_csv(self, key: str, columns: list[str], rows) -> None:
        from vseam.utils.io import atomic_path

        path = self.log_dir / f"{key.replace('/', '_')}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(columns)
            w.writerows(rows)


def log_analysis(cfg: Any, out_dir: str | Path, job: str, metrics: dict[str, Any],
                 images: dict[str, str | Path] | None = None) -> None:
    """A job without steps (``analyze.py ablate / overlap / report``): its metrics once, as the summary
    too, its figures (PNG files, as ``figure/<key>``), then close the run."""
    tracker = Tracker(cfg, out_dir, job)
    metrics = {k: v for k, v in metrics.items() if v is not None}
    tracker.log(metrics)
    tracker.images({f"figure/{k}": v for k, v in (images or {}).items()})
    tracker.summary(metrics)
    tracker.finish()


def wandb_run_id(out_dir: str | Path, job: str) -> str:
    """The W&B run id of ``job`` in the run folder ``out_dir`` (``wandb_run_ids.json``): the one stored by an
    earlier start of the same run, so that a resumed run continues its W&B run instead of starting a
    second one; a new id (stored, on rank zero) otherwise."""
    import json

    from vseam.utils.io import write_json
    from vseam.utils.rundir import WANDB_IDS

    path = Path(out_dir) / WANDB_IDS
    try:
        ids = json.loads(path.read_text()) if path.exists() else {}
    except (OSError, ValueError):
        ids = {}  # a damaged bookkeeping file: start a new W&B run (the results are not affected)
    if not isinstance(ids, dict):
        ids = {}
    if job not in ids:
        import secrets

        ids[job] = secrets.token_hex(4)  # W&B run ids: 8 lowercase letters and digits, as wandb.util.generate_id
        if is_rank_zero():
            write_json(path, ids)
    return str(ids[job])


def run_name(job: str, out_dir: str | Path) -> str:
    """``<job>-<folder>``, without doubling the job when the folder already names it (runs/heads-organism)."""
    folder = Path(out_dir).name
    return folder if folder == job or folder.startswith(f"{job}-") else f"{job}-{folder}"


def _field(node: Any, key: str, default: Any = None) -> Any:
    """``node.key`` of a DictConfig, a mapping or a namespace (editing is also run with plain configs)."""
    if node is None:
        return default
    if isinstance(node, dict):
        return node.get(key, default)
    return getattr(node, key, default)


def _plain(cfg: Any) -> dict | None:
    """The config as a plain dict for W&B (None when it is not an OmegaConf config)."""
    from omegaconf import DictConfig, OmegaConf

    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else None
