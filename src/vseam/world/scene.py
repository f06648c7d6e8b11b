"""Scenes of the organism world: objects on a grid of cells, drawn pixel-exactly with numpy.

Each object fills one grid cell, and cells are aligned with the vision tower's patches (cell size =
patch size), so one object is one image token. Rendering is deterministic and has no anti-aliasing,
so re-rendering an edited scene changes exactly the pixels of the cells whose content changed (the
per-pixel noise of a scene is a function of its own seed, which an edit keeps). How hard the pictures
are to read (faint objects, small ones, noise) is the ``Difficulty`` knob.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import cache, lru_cache

import numpy as np

# Three object vocabularies = the three object-level categories ("Shape", "Icon", "Symbol"), as the
# real seed data has three object categories (Animal, Indoor, Vehicle).
SHAPES = ("circle", "square", "triangle", "diamond")
ICONS = ("star", "heart", "cross", "moon")
SYMBOLS = ("ring", "arrow", "hourglass", "frame")
VOCABULARIES = {"Shape": SHAPES, "Icon": ICONS, "Symbol": SYMBOLS}
ALL_SHAPES = SHAPES + ICONS + SYMBOLS
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 20),
}
TEXTURES = ("solid", "striped", "dotted", "checkered")
SIZES = {"small": 0.5, "medium": 0.75, "large": 1.0}  # size word -> scale of the silhouette in its cell

# Co-occurrence structure (the POPE analog): objects come in usual groups, one of each vocabulary, and
# the groups are not equally frequent. A co-occurrence scene draws objects by frequency and, with
# probability ``strength``, adds each drawn object's group partners; "popular" negatives are the most
# frequent objects, "adversarial" ones the objects that co-occur most with those present.
GROUPS = (("circle", "star", "ring"), ("square", "heart", "arrow"), ("triangle", "cross", "hourglass"),
          ("diamond", "moon", "frame"))
GROUP_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
PARTNERS = {o: tuple(p for p in g if p != o) for g in GROUPS for o in g}  # an object's usual company
# objects by frequency in co-occurrence scenes, most frequent first (within a group: the order listed)
BY_FREQUENCY = tuple(o for g in GROUPS for o in g)


@dataclass(frozen=True)
class Difficulty:
    """How hard the world's pictures are to read: the knob that gives trained models errors to study.

    Each object is *faint* with probability ``faint``: its colours blended toward the background, at a
    contrast drawn uniformly from ``contrast`` (1 = full colour); its size is drawn by ``sizes`` (the
    probabilities of small / medium / large); and every picture carries per-pixel Gaussian noise of
    standard deviation ``noise`` (grey levels), the same noise on a scene and its edit, so an edit still
    changes only the pixels of its mask. ``Difficulty.crisp()``: full colour, large, no noise (the
    pictures of the organism before v3).
    """

    faint: float = 0.2
    contrast: tuple[float, float] = (0.015, 0.08)
    sizes: tuple[float, float, float] = (0.25, 0.3, 0.45)
    noise: float = 8.0
    clutter: float = 0.3
    hard: tuple[float, float, float] = (0.0, 0.0, 0.15)

    def __post_init__(self):
        if not 0 <= self.faint <= 1:
            raise ValueError(f"Difficulty.faint={self.faint!r}: expected a probability")
        lo, hi = self.contrast
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"Difficulty.contrast={self.contrast!r}: expected 0 < low <= high <= 1")
        if len(self.sizes) != len(SIZES) or min(self.sizes) < 0 or abs(sum(self.sizes) - 1) > 1e-6:
            raise ValueError(f"Difficulty.sizes={self.sizes!r}: expected {len(SIZES)} probabilities summing to 1")
        if self.noise < 0:
            raise ValueError(f"Difficulty.noise={self.noise!r}: expected >= 0")
        if not 0 <= self.clutter <= 1:
            raise ValueError(f"Difficulty.clutter={self.clutter!r}: expected a probability")
        if len(self.hard) != 3 or not all(0 <= h <= 1 for h in self.hard):
            raise ValueError(f"Difficulty.hard={self.hard!r}: expected three probabilities (object, attribute, relation)")

    @classmethod
    def crisp(cls) -> Difficulty:
        return cls(faint=0.0, sizes=(0.0, 0.0, 1.0), noise=0.0, clutter=0.0, hard=(0.0, 0.0, 0.0))

    def to_dict(self) -> dict:
        return {"faint": self.faint, "contrast": list(self.contrast), "sizes": list(self.sizes), "noise": self.noise,
                "clutter": self.clutter, "hard": list(self.hard)}

    @classmethod
    def from_dict(cls, d: dict) -> Difficulty:
        return cls(faint=float(d["faint"]), contrast=tuple(d["contrast"]), sizes=tuple(d["sizes"]),
                   noise=float(d["noise"]), clutter=float(d.get("clutter", 0.0)),
                   hard=tuple(float(h) for h in d.get("hard", (0.0, 0.0, 0.0))))


DIFFICULTY = Difficulty()  # the organism world's pictures (training and evaluation alike)
FAINT_BELOW = 0.5  # an object of lower contrast counts as faint


@dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    texture: str
    row: int
    col: int
    size: str = "large"
    contrast: float = 1.0

    @property
    def faint(self) -> bool:
        return self.contrast < FAINT_BELOW

    @property
    def weak(self) -> bool:
        """Weak visual evidence: faint or small (what a caption writer overlooks)."""
        return self.faint or self.size == "small"


@dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: tuple[int, int, int]  # a light per-scene tint, unchanged by every edit
    grid: int = 3
    cell: int = 16
    noise: float = 0.0  # std of the per-pixel noise (grey levels), unchanged by every edit
    noise_seed: int = 0  # the noise field's seed, unchanged by every edit
    # smudges (row, col, seed, contrast, colour): drawn in their cell when no object covers it; unchanged by edits
    clutter: tuple[tuple[int, int, int, float, str], ...] = ()
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

    def with_object(self, index: int, **changes) -> Scene:
        objs = list(self.objects)
        objs[index] = replace(objs[index], **changes)
        return replace(self, objects=tuple(objs))

    def with_objects(self, objects) -> Scene:
        return replace(self, objects=tuple(objects))

    def box(self, row: int, col: int) -> dict[str, int]:
        """GQA-style box {x, y, w, h} in pixels of the cell at (row, col)."""
        return {"x": col * self.cell, "y": row * self.cell, "w": self.cell, "h": self.cell}

    def to_dict(self) -> dict:
        return {
            "grid": self.grid,
            "cell": self.cell,
            "background": list(self.background),
            "noise": self.noise,
            "noise_seed": self.noise_seed,
            "clutter": [list(c) for c in self.clutter],
            "objects": [
                {"shape": o.shape, "color": o.color, "texture": o.texture, "row": o.row, "col": o.col,
                 "size": o.size, "contrast": o.contrast}
                for o in self.objects
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Scene:
        return cls(objects=tuple(Obj(**o) for o in d["objects"]), background=tuple(d["background"]),
                   grid=d["grid"], cell=d["cell"], noise=float(d.get("noise", 0.0)),
                   noise_seed=int(d.get("noise_seed", 0)),
                   clutter=tuple((int(r), int(c), int(sd), float(k), str(col)) for r, c, sd, k, col in d.get("clutter", ())))


@cache
def shape_mask(shape: str, cell: int, size: str = "large") -> np.ndarray:
    """Boolean [cell, cell] silhouette of a shape at a size, leaving a 1-pixel margin to the cell border."""
    if size not in SIZES:
        raise ValueError(f"unknown size {size!r}; known: {list(SIZES)}")
    # pixel centres in [-1, 1] over the inner (cell - 2) pixels, stretched by 1 / scale
    c = (np.arange(cell) + 0.5 - cell / 2) / (cell / 2 - 1) / SIZES[size]
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
    elif shape == "ring":
        m = (r <= 0.92) & (r >= 0.5)
    elif shape == "arrow":  # pointing right: a shaft and a head
        m = ((np.abs(y) <= 0.25) & (x >= -0.9) & (x <= 0.1)) | \
            ((x >= 0.0) & (x <= 0.9) & (np.abs(y) <= 0.85 * (0.9 - x) / 0.9))
    elif shape == "hourglass":  # two triangles tip to tip
        m = (np.abs(y) <= 0.85) & (np.abs(x) <= np.abs(y) * 0.95 + 0.08)
    elif shape == "frame":  # a square outline
        m = (np.abs(x) <= 0.85) & (np.abs(y) <= 0.85) & ~((np.abs(x) <= 0.42) & (np.abs(y) <= 0.42))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return m


@cache
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
    """One cell without noise, as float64 [cell, cell, 3]; a faint object's colours are blended toward
    the background by its contrast."""
    bg = np.asarray(background, dtype=np.float64)
    out = np.empty((cell, cell, 3), dtype=np.float64)
    out[:] = bg
    if obj is None:
        return out
    base = np.asarray(COLORS[obj.color], dtype=np.float64)
    palette = np.stack([base, base * 0.45, np.full(3, 255.0)]).round()
    palette = bg + float(obj.contrast) * (palette - bg)
    m = shape_mask(obj.shape, cell, obj.size)
    out[m] = palette[texture_pattern(obj.texture, cell)[m]]
    return out


@lru_cache(maxsize=64)
def noise_field(seed: int, size: int, std: float) -> np.ndarray:
    """The per-pixel noise of a scene [size, size, 3] (float64), a pure function of its seed."""
    return np.random.default_rng([0x5EED, int(seed)]).normal(0.0, float(std), size=(size, size, 3))


@lru_cache(maxsize=4096)
def smudge_mask(seed: int, cell: int) -> np.ndarray:
    """Boolean [cell, cell]: a blob of two or three overlapping discs, no object's silhouette."""
    rng = np.random.default_rng([0x5A0D, int(seed)])
    c = (np.arange(cell) + 0.5 - cell / 2) / (cell / 2 - 1)
    y, x = np.meshgrid(c, c, indexing="ij")
    m = np.zeros((cell, cell), dtype=bool)
    for _ in range(int(rng.integers(2, 4))):
        cx, cy = rng.uniform(-0.4, 0.4, size=2)
        m |= np.hypot(x - cx, y - cy) <= rng.uniform(0.25, 0.5)
    return m


def render(scene: Scene) -> np.ndarray:
    """The scene as an RGB uint8 array [size, size, 3]."""
    s, c = scene.size, scene.cell
    img = np.empty((s, s, 3), dtype=np.float64)
    bg = np.asarray(scene.background, dtype=np.float64)
    img[:] = bg
    occupied = scene.occupied()
    for r, col, seed, contrast, color in scene.clutter:
        if (r, col) not in occupied:
            block = img[r * c:(r + 1) * c, col * c:(col + 1) * c]
            block[smudge_mask(seed, c)] = bg + float(contrast) * (np.asarray(COLORS[color], dtype=np.float64) - bg)
    for o in scene.objects:
        img[o.row * c:(o.row + 1) * c, o.col * c:(o.col + 1) * c] = render_cell(o, scene.background, c)
    if scene.noise > 0:
        img = img + noise_field(scene.noise_seed, s, scene.noise)
    return np.clip(img.round(), 0, 255).astype(np.uint8)


def render_pil(scene: Scene):
    from PIL import Image

    return Image.fromarray(render(scene), mode="RGB")


def draw_look(rng: np.random.Generator, difficulty: Difficulty) -> dict:
    """Colour, texture, size and contrast of a new object, drawn from the world's distribution."""
    colors = list(COLORS)
    look = {"color": colors[int(rng.integers(len(colors)))], "texture": TEXTURES[int(rng.integers(len(TEXTURES)))],
            "size": list(SIZES)[int(rng.choice(len(SIZES), p=np.asarray(difficulty.sizes) / sum(difficulty.sizes)))]}
    faint = rng.random() < difficulty.faint
    lo, hi = difficulty.contrast
    look["contrast"] = round(float(rng.uniform(lo, hi)), 3) if faint else 1.0
    return look


def _place(rng: np.random.Generator, names: list[str], grid: int, cell: int, difficulty: Difficulty) -> Scene:
    cells = rng.choice(grid * grid, size=len(names), replace=False)
    objs = tuple(Obj(shape=name, row=int(cells[i]) // grid, col=int(cells[i]) % grid, **draw_look(rng, difficulty))
                 for i, name in enumerate(names))
    background = tuple(int(v) for v in rng.integers(205, 246, size=3))
    scene = Scene(objects=objs, background=background, grid=grid, cell=cell, noise=float(difficulty.noise),
                  noise_seed=int(rng.integers(1 << 31)))
    if difficulty.clutter > 0:  # drawn last, so a world without clutter keeps its random stream
        colors, (lo, hi) = list(COLORS), difficulty.contrast
        smudges = []
        for r in range(grid):
            for col in range(grid):
                if (r, col) not in scene.occupied() and rng.random() < difficulty.clutter:
                    smudges.append((r, col, int(rng.integers(1 << 31)), round(float(rng.uniform(lo, hi)), 3),
                                    colors[int(rng.integers(len(colors)))]))
        scene = replace(scene, clutter=tuple(smudges))
    return scene


def random_scene(rng: np.random.Generator, grid: int = 3, cell: int = 16, n_min: int = 2, n_max: int = 4,
                 shapes: tuple[str, ...] = ALL_SHAPES, cooccur: float | None = None,
                 difficulty: Difficulty = DIFFICULTY) -> Scene:
    """Objects with distinct shapes (so "the circle" names one object) in distinct cells.

    ``cooccur=None``: shapes drawn uniformly and independently. A number in [0, 1]: a co-occurrence
    scene (``cooccur_scene``) of that strength.
    """
    if cooccur is not None:
        return cooccur_scene(rng, cooccur, grid, cell, n_min, n_max, difficulty=difficulty)
    n = int(rng.integers(n_min, n_max + 1))
    names = rng.choice(len(shapes), size=n, replace=False)
    return _place(rng, [shapes[int(i)] for i in names], grid, cell, difficulty)


def _check_strength(strength: float) -> None:
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"co-occurrence strength {strength!r}: expected a number in [0, 1]")


def cooccur_shapes(rng: np.random.Generator, n: int, strength: float) -> list[str]:
    """``n`` distinct shapes: each new one drawn by its group's frequency (``GROUP_WEIGHTS``, a random
    member of the group), then, with probability ``strength`` each, its group partners right after it."""
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
        for partner in PARTNERS[first]:
            if len(chosen) < n and partner not in chosen and rng.random() < strength:
                chosen.append(partner)
    return chosen


def cooccur_scene(rng: np.random.Generator, strength: float, grid: int = 3, cell: int = 16, n_min: int = 2,
                  n_max: int = 4, difficulty: Difficulty = DIFFICULTY) -> Scene:
    """A scene whose shapes follow the world's co-occurrence structure at ``strength`` (0: groups are
    as likely apart as together beyond chance; 1: a drawn object's partners are always there when room)."""
    n = int(rng.integers(n_min, n_max + 1))
    return _place(rng, cooccur_shapes(rng, n, strength), grid, cell, difficulty)
