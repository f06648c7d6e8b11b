"""Visual semantic editing of real images (docs/method.md#visual-semantic-editing): rule-based edit prompts, box (+ SAM) masks,
diffusion inpainting, and the effective-edit filter. Heavy libraries (diffusers, SAM) load lazily."""

from vseam.editing.masks import BoxOutsideImageError, box_mask, dilate_box, paste_unmasked, scale_box
from vseam.editing.rules import EditPlan, NotCovered, plan_edit

__all__ = ["EditPlan", "NotCovered", "plan_edit", "BoxOutsideImageError", "box_mask", "dilate_box", "scale_box",
           "paste_unmasked"]
