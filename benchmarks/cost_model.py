"""Cost model of head attribution for the real job (docs/models-and-data.md#cost), on paper: the multiply-adds each method
must do for a real checkpoint of every supported architecture (LLaVA-1.5-7B and InstructBLIP-Vicuna-7B, the
paper's two, and LLaVA-NeXT, LLaVA-OneVision, Qwen2-VL, Qwen2.5-VL, Qwen3-VL, Gemma 3, Idefics3, SmolVLM2,
PaliGemma 2, InternVL3), counted from the checkpoints' widths (``ARCHS``: each entry names its source) at a
typical image's token count, turned into GPU-hours and wall time on 1 and 8 GPUs at an assumed sustained
bfloat16 throughput; the exact engine's counted floor per architecture (the share of one reference forward an
ablation in layer l must recompute); and the activation memory of one ablated copy, so that
``attribution.rows_per_forward`` can be chosen. Nothing here loads a model or needs an adapter.

Counting. A decoder layer: q, k, v, o, a gated MLP and attention over the (query, key) pairs its mask allows
(causal; Gemma 3: within an image both ways, and a 1,024-key window in 5 of every 6 layers; PaliGemma: both
ways over the image and prompt prefix); ``attribution_scale.layer_macs``. A vision layer: q, k, v, o, its
MLP and attention within each view (Qwen2.5-VL: within 112 px windows in all but 4 layers);
``attribution_scale.encoder_layer_macs``. Image tokens: the processors' own counting (transformers'
``get_number_of_image_patches`` / the LLaVA-NeXT and -OneVision processors' feature count) for an image of
``--image`` pixels (640 x 480: COCO's and a common GQA size) with each checkpoint's image-processor settings;
the tracing band adds the processor's markers (Idefics3's crop markers, InternVL's ``<img>``, Gemma 3's
begin / end of image). Text tokens: the GQA question, the one-word instruction and the template's own tokens,
estimated per model (``text_tokens``: no tokenizer is loaded), 24 for LLaVA-1.5 as in issue 17.

Per sample: the reference loop is L x H full forwards (vision tower, projector, every layer at every position,
logits at every position); the exact engine one vision pass, one clean pass and, per head in layer l, layers
l..L-1 at every position and last-position logits; the classic estimate (``atp_alpha=0``) one forward and one
input-gradient backward (about one forward more: the weights are frozen), the default (``atp_path=layer``,
``atp_alpha=0.5``) a clean forward and a forward and backward per layer; each estimate plus ``--rescore``
heads re-scored exactly at the average depth (``attribution.rescore_top_k=10`` re-scores the union of the
positive, negative and signed top-10: at most 30). 8 GPUs shard the samples (no communication but one gather
at the end), so 8x. The reference's time is its compute only (it also preprocesses every image L x H times),
so it is a lower bound.

Assumptions (command line): ``--tflops`` peak dense bf16 of the GPU (H100 SXM 80 GB: 989; A100 80 GB: 312;
H200: 989), ``--mfu`` the fraction of it sustained (0.5: large GEMMs), ``--image`` the image size.

    python benchmarks/cost_model.py                    # the tables of docs/models-and-data.md#cost (H100 80 GB, 50% of peak, 640 x 480)
    python benchmarks/cost_model.py --tflops 312       # A100 80 GB
    python benchmarks/cost_model.py --image 1024x768 --archs llava-next,qwen2-vl   # another image, two models
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_scale import encoder_layer_macs, layer_macs  # noqa: E402

GQA_SUBSETS = {"Animal": 1000, "Indoor": 1000, "Vehicle": 1000, "Color": 1456, "Material": 1115, "Action": 1000,
               "Spatial": 1000}  # docs/method.md#benchmarks: seed subsets of 1000 each, Color 1456, Material 1115


# ------------------------------------------------------------------------------------------- the models' widths
@dataclass(frozen=True)
class LM:
    """A decoder language model's widths and attention pattern."""

    d: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    mlp: int  # gated MLP width (gate, up, down)
    vocab: int
    tied: bool = False  # the LM head is the embedding (parameters only)
    window: int | None = None  # keys of a sliding-window layer
    global_every: int = 1  # with a window: every n-th layer is global, the others windowed (Gemma 3: 6)
    attention: str = "causal"  # causal | image-bidirectional (Gemma 3) | prefix (PaliGemma: image + prompt)

    def windowed(self, layer: int) -> bool:
        return self.window is not None and (layer + 1) % self.global_every != 0

    def pairs(self, layer: int, T: int, band: int, prefix: int) -> float:
        """(query, key) pairs layer ``layer`` attends over, for T tokens holding an image band of ``band`` tokens
        (both ways within it: Gemma 3) and a prefix of ``prefix`` tokens attending both ways (PaliGemma)."""
        w = self.window if self.windowed(layer) else None
        causal = T * (T + 1) / 2 if w is None or w >= T else w * (w + 1) / 2 + (T - w) * w
        if self.attention == "image-bidirectional":
            return causal + band * (band - 1) / 2
        if self.attention == "prefix":
            return causal + prefix * (prefix - 1) / 2
        return causal

    def layer(self, layer: int, T: int, band: int = 0, prefix: int = 0) -> float:
        return layer_macs(self.d, self.heads, self.kv_heads, self.head_dim, self.mlp, T,
                          self.pairs(layer, T, band, prefix))

    @property
    def params(self) -> float:
        D, H, kv = self.head_dim, self.heads, self.kv_heads
        per_layer = 2 * self.d * H * D + 2 * self.d * kv * D + 3 * self.d * self.mlp
        return self.layers * per_layer + self.vocab * self.d * (1 if self.tied else 2)


@dataclass(frozen=True)
class Tower:
    """A vision encoder's widths: ``mlp_mats`` 2 (fc1, fc2) or 3 (gated), ``cls`` extra tokens per view,
    ``window_layers`` layers with windowed attention (Qwen2.5-VL)."""

    d: int
    layers: int
    heads: int
    mlp: int
    mlp_mats: int = 2
    cls: int = 0
    window_layers: int = 0

    def macs(self, image: Image) -> float:
        total = 0.0
        for n in image.views:
            n += self.cls
            full = encoder_layer_macs(self.d, self.mlp, n, mlp_mats=self.mlp_mats)
            total += (self.layers - self.window_layers) * full
            if self.window_layers:
                total += self.window_layers * encoder_layer_macs(self.d, self.mlp, n, image.window_pairs, self.mlp_mats)
        return total

    @property
    def params(self) -> float:
        return self.layers * (4 * self.d * self.d + self.mlp_mats * self.d * self.mlp)


@dataclass(frozen=True)
class Image:
    """One image as a model sees it: the vision tower's views (patches per view), the image tokens the language
    model gets, the band (image tokens and the processor's markers), and what the projector runs on."""

    views: tuple[int, ...]
    tokens: int
    band: int
    projected: int  # vectors through the projector (LLaVA-NeXT / OneVision: every view's patches, before packing)
    window_pairs: float = 0  # attention pairs of a windowed vision layer (Qwen2.5-VL)
    how: str = ""


@dataclass(frozen=True)
class Model:
    name: str
    hub: str
    lm: LM
    tower: Tower
    image: Callable[[int, int], Image]  # (height, width) -> Image
    projector: Callable[[Image], float]  # multiply-adds of the projector / connector (InstructBLIP: its Q-Former)
    projector_params: float
    text_tokens: int  # question + one-word instruction + the template's own tokens (estimated)
    source: str = ""
    arch: str = ""  # its model.arch


def qformer_macs(queries: int = 32, text: int = 20, d: int = 768, mlp: int = 3072, layers: int = 12,
                 cross_every: int = 2, enc_tokens: int = 257, enc_d: int = 1408) -> float:
    """InstructBLIP's Q-Former (queries + instruction text; cross-attention to the image every 2nd layer)
    and its language projection 768 -> 4096."""
    n = queries + text
    self_layer = n * (4 * d * d + 2 * d * mlp) + 2 * d * n * n
    cross = queries * (2 * d * d) + enc_tokens * (2 * enc_d * d) + 2 * d * queries * enc_tokens
    return layers * self_layer + (layers // cross_every) * cross + queries * d * 4096


# ------------------------------------------------------------------------------------------- image tokens
def fixed(views: tuple[int, ...], tokens: int, markers: int = 0, how: str = "") -> Callable[[int, int], Image]:
    return lambda h, w: Image(views, tokens, tokens + markers, tokens, how=how)


def anyres(onevision: bool) -> Callable[[int, int], Image]:
    """LLaVA-NeXT (CLIP-L/336, 5 grid pinpoints up to 672 x 672, CLS dropped) or LLaVA-OneVision (SigLIP/384, grid
    pinpoints 1..6 x 384, anyres_max_9): the processor's own feature count (base view, unpadded tiles, a newline
    per row), on a processor object holding only what that count reads."""
    from transformers import LlavaNextProcessor, LlavaOnevisionProcessor
    from transformers.image_processing_utils import select_best_resolution

    if onevision:
        from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
            LlavaOnevisionImageProcessorPil as IP,
        )

        proc, side, per_view = object.__new__(LlavaOnevisionProcessor), 384, 729
        proc.image_processor = IP()  # its defaults are the checkpoints' pinpoints, 384 .. 2304
        proc.num_image_tokens, proc.vision_aspect_ratio, proc.vision_feature_select_strategy = 729, "anyres_max_9", "full"
    else:
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil as IP

        proc, side, per_view = object.__new__(LlavaNextProcessor), 336, 576
        proc.image_processor = IP(image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]])
        proc.patch_size, proc.num_additional_image_tokens, proc.vision_feature_select_strategy = 14, 1, "default"

    def count(h: int, w: int) -> Image:
        tokens = proc._get_number_of_features(h, w, side, side) - (0 if onevision else 1)
        bh, bw = select_best_resolution([h, w], proc.image_processor.image_grid_pinpoints)
        views = 1 + (bh // side) * (bw // side)
        return Image((per_view,) * views, tokens, tokens, views * per_view,
                     how=f"{views} views of {side} px (grid {bh // side} x {bw // side} + base)")
    return count


def dynamic(patch: int, merge: int, min_pixels: int, max_pixels: int, window: int | None = None
            ) -> Callable[[int, int], Image]:
    """Qwen2-VL / 2.5-VL / 3-VL: the image resized to multiples of patch x merge within [min, max] pixels
    (transformers' ``get_number_of_image_patches``), merge x merge patches per token; ``window`` (px): Qwen2.5-VL's
    windowed vision attention (windows of window / patch patches a side, counted exactly at the grid's edges)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil, smart_resize

    ip = Qwen2VLImageProcessorPil(patch_size=patch, merge_size=merge,
                                  size={"shortest_edge": min_pixels, "longest_edge": max_pixels})

    def count(h: int, w: int) -> Image:
        patches = ip.get_number_of_image_patches(h, w, {})
        rh, rw = smart_resize(h, w, patch * merge, min_pixels=min_pixels, max_pixels=max_pixels)
        gh, gw = rh // patch, rw // patch
        pairs = 0.0
        if window:
            k = window // patch  # patches per window side

            def sides(n):
                return [min(k, n - i) for i in range(0, n, k)]
            pairs = sum((a * b) ** 2 for a in sides(gh) for b in sides(gw))
        tokens = patches // merge ** 2
        return Image((patches,), tokens, tokens, tokens, pairs, how=f"{rh} x {rw} px: {gh} x {gw} patches of {patch}")
    return count


def splits(smolvlm: bool, longest: int, crop: int, per_crop: int, patches: int) -> Callable[[int, int], Image]:
    """Idefics3 / SmolVLM: resized to a longest edge of ``longest``, cut into crops of ``crop``, plus the global view
    (the image processor's ``get_number_of_image_patches``); markers: per crop <fake_token_around_image> and
    <row_i_col_j>, a newline per row, and "\\n<fake_token_around_image><global-img>...<fake_token_around_image>"
    (two newline tokens where the tokenizer does not merge "\\n\\n", as the tiny builds' does not)."""
    if smolvlm:
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil as IP
    else:
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as IP
    ip = IP(size={"longest_edge": longest}, max_image_size={"longest_edge": crop})

    def count(h: int, w: int) -> Image:
        n, rows, cols = ip.get_number_of_image_patches(h, w, {})
        n = max(n, 1)
        markers = 3 + (2 * rows * cols + rows + 1 if rows * cols else 0)
        return Image((patches,) * n, n * per_crop, n * per_crop + markers, n * per_crop,
                     how=f"{rows} x {cols} crops of {crop} px + the global view")
    return count


def tiles(side: int, max_tiles: int, per_tile: int, patches: int) -> Callable[[int, int], Image]:
    """InternVL: the grid of at most ``max_tiles`` tiles of ``side`` px that fits the aspect, plus a thumbnail when
    there are several (GotOcr2's ``get_number_of_image_patches``); band: <img> ... </img> around the tokens."""
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    ip = GotOcr2ImageProcessorPil(size={"height": side, "width": side}, crop_to_patches=True, min_patches=1,
                                  max_patches=max_tiles)

    def count(h: int, w: int) -> Image:
        n = ip.get_number_of_image_patches(h, w, {})
        return Image((patches,) * n, n * per_tile, n * per_tile + 2, n * per_tile,
                     how=f"{n} tiles of {side} px ({n - 1 if n > 1 else 0} + thumbnail)" if n > 1 else "1 tile")
    return count


def _mlp2(d_in: int, d_hidden: int, d_out: int) -> Callable[[Image], float]:
    """A two-layer projector d_in -> d_hidden -> d_out over the image's projected vectors."""
    return lambda im: im.projected * (d_in * d_hidden + d_hidden * d_out)


def _linear(d_in: int, d_out: int, per: int = 1) -> Callable[[Image], float]:
    return lambda im: per * im.projected * d_in * d_out


LLAMA2_7B = dict(d=4096, layers=32, heads=32, kv_heads=32, head_dim=128, mlp=11008)
QWEN2_7B = dict(d=3584, layers=28, heads=28, kv_heads=4, head_dim=128, mlp=18944)
SO400M = dict(d=1152, heads=16, mlp=4304)  # SigLIP so400m/14 (27 layers; LLaVA-OneVision keeps 26)

# Every architecture's real checkpoint (issue 23), at the widths of its config.json (source named)
ARCHS: dict[str, Model] = {m.name: m for m in [
    Model("llava-1.5-7b", "llava-hf/llava-1.5-7b-hf", LM(**LLAMA2_7B, vocab=32064),
          Tower(1024, 24, 16, 4096, cls=1), fixed((576,), 576, how="CLIP-L/336: 24 x 24"), _mlp2(1024, 4096, 4096),
          1024 * 4096 + 4096 * 4096, 24, source="config.json (vseam.models.tiny.FULL_WIDTH)", arch="llava"),
    Model("instructblip-vicuna-7b", "Salesforce/instructblip-vicuna-7b", LM(**LLAMA2_7B, vocab=32001),
          Tower(1408, 39, 16, 6144, cls=1), fixed((256,), 32, how="32 Q-Former queries (EVA ViT-g/14 at 224)"),
          lambda im: qformer_macs(), 0.13e9, 20, source="config.json (vseam.models.tiny.FULL_WIDTH)", arch="instructblip"),
    Model("llava-v1.6-mistral-7b", "llava-hf/llava-v1.6-mistral-7b-hf",
          LM(d=4096, layers=32, heads=32, kv_heads=8, head_dim=128, mlp=14336, vocab=32064),
          Tower(1024, 24, 16, 4096, cls=1), anyres(False), _mlp2(1024, 4096, 4096), 1024 * 4096 + 4096 * 4096, 24,
          source="config.json", arch="llava-next"),
    Model("llava-onevision-qwen2-7b", "llava-hf/llava-onevision-qwen2-7b-ov-hf", LM(**QWEN2_7B, vocab=152128),
          Tower(**SO400M, layers=26), anyres(True), _mlp2(1152, 3584, 3584), 1152 * 3584 + 3584 * 3584, 30,
          source="config.json; transformers' convert_llava_onevision_weights_to_hf.py", arch="llava-onevision"),
    Model("qwen2-vl-7b", "Qwen/Qwen2-VL-7B-Instruct", LM(**QWEN2_7B, vocab=152064),
          Tower(1280, 32, 16, 5120), dynamic(14, 2, 56 * 56, 28 * 28 * 16384),
          _mlp2(5120, 5120, 3584), 5120 * 5120 + 5120 * 3584, 40, source="config.json, preprocessor_config.json", arch="qwen2-vl"),
    Model("qwen2.5-vl-7b", "Qwen/Qwen2.5-VL-7B-Instruct", LM(**QWEN2_7B, vocab=152064),
          Tower(1280, 32, 16, 3420, mlp_mats=3, window_layers=28), dynamic(14, 2, 56 * 56, 28 * 28 * 16384, window=112),
          _mlp2(5120, 5120, 3584), 5120 * 5120 + 5120 * 3584, 40,
          source="config.json (windowed attention in all vision layers but 7, 15, 23, 31)", arch="qwen2.5-vl"),
    Model("qwen3-vl-8b", "Qwen/Qwen3-VL-8B-Instruct",
          LM(d=4096, layers=36, heads=32, kv_heads=8, head_dim=128, mlp=12288, vocab=151936),
          Tower(1152, 27, 16, 4304), dynamic(16, 2, 65536, 16777216),
          lambda im: 4 * im.projected * (4608 * 4608 + 4608 * 4096),  # the merger and 3 DeepStack mergers
          4 * (4608 * 4608 + 4608 * 4096), 30, source="config.json, preprocessor_config.json", arch="qwen3-vl"),
    Model("gemma-3-4b-it", "google/gemma-3-4b-it",
          LM(d=2560, layers=34, heads=8, kv_heads=4, head_dim=256, mlp=10240, vocab=262208, tied=True, window=1024,
             global_every=6, attention="image-bidirectional"),
          Tower(**SO400M, layers=27), fixed((4096,), 256, markers=4, how="SigLIP/896: 64 x 64 patches pooled to 16 x 16"),
          _linear(1152, 2560), 1152 * 2560, 30, source="config.json (sliding window 1024, every 6th layer global)", arch="gemma3"),
    Model("idefics3-8b", "HuggingFaceM4/Idefics3-8B-Llama3",
          LM(d=4096, layers=32, heads=32, kv_heads=8, head_dim=128, mlp=14336, vocab=128259),
          Tower(**SO400M, layers=27), splits(False, 4 * 364, 364, 169, 26 * 26), _linear(4 * 1152, 4096),
          4 * 1152 * 4096, 30, source="config.json, preprocessor_config.json", arch="idefics3"),
    Model("smolvlm2-2.2b", "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
          LM(d=2048, layers=24, heads=32, kv_heads=32, head_dim=64, mlp=8192, vocab=49280),
          Tower(**SO400M, layers=27), splits(True, 4 * 384, 384, 81, 27 * 27), _linear(9 * 1152, 2048),
          9 * 1152 * 2048, 30, source="the 2.2B SmolVLM design (SmolVLM-Instruct's config.json, the SmolVLM paper)", arch="smolvlm"),
    Model("paligemma2-3b-224", "google/paligemma2-3b-mix-224",
          LM(d=2304, layers=26, heads=8, kv_heads=4, head_dim=256, mlp=9216, vocab=257216, tied=True, window=4096,
             global_every=2, attention="prefix"),
          Tower(**SO400M, layers=27), fixed((256,), 256, how="SigLIP/224: 16 x 16"), _linear(1152, 2304),
          1152 * 2304, 16, source="config.json (Gemma 2 2B; prefix-LM: image + prompt attend both ways)",
          arch="paligemma"),
    Model("internvl3-8b", "OpenGVLab/InternVL3-8B-hf", LM(**QWEN2_7B, vocab=151674),
          Tower(1024, 24, 16, 4096, cls=1), tiles(448, 12, 256, 1024),
          lambda im: im.projected * (4096 * 3584 + 3584 * 3584), 4096 * 3584 + 3584 * 3584, 30,
          source="config.json (InternViT-300M, Qwen2.5-7B)", arch="internvl"),
]}


# ------------------------------------------------------------------------------------------- counted work
def counted(m: Model, h: int, w: int, text_tokens: int | None = None) -> dict:
    """Multiply-adds of one sample of ``m`` for an h x w image: per-layer costs at T tokens, the vision side,
    the reference forward and the per-sample cost of each method (with ``rescore`` applied by the caller)."""
    im = m.image(h, w)
    text = m.text_tokens if text_tokens is None else text_tokens
    T = im.band + text
    lm = m.lm
    prefix = T if lm.attention == "prefix" else 0  # PaliGemma: the whole prompt is the prefix
    layers = [lm.layer(l, T, im.band, prefix) for l in range(lm.layers)]
    side = m.tower.macs(im) + m.projector(im)
    row = lm.d * lm.vocab  # one position's logits
    reference = side + sum(layers) + T * row  # one full forward: logits at every position
    tail = [sum(layers[l:]) for l in range(lm.layers)]  # layers l..L-1: what an ablation in layer l recomputes
    return dict(image=im, T=T, text=text, layers=layers, side=side, row=row, reference=reference, tail=tail)


def per_sample(m: Model, c: dict, rescore: int) -> dict[str, float]:
    L, H = m.lm.layers, m.lm.heads
    full = sum(c["layers"])
    lm_pass = full + c["row"]  # one language-model pass, last-position logits
    exact = H * sum(t + c["row"] for t in c["tail"]) + c["side"] + full
    resc = rescore * (sum(c["tail"]) / L + c["row"])  # re-scored heads at the average depth
    return {"reference loop": L * H * c["reference"], "exact engine": exact,
            "estimate (clean run, 1 pass) + re-scoring": c["side"] + 2 * lm_pass + resc,
            f"estimate (default: {L} passes) + re-scoring": c["side"] + lm_pass + 2 * L * lm_pass + resc}


def floor(m: Model, c: dict) -> dict[str, float]:
    """Share of one reference forward that an ablation in layer l must recompute (layers l..L-1 at every position,
    last-position logits), at l = 0, the middle and the last layer, and averaged over the layers."""
    share = [(t + c["row"]) / c["reference"] for t in c["tail"]]
    L = m.lm.layers
    return {"first": share[0], "middle": share[L // 2], "last": share[-1], "mean": sum(share) / L,
            "side": c["side"] / c["reference"]}


def activation_bytes_per_copy(T: int, d: int = 4096, mlp: int = 11008, heads: int = 32, bytes_: int = 2,
                              math_attention: bool = False) -> float:
    """Peak live activations of one ablated copy inside one decoder layer (no gradients): in the MLP the
    residual, its norm, gate, up and act(gate) and their product (2d + 4I per token); in attention the
    residual, norm, q, k, v, rotated q and k and the output (8d per token), plus the H x T x T scores of
    the math kernel (not with flash / memory-efficient sdpa). The larger of the two."""
    mlp_phase = T * (2 * d + 4 * mlp)
    attn_phase = T * 8 * d + (heads * T * T if math_attention else 0)
    return max(mlp_phase, attn_phase) * bytes_


def params(m: Model) -> float:
    return m.lm.params + m.tower.params + m.projector_params


# ------------------------------------------------------------------------------------------- tables
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tflops", type=float, default=989.0, help="peak dense bf16 TFLOP/s of one GPU")
    ap.add_argument("--mfu", type=float, default=0.5, help="sustained fraction of the peak")
    ap.add_argument("--gpu-gb", type=float, default=80.0)
    ap.add_argument("--rescore", type=int, default=30, help="heads re-scored exactly after the estimate")
    ap.add_argument("--image", default="640x480", help="WIDTHxHEIGHT of the typical image")
    ap.add_argument("--text-tokens", type=int, default=None,
                    help="text tokens of every prompt (default: each model's estimate, ARCHS[...].text_tokens)")
    ap.add_argument("--archs", default="all", help="comma-separated model.arch names or ARCHS names, or all")
    ap.add_argument("--per-copy-mib", type=float, default=None,
                    help="measured activation MiB per ablated copy at the LLaVA prompt length (replaces the formula)")
    a = ap.parse_args(argv)
    w, h = (int(x) for x in a.image.lower().split("x"))
    by_arch = {m.arch: n for n, m in ARCHS.items()}
    names = list(ARCHS) if a.archs == "all" else [by_arch.get(n, n) for n in a.archs.split(",")]
    unknown = sorted(set(names) - set(ARCHS))
    if unknown:
        ap.error(f"--archs: unknown {unknown}; expected model.arch names {sorted(by_arch)} or {sorted(ARCHS)}")
    flops = a.tflops * 1e12 * a.mfu  # sustained FLOP/s
    print(f"assumed: {a.tflops:g} TFLOP/s peak bf16 x {a.mfu:g} sustained = {flops / 1e12:.0f} TFLOP/s per GPU; "
          f"8 GPUs = 8x (samples sharded); estimate + exact re-scoring of {a.rescore} heads; 2 FLOP per multiply-add; "
          f"a {w} x {h} image\n")
    work = {n: counted(ARCHS[n], h, w, a.text_tokens) for n in names}
    hours = lambda macs, n: 2 * macs * n / flops / 3600  # noqa: E731

    paper = [n for n in names if n in ("llava-1.5-7b", "instructblip-vicuna-7b")]
    if paper:
        print("| model | samples | method | PFLOP | GPU-hours | wall, 1 GPU | wall, 8 GPUs |\n|---|---|---|---|---|---|---|")
        for n in paper:
            for scope, count in (("1 category", 1000), ("7 GQA subsets", sum(GQA_SUBSETS.values()))):
                for method, macs in per_sample(ARCHS[n], work[n], a.rescore).items():
                    t = hours(macs, count)
                    print(f"| {n} | {scope} ({count:,}) | {method} | {2 * macs * count / 1e15:,.0f} | {t:,.2f} | "
                          f"{_fmt_h(t)} | {_fmt_h(t / 8)} |")
        print()

    print("Every architecture's real checkpoint, one category (1,000 samples): GPU-hours; wall time of the exact "
          "engine on 1 and 8 GPUs")
    print("| model (hub id) | image tokens (band), how | T | layers x heads | reference loop | exact engine | "
          "exact, 1 GPU | exact, 8 GPUs | estimate (default) + re-scoring |\n|---|---|---|---|---|---|---|---|---|")
    for n in names:
        m, c = ARCHS[n], work[n]
        im, ps = c["image"], per_sample(ARCHS[n], work[n], a.rescore)
        t_exact = hours(ps["exact engine"], 1000)
        est = [k for k in ps if k.startswith("estimate (default")][0]
        band = f"{im.tokens:,}" + (f" ({im.band:,})" if im.band != im.tokens else "")
        print(f"| {n} (`{m.hub}`) | {band}, {im.how} | {c['T']:,} | {m.lm.layers} x {m.lm.heads} | "
              f"{hours(ps['reference loop'], 1000):,.2f} | {t_exact:,.2f} | {_fmt_h(t_exact)} | {_fmt_h(t_exact / 8)} | "
              f"{hours(ps[est], 1000):,.2f} |")

    print("\nThe exact engine's counted floor: the share of one reference forward (vision, projector, every layer at "
          "every position, logits at every position) that an ablation in layer l must recompute (layers l..L-1 at "
          "every position, the last position's logits)")
    print("| model | reference forward, TFLOP | vision + projector | l = 0 | l = L/2 | l = L-1 | mean over layers | "
          "counted gain (1 / mean) |\n|---|---|---|---|---|---|---|---|")
    for n in names:
        m, c = ARCHS[n], work[n]
        f = floor(m, c)
        print(f"| {n} | {2 * c['reference'] / 1e12:.2f} | {f['side']:.1%} | {f['first']:.1%} | {f['middle']:.1%} | "
              f"{f['last']:.2%} | {f['mean']:.1%} | {1 / f['mean']:.2f}x |")

    print()
    for n in names:
        m, c = ARCHS[n], work[n]
        lm = m.lm
        per_copy = activation_bytes_per_copy(c["T"], lm.d, lm.mlp, lm.heads)
        if a.per_copy_mib and n == "llava-1.5-7b":
            per_copy = a.per_copy_mib * 2 ** 20
        clean = lm.layers * c["T"] * lm.d * 2  # the recorded layer inputs of one sample
        free = a.gpu_gb * 1e9 - 2 * params(m) - 4e9  # weights in bf16, ~4 GB context / workspace
        print(f"{n} at {c['T']} tokens: {per_copy / 2 ** 20:.1f} MiB per ablated copy, {clean / 2 ** 20:.0f} MiB of "
              f"recorded layer inputs per sample; {params(m) / 1e9:.2f} B parameters, {free / 1e9:.0f} GB free after "
              f"the bf16 weights -> {max(int(free / 2 / per_copy), 0):,} copies fit with half the memory kept free")


def _fmt_h(hours: float) -> str:
    if hours >= 48:
        return f"{hours / 24:.1f} d"
    if hours >= 1:
        return f"{hours:.1f} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.0f} min"
    return f"{hours * 3600:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
