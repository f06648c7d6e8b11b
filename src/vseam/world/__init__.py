"""The organism world: drawn scenes, questions at three semantic levels, exact answer-flipping edits."""

from vseam.world.questions import CATEGORIES, KINDS, WorldItem, answer_vocabulary, generate, make_item
from vseam.world.scene import (
                               ALL_SHAPES,
                               COLORS,
                               DIFFICULTY,
                               ICONS,
                               SHAPES,
                               SIZES,
                               SYMBOLS,
                               TEXTURES,
                               Difficulty,
                               Obj,
                               Scene,
                               render,
                               render_pil,
)
from vseam.world.write import ensure_world, write_world

__all__ = ["CATEGORIES", "KINDS", "WorldItem", "answer_vocabulary", "generate", "make_item", "ALL_SHAPES",
           "COLORS", "DIFFICULTY", "ICONS", "SHAPES", "SIZES", "SYMBOLS", "TEXTURES", "Difficulty", "Obj", "Scene",
           "render", "render_pil", "write_world", "ensure_world"]
