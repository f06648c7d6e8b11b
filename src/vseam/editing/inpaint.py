"""Text-guided inpainting of the masked region with a diffusers inpainting pipeline.

Batches of (image, mask, prompt) are resized to one square resolution for the pipeline, generated
with one seeded generator per sample (so an image does not depend on its batch mates), resized back,
and the unmasked pixels are pasted back from the original: only the masked region ever changes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from vseam.editing.masks import paste_unmasked

DEFAULT_MODEL = "runwayml/stable-diffusion-inpainting"
DEFAULT_NEGATIVE = "low quality, blurry"


def sample_seed(seed: int, sample_id: str) -> int:
    """A stable 31-bit seed per sample (Python's ``hash`` is salted per process, so not that)."""
    return int(hashlib.sha256(f"{seed}:{sample_id}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def resolve_device_dtype(device: str = "auto", dtype: str = "auto"):
    """``auto``: CUDA with float16 when available, else CPU with float32 (fp16 is slow/unsupported on CPU)."""
    import torch

    from vseam.utils.devices import torch_device

    dev = torch_device(device)
    if dtype == "auto":
        dt = torch.float16 if str(dev).startswith("cuda") else torch.float32
    else:
        dt = getattr(torch, dtype)
    return dev, dt


def load_inpaint_pipeline(model: str = DEFAULT_MODEL, device: str = "auto", dtype: str = "auto",
                          local_files_only: bool = False):
    """A diffusers inpainting pipeline from a hub id or a local folder (``save_pretrained`` layout);
    ``tiny`` builds a tiny random one (tests, CPU smoke runs)."""
    dev, dt = resolve_device_dtype(device, dtype)
    if model in ("tiny", "tiny:sd-inpaint"):
        from vseam.editing.tiny import build_tiny_inpaint_pipeline

        return build_tiny_inpaint_pipeline().to(dev).to(dt)
    import warnings

    from diffusers import AutoPipelineForInpainting

    kwargs: dict[str, Any] = {"torch_dtype": dt, "local_files_only": local_files_only}
    with warnings.catch_warnings():
        # newest diffusers renamed torch_dtype to dtype; the old name works in every supported version
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        try:
            pipe = AutoPipelineForInpainting.from_pretrained(model, safety_checker=None,
                                                             requires_safety_checker=False, **kwargs)
        except TypeError:  # pipelines without a safety checker reject those keywords
            pipe = AutoPipelineForInpainting.from_pretrained(model, **kwargs)
    pipe = pipe.to(dev)
    pipe.set_progress_bar_config(disable=True)  # our own progress bar counts samples, not steps
    return pipe


@dataclass
class Inpainter:
    """Calls an inpainting pipeline on batches and keeps everything outside the mask unchanged."""

    pipe: Any
    steps: int = 50
    guidance: float = 7.5
    negative_prompt: str | None = DEFAULT_NEGATIVE
    seed: int = 0
    resolution: int = 512  # square side the pipeline sees; a multiple of 8

    def __post_init__(self):
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {self.resolution}")

    def __call__(self, images: Sequence[Any], masks: Sequence[np.ndarray], prompts: Sequence[str],
                 ids: Sequence[str]) -> list[Any]:
        """Inpaint each PIL ``image`` where its bool ``mask`` [H, W] is True; returns PIL images of the
        original sizes."""
        import torch
        from PIL import Image

        if not (len(images) == len(masks) == len(prompts) == len(ids)):
            raise ValueError("images, masks, prompts and ids must have the same length")
        if not images:
            return []
        r = self.resolution
        ins = [im.convert("RGB").resize((r, r), Image.BICUBIC) for im in images]
        mks = [Image.fromarray(m.astype(np.uint8) * 255, mode="L").resize((r, r), Image.NEAREST) for m in masks]
        device = getattr(self.pipe, "device", "cpu")
        gen_device = "cpu" if str(device) == "mps" else device
        gens = [torch.Generator(device=gen_device).manual_seed(sample_seed(self.seed, i)) for i in ids]
        kwargs = dict(prompt=list(prompts), image=ins, mask_image=mks, num_inference_steps=self.steps,
                      guidance_scale=self.guidance, generator=gens, height=r, width=r, output_type="pil")
        if self.negative_prompt:
            kwargs["negative_prompt"] = [self.negative_prompt] * len(prompts)
        out = self.pipe(**kwargs).images
        results = []
        for orig, gen, mask in zip(images, out, masks):
            orig_rgb = orig.convert("RGB")
            gen = gen.convert("RGB").resize(orig_rgb.size, Image.BICUBIC)
            pasted = paste_unmasked(np.asarray(orig_rgb), np.asarray(gen), mask.astype(bool))
            results.append(Image.fromarray(pasted))
        return results
