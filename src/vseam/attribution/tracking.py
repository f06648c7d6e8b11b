"""Experiment tracking of a head-attribution run (rank 0 only): W&B (offline unless configured), a
CSV file, or nothing, from ``cfg.logger``. Logs the config, sweep progress, baseline metrics, the
heatmaps as images and a per-head table."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

from vseam.attribution.scores import HeadScores


class RunLogger:
    def __init__(self, cfg: Any, out_dir: Path):
        from omegaconf import OmegaConf

        lcfg = cfg.logger
        self.kind = str(lcfg.kind) if lcfg is not None else "none"
        self.save_dir = Path(lcfg.save_dir) if lcfg is not None and lcfg.save_dir else out_dir / "logs"
        self.run = None
        self.csv_path = None
        if self.kind == "wandb" and str(lcfg.mode) != "disabled":
            import wandb

            self.save_dir.mkdir(parents=True, exist_ok=True)
            os.environ.setdefault("WANDB_SILENT", "true")
            self.run = wandb.init(project=lcfg.project, entity=lcfg.entity, mode=str(lcfg.mode),
                                  dir=str(self.save_dir), name=cfg.run_name or f"heads-{Path(out_dir).name}",
                                  tags=list(lcfg.tags or []) + ["heads"], job_type="heads",
                                  config=OmegaConf.to_container(cfg, resolve=True), reinit="finish_previous")
        elif self.kind == "csv":
            self.csv_path = self.save_dir / "heads_metrics.csv"
        elif self.kind not in ("none", "wandb"):
            raise ValueError(f"logger.kind={self.kind!r}: expected wandb | csv | none")

    def progress(self, phase: str, chunks_done: int, chunks_total: int, seconds: float) -> None:
        if self.run is not None:
            self.run.log({"progress/chunks_done": chunks_done, "progress/fraction": chunks_done / max(1, chunks_total),
                          "progress/seconds": seconds, "progress/phase": phase})

    def finish(self, result: dict, scores: HeadScores) -> None:
        base = {"baseline/accuracy": result["baseline"]["accuracy"], "baseline/mean_prob": result["baseline"]["mean_prob"],
                "baseline/n_correct": result["n_correct"], "baseline/n_incorrect": result["n_incorrect"],
                "data/n": result["n"], "data/n_skipped": result["n_skipped"], "time/seconds": result["seconds"]}
        mats = scores.matrices()
        L, H = result["num_layers"], result["num_heads"]
        rows = [[l, h] + [None if m is None else float(m[l, h]) for m in mats.values()]
                for l in range(L) for h in range(H)]
        if self.run is not None:
            import wandb

            files = result.get("files", {})
            images = {f"heatmap/{n}": wandb.Image(files[f"heatmap_{n}"]) for n in mats if f"heatmap_{n}" in files}
            table = wandb.Table(columns=["layer", "head", *mats], data=rows)
            self.run.log({**base, **images, "heads/table": table})
            self.run.summary.update({k: v for k, v in base.items() if v is not None})
            self.run.summary["method"] = result["method"]
            self.run.finish()
        elif self.csv_path is not None:
            self.csv_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.csv_path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["metric", "value"])
                w.writerows(base.items())
            with open(self.save_dir / "heads_table.csv", "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["layer", "head", *mats])
                w.writerows(rows)
