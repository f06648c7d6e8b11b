"""The run configuration: a schema of dataclasses, YAML files in ``configs/`` split by concern, and
command-line overrides.

``configs/config.yaml`` names one file per group (``defaults:``); ``load_config`` merges the schema,
each group's file, the top-level keys and then the command line: ``group=choice`` picks another file
of a group (``model=llava-1.5-7b``), ``a.b=value`` sets a key (also what a W&B sweep agent passes
with ``${args_no_hyphens}``). Unknown keys, wrong types and unknown group choices fail here, before
any model loads, with a message naming the key and the valid choices.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from vseam.utils.errors import UserError
from vseam.utils.paths import CONFIG_DIR  # the shipped configs (package data), found from any working directory




class ConfigError(UserError, ValueError):
    """A bad key, value or group choice in the configuration or on the command line."""


# ----------------------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    name: str = "organism-llava"  # a label for results and W&B (the group file's name)
    arch: Optional[str] = None  # null: from the checkpoint's config.model_type | llava | instructblip | llava-next | qwen2-vl
    path: str = "checkpoints/organism/llava"  # hub id, local folder, or tiny:<arch> (a tiny random build)
    dtype: str = "float32"  # float32 | bfloat16 | float16
    device_map: Optional[str] = None  # e.g. "auto" to shard a large model over GPUs (accelerate)
    local_files_only: bool = False  # never touch the network (HF_HUB_OFFLINE=1 does the same)
    attn_implementation: Optional[str] = None  # eager | sdpa | flash_attention_2; None = transformers' default
    prompt_template: Optional[str] = None  # override the model's template; "{question}" is replaced
    seed: int = 0  # weight seed of tiny:<arch> random builds
    answer_definition: str = "project"  # project: p sums the yes/no case variants, correct = arg-max among them |
    # reference: the paper's code, p of the answer's first sub-token as written, correct = arg-max is any sub-token


@dataclass
class DataConfig:
    name: str = "organism"  # a label for results and W&B
    format: str = "organism"  # organism | gqa | pope | cocoqa
    root: Optional[str] = "data/organism/test-s0"  # organism: folder the world is written to (built when absent)
    annotations: list[str] = field(default_factory=list)  # annotation files (gqa/pope/cocoqa); organism: by category
    image_dir: Optional[str] = None  # folder of the images; organism: <root>/images
    image_pattern: Optional[str] = None  # file name pattern; None = the format's default ({imageId}.jpg, ...)
    categories: list[str] = field(default_factory=list)  # keep only these categories; empty = all
    limit: Optional[int] = None  # at most this many samples per annotation file; None = all
    n_per_category: int = 200  # organism: questions written per category
    world_seed: int = 0  # organism: seed of the drawn world
    world_split: str = "test"  # organism: which split of the world to draw (train | val | test; part of each item's identity)
    pope_per_split: int = 0  # organism: also the world's POPE analog (<root>/pope/, POPE's format), this many questions per split (a multiple of 6); 0 = none
    pope_objects: list[str] = field(default_factory=list)  # organism: the POPE analog asks only about these objects (the transfer test); empty = all
    batch_size: int = 16  # samples per forward pass
    num_workers: int = 0  # DataLoader workers
    max_skip_fraction: float = 0.1  # a run stops when more than this share of samples is skipped (missing image, bad answer)
    duplicate_ids: str = "error"  # a question id twice (in a file or across the run's files): error (names file, line, id) | drop (keep the first; the others counted skips)
    pope_split: Optional[str] = None  # POPE: the split (random | popular | adversarial) of files whose name says none; null = from the records


@dataclass
class AttributionConfig:
    method: str = "exact"  # exact | atp (attribution patching: one forward + one backward per batch)
    ablation: str = "mean"  # mean (mean of the other heads) | zero
    top_k: int = 10  # length of the top-K head lists
    atp_space: str = "logodds"  # atp: first order in the answer's log-odds (robust to saturation) | prob
    atp_alpha: float = 0.5  # atp: ablation strength of a head's group where its gradient is taken: 0 = clean run (classic) | 0.5 = midpoint
    atp_path: str = "layer"  # atp: heads ablated together at alpha: layer (a layer's heads; L passes) | index (head g of every layer; H passes) | all (1 pass)
    rescore_top_k: int = 0  # atp: re-score the estimate's top-K positive/negative/signed heads exactly; 0 = off
    rows_per_forward: int = 64  # ablated (sample, head) copies per forward pass; halves itself on CUDA OOM
    chunk_size: int = 16  # samples per saved progress chunk (the resume unit and the unit sharded over ranks)
    resume: bool = True  # reuse finished chunks in <out_dir>/progress (same config); false = start afresh
    progress: bool = True  # tqdm progress bar with ETA (rank 0)
    heatmaps: bool = True  # write heatmap_{positive,negative,signed}.png
    tower: str = "language"  # whose heads: language (the language model's, the paper's analysis) | vision (the vision tower's; exact only)


@dataclass
class ModulationConfig:
    k_pos: int = 3  # top-K positive heads to modulate (organism: 48 heads; 7B: 10-20)
    k_neg: int = 3  # top-K negative heads to modulate (organism: 48 heads; 7B: 10-20)
    scale: str = "scalar"  # per-head scale a: scalar (one per head) | vector (one per head dim) | none
    offset: bool = True  # learn the per-head offset v in R^D
    lr: float = 0.05  # AdamW learning rate of the modulation parameters
    weight_decay: float = 0.0  # AdamW weight decay
    l1: float = 0.0  # weight of the L1 penalty on (scale - 1), summed over heads; 0 = off
    select: str = "key"  # heads the learned method modulates: key (top-K from attribution) | all (rank by l1)
    scheduler: str = "constant"  # learning-rate schedule: constant | cosine (over all steps)
    warmup_steps: int = 0  # linear warm-up steps
    head_scores: Optional[str] = None  # head_scores.json (or its folder) to pick heads from; None = compute on train
    attribution_limit: Optional[int] = 240  # when computing scores: at most this many train samples; None = all
    methods: list[str] = field(default_factory=lambda: ["none", "heuristic", "learned", "random", "bias", "lora",
                                                        "ia3"])
    # ^ what to run and compare: none | heuristic | learned | random | bias | lora | ia3, and the field's methods:
    # pai | vaf | vhr | ict | vti | adhh | spin | vcd
    heuristic_lambda: float = 1.0  # heuristic rescaling: scale = clip(1 + lambda * signed score, 0, 2)
    # the field's methods (vseam.modulation.field), each paper's LLaVA-1.5-7B defaults; a layer range [start, end) is
    # of a field_depth-layer model and scaled to the model's depth (round(l * L / depth)), a head count of a
    # field_depth x field_heads model to the same share of the model's heads
    field_depth: int = 32  # the depth the *_layers ranges are written for (LLaVA-1.5-7B: 32 layers)
    field_heads: int = 32  # the heads per layer the head counts (ict_num_heads) are written for (LLaVA-1.5-7B: 32)
    pai_alpha: float = 0.2  # PAI: image attention of the last query amplified, s <- s + alpha * |s| (pre-softmax)
    pai_layers: list[int] = field(default_factory=lambda: [2, 32])  # PAI: layers [start, end) amplified
    pai_gamma: float = 1.1  # PAI: contrast with the image-free input, gamma * l(x) - (gamma - 1) * l(x'); 1 = off
    pai_beta: float = 0.1  # PAI: plausibility cutoff of the contrast (p < beta * max p ruled out)
    vaf_enhance: float = 1.15  # VAF: scores of the queries after the image to the image keys multiplied by this
    vaf_suppress: float = 0.95  # VAF: ... to the system prompt's keys (the text before the image) by this
    vaf_layers: list[int] = field(default_factory=lambda: [9, 15])  # VAF: layers [start, end) (the middle layers)
    spin_keep: float = 0.8  # SPIN: share of heads kept at the last query, the top by image attention (routed_heads)
    spin_damp: float = 0.1  # SPIN: factor on the other heads' outputs (small_num_mask)
    spin_layers: list[int] = field(default_factory=lambda: [0, 32])  # SPIN: layers [start, end)
    adhh_k: int = 20  # AD-HH: hallucination heads, the top-K contrastive influence on the train split
    adhh_threshold: float = 0.4  # AD-HH: a head's last-query attention to the text after the image is zeroed when >= this
    vcd_alpha: float = 1.0  # VCD: contrast (1 + alpha) * l(x) - alpha * l(x with the distorted image)
    vcd_beta: float = 0.1  # VCD: plausibility cutoff (p < beta * max p ruled out)
    vcd_noise_step: int = 500  # VCD: diffusion noise step (of 1000) of the distorted image
    k_random: Optional[int] = None  # heads of the random-heads control; None = as many as the key heads
    random_draws: int = 99  # random head sets of the random-heads control, each trained as the key heads
    draws_together: Optional[int] = 8  # random draws trained in one batch (CPU: 8 is fastest; GPU: more); None = all
    draws_workers: Optional[int] = None  # processes training the groups of draws; None = one per CPU core (model on CPU), else 1
    baseline_lr: float = 0.001  # learning rate of the LoRA / IA3 baselines
    lora_r: int = 4  # LoRA rank
    lora_alpha: int = 8  # LoRA alpha (scaling alpha / r)
    lora_dropout: float = 0.0  # LoRA dropout
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "v_proj"])  # LM linear layers given LoRA
    ia3_targets: list[str] = field(default_factory=lambda: ["k_proj", "v_proj", "down_proj"])  # LM layers given IA3
    val_fraction: float = 0.15  # share of each category held out for validation (model selection)
    test_fraction: float = 0.3  # share of each category held out for the test split (reported only)
    cache_embeddings: bool = True  # encode each sample's image once and reuse the LM inputs every epoch
    norm_every: int = 10  # log per-head |scale - 1| and |offset| every N steps (with a logger); 0 = never
    allow_other_model: bool = False  # use head scores / a modulation made with other weights than this model's (warned)
    vhr_alpha: float = 2.0  # VHR (ACL 2025): scale of the vision-aware heads' outputs
    vhr_layers: list[int] = field(default_factory=lambda: [18, 32])  # VHR: layers [start, end) (as every *_layers:
    # of a field_depth-layer model); paper: the last 14 for LLaVA, [14, 32] (the last 18) for InstructBLIP
    vhr_layer_one: bool = True  # VHR: and the second layer (layer 1; paper: LLaVA yes, InstructBLIP no)
    ict_num_heads: int = 256  # ICT (CVPR 2025): heads shifted per level, top by probe accuracy, of the field_depth x
    # field_heads (1024) of LLaVA-1.5-7B: the same share of the model's heads (round(n * L * H / 1024), at least 1)
    ict_alpha: float = 8.0  # ICT: shift strength (times the std of the activations along the direction)
    ict_type: str = "both"  # ICT: image | object | both (the levels whose directions are estimated and applied)
    ict_samples: Optional[int] = 1500  # ICT: at most this many train samples estimate the directions; null = all
    ict_blur_radius: float = 5.0  # ICT: Gaussian blur radius (pixels of the image as stored) of the degraded images
    vti_alpha_text: float = 0.9  # VTI (ICLR 2025): strength of the language model's steering; 0 = off
    vti_alpha_image: float = 0.9  # VTI: strength of the vision encoder's steering; 0 = off
    vti_num_demos: int = 70  # VTI: train samples the steering directions are estimated from
    vti_mask_ratio: float = 0.99  # VTI: share of the image's patches masked in each perturbed copy
    vti_num_trials: int = 50  # VTI: perturbed copies of each image averaged


@dataclass
class TrainerConfig:
    accelerator: str = "auto"  # the one device key: auto (cuda when available) | cpu | gpu; models, Trainer and Fabric
    devices: Any = 1  # Lightning devices: an int, a list of ids, or "auto"
    strategy: str = "auto"  # Lightning strategy: auto | ddp | ddp_spawn | fsdp ...
    precision: str = "32-true"  # 32-true | bf16-mixed | 16-mixed
    max_epochs: int = 10  # passes over the train split
    max_steps: int = -1  # stop after this many optimizer steps; -1 = run max_epochs
    limit_train_batches: Any = 1.0  # fraction (float) or number (int) of train batches per epoch
    limit_val_batches: Any = 1.0  # fraction (float) or number (int) of validation batches
    log_every_n_steps: int = 10  # logging interval in steps
    gradient_clip_val: Optional[float] = None  # clip the gradient norm; None = off
    accumulate_grad_batches: int = 1  # batches per optimizer step
    gradient_checkpointing: bool = False  # recompute LM layers in backward (7B: less memory, more time)
    monitor: str = "val/loss"  # metric that picks the best checkpoint: val/loss | val/acc
    monitor_mode: str = "min"  # min for val/loss, max for val/acc
    check_val_every_n_epoch: int = 1  # validate every N epochs
    num_sanity_val_steps: int = 0  # Lightning's validation sanity check batches before training
    enable_progress_bar: bool = False  # Lightning's progress bar (off: one line per epoch instead)
    deterministic: bool = False  # torch deterministic algorithms
    torch_threads: int = 1  # torch intra-op CPU threads (1: much faster than 2 on a shared 2-core CPU); 0 = torch default


@dataclass
class EvalConfig:
    # `python analyze.py eval`: the model as configured, and with a saved modulation when one is named
    checkpoint: Optional[str] = None  # a saved modulation (.safetensors, from train.py) to apply; None = the model alone
    method: str = "none"  # none: eval.checkpoint's learned modulation, if any | pai | vaf | spin | vcd (from modulation.* or a train.py file) | adhh (a train.py file)
    allow_overlap: bool = False  # score a modulation on samples it was trained / selected on (warned, marked in results)


@dataclass
class LoggerConfig:
    kind: str = "wandb"  # wandb | csv | none
    project: str = "vseam"  # W&B project
    entity: Optional[str] = None  # W&B entity (team); None = your default
    mode: str = "offline"  # W&B mode: offline | online | disabled
    tags: list[str] = field(default_factory=list)  # W&B tags
    save_dir: Optional[str] = None  # where logger files go; None = <out_dir>/logs
    artifact: bool = True  # W&B: upload the learned modulation file as an artifact (online runs only)


@dataclass
class EditConfig:
    # prompts (vseam.editing.rules / writers)
    prompt_writer: str = "rules"  # rules (deterministic, from the GQA program) | llm (few-shot, edit.llm_model)
    llm_model: Optional[str] = None  # text-generation model id or folder for prompt_writer=llm
    relation_mask: str = "both"  # relation edits repaint: both objects | subject | object
    prefer_opposites: bool = True  # spatial substitute = the opposite relation (on -> under) when there is one
    strict_vocabulary: bool = False  # skip object questions whose object is not in the category's vocabulary
    vocab: dict[str, list[str]] = field(default_factory=dict)  # replace a vocabulary (Animal, color, action, ...)
    # masks (vseam.editing.masks / sam)
    mask_margin: float = 0.1  # dilate each box by this fraction of its width/height on every side
    mask_margin_px: int = 4  # ... plus this many pixels
    box_reference_size: Optional[list[int]] = None  # [W, H] the boxes are given in; null = the image's pixels
    sam: bool = False  # refine the box masks with SAM (kept inside the dilated boxes)
    sam_model: str = "facebook/sam-vit-base"  # SAM model id, local folder, or tiny (random)
    sam_dilate_px: int = 4  # dilation of SAM's mask, so the inpainting blends at its border
    # inpainting (vseam.editing.inpaint)
    model: str = "runwayml/stable-diffusion-inpainting"  # diffusers inpainting pipeline: hub id, local folder, or tiny
    steps: int = 50  # denoising steps
    guidance: float = 7.5  # classifier-free guidance scale
    negative_prompt: str = "low quality, blurry"  # "" = none
    resolution: int = 512  # square side the pipeline sees (multiple of 8); results are resized back
    batch_size: int = 4  # images per pipeline call
    dtype: str = "auto"  # auto (float16 on GPU, float32 on CPU) | float32 | float16 | bfloat16
    local_files_only: bool = False  # never download the pipeline / SAM
    progress: bool = True  # progress bars
    # effective-edit filter (vseam.editing.filter), with cfg.model
    filter: bool = True  # keep pairs the model answers correctly clean and not edited
    filter_batch_size: int = 8  # samples per forward pass of the filter


@dataclass
class StudyConfig:
    # the ablation study (vseam.study.ablation): `python analyze.py ablate`
    head_scores: Optional[str] = None  # head_scores.json (or its folder) to take heads from; None = run heads into <out_dir>/heads
    k: list[int] = field(default_factory=lambda: [1, 3, 5])  # K of the top-K positive / negative sets (a curve over K)
    k_random: Optional[list[int]] = None  # sizes of the random head sets; None = the same list as k
    random_trials: int = 99  # seeded random head sets per K (every K-head set instead where there are no more)
    ablation: str = "mean"  # mean (mean of the other heads, as the scores) | zero (the reference scripts' masking)
    heads_from: str = "all"  # all: the top-K of all samples' scores | category: each sample's own category's top-K
    resume: bool = True  # reuse finished chunks in <out_dir>/progress (same config); false = start afresh
    # the overlap analysis (vseam.study.overlap): `python analyze.py overlap`
    overlap_k: list[int] = field(default_factory=lambda: [3, 5, 10])  # K of the top-K head sets compared
    n_permutations: int = 10000  # sample-level label permutations of the null (and random head sets of the context test)
    n_bootstrap: int = 1000  # bootstrap resamples of the samples for each claim's confidence interval
    min_samples: int = 30  # a category enters a kind's sets only with this many baseline-correct (positive) / -incorrect (negative) samples
    alpha: float = 0.05  # significance level of the verdicts
    # the whole study (vseam.study.run): `python analyze.py study`
    models: list[str] = field(default_factory=lambda: ["organism-llava", "organism-instructblip"])  # configs/model/ choices
    trace: bool = False  # also run `analyze.py trace` (the trace.* settings) for each model: tracing maps in the report


@dataclass
class TraceConfig:
    manifest: Optional[str] = None  # edit manifest (.jsonl) or folder (an `analyze.py edit` out_dir); None = the organism's exact edits of `data`
    effective_only: bool = True  # trace only pairs whose edit was effective (clean correct, edited not); false = every pair
    direction: str = "denoise"  # denoise (clean values into the edited run) | noise (edited values into the clean run)
    blocks: list[str] = field(default_factory=lambda: ["attn", "mlp", "resid"])  # attn | mlp | resid (layer output)
    tokenwise: bool = True  # patch each position on its own (the layer x token map); false = the groups only
    groups: list[str] = field(default_factory=lambda: ["image", "question", "last"])  # position groups patched together
    limit: Optional[int] = None  # at most this many pairs per category (before the effective filter); None = all
    rows_per_forward: int = 64  # patched rows in one forward pass: the memory knob; halves itself on CUDA OOM
    chunk_size: int = 16  # pairs per saved progress chunk: the resume unit and the unit sharded over ranks
    resume: bool = True  # reuse finished chunks in <out_dir>/progress when the config matches; false = start afresh
    progress: bool = True  # progress bar with ETA on rank 0
    lens_top_k: int = 5  # logit lens: top tokens kept per layer
    plots: bool = True  # write the PNG figures
    plot_pairs: int = 2  # also a heat map of each of the first N pairs (pairs/heatmap_<i>.png)


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
    results_dir: Optional[str] = None  # `analyze.py report` / `overlap`: the results folder to read; None = out_dir
    trace: TraceConfig = field(default_factory=TraceConfig)
    out_dir: Optional[str] = None  # where the run writes; None = runs/<command>/<date-time>
    seed: int = 0  # the run's seed: seed_everything, splits, sample draws, random heads, edit substitutes and noise
    run_name: Optional[str] = None  # W&B run name; None = derived from out_dir


GROUPS = ("model", "data", "attribution", "modulation", "trainer", "eval", "logger", "edit", "study", "trace")


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


def _explain(e: OmegaConfBaseException, schema: DictConfig, where: str) -> ConfigError:
    key = getattr(e, "full_key", None) or getattr(e, "key", None) or ""
    if str(key) in MOVED:
        return ConfigError(f"{where}: {key} is now {MOVED[str(key)]}")
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)):
        parent = schema
        parts = str(key).split(".")
        for p in parts[:-1]:
            parent = parent.get(p) if isinstance(parent, DictConfig) and p in parent else None
        valid = _valid_keys(parent) if parent is not None else []
        return ConfigError(f"{where}: unknown key {key!r}; valid keys here: {valid}")
    if isinstance(e, ValidationError):
        msg = str(e).splitlines()[0]
        return ConfigError(f"{where}: bad value for {key!r}: {msg}")
    return ConfigError(f"{where}: {e}")


def _merge(base: DictConfig, other: Any, where: str, schema: DictConfig) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)
    except OmegaConfBaseException as e:
        raise _explain(e, schema, where) from e


def parse_overrides(argv: list[str]) -> tuple[dict[str, str], list[str]]:
    """Split ``key=value`` arguments into group choices and dotted overrides; leading dashes are dropped."""
    choices, dotlist = {}, []
    for arg in argv:
        a = arg.lstrip("-")
        if "=" not in a:
            raise ConfigError(f"argument {arg!r} is not key=value (groups: {', '.join(GROUPS)})")
        key, value = a.split("=", 1)
        if key in GROUPS:
            choices[key] = value
        else:
            dotlist.append(f"{key}={value}")
    return choices, dotlist


def load_config(argv: list[str] | None = None, config_dir: str | Path | None = None,
                top: str = "config.yaml", default_choices: dict[str, str] | None = None) -> DictConfig:
    """Compose the run configuration from ``configs/`` and ``key=value`` arguments; validate it.

    ``default_choices`` replaces group choices of the top-level file (an entry point's own defaults);
    choices on the command line still win.
    """
    config_dir = Path(config_dir) if config_dir else CONFIG_DIR
    schema = OmegaConf.structured(RootConfig)
    top_cfg = _load_yaml(config_dir / top)
    defaults = dict(top_cfg.pop("defaults", {}) or {})
    choices, dotlist = parse_overrides(list(argv or []))
    unknown = set(defaults) - set(GROUPS)
    if unknown:
        raise ConfigError(f"{config_dir / top}: defaults name unknown groups {sorted(unknown)}; groups: {list(GROUPS)}")
    defaults.update(default_choices or {})
    defaults.update(choices)
    cfg = schema
    for group, choice in defaults.items():
        if choice in (None, "null", "none") and group != "logger":
            continue
        path = config_dir / group / f"{choice}.yaml"
        if not path.exists():
            raise ConfigError(f"{group}={choice!r}: no such choice; valid choices: {group_choices(group, config_dir)}")
        cfg = _merge(cfg, {group: _load_yaml(path)}, str(path), schema)
    cfg = _merge(cfg, top_cfg, str(config_dir / top), schema)
    try:
        cli = OmegaConf.from_dotlist(dotlist)
    except Exception as e:
        raise ConfigError(f"command line: {e}") from e
    cfg = _merge(cfg, cli, "command line", schema)
    OmegaConf.set_readonly(cfg, False)
    return cfg


def as_config(cfg: Any, schema: type = RootConfig) -> DictConfig:
    """``cfg`` (a DictConfig, a mapping or a dataclass) merged over the schema's defaults, validated: how
    a function called from a notebook or a test with a partial config gets the one set of defaults."""
    if isinstance(cfg, DictConfig) and OmegaConf.get_type(cfg) is schema:
        return cfg
    try:
        return OmegaConf.merge(OmegaConf.structured(schema), cfg)
    except OmegaConfBaseException as e:
        raise _explain(e, OmegaConf.structured(schema), "config") from e


def save_config(cfg: DictConfig, out_dir: str | Path, name: str = "config.yaml") -> Path:
    """Write the resolved config next to the results (atomically)."""
    from vseam.utils.io import write_text

    return write_text(Path(out_dir) / name, OmegaConf.to_yaml(cfg, resolve=True))


def describe_groups(config_dir: Path = CONFIG_DIR) -> str:
    lines = []
    for g in GROUPS:
        ch = group_choices(g, config_dir)
        if ch:
            lines.append(f"  {g:<12} {', '.join(ch)}")
    return "\n".join(lines)


def env_defaults() -> None:
    """Offline-safe defaults: W&B offline unless the user chose otherwise."""
    os.environ.setdefault("WANDB_MODE", "offline")
