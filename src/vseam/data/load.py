"""Turn a data config into samples: the organism world's files (``vseam.world.ensure_world`` builds them)
or benchmark files."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from vseam.data.readers import read_benchmark
from vseam.data.sample import Sample


def annotation_files(data_cfg: Any) -> list[Path]:
    if data_cfg.format == "organism":
        import json

        root = Path(data_cfg.root)
        if not (root / "world.json").exists():
            raise FileNotFoundError(f"data.root={data_cfg.root}: no organism world there (world.json); build it with "
                                    f"vseam.world.ensure_world(cfg.data), as every job does")
        files = json.loads((root / "world.json").read_text())["files"]["annotations"]
        return [root / f for f in files]
    if not data_cfg.annotations:
        raise ValueError(f"data.annotations is empty: format {data_cfg.format!r} needs annotation files")
    return [Path(p) for p in data_cfg.annotations]


def pope_files(data_cfg: Any) -> list[Path]:
    """The organism's POPE-analog files (``data.pope_per_split`` > 0; ``ensure_world`` writes them)."""
    if data_cfg.format != "organism" or not int(getattr(data_cfg, "pope_per_split", 0) or 0):
        return []
    import json

    summary = Path(data_cfg.root) / "pope" / "pope.json"
    if not summary.exists():
        raise FileNotFoundError(f"data.root={data_cfg.root}: data.pope_per_split={data_cfg.pope_per_split} but no "
                                f"POPE analog there (pope/pope.json); build it with vseam.world.ensure_world(cfg.data)")
    return [summary.parent / f for f in json.loads(summary.read_text())["files"].values()]


def load_samples(data_cfg: Any) -> list[Sample]:
    """All samples named by ``data_cfg`` (categories filtered, ``limit`` per file), in file order."""
    image_dir = data_cfg.image_dir
    if data_cfg.format == "organism" and not image_dir:
        image_dir = str(Path(data_cfg.root) / "images")
    samples: list[Sample] = []
    for path in annotation_files(data_cfg):
        if not path.exists():
            raise FileNotFoundError(f"data.annotations: {path} does not exist")
        samples += read_benchmark(data_cfg.format, path, image_dir=image_dir,
                                  image_pattern=data_cfg.image_pattern, limit=data_cfg.limit)
    for path in pope_files(data_cfg):  # read as POPE is: category = the split (random / popular / adversarial)
        # existence is an object-level question in the organism's world (real POPE files carry no level)
        samples += [replace(s, level="object") for s in
                    read_benchmark("pope", path, image_dir=path.parent / "images", limit=data_cfg.limit)]
    if data_cfg.categories:
        keep = set(data_cfg.categories)
        samples = [s for s in samples if s.category in keep]
        if not samples:
            raise ValueError(f"data.categories={list(keep)} matches no sample")
    return samples
