"""The one sample type every stage reads (organism, GQA-style, POPE, COCO-QA) and the edit record.

A ``Sample`` is a question about one image with a single-word gold answer. An ``EditRecord`` pairs a
clean sample with its semantically edited (counterfactual) image; edit manifests are JSON lines of
``EditRecord.to_dict()`` and are written the same way by the organism and by real-image editing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vseam.utils.errors import UserError

LEVELS = ("object", "attribute", "relation")


class MissingImageError(UserError, FileNotFoundError):
    """An image file is missing or unreadable; callers count it as a skip with this reason."""


@dataclass
class Sample:
    id: str  # unique within its dataset (GQA question id, POPE question_id, COCO-QA index, ...)
    question: str
    answer: str | None  # single word; "Yes"/"No" for yes/no questions; None: a free-form prompt (vseam.prompt)
    image_path: str | None = None  # resolved path of the image file
    benchmark: str = "gqa"  # organism | gqa | pope | cocoqa
    category: str | None = None  # e.g. Color, Animal, Spatial; POPE split; COCO-QA type
    level: str | None = None  # object | attribute | relation (None when not applicable)
    meta: dict[str, Any] = field(default_factory=dict)  # the remaining raw fields (object_positions, ...)
    image: Any = None  # an in-memory PIL image, used instead of image_path when set

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("image")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Sample:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "image"})


def sample_key(s: Sample) -> str:
    """A short content key of a sample (its image file, question and answer): the same sample read again
    has the same key; another world or annotation file gives other keys even where the ids repeat.
    Saved modulations record the keys of their train / val samples, so evaluation can refuse an overlap."""
    import hashlib

    image = str(Path(s.image_path).resolve()) if s.image_path else f"<in-memory {s.id}>"
    return hashlib.sha1(f"{image}\n{s.question}\n{s.answer}".encode()).hexdigest()[:16]


def load_image(sample_or_path: Sample | str | Path):
    """Open an image as RGB PIL; raise ``MissingImageError`` naming the file when absent/unreadable."""
    from PIL import Image, UnidentifiedImageError

    if isinstance(sample_or_path, Sample):
        if sample_or_path.image is not None:
            return sample_or_path.image.convert("RGB")
        path = sample_or_path.image_path
        if path is None:
            raise MissingImageError(f"sample {sample_or_path.id!r} has no image path")
    else:
        path = sample_or_path
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError as e:
        raise MissingImageError(f"image not found: {path}") from e
    except (UnidentifiedImageError, OSError) as e:
        raise MissingImageError(f"image unreadable: {path} ({e})") from e


@dataclass
class EditRecord:
    """One line of an edit manifest: a clean sample and its counterfactual image."""

    id: str  # id of the clean sample
    question: str
    answer: str  # gold answer on the clean image
    image: str  # clean image path
    edited_image: str  # edited image path
    edit_prompt: str  # text given to the editor (inpainting prompt, or a description for exact edits)
    edited_answer: str | None = None  # gold answer on the edited image, when known
    mask: list[list[float]] | str | None = None  # boxes [[x, y, w, h], ...] in pixels, or a mask PNG path
    level: str | None = None
    category: str | None = None
    change: dict[str, Any] = field(default_factory=dict)  # what changed, e.g. {"from": "red", "to": "green"}
    benchmark: str = "gqa"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> EditRecord:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"edit record {d.get('id')!r}: unknown keys {sorted(unknown)}")
        return cls(**d)

    def clean_sample(self) -> Sample:
        return Sample(id=self.id, question=self.question, answer=self.answer, image_path=self.image,
                      benchmark=self.benchmark, category=self.category, level=self.level)

    def edited_sample(self) -> Sample:
        return Sample(id=f"{self.id}@edit", question=self.question,
                      answer=self.edited_answer if self.edited_answer is not None else self.answer,
                      image_path=self.edited_image, benchmark=self.benchmark, category=self.category,
                      level=self.level)
