"""Scenes of the organism world: objects on a grid of cells, drawn pixel-exactly with numpy.

Each object fills one grid cell, and cells are aligned with the vision tower's patches (cell size =
patch size), so one object is one image token. Rendering is deterministic and has no anti-aliasing,
so re-rendering an edited scene changes exactly the pixels of the cells whose content changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

# Two object vocabularies = two object-level categories ("Shape" and "Icon").
SHAPES = ("circle", "square", "triangle", "diamond")
ICONS = ("star", "heart", "cross", "moon")
ALL_SHAPES = SHAPES + ICONS
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 20),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")

# Co-occurrence structure (the POPE analog): objects come in usual pairs, one of each vocabulary, and
# the pairs are not equally frequent. A co-occurrence scene draws objects by frequency and, with
# probability ``strength``, adds each drawn object's partner; "popular" negatives are the most frequent
# objects, "adversarial" ones the absent partner of a present object.
GROUPS = (("circle", "star"), ("square", "heart"), ("triangle", "cross"), ("diamond", "moon"))
GROUP_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
PARTNER = {a: b for g in GROUPS for a, b in (g, g[::-1])}
# objects by frequency in co-occurrence scenes, most frequent first (within a pair: the order listed)
BY_FREQUENCY = tuple(o for g in GROUPS for o in g)


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    texture: str
    row: int
    col: int


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: tuple[int, int, int]  # a light per-scene tint, unchanged by every edit
    grid: int = 3
    cell: int = 16
    meta: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def size(self) -> int:
        return self.grid * self.cell

    def find(self, shape: str) -> int | None:
        for i, o in enumerate(self.objects):
            if o.shape == shape:
                return i
        return None

    def occupied(self) -> set[tuple[int, int]]:
        return {(o.row, o.col) for o in self.objects}

    def with_object(self, index: int, **changes) -> "Scene":
        objs = list(self.objects)
        objs[index] = replace(objs[index], **changes)
        return replace(self, objects=tuple(objs))

    def box(self, row: int, col: int) -> dict[str, int]:
        """GQA-style box {x, y, w, h} in pixels of the cell at (row, col)."""
        return {"x": col * self.cell, "y": row * self.cell, "w": self.cell, "h": self.cell}

    def to_dict(self) -> dict:
        return {
            "grid": self.grid,
            "cell": self.cell,
            "background": list(self.background),
            "objects": [
                {"shape": o.shape, "color": o.color, "texture": o.texture, "row": o.row, "col": o.col}
                for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        return cls(objects=tuple(Obj(**o) for o in d["objects"]), background=tuple(d["background"]),
                   grid=d["grid"], cell=d["cell"])


@lru_cache(maxsize=None)
def shape_mask(shape: str, cell: int) -> np.ndarray:
    """Boolean [cell, cell] silhouette of a shape, leaving a 1-pixel margin to the cell border."""
    # pixel centres in [-1, 1] over the inner (cell - 2) pixels
    c = (np.arange(cell) + 0.5 - cell / 2) / (cell / 2 - 1)
    y, x = np.meshgrid(c, c, indexing="ij")
    r = np.hypot(x, y)
    if shape == "circle":
        m = r <= 0.9
    elif shape == "square":
        m = (np.abs(x) <= 0.75) & (np.abs(y) <= 0.75)
    elif shape == "triangle":  # pointing up
        m = (y <= 0.8) & (y >= -0.9) & (np.abs(x) <= (y + 0.9) / 1.7 * 0.95)
    elif shape == "diamond":
        m = np.abs(x) + np.abs(y) <= 0.95
    elif shape == "cross":
        m = ((np.abs(x) <= 0.3) & (np.abs(y) <= 0.9)) | ((np.abs(y) <= 0.3) & (np.abs(x) <= 0.9))
    elif shape == "star":
        theta = np.arctan2(x, -y)  # one point straight up
        k = np.cos(5 * theta)  # +1 at the points, -1 between them
        m = r <= 0.42 + 0.5 * (k + 1) / 2
    elif shape == "heart":
        lobes = (np.hypot(x - 0.42, y + 0.4) <= 0.45) | (np.hypot(x + 0.42, y + 0.4) <= 0.45)
        m = lobes | ((y >= -0.4) & (y <= 0.9) & (np.abs(x) <= 0.87 * (0.9 - y) / 1.3))
    elif shape == "moon":
        m = (r <= 0.9) & (np.hypot(x - 0.45, y + 0.1) > 0.7)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m


@lru_cache(maxsize=None)
def texture_pattern(texture: str, cell: int) -> np.ndarray:
    """Integer [cell, cell] map: 0 = base colour, 1 = darker colour, 2 = white."""
    y, x = np.meshgrid(np.arange(cell), np.arange(cell), indexing="ij")
    if texture == "solid":
        return np.zeros((cell, cell), dtype=np.int64)
    if texture == "striped":
        return ((y // 2) % 2).astype(np.int64)
    if texture == "dotted":
        return np.where((y % 4 == 1) & (x % 4 == 1), 2, 0).astype(np.int64)
    if texture == "checkered":
        return ((y // 3 + x // 3) % 2).astype(np.int64)
    raise ValueError(f"unknown texture {texture!r}")


def render_cell(obj: Obj | None, background, cell: int) -> np.ndarray:
    out = np.empty((cell, cell, 3), dtype=np.uint8)
    out[:] = np.asarray(background, dtype=np.uint8)
    if obj is None:
        return out
    base = np.asarray(COLORS[obj.color], dtype=np.float64)
    palette = np.stack([base, base * 0.45, np.full(3, 255.0)]).round().astype(np.uint8)
    m = shape_mask(obj.shape, cell)
    out[m] = palette[texture_pattern(obj.texture, cell)[m]]
    return out


def render(scene: Scene) -> np.ndarray:
    """The scene as an RGB uint8 array [size, size, 3]."""
    s, c = scene.size, scene.cell
    img = np.empty((s, s, 3), dtype=np.uint8)
    img[:] = np.asarray(scene.background, dtype=np.uint8)
    for o in scene.objects:
        img[o.row * c:(o.row + 1) * c, o.col * c:(o.col + 1) * c] = render_cell(o, scene.background, c)
    return img


def render_pil(scene: Scene):
    from PIL import Image

    return Image.fromarray(render(scene), mode="RGB")


def random_scene(rng: np.random.Generator, grid: int = 3, cell: int = 16, n_min: int = 2, n_max: int = 4,
                 shapes: tuple[str, ...] = ALL_SHAPES, cooccur: float | None = None) -> Scene:
    """Objects with distinct shapes (so "the circle" names one object) in distinct cells.

    ``cooccur=None``: shapes drawn uniformly and independently. A number in [0, 1]: a co-occurrence
    scene (``cooccur_scene``) of that strength.
    """
    if cooccur is not None:
        return cooccur_scene(rng, cooccur, grid, cell, n_min, n_max)
    n = int(rng.integers(n_min, n_max + 1))
    cells = rng.choice(grid * grid, size=n, replace=False)
    names = rng.choice(len(shapes), size=n, replace=False)
    colors = list(COLORS)
    objs = tuple(
        Obj(shape=shapes[int(names[i])], color=colors[int(rng.integers(len(colors)))],
            texture=TEXTURES[int(rng.integers(len(TEXTURES)))], row=int(cells[i]) // grid, col=int(cells[i]) % grid)
        for i in range(n)
    )
    background = tuple(int(v) for v in rng.integers(205, 246, size=3))
    return Scene(objects=objs, background=background, grid=grid, cell=cell)


def _check_strength(strength: float) -> None:
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"co-occurrence strength {strength!r}: expected a number in [0, 1]")


def cooccur_shapes(rng: np.random.Generator, n: int, strength: float) -> list[str]:
    """``n`` distinct shapes: each new one drawn by its pair's frequency (``GROUP_WEIGHTS``, a random
    member of the pair), then, with probability ``strength``, its partner right after it."""
    _check_strength(strength)
    chosen: list[str] = []
    weights = np.asarray(GROUP_WEIGHTS, dtype=np.float64)
    while len(chosen) < n:
        free = [g for g in GROUPS if any(o not in chosen for o in g)]
        w = np.asarray([weights[GROUPS.index(g)] for g in free])
        group = free[int(rng.choice(len(free), p=w / w.sum()))]
        options = [o for o in group if o not in chosen]
        first = options[int(rng.integers(len(options)))]
        chosen.append(first)
        partner = PARTNER[first]
        if len(chosen) < n and partner not in chosen and rng.random() < strength:
            chosen.append(partner)
    return chosen


def cooccur_scene(rng: np.random.Generator, strength: float, grid: int = 3, cell: int = 16, n_min: int = 2,
                  n_max: int = 4) -> Scene:
    """A scene whose shapes follow the world's co-occurrence structure at ``strength`` (0: pairs are
    as likely apart as together beyond chance; 1: a drawn object's partner is always there when room)."""
    n = int(rng.integers(n_min, n_max + 1))
    names = cooccur_shapes(rng, n, strength)
    cells = rng.choice(grid * grid, size=n, replace=False)
    colors = list(COLORS)
    objs = tuple(
        Obj(shape=names[i], color=colors[int(rng.integers(len(colors)))],
            texture=TEXTURES[int(rng.integers(len(TEXTURES)))], row=int(cells[i]) // grid, col=int(cells[i]) % grid)
        for i in range(n)
    )
    background = tuple(int(v) for v in rng.integers(205, 246, size=3))
    return Scene(objects=objs, background=background, grid=grid, cell=cell)
