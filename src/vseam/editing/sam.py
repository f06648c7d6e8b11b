"""Optional mask refinement with SAM (transformers ``SamModel`` / ``SamProcessor``): the annotated boxes
are the prompts, the union of the predicted masks (dilated a little) replaces the box mask.

The refined mask never leaves the dilated boxes, and an empty prediction falls back to the box mask,
so a poor segmenter can only make the edited region smaller, never move it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vseam.editing.masks import dilate_mask

DEFAULT_SAM = "facebook/sam-vit-base"


@dataclass
class SamRefiner:
    model: Any  # transformers SamModel
    processor: Any  # transformers SamProcessor
    dilate_px: int = 4  # grow the predicted mask so the inpainting blends at its border
    min_pixels: int = 16  # fewer predicted pixels than this: keep the box mask

    @classmethod
    def from_pretrained(cls, model_id: str = DEFAULT_SAM, device: str = "auto", local_files_only: bool = False,
                        **kwargs) -> SamRefiner:
        from transformers import SamModel, SamProcessor

        from vseam.utils.devices import torch_device

        dev = torch_device(device)
        if model_id in ("tiny", "tiny:sam"):  # a tiny random SAM (tests, CPU smoke runs)
            from vseam.editing.tiny import build_tiny_sam

            model, processor = build_tiny_sam()
            return cls(model.to(dev), processor, **kwargs)
        model = SamModel.from_pretrained(model_id, local_files_only=local_files_only).to(dev).eval()
        processor = SamProcessor.from_pretrained(model_id, local_files_only=local_files_only)
        return cls(model, processor, **kwargs)

    def predict(self, image, boxes_xywh: list[list[float]]) -> np.ndarray:
        """Union of SAM's masks for the boxes: bool [H, W] at the image's size."""
        import torch

        boxes = [[float(x), float(y), float(x + w), float(y + h)] for x, y, w, h in boxes_xywh]
        inputs = self.processor(images=image.convert("RGB"), input_boxes=[boxes], return_tensors="pt")
        device = next(self.model.parameters()).device
        dtype = next(self.model.parameters()).dtype
        inputs = {k: (v.to(device, dtype) if v.is_floating_point() and k == "pixel_values" else v.to(device))
                  for k, v in inputs.items()}
        with torch.no_grad():
            out = self.model(**inputs, multimask_output=False)
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.float().cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu())
        m = masks[0]  # [n_boxes, 1, H, W] bool
        return m.reshape(-1, *m.shape[-2:]).any(0).numpy()

    def refine(self, image, boxes_xywh: list[list[float]], box_mask: np.ndarray) -> tuple[np.ndarray, bool]:
        """(mask, refined?): SAM's mask dilated and kept inside ``box_mask``; the box mask when SAM finds
        (almost) nothing there."""
        pred = dilate_mask(self.predict(image, boxes_xywh), self.dilate_px) & box_mask
        if int(pred.sum()) < self.min_pixels:
            return box_mask, False
        return pred, True
