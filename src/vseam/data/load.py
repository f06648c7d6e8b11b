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
        raise ValueError(f"data.annotations is empty: format {data_cfg.format!r} needs annotation files "
                         f"('data.annotations=[path/to/file, ...]')")
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
    """All samples named by ``data_cfg`` (categories filtered, ``limit`` per file), in file order.

    A question id that repeats, in one file or across the files (``check_ids``), stops here naming both
    places, or with ``data.duplicate_ids=drop`` is marked a duplicate, which every job then counts as a
    skip (``vseam.data.skips``), so every figure of a run is over the same samples. POPE files whose split
    is unknown are said here, before a model loads."""
    image_dir = data_cfg.image_dir
    if data_cfg.format == "organism" and not image_dir:
        image_dir = str(Path(data_cfg.root) / "images")
    pope_split = getattr(data_cfg, "pope_split", None)
    samples: list[Sample] = []
    for path in annotation_files(data_cfg):
        if not path.exists():
            raise FileNotFoundError(f"data.annotations: {path} does not exist")
        if path.is_dir():
            raise IsADirectoryError(f"data.annotations: {path} is a folder; name the annotation files in it")
        samples += read_benchmark(data_cfg.format, path, image_dir=image_dir,
                                  image_pattern=data_cfg.image_pattern, limit=data_cfg.limit, pope_split=pope_split)
    for path in pope_files(data_cfg):  # read as POPE is: category = the split (random / popular / adversarial)
        # existence is an object-level question in the organism's world (real POPE files carry no level)
        samples += [replace(s, level="object") for s in
                    read_benchmark("pope", path, image_dir=path.parent / "images", limit=data_cfg.limit)]
    if data_cfg.categories:
        keep = set(data_cfg.categories)
        samples = [s for s in samples if s.category in keep]
        if not samples:
            raise ValueError(f"data.categories={list(keep)} matches no sample")
    check_ids(samples, str(getattr(data_cfg, "duplicate_ids", "error")))
    _say_unknown_splits(samples)
    return samples


DUPLICATE = "duplicate_of"  # meta key of a sample whose id an earlier sample of the run already has


def check_ids(samples: list[Sample], mode: str = "error") -> int:
    """Every sample id once: a repeat raises ``AnnotationError`` naming the file, line (or key) and id of
    both (``mode="error"``), or is marked ``meta["duplicate_of"]`` (``mode="drop"``: the first is kept,
    the others are counted skips of every job). Returns the number marked."""
    from vseam.data.readers import AnnotationError
    from vseam.data.skips import where

    first: dict[str, Sample] = {}
    marked = 0
    for s in samples:
        seen = first.get(s.id)
        if seen is None:
            first[s.id] = s
            continue
        if mode != "drop":
            raise AnnotationError(f"{where(s)}: question id {s.id!r} is already at {where(seen)}; every figure of a "
                                  f"run must be over distinct samples: remove one, or set data.duplicate_ids=drop to "
                                  f"keep the first and count the others as skipped")
        s.meta[DUPLICATE] = where(seen)
        marked += 1
    return marked


def _say_unknown_splits(samples: list[Sample]) -> None:
    from vseam.data.skips import where
    from vseam.utils.ranks import is_rank_zero

    unknown: dict[str, int] = {}
    for s in samples:
        if s.benchmark == "pope" and s.category is None:
            f = where(s).rsplit(": line", 1)[0]
            unknown[f] = unknown.get(f, 0) + 1
    if unknown and is_rank_zero():
        files = ", ".join(f"{f} ({n} questions)" for f, n in unknown.items())
        print(f"note: the POPE split of {files} is unknown: the file name says none of random / popular / "
              f"adversarial, data.pope_split is unset and the records name none; their POPE metrics are "
              f"reported under split 'unknown' (set data.pope_split=random|popular|adversarial)", flush=True)
