"""The run configuration: a schema of dataclasses, YAML files in ``configs/`` split by concern, and
command-line overrides.

Each entry point has one top-level file, ``configs/train.yaml`` (``train.py``) and ``configs/analyze.yaml``
(``analyze.py``; its ``analyses:`` block gives an analysis other group choices), naming one file per group
(``defaults:``); ``load_config`` merges the schema, each group's file, the top-level keys and then the
command line: ``group=choice`` picks another file of a group (``model=llava-1.5-7b``), ``a.b=value`` sets a
key (also what a W&B sweep agent passes with ``${args_no_hyphens}``). Unknown keys, wrong types and values
outside a key's choices (declared once, as the ``Literal`` type of its field) fail here, before any model
loads, with a message naming the key and the valid choices; ``check_values`` adds each field's own checks
(``checked``: bounds, multiples, non-empty and distinct lists), ``vseam.validate`` the checks across keys.
"""

from __future__ import annotations

import os
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from vseam.utils.devices import Accelerator
from vseam.utils.errors import UserError
from vseam.utils.paths import CONFIG_DIR  # the shipped configs (package data), found from any working directory

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A bad key, value or group choice in the configuration or on the command line."""


# ----------------------------------------------------------------------------------------- choices
# Each key's choices, declared once as the type of its field below (the modules that act on them read them
# from here with ``typing.get_args``); OmegaConf refuses any other value when the configuration is composed.
Arch = Literal["llava", "instructblip", "llava-next", "qwen2-vl", "qwen2.5-vl", "qwen3-vl", "gemma3", "paligemma",
               "llava-onevision", "idefics3", "smolvlm", "internvl"]  # one adapter each in vseam.models.ADAPTERS
DType = Literal["float32", "bfloat16", "float16"]  # vseam.models.loading maps each to its torch dtype
AnswerDefinition = Literal["project", "reference"]  # vseam.models.base.ANSWER_DEFINITIONS implements each
DataFormat = Literal["organism", "gqa", "pope", "cocoqa"]  # vseam.data.readers (the organism: its written world)
WorldSplit = Literal["train", "val", "test"]
DuplicateIds = Literal["error", "drop"]
PopeSplit = Literal["random", "popular", "adversarial"]
Ablation = Literal["mean", "zero"]
AttributionMethod = Literal["exact", "atp"]  # vseam.attribution.sweep runs these
AtpSpace = Literal["logodds", "prob"]  # vseam.attribution.patching linearises in these
AtpPath = Literal["all", "index", "layer"]  # vseam.attribution.patching: the heads ablated together at alpha
Tower = Literal["language", "vision"]  # whose heads are scored (VLMAdapter.stack)
FieldMethod = Literal["pai", "vaf", "vhr", "ict", "vti", "adhh", "spin", "vcd"]  # vseam.modulation.field.METHODS
ModulationMethod = Literal["none", "heuristic", "learned", "random", "bias", "lora", "ia3",
                           FieldMethod]  # one runner each in vseam.modulation.methods.RUNNERS
EvalMethod = Literal["none", FieldMethod]  # eval.method: the field methods eval applies
IctType = Literal["image", "object", "both"]  # vseam.modulation.field.activation: the levels of ICT
Scale = Literal["scalar", "vector", "none"]
Select = Literal["key", "all"]
Scheduler = Literal["constant", "cosine"]
Precision = Literal["32-true", "32", 32, "bf16-mixed", "16-mixed", "bf16-true", "16-true", "64-true"]
Monitor = Literal["val/loss", "val/acc"]
MonitorMode = Literal["min", "max"]
LoggerKind = Literal["wandb", "csv", "none"]
LoggerMode = Literal["offline", "online", "disabled"]
PromptWriter = Literal["rules", "llm"]
RelationMask = Literal["both", "subject", "object"]
EditDType = Literal["auto", DType]
HeadsFrom = Literal["all", "category"]
TraceDirection = Literal["denoise", "noise"]
TraceBlock = Literal["attn", "mlp", "resid"]  # vseam.tracing.engine.BLOCK_SITES: the hook point of each
PositionGroup = Literal["image", "question", "last"]  # vseam.tracing.positions finds these groups of positions


def checked(default: Any, *, ge: float | None = None, gt: float | None = None, le: float | None = None,
            lt: float | None = None, multiple_of: int | None = None, nonempty: bool = False, distinct: bool = False,
            what: str = "", why: str = "") -> Any:
    """A field's default (a callable: a list's factory) with what its values must be, beside it: bounds of
    the number (of each number of a list), a multiple, a non-empty list, distinct items. ``what`` names the
    number in the error (default "a number"), ``why`` explains it. ``check_values`` checks them before a
    model loads."""
    meta = {k: v for k, v in dict(ge=ge, gt=gt, le=le, lt=lt, multiple_of=multiple_of, nonempty=nonempty,
                                   distinct=distinct, what=what, why=why).items()
            if v is not None and v is not False and v != ""}  # not `in (None, False, "")`: 0 == False
    return field(default_factory=default, metadata=meta) if callable(default) else field(default=default, metadata=meta)


# ----------------------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    name: str = "organism-llava"  # a label for results and W&B (the group file's name)
    arch: Arch | None = None  # null: from the checkpoint's config.model_type | llava | instructblip | llava-next | qwen2-vl ...
    path: str = "checkpoints/organism/llava"  # hub id, local folder, or tiny:<arch> (a tiny random build)
    dtype: DType = "float32"  # float32 | bfloat16 | float16
    device_map: str | None = None  # e.g. "auto" to shard a large model over GPUs (accelerate)
    local_files_only: bool = False  # never touch the network (HF_HUB_OFFLINE=1 does the same)
    attn_implementation: str | None = None  # eager | sdpa | flash_attention_2; None = transformers' default
    prompt_template: str | None = None  # override the model's template; "{question}" is replaced
    seed: int = 0  # weight seed of tiny:<arch> random builds
    answer_definition: AnswerDefinition = "project"  # project: p sums the yes/no case variants, correct = arg-max among them |
    # reference: the paper's code, p of the answer's first sub-token as written, correct = arg-max is any sub-token


@dataclass
class DataConfig:
    name: str = "organism"  # a label for results and W&B
    format: DataFormat = "organism"  # organism | gqa | pope | cocoqa
    root: str | None = "data/organism/test-s0"  # organism: folder the world is written to (built when absent)
    annotations: list[str] = field(default_factory=list)  # annotation files (gqa/pope/cocoqa); organism: by category
    image_dir: str | None = None  # folder of the images; organism: <root>/images
    image_pattern: str | None = None  # file name pattern; None = the format's default ({imageId}.jpg, ...)
    categories: list[str] = field(default_factory=list)  # keep only these categories; empty = all
    limit: int | None = checked(None, ge=1)  # at most this many samples per annotation file; None = all
    n_per_category: int = checked(200, ge=1)  # organism: questions written per category
    world_seed: int = 0  # organism: seed of the drawn world
    world_split: WorldSplit = "test"  # organism: which split of the world to draw (train | val | test; part of each item's identity)
    pope_per_split: int = 0  # organism: also the world's POPE analog (<root>/pope/, POPE's format), this many questions per split (a multiple of 6); 0 = none
    pope_objects: list[str] = field(default_factory=list)  # organism: the POPE analog asks only about these objects (the transfer test); empty = all
    batch_size: int = checked(16, ge=1)  # samples per forward pass
    num_workers: int = checked(0, ge=0)  # DataLoader workers
    max_skip_fraction: float = checked(0.1, ge=0.0, le=1.0, what="a share")  # a run stops when more than this share of samples is skipped (missing image, bad answer)
    duplicate_ids: DuplicateIds = "error"  # a question id twice (in a file or across the run's files): error (names file, line, id) | drop (keep the first; the others counted skips)
    pope_split: PopeSplit | None = None  # POPE: the split (random | popular | adversarial) of files whose name says none; null = from the records


@dataclass
class AttributionConfig:
    method: AttributionMethod = "exact"  # exact | atp (attribution patching: one forward + one backward per batch)
    ablation: Ablation = "mean"  # mean (mean of the other heads) | zero
    top_k: int = checked(10, ge=1)  # length of the top-K head lists
    atp_space: AtpSpace = "logodds"  # atp: first order in the answer's log-odds (robust to saturation) | prob
    atp_alpha: float = checked(0.5, ge=0.0, lt=1.0, what="an ablation strength", why=(
        "0 = classic attribution patching at the clean run, 0.5 = midpoint of the all-heads ablation path"))
    # ^ atp: ablation strength of a head's group where its gradient is taken: 0 = clean run (classic) | 0.5 = midpoint
    atp_path: AtpPath = "layer"  # atp: heads ablated together at alpha: layer (a layer's heads; L passes) | index (head g of every layer; H passes) | all (1 pass)
    rescore_top_k: int = checked(0, ge=0)  # atp: re-score the estimate's top-K positive/negative/signed heads exactly; 0 = off
    rows_per_forward: int = checked(64, ge=1)  # ablated (sample, head) copies per forward pass; halves itself on CUDA OOM
    chunk_size: int = checked(16, ge=1)  # samples per saved progress chunk (the resume unit and the unit sharded over ranks)
    resume: bool = True  # reuse finished chunks in <out_dir>/progress (same config); false = start afresh
    progress: bool = True  # tqdm progress bar with ETA (rank 0)
    heatmaps: bool = True  # write heatmap_{positive,negative,signed}.png
    tower: Tower = "language"  # whose heads: language (the language model's, the paper's analysis) | vision (the vision tower's; exact only)


@dataclass
class ModulationConfig:
    k_pos: int = checked(3, ge=0)  # top-K positive heads to modulate (organism: 48 heads; 7B: 10-20)
    k_neg: int = checked(3, ge=0)  # top-K negative heads to modulate (organism: 48 heads; 7B: 10-20)
    scale: Scale = "scalar"  # per-head scale a: scalar (one per head) | vector (one per head dim) | none
    offset: bool = True  # learn the per-head offset v in R^D
    lr: float = checked(0.05, gt=0.0, what="a learning rate")  # AdamW learning rate of the modulation parameters
    weight_decay: float = checked(0.0, ge=0.0)  # AdamW weight decay
    l1: float = checked(0.0, ge=0.0)  # weight of the L1 penalty on (scale - 1), summed over heads; 0 = off
    select: Select = "key"  # heads the learned method modulates: key (top-K from attribution) | all (rank by l1)
    scheduler: Scheduler = "constant"  # learning-rate schedule: constant | cosine (over all steps)
    warmup_steps: int = checked(0, ge=0)  # linear warm-up steps
    head_scores: str | None = None  # head_scores.json (or its folder) to pick heads from; None = compute on train
    attribution_limit: int | None = checked(240, ge=1)  # when computing scores: at most this many train samples; None = all
    methods: list[ModulationMethod] = checked(lambda: ["none", "heuristic", "learned", "random", "bias", "lora", "ia3"],
                                              nonempty=True, distinct=True)
    # ^ what to run and compare: none | heuristic | learned | random | bias | lora | ia3, and the field's methods:
    # pai | vaf | vhr | ict | vti | adhh | spin | vcd
    heuristic_lambda: float = 1.0  # heuristic rescaling: scale = clip(1 + lambda * signed score, 0, 2)
    # the field's methods (vseam.modulation.field), each paper's LLaVA-1.5-7B defaults; a layer range [start, end) is
    # of a field_depth-layer model and scaled to the model's depth (round(l * L / depth)), a head count of a
    # field_depth x field_heads model to the same share of the model's heads
    field_depth: int = checked(32, ge=1)  # the depth the *_layers ranges are written for (LLaVA-1.5-7B: 32 layers)
    field_heads: int = checked(32, ge=1)  # the heads per layer the head counts (ict_num_heads) are written for (LLaVA-1.5-7B: 32)
    pai_alpha: float = checked(0.2, ge=0)  # PAI: image attention of the last query amplified, s <- s + alpha * |s| (pre-softmax)
    pai_layers: list[int] = field(default_factory=lambda: [2, 32])  # PAI: layers [start, end) amplified
    pai_gamma: float = checked(1.1, ge=1)  # PAI: contrast with the image-free input, gamma * l(x) - (gamma - 1) * l(x'); 1 = off
    pai_beta: float = checked(0.1, gt=0, le=1)  # PAI: plausibility cutoff of the contrast (p < beta * max p ruled out)
    vaf_enhance: float = checked(1.15, ge=0)  # VAF: scores of the queries after the image to the image keys multiplied by this
    vaf_suppress: float = checked(0.95, ge=0)  # VAF: ... to the system prompt's keys (the text before the image) by this
    vaf_layers: list[int] = field(default_factory=lambda: [9, 15])  # VAF: layers [start, end) (the middle layers)
    spin_keep: float = checked(0.8, gt=0, le=1)  # SPIN: share of heads kept at the last query, the top by image attention (routed_heads)
    spin_damp: float = checked(0.1, ge=0, le=1)  # SPIN: factor on the other heads' outputs (small_num_mask)
    spin_layers: list[int] = field(default_factory=lambda: [0, 32])  # SPIN: layers [start, end)
    adhh_k: int = checked(20, ge=1)  # AD-HH: hallucination heads, the top-K contrastive influence on the train split
    adhh_threshold: float = checked(0.4, ge=0, le=1)  # AD-HH: a head's last-query attention to the text after the image is zeroed when >= this
    vcd_alpha: float = checked(1.0, ge=0)  # VCD: contrast (1 + alpha) * l(x) - alpha * l(x with the distorted image)
    vcd_beta: float = checked(0.1, gt=0, le=1)  # VCD: plausibility cutoff (p < beta * max p ruled out)
    vcd_noise_step: int = checked(500, ge=0, le=999, what="a diffusion step")  # VCD: diffusion noise step (of 1000) of the distorted image
    k_random: int | None = checked(None, ge=1)  # heads of the random-heads control; None = as many as the key heads
    random_draws: int = checked(99, ge=1)  # random head sets of the random-heads control, each trained as the key heads
    draws_together: int | None = checked(8, ge=1)  # random draws trained in one batch (CPU: 8 is fastest; GPU: more); None = all
    draws_workers: int | None = checked(None, ge=1)  # processes training the groups of draws; None = one per CPU core (model on CPU), else 1
    baseline_lr: float = checked(0.001, gt=0.0, what="a learning rate")  # learning rate of the LoRA / IA3 baselines
    lora_r: int = checked(4, ge=1)  # LoRA rank
    lora_alpha: int = 8  # LoRA alpha (scaling alpha / r)
    lora_dropout: float = 0.0  # LoRA dropout
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # LM linear layers given LoRA
    ia3_targets: list[str] = field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"])  # LM layers given IA3
    val_fraction: float = checked(0.15, gt=0.0, lt=1.0, what="a share")  # share of each category held out for validation (model selection)
    test_fraction: float = checked(0.3, gt=0.0, lt=1.0, what="a share")  # share of each category held out for the test split (reported only)
    cache_embeddings: bool = True  # encode each sample's image once and reuse the LM inputs every epoch
    norm_every: int = checked(10, ge=0)  # log per-head |scale - 1| and |offset| every N steps (with a logger); 0 = never
    allow_other_model: bool = False  # use head scores / a modulation made with other weights than this model's (warned)
    vhr_alpha: float = checked(2.0, gt=0, what="a scale", why="the paper's 2; 1 = no change")  # VHR (ACL 2025): scale of the vision-aware heads' outputs
    vhr_layers: list[int] = field(default_factory=lambda: [18, 32])  # VHR: layers [start, end) (as every *_layers:
    # of a field_depth-layer model); paper: the last 14 for LLaVA, [14, 32] (the last 18) for InstructBLIP
    vhr_layer_one: bool = True  # VHR: and the second layer (layer 1; paper: LLaVA yes, InstructBLIP no)
    ict_num_heads: int = checked(256, ge=1)  # ICT (CVPR 2025): heads shifted per level, top by probe accuracy, of the field_depth x
    # field_heads (1024) of LLaVA-1.5-7B: the same share of the model's heads (round(n * L * H / 1024), at least 1)
    ict_alpha: float = checked(8.0, ge=0)  # ICT: shift strength (times the std of the activations along the direction)
    ict_type: IctType = "both"  # ICT: image | object | both (the levels whose directions are estimated and applied)
    ict_samples: int | None = checked(1500, ge=2)  # ICT: at most this many train samples estimate the directions; null = all
    ict_blur_radius: float = checked(5.0, gt=0, what="a blur radius", why="pixels")  # ICT: Gaussian blur radius (pixels of the image as stored) of the degraded images
    vti_alpha_text: float = checked(0.9, ge=0)  # VTI (ICLR 2025): strength of the language model's steering; 0 = off
    vti_alpha_image: float = checked(0.9, ge=0)  # VTI: strength of the vision encoder's steering; 0 = off
    vti_num_demos: int = checked(70, ge=2, why="a principal direction needs two differences")  # VTI: train samples the steering directions are estimated from
    vti_mask_ratio: float = checked(0.99, gt=0, lt=1, what="a share of patches")  # VTI: share of the image's patches masked in each perturbed copy
    vti_num_trials: int = checked(50, ge=1)  # VTI: perturbed copies of each image averaged


@dataclass
class TrainerConfig:
    accelerator: Accelerator = "auto"  # the one device key: auto (cuda when available) | cpu | gpu; models, Trainer and Fabric
    devices: Any = 1  # Lightning devices: an int, a list of ids, or "auto"
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_spawn | fsdp ...
    num_nodes: int = checked(1, ge=1)  # machines the run spans (torchrun / SLURM start one process per device on each; docs/cluster.md)
    precision: Precision = "32-true"  # 32-true | bf16-mixed | 16-mixed
    max_epochs: int = 10  # passes over the train split
    max_steps: int = -1  # stop after this many optimizer steps; -1 = run max_epochs
    limit_train_batches: Any = checked(1.0, gt=0, what="a fraction or a number of batches")  # fraction (float) or number (int) of train batches per epoch
    limit_val_batches: Any = checked(1.0, gt=0, what="a fraction or a number of batches")  # fraction (float) or number (int) of validation batches
    log_every_n_steps: int = checked(10, ge=1)  # logging interval in steps
    gradient_clip_val: float | None = None  # clip the gradient norm; None = off
    accumulate_grad_batches: int = checked(1, ge=1)  # batches per optimizer step
    gradient_checkpointing: bool = False  # recompute LM layers in backward (7B: less memory, more time)
    monitor: Monitor = "val/loss"  # metric that picks the best checkpoint: val/loss | val/acc
    monitor_mode: MonitorMode = "min"  # min for val/loss, max for val/acc
    check_val_every_n_epoch: int = checked(1, ge=1)  # validate every N epochs
    num_sanity_val_steps: int = checked(0, ge=0)  # Lightning's validation sanity check batches before training
    enable_progress_bar: bool = False  # Lightning's progress bar (off: one line per epoch instead)
    deterministic: bool = False  # torch deterministic algorithms
    torch_threads: int = checked(1, ge=0)  # torch intra-op CPU threads (1: much faster than 2 on a shared 2-core CPU); 0 = torch default


@dataclass
class EvalConfig:
    # `python analyze.py eval`: the model as configured, and with a saved modulation when one is named
    checkpoint: str | None = None  # a saved modulation (.safetensors, from train.py) to apply; None = the model alone
    method: EvalMethod = "none"  # none: eval.checkpoint's learned modulation, if any | pai | vaf | spin | vcd (from modulation.* or a train.py file) | adhh (a train.py file)
    allow_overlap: bool = False  # score a modulation on samples it was trained / selected on (warned, marked in results)


@dataclass
class LoggerConfig:
    kind: LoggerKind = "wandb"  # wandb | csv | none
    project: str = "vseam"  # W&B project
    entity: str | None = None  # W&B entity (team); None = your default
    mode: LoggerMode = "offline"  # W&B mode: offline | online | disabled
    tags: list[str] = field(default_factory=list)  # W&B tags
    save_dir: str | None = None  # where logger files go; None = <out_dir>/logs
    artifact: bool = True  # W&B: upload the learned modulation file as an artifact (online runs only)


@dataclass
class EditConfig:
    # prompts (vseam.editing.rules / writers)
    prompt_writer: PromptWriter = "rules"  # rules (deterministic, from the GQA program) | llm (few-shot, edit.llm_model)
    llm_model: str | None = None  # text-generation model id or folder for prompt_writer=llm
    relation_mask: RelationMask = "both"  # relation edits repaint: both objects | subject | object
    prefer_opposites: bool = True  # spatial substitute = the opposite relation (on -> under) when there is one
    strict_vocabulary: bool = False  # skip object questions whose object is not in the category's vocabulary
    vocab: dict[str, list[str]] = field(default_factory=dict)  # replace a vocabulary (Animal, color, action, ...)
    # masks (vseam.editing.masks / sam)
    mask_margin: float = checked(0.1, ge=0)  # dilate each box by this fraction of its width/height on every side
    mask_margin_px: int = checked(4, ge=0)  # ... plus this many pixels
    box_reference_size: list[int] | None = None  # [W, H] the boxes are given in; null = the image's pixels
    sam: bool = False  # refine the box masks with SAM (kept inside the dilated boxes)
    sam_model: str = "facebook/sam-vit-base"  # SAM model id, local folder, or tiny (random)
    sam_dilate_px: int = checked(4, ge=0)  # dilation of SAM's mask, so the inpainting blends at its border
    # inpainting (vseam.editing.inpaint)
    model: str = "runwayml/stable-diffusion-inpainting"  # diffusers inpainting pipeline: hub id, local folder, or tiny
    steps: int = checked(50, ge=1)  # denoising steps
    guidance: float = 7.5  # classifier-free guidance scale
    negative_prompt: str = "low quality, blurry"  # "" = none
    resolution: int = checked(512, ge=1, multiple_of=8, why="the inpainting VAE's stride")  # square side the pipeline sees (multiple of 8); results are resized back
    batch_size: int = checked(4, ge=1)  # images per pipeline call
    dtype: EditDType = "auto"  # auto (float16 on GPU, float32 on CPU) | float32 | float16 | bfloat16
    local_files_only: bool = False  # never download the pipeline / SAM
    progress: bool = True  # progress bars
    # effective-edit filter (vseam.editing.filter), with cfg.model
    filter: bool = True  # keep pairs the model answers correctly clean and not edited
    filter_batch_size: int = checked(8, ge=1)  # samples per forward pass of the filter


@dataclass
class StudyConfig:
    # the ablation study (vseam.study.ablation): `python analyze.py ablate`
    head_scores: str | None = None  # head_scores.json (or its folder) to take heads from; None = run heads into <out_dir>/heads
    k: list[int] = checked(lambda: [1, 3, 5], ge=1, nonempty=True)  # K of the top-K positive / negative sets (a curve over K)
    k_random: list[int] | None = checked(None, ge=1, nonempty=True)  # sizes of the random head sets; None = the same list as k
    random_trials: int = checked(99, ge=1)  # seeded random head sets per K (every K-head set instead where there are no more)
    ablation: Ablation = "mean"  # mean (mean of the other heads, as the scores) | zero (the reference scripts' masking)
    heads_from: HeadsFrom = "all"  # all: the top-K of all samples' scores | category: each sample's own category's top-K
    resume: bool = True  # reuse finished chunks in <out_dir>/progress (same config); false = start afresh
    # the overlap analysis (vseam.study.overlap): `python analyze.py overlap`
    overlap_k: list[int] = checked(lambda: [3, 5, 10], ge=1, nonempty=True)  # K of the top-K head sets compared
    n_permutations: int = checked(10000, ge=1)  # sample-level label permutations of the null (and random head sets of the context test)
    n_bootstrap: int = checked(1000, ge=1)  # bootstrap resamples of the samples for each claim's confidence interval
    min_samples: int = checked(30, ge=1)  # a category enters a kind's sets only with this many baseline-correct (positive) / -incorrect (negative) samples
    alpha: float = checked(0.05, gt=0.0, lt=1.0, what="a significance level")  # significance level of the verdicts
    # the whole study (vseam.study.run): `python analyze.py study`
    models: list[str] = field(default_factory=lambda: ["organism-llava", "organism-instructblip"])  # configs/model/ choices
    trace: bool = False  # also run `analyze.py trace` (the trace.* settings) for each model: tracing maps in the report


@dataclass
class TraceConfig:
    manifest: str | None = None  # edit manifest (.jsonl) or folder (an `analyze.py edit` out_dir); None = the organism's exact edits of `data`
    effective_only: bool = True  # trace only pairs whose edit was effective (clean correct, edited not); false = every pair
    direction: TraceDirection = "denoise"  # denoise (clean values into the edited run) | noise (edited values into the clean run)
    blocks: list[TraceBlock] = checked(lambda: ["attn", "mlp", "resid"], nonempty=True, distinct=True)  # attn | mlp | resid (layer output)
    tokenwise: bool = True  # patch each position on its own (the layer x token map); false = the groups only
    groups: list[PositionGroup] = checked(lambda: ["image", "question", "last"], distinct=True)  # position groups patched together
    limit: int | None = checked(None, ge=1)  # at most this many pairs per category (before the effective filter); None = all
    rows_per_forward: int = checked(64, ge=1)  # patched rows in one forward pass: the memory knob; halves itself on CUDA OOM
    chunk_size: int = checked(16, ge=1)  # pairs per saved progress chunk: the resume unit and the unit sharded over ranks
    resume: bool = True  # reuse finished chunks in <out_dir>/progress when the config matches; false = start afresh
    progress: bool = True  # progress bar with ETA on rank 0
    lens_top_k: int = checked(5, ge=1)  # logit lens: top tokens kept per layer
    plots: bool = True  # write the PNG figures
    plot_pairs: int = checked(2, ge=0)  # also a heat map of each of the first N pairs (pairs/heatmap_<i>.png)


@dataclass
class RootConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    attribution: AttributionConfig = field(default_factory=AttributionConfig)
    modulation: ModulationConfig = field(default_factory=ModulationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    edit: EditConfig = field(default_factory=EditConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    results_dir: str | None = None  # `analyze.py report` / `overlap`: the results folder to read; None = out_dir
    trace: TraceConfig = field(default_factory=TraceConfig)
    out_dir: str | None = None  # where the run writes; None = runs/<command>/<date-time>
    seed: int = 0  # the run's seed: seed_everything, splits, sample draws, random heads, edit substitutes and noise
    run_name: str | None = None  # W&B run name; None = derived from out_dir


CONFIG_GROUPS = ("model", "data", "attribution", "modulation", "trainer", "eval", "logger", "edit", "study", "trace")


# ----------------------------------------------------------------------------------------- values
def choices(tp: Any) -> tuple | None:
    """The choices a field's type declares (``Literal[...]``, also inside ``Optional`` or ``list``), or None."""
    if get_origin(tp) is Literal:
        return get_args(tp)
    if get_origin(tp) in (*_UNIONS, list):
        for arg in get_args(tp):
            found = choices(arg)
            if found is not None:
                return found
    return None


_UNIONS = (Union, types.UnionType)  # Optional[X] and X | None


def _optional(tp: Any) -> bool:
    return get_origin(tp) in _UNIONS and type(None) in get_args(tp)


def _is_list(tp: Any) -> bool:
    return get_origin(tp) is list or any(get_origin(a) is list for a in get_args(tp) if get_origin(tp) in _UNIONS)


def schema_field(key: str, schema: type = RootConfig) -> tuple[Any, dict] | None:
    """(type, checks) of the dotted ``key`` (list indices dropped) in ``schema``, or None when it has none."""
    import re
    from dataclasses import fields

    tp: Any = schema
    meta: dict = {}
    for part in re.sub(r"\[\d+\]", "", str(key)).split("."):
        if not isinstance(tp, type) or not hasattr(tp, "__dataclass_fields__"):
            return None
        hints = get_type_hints(tp)
        f = next((f for f in fields(tp) if f.name == part), None)
        if f is None:
            return None
        tp, meta = hints[part], dict(f.metadata)
    return tp, meta


def _number_text(meta: dict) -> str:
    lo = ("[", meta["ge"]) if "ge" in meta else ("(", meta["gt"]) if "gt" in meta else None
    hi = (meta["le"], "]") if "le" in meta else (meta["lt"], ")") if "lt" in meta else None
    if lo and hi:
        return f"in {lo[0]}{lo[1]:g}, {hi[0]:g}{hi[1]}"
    if lo:
        return f"{'>=' if lo[0] == '[' else '>'} {lo[1]:g}"
    if hi:
        return f"{'<=' if hi[1] == ']' else '<'} {hi[0]:g}"
    return ""


def _in_bounds(v: Any, meta: dict) -> bool:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return False
    return (("ge" not in meta or x >= meta["ge"]) and ("gt" not in meta or x > meta["gt"])
            and ("le" not in meta or x <= meta["le"]) and ("lt" not in meta or x < meta["lt"])
            and ("multiple_of" not in meta or x % meta["multiple_of"] == 0))


def value_error(key: str, value: Any, tp: Any, meta: dict) -> str | None:
    """What is wrong with ``value`` for the field ``key`` of type ``tp`` with checks ``meta`` (None: nothing):
    one line naming the key, the value and what is valid."""
    why = f" ({meta['why']})" if "why" in meta else ""
    valid = choices(tp)
    if value is None:
        return None if _optional(tp) else (f"{key}=None: expected one of {list(valid)}" if valid else None)
    if _is_list(tp):
        values = list(value)
        what = (f"a {'non-empty ' if meta.get('nonempty') else ''}list of {'distinct ' if meta.get('distinct') else ''}"
                + (f"names from {list(valid)}" if valid else f"integers {_number_text(meta)}".rstrip()))
        bad = [v for v in values if (valid is not None and v not in valid) or (valid is None and meta
                                                                              and not _in_bounds(v, meta))]
        twice = sorted({str(v) for v in values if values.count(v) > 1}) if meta.get("distinct") else []
        if bad or twice or (meta.get("nonempty") and not values):
            detail = f"; unknown {bad}" if bad and valid else f"; {', '.join(twice)} named twice" if twice else ""
            return f"{key}={values!r}: expected {what}{detail}"
        return None
    if valid is not None:
        return None if value in valid else f"{key}={value!r}: expected one of {list(valid)}"
    if {"ge", "gt", "le", "lt", "multiple_of"} & set(meta) and not _in_bounds(value, meta):
        if "multiple_of" in meta and _in_bounds(value, {k: v for k, v in meta.items() if k != "multiple_of"}):
            return f"{key}={value!r}: expected a multiple of {meta['multiple_of']}{why}"
        return (f"{key}={value!r}: expected {meta.get('what', 'a number')} {_number_text(meta)}"
                f"{' or null' if _optional(tp) else ''}{why}")
    return None


def check_values(cfg: Any, schema: type = RootConfig, prefix: str = "") -> None:
    """``ConfigError`` for the first value of ``cfg`` outside what its field declares: its choices (the
    ``Literal`` of its type) and its checks (``checked``). Composed configurations meet the choices already
    (OmegaConf refuses others); this also holds for a configuration built another way."""
    from dataclasses import fields, is_dataclass

    hints = get_type_hints(schema)
    for f in fields(schema):
        key, tp = f"{prefix}{f.name}", hints[f.name]
        try:
            value = cfg[f.name]
        except (KeyError, AttributeError, TypeError, ConfigKeyError):
            continue
        if isinstance(tp, type) and is_dataclass(tp):
            check_values(value, tp, f"{key}.")
            continue
        problem = value_error(key, value, tp, dict(f.metadata))
        if problem:
            raise ConfigError(problem)


# ----------------------------------------------------------------------------------------- loading
def group_choices(group: str, config_dir: Path = CONFIG_DIR) -> list[str]:
    return sorted(p.stem for p in (config_dir / group).glob("*.yaml"))


def _load_yaml(path: Path) -> DictConfig:
    try:
        return OmegaConf.load(path)
    except Exception as e:  # yaml errors carry line numbers; keep the file name with them
        raise ConfigError(f"{path}: cannot be read as YAML: {e}") from e


def _valid_keys(node: Any) -> list[str]:
    try:
        return sorted(str(k) for k in node.keys())
    except Exception:
        return []


# keys that moved: old name -> new name (a run that names the old key is told where it went)
MOVED = {"model.device": "trainer.accelerator (the one device key: auto | cpu | gpu)",
         "edit.device": "trainer.accelerator (the one device key: auto | cpu | gpu)",
         "logger.norm_every": "modulation.norm_every",
         "modulation.checkpoint": "eval.checkpoint (an input of `analyze.py eval`)",
         "modulation.allow_overlap": "eval.allow_overlap (an input of `analyze.py eval`)",
         "trainer.seed": "seed (the one seed of a run)",
         "edit.seed": "seed (the one seed of a run)"}


def _group_of(schema: type) -> str:
    """The group name of a group's schema (``AttributionConfig`` -> ``attribution.``; ``RootConfig``: "")."""
    hints = get_type_hints(RootConfig)
    return next((f"{name}." for name, tp in hints.items() if tp is schema), "")


def _explain(e: OmegaConfBaseException, where: str, other: Any = None, schema: type = RootConfig) -> ConfigError:
    """A one-line ``ConfigError`` for an error OmegaConf raised merging ``other`` (from ``where``) over ``schema``."""
    inner = str(getattr(e, "full_key", None) or getattr(e, "key", None) or "")
    key = f"{_group_of(schema)}{inner}"
    if str(key) in MOVED:
        return ConfigError(f"{where}: {key} is now {MOVED[str(key)]}")
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)):
        parent = OmegaConf.structured(schema)
        parts = str(key).split(".")
        for p in parts[len(parts) - len(inner.split(".")):-1]:
            parent = parent.get(p) if isinstance(parent, DictConfig) and p in parent else None
        valid = _valid_keys(parent) if parent is not None else []
        return ConfigError(f"{where}: unknown key {key!r}; valid keys here: {valid}")
    if isinstance(e, ValidationError):
        import re

        found = schema_field(str(key))
        if found is not None and choices(found[0]) is not None:  # the key first, then the file that set it
            base = re.sub(r"\[\d+\]$", "", str(key))  # an item of a list: the whole list as given
            given = OmegaConf.select(other, base[len(key) - len(inner):]) if isinstance(other, DictConfig) else None
            value = OmegaConf.to_container(given) if isinstance(given, (DictConfig, ListConfig)) else e.value
            if _is_list(found[0]) and not isinstance(value, list):
                value = [value]
            problem = value_error(base, value, *found) or f"{base}={value!r}: expected one of {list(choices(found[0]))}"
            return ConfigError(problem + ("" if where == "command line" else f" (in {where})"))
        msg = str(e).splitlines()[0]
        return ConfigError(f"{where}: bad value for {key!r}: {msg}")
    return ConfigError(f"{where}: {e}")


def _merge(base: DictConfig, other: Any, where: str, schema: type = RootConfig) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as e:
        raise _explain(e, where, OmegaConf.create(other) if isinstance(other, dict) else other, schema) from e


def parse_overrides(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into group choices and dotted overrides; leading dashes are dropped."""
    picked, dotlist = {}, []
    for arg in argv:
        a = arg.lstrip("-")
        if "=" not in a:
            raise ConfigError(f"argument {arg!r} is not key=value (groups: {', '.join(CONFIG_GROUPS)})")
        key, value = a.split("=", 1)
        if key in CONFIG_GROUPS:
            picked[key] = value
        else:
            dotlist.append(f"{key}={value}")
    return picked, dotlist


TRAIN_TOP, ANALYZE_TOP = "train.yaml", "analyze.yaml"  # the top-level file of each entry point


def load_config(argv: list[str] | None = None, config_dir: str | Path | None = None, top: str = ANALYZE_TOP,
                analysis: str | None = None) -> DictConfig:
    """Compose the run configuration from ``configs/`` and ``key=value`` arguments; validate it.

    ``top`` is the entry point's top-level file (``train.yaml`` for ``train.py``, ``analyze.yaml`` for
    ``analyze.py``); an ``analyses: {<analysis>: {group: choice}}`` block there gives ``analysis`` other
    group choices. Choices on the command line win.
    """
    config_dir = Path(config_dir) if config_dir else CONFIG_DIR
    schema = OmegaConf.structured(RootConfig)
    top_cfg = _load_yaml(config_dir / top)
    defaults = dict(top_cfg.pop("defaults", {}) or {})
    per_analysis = dict(top_cfg.pop("analyses", {}) or {})
    defaults.update(per_analysis.get(analysis) or {})
    picked, dotlist = parse_overrides(list(argv or []))
    unknown = set(defaults) - set(CONFIG_GROUPS)
    if unknown:
        raise ConfigError(f"{config_dir / top}: defaults name unknown groups {sorted(unknown)}; groups: "
                          f"{list(CONFIG_GROUPS)}")
    defaults.update(picked)
    cfg = schema
    for group, choice in defaults.items():
        if choice in (None, "null", "none") and group != "logger":
            continue
        path = config_dir / group / f"{choice}.yaml"
        if not path.exists():
            raise ConfigError(f"{group}={choice!r}: no such choice; valid choices: {group_choices(group, config_dir)}")
        cfg = _merge(cfg, {group: _load_yaml(path)}, str(path))
    cfg = _merge(cfg, top_cfg, str(config_dir / top))
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except Exception as e:
        raise ConfigError(f"command line: {e}") from e
    cfg = _merge(cfg, cli, "command line")
    OmegaConf.set_readonly(cfg, False)
    return cfg


def top_defaults(top: str, analysis: str | None = None, config_dir: Path = CONFIG_DIR) -> dict[str, str]:
    """The group choices an entry point's top-level file makes (for ``analysis``): what ``--help`` shows."""
    top_cfg = OmegaConf.to_container(_load_yaml(config_dir / top))
    return {**(top_cfg.get("defaults") or {}), **((top_cfg.get("analyses") or {}).get(analysis) or {})}


def as_config(cfg: Any, schema: type = RootConfig) -> DictConfig:
    """``cfg`` (a DictConfig, a mapping or a dataclass) merged over the schema's defaults, validated: how
    a function called from a notebook or a test with a partial config gets the one set of defaults."""
    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is schema:
        return cfg
    return _merge(OmegaConf.structured(schema), cfg, "config", schema)


def settings_of(obj: Any, schema: type[T]) -> T:
    """``obj`` as an instance of the dataclass ``schema`` (a config group such as ``AttributionConfig``),
    validated: ``obj`` is one already, a config group (``cfg.attribution``), a mapping of some of its keys
    (the others take the schema's defaults) or None (all defaults). How a function takes a group's settings
    and keeps no defaults of its own."""
    if isinstance(obj, schema):
        return obj
    return OmegaConf.to_object(as_config({} if obj is None else obj, schema))


def save_config(cfg: DictConfig, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to the results (atomically)."""
    from vseam.utils.io import write_text

    return write_text(Path(out_dir) / name, OmegaConf.to_yaml(cfg, resolve=True))


def describe_groups(config_dir: Path = CONFIG_DIR) -> str:
    lines = []
    for g in CONFIG_GROUPS:
        ch = group_choices(g, config_dir)
        if ch:
            lines.append(f"  {g:<12} {', '.join(ch)}")
    return "\n".join(lines)


def env_defaults() -> None:
    """Offline-safe defaults: W&B offline unless the user chose otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
