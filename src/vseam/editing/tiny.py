"""Tiny random editing models built from configs (no download): a Stable-Diffusion inpainting pipeline
with a locally written CLIP tokenizer, and a SAM. For tests and CPU smoke runs (``edit.model=tiny``,
``edit.sam_model=tiny``); their outputs are noise, their shapes and plumbing are the real ones.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path


def _bytes_to_unicode() -> list[str]:
    # CLIP's byte-level alphabet: every byte maps to a printable character
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def build_clip_tokenizer(folder: str | Path | None = None, max_length: int = 32):
    """A character-level ``CLIPTokenizer`` (byte alphabet, no merges) written to ``folder`` (a temp dir)."""
    from transformers import CLIPTokenizer

    d = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="vseam-cliptok-"))
    d.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"), model_max_length=max_length)


def build_tiny_inpaint_pipeline(seed: int = 0, max_length: int = 32):
    """A random ``StableDiffusionInpaintPipeline``: 9-channel UNet (16/32 channels), 2-block VAE (latents
    at 1/2 resolution), 2-layer CLIP text encoder, DDIM scheduler."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionInpaintPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tok = build_clip_tokenizer(max_length=max_length)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=16, in_channels=9, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, norm_num_groups=8, attention_head_dim=4)
    vae = AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=8,
        layers_per_block=1, down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2)
    text = CLIPTextModel(CLIPTextConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id or 1,
        hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=2, vocab_size=len(tok),
        max_position_embeddings=max_length))
    sched = DDIMScheduler(steps_offset=1, clip_sample=False, set_alpha_to_one=False)
    pipe = StableDiffusionInpaintPipeline(unet=unet, vae=vae, text_encoder=text.eval(), tokenizer=tok,
                                          scheduler=sched, safety_checker=None, feature_extractor=None,
                                          requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sam(seed: int = 0, image_size: int = 64):
    """A random ``SamModel`` and a ``SamProcessor`` resizing to ``image_size`` (no download)."""
    import torch
    from transformers import SamConfig, SamModel, SamProcessor

    try:
        from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil as ImageProcessor
    except ImportError:  # older transformers
        from transformers import SamImageProcessor as ImageProcessor

    cfg = SamConfig(
        vision_config=dict(hidden_size=16, output_channels=8, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8, window_size=4, global_attn_indexes=[1], mlp_dim=32,
                           num_pos_feats=4),
        prompt_encoder_config=dict(hidden_size=8, image_size=image_size, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(hidden_size=8, mlp_dim=16, num_hidden_layers=1, num_attention_heads=2,
                                 iou_head_hidden_dim=8))
    torch.manual_seed(seed)
    model = SamModel(cfg).eval()
    low = image_size // 4  # SAM predicts masks at 1/4 of its input size
    ip = ImageProcessor(size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
                        mask_size={"longest_edge": low}, mask_pad_size={"height": low, "width": low})
    return model, SamProcessor(image_processor=ip)
