"""Benchmark readers: GQA-style semantic subsets, POPE and COCO-QA annotation files -> ``list[Sample]``.

One entry, ``read_benchmark(format, annotations, image_dir, ...)``, plus one function per format. Image
paths are built from a per-benchmark file-name pattern (``str.format`` over the record's fields), so
the same reader serves the real GQA images (``{imageId}.jpg``) and the organism's (``{imageId}.png``).
Images are not opened here; ``load_image`` raises ``MissingImageError`` later, which callers count.
A malformed record, or an empty file, raises ``AnnotationError`` naming the file and the record (key,
index or line).

Sample ids: GQA's question ids are global; POPE and COCO-QA number the questions of each file (POPE's
three split files all count from 1), so their samples are named ``<split>/<question_id>`` and
``<type>/<index>`` when the file's split / question type is known, which keeps the ids of a run's files
apart (``vseam.data.load`` refuses ids that still repeat).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_args

from vseam.config import DataFormat, PopeSplit
from vseam.data.sample import LEVELS, Sample
from vseam.utils.errors import UserError

FORMATS = tuple(f for f in get_args(DataFormat) if f != "organism")  # the benchmark formats read here
POPE_SPLITS = get_args(PopeSplit)

DEFAULT_PATTERNS = {
    "gqa": "{imageId}.jpg",
    "pope": "{image}",
    # The V-SEAM COCO-QA files name their id column ``train_image_id_*``: the images are COCO train2014.
    "cocoqa": "COCO_train2014_{image_id:012d}.jpg",
}

# GQA semantic-subset category -> semantic level (docs/method.md#semantic-levels).
CATEGORY_LEVELS = {
    "animal": "object",
    "indoor": "object",
    "vehicle": "object",
    "color": "attribute",
    "material": "attribute",
    "action": "relation",
    "spatial": "relation",
}

# GQA ``types.semantic`` -> level, used when neither the file name nor a field names the category.
_GQA_SEMANTIC_TYPE_LEVELS = {"obj": "object", "attr": "attribute", "rel": "relation"}

_YES_NO = {"yes": "Yes", "no": "No"}


class AnnotationError(UserError, ValueError):
    """A malformed annotation file or record; the message names the file and the record."""


def category_from_filename(path: str | Path) -> str | None:
    """``.../Color.sample.json`` -> ``Color``; ``coco_pope_random.jsonl`` -> ``random``;
    ``color_coco_qa.csv`` -> ``color``; None when the name says nothing known."""
    low = Path(path).name.split(".")[0].lower()
    # POPE and COCO-QA first: "color_coco_qa" must give the COCO-QA type, not the GQA category.
    m = re.search(r"pope_(random|popular|adversarial)", low)
    if m:
        return m.group(1)
    m = re.match(r"(color|count|location|object|number)_coco_?qa", low)
    if m:
        return m.group(1)
    for cat in CATEGORY_LEVELS:
        if re.search(rf"(^|[^a-z]){cat}([^a-z]|$)", low):
            return cat.capitalize()
    return None


def level_of(category: str | None) -> str | None:
    if category is None:
        return None
    return CATEGORY_LEVELS.get(category.lower())


def image_path_for(image_dir: str | Path | None, pattern: str, fields: dict[str, Any], where: str) -> str:
    """Format ``pattern`` with the record's fields and join it to ``image_dir``."""
    try:
        name = pattern.format(**fields)
    except KeyError as e:
        raise AnnotationError(f"{where}: image pattern {pattern!r} needs field {e.args[0]!r}") from None
    except (ValueError, TypeError) as e:
        raise AnnotationError(f"{where}: image pattern {pattern!r} does not fit the record ({e})") from None
    return str(Path(image_dir) / name) if image_dir is not None else name


def _normalise_answer(answer: Any) -> str:
    s = str(answer).strip()
    return _YES_NO.get(s.lower(), s)


# --------------------------------------------------------------------------------------------- GQA

def read_gqa(annotations: str | Path, image_dir: str | Path | None = None, image_pattern: str | None = None,
             category: str | None = None, limit: int | None = None, benchmark: str = "gqa") -> list[Sample]:
    """Read a GQA-style JSON file: a list of records (id in ``question_id`` or ``id``) or a dict id -> record.

    Required fields: ``question``, ``answer``, ``imageId``. Category: ``category`` argument, else the
    record's ``category`` field, else the file name (``Color.sample.json``). Level: the record's
    ``level`` field, else from the category, else from ``types.semantic`` (obj/attr/rel). All other
    fields (``semantic``, ``object_positions``, ``involved_objects``, ``imageId``, ...) go to ``meta``.
    """
    path = Path(annotations)
    pattern = image_pattern or DEFAULT_PATTERNS["gqa"]
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    except json.JSONDecodeError as e:
        if not path.read_text().strip():
            raise AnnotationError(f"{path}: the annotation file is empty") from None
        raise AnnotationError(f"{path}: not valid JSON ({e})") from None
    if isinstance(data, dict):
        items = [(str(k), v, f"{path}: key {k!r}") for k, v in data.items()]
    elif isinstance(data, list):
        items = []
        for i, rec in enumerate(data):
            where = f"{path}: record {i}"
            if not isinstance(rec, dict):
                raise AnnotationError(f"{where}: expected an object, got {type(rec).__name__}")
            qid = rec.get("question_id", rec.get("id"))
            if qid is None:
                raise AnnotationError(f"{where}: a list record needs 'question_id' (or 'id')")
            items.append((str(qid), rec, f"{where} (id {qid!r})"))
    else:
        raise AnnotationError(f"{path}: expected a JSON list or dict of records, got {type(data).__name__}")
    if not items:
        raise AnnotationError(f"{path}: the annotation file holds no record")

    file_category = category_from_filename(path)
    out: list[Sample] = []
    for sid, rec, where in items:
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(rec, dict):
            raise AnnotationError(f"{where}: expected an object, got {type(rec).__name__}")
        missing = [k for k in ("question", "answer", "imageId") if k not in rec]
        if missing:
            raise AnnotationError(f"{where}: missing field(s) {missing}")
        positions = rec.get("object_positions")
        if positions is not None:
            _check_positions(positions, where)
        cat = category or rec.get("category") or file_category
        level = rec.get("level") or level_of(cat)
        if level is None:
            sem_type = (rec.get("types") or {}).get("semantic") if isinstance(rec.get("types"), dict) else None
            level = _GQA_SEMANTIC_TYPE_LEVELS.get(sem_type)
        if level is not None and level not in LEVELS:
            raise AnnotationError(f"{where}: level {level!r} is not one of {LEVELS}")
        meta = {k: v for k, v in rec.items() if k not in ("question", "answer", "question_id", "id",
                                                          "category", "level")}
        out.append(Sample(
            id=sid, question=str(rec["question"]), answer=_normalise_answer(rec["answer"]),
            image_path=image_path_for(image_dir, pattern, rec, where), benchmark=benchmark,
            category=cat, level=level, meta={**meta, "source": where},
        ))
    return out


def _check_positions(positions: Any, where: str) -> None:
    if not isinstance(positions, list):
        raise AnnotationError(f"{where}: 'object_positions' must be a list of {{x, y, w, h}}")
    for j, box in enumerate(positions):
        if not isinstance(box, dict) or any(k not in box for k in "xywh"):
            raise AnnotationError(f"{where}: object_positions[{j}] must have keys x, y, w, h; got {box!r}")
        if not all(isinstance(box[k], (int, float)) for k in "xywh"):
            raise AnnotationError(f"{where}: object_positions[{j}] has a non-numeric coordinate: {box!r}")


# -------------------------------------------------------------------------------------------- POPE

def read_pope(annotations: str | Path, image_dir: str | Path | None = None, image_pattern: str | None = None,
              category: str | None = None, limit: int | None = None, split: str | None = None) -> list[Sample]:
    """Read POPE JSON lines (``question_id``, ``image``, ``text``, ``label`` yes/no).

    Category (the POPE split): the ``category`` argument, else the split the file name names (random /
    popular / adversarial), else ``split`` (``data.pope_split``; one that contradicts the file name is an
    error), else the records' own (a ``split`` field, or the ``negative`` kind of the organism's files,
    when all agree); else None, which ``pope_split_of`` tells the run about. Sample ids are
    ``<split>/<question_id>`` when the split is known (POPE numbers each split's file from 1).
    """
    path = Path(annotations)
    pattern = image_pattern or DEFAULT_PATTERNS["pope"]
    named = category_from_filename(path)
    named = named if named in POPE_SPLITS else None
    if split is not None and named is not None and split != named and category is None:
        raise AnnotationError(f"{path}: the file name says POPE split {named!r} but data.pope_split={split!r}; "
                              f"unset data.pope_split (it is for files whose name says no split) or rename the file")
    records: list[tuple[str, dict]] = []
    for lineno, line in _lines(path):
        if limit is not None and len(records) >= limit:
            break
        where = f"{path}: line {lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise AnnotationError(f"{where}: not valid JSON ({e})") from None
        if not isinstance(rec, dict):
            raise AnnotationError(f"{where}: expected an object")
        missing = [k for k in ("question_id", "image", "text", "label") if k not in rec]
        if missing:
            raise AnnotationError(f"{where}: missing field(s) {missing}")
        if str(rec["label"]).strip().lower() not in _YES_NO:
            raise AnnotationError(f"{where}: label must be yes or no, got {rec['label']!r}")
        records.append((where, rec))
    if not records:
        raise AnnotationError(f"{path}: the annotation file holds no record")
    cat = category or named or split or _split_of_records([r for _, r in records])
    out: list[Sample] = []
    for where, rec in records:
        meta = {k: v for k, v in rec.items() if k not in ("question_id", "text", "label")}
        qid = str(rec["question_id"])
        out.append(Sample(
            id=f"{cat}/{qid}" if cat else qid, question=str(rec["text"]),
            answer=_YES_NO[str(rec["label"]).strip().lower()],
            image_path=image_path_for(image_dir, pattern, rec, where), benchmark="pope",
            category=cat, level=None, meta={**meta, "source": where, "question_id": rec["question_id"]},
        ))
    return out


def _split_of_records(records: list[dict]) -> str | None:
    """The POPE split the records name, when they all name the same one: a ``split`` field, or the
    ``negative`` kind of the negatives (the organism's files; positives carry none)."""
    for key in ("split", "negative"):
        named = {str(r[key]) for r in records if r.get(key) is not None}
        if len(named) == 1 and next(iter(named)) in POPE_SPLITS:
            return next(iter(named))
    return None


# ----------------------------------------------------------------------------------------- COCO-QA

def read_cocoqa(annotations: str | Path, image_dir: str | Path | None = None, image_pattern: str | None = None,
                category: str | None = None, limit: int | None = None) -> list[Sample]:
    """Read a COCO-QA CSV: columns index, image id, question, answer (by position; header optional).

    The image pattern sees ``image_id`` (int) and ``index``. Category: the argument, else the question
    type from the file name (``color_coco_qa.csv`` -> color), else from the header's suffix
    (``question_count`` -> count).
    """
    path = Path(annotations)
    pattern = image_pattern or DEFAULT_PATTERNS["cocoqa"]
    cat = category or category_from_filename(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    rows = list(csv.reader(text.splitlines()))
    out: list[Sample] = []
    for i, row in enumerate(rows):
        lineno = i + 1
        where = f"{path}: line {lineno}"
        if not row or all(not c.strip() for c in row):
            continue
        if i == 0 and not _is_int(row[1] if len(row) > 1 else ""):
            if cat is None and len(row) > 2:  # header such as ",train_image_id_count,question_count,..."
                m = re.match(r"question_(\w+)", row[2].strip())
                cat = m.group(1) if m else None
            continue
        if limit is not None and len(out) >= limit:
            break
        if len(row) != 4:
            raise AnnotationError(f"{where}: expected 4 columns (index, image id, question, answer), got {len(row)}")
        index, image_id, question, answer = (c.strip() for c in row)
        if not _is_int(image_id):
            raise AnnotationError(f"{where}: image id {image_id!r} is not an integer")
        if not question:  # an empty answer is a counted skip downstream (vseam.data.skips), not an abort
            raise AnnotationError(f"{where}: empty question")
        fields = {"index": index, "image_id": int(image_id)}
        out.append(Sample(
            id=index or str(lineno), question=question, answer=answer,
            image_path=image_path_for(image_dir, pattern, fields, where), benchmark="cocoqa",
            category=cat, level=None, meta={"image_id": int(image_id), "source": where},
        ))
    if not out and limit != 0:
        raise AnnotationError(f"{path}: the annotation file holds no record")
    if cat:  # each question type's file numbers its rows from 0: the type keeps the files' ids apart
        for smp in out:
            smp.id = f"{cat}/{smp.id}"
    return out


def _is_int(s: str) -> bool:
    try:
        int(s)
        return True
    except ValueError:
        return False


def _lines(path: Path):
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise AnnotationError(f"{path}: annotation file not found") from None
    for i, line in enumerate(text.splitlines()):
        if line.strip():
            yield i + 1, line


# --------------------------------------------------------------------------------------- the entry

READERS: dict[str, Callable[..., list[Sample]]] = {"gqa": read_gqa, "pope": read_pope, "cocoqa": read_cocoqa}


def read_benchmark(format: str, annotations: str | Path, image_dir: str | Path | None = None,
                   image_pattern: str | None = None, category: str | None = None,
                   limit: int | None = None, pope_split: str | None = None) -> list[Sample]:
    """Read one annotation file of ``format`` (gqa | pope | cocoqa) into samples.

    ``image_pattern`` defaults per format (``DEFAULT_PATTERNS``); ``category`` overrides the inferred
    one; ``limit`` keeps the first N records; ``pope_split``: the split of a POPE file whose name says none.
    """
    fmt = format.lower().replace("-", "").replace("_", "")
    if fmt == "organism":  # the organism writes GQA-style JSON (images {imageId}.png)
        return read_gqa(annotations, image_dir=image_dir, image_pattern=image_pattern or "{imageId}.png",
                        category=category, limit=limit, benchmark="organism")
    if fmt not in READERS:
        raise ValueError(f"unknown benchmark format {format!r}; expected one of {FORMATS + ('organism',)}")
    extra = {"split": pope_split} if fmt == "pope" else {}
    return READERS[fmt](annotations, image_dir=image_dir, image_pattern=image_pattern, category=category,
                        limit=limit, **extra)
