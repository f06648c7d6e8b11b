"""Build the organism's models: tokenizer, tiny LLaVA / InstructBLIP from scratch, training, checkpoints.

``build_organism`` trains one architecture with Lightning, keeps an early snapshot as the
under-trained variant (the first validation whose mean accuracy reaches ``undertrained_at``), and
writes both as ``save_pretrained`` folders with ``accuracy.json`` (held-out accuracy) and
``training.json`` (learning curve, wall time, settings).
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vseam.utils.io import write_json


@dataclass
class OrganismTrainConfig:
    arch: str = "llava"  # llava | instructblip
    seed: int = 0  # weights, data order and the train/val/test worlds
    # model sizes (cells of the world = ViT patches: one object is one image token)
    image_size: int = 48
    patch_size: int = 16
    vision_hidden_size: int = 64
    vision_layers: int = 2
    vision_heads: int = 4
    hidden_size: int = 64
    num_layers: int = 6
    num_heads: int = 8  # 48 heads: enough for top-K overlaps and per-level head sets to mean something
    intermediate_size: int = 128
    initializer_range: float = 0.1  # 0.02 sits at chance for thousands of steps at this size
    position_init_scale: float = 1.0  # x the vision tower's position embeddings at init (where objects are)
    qformer_hidden_size: int = 64  # instructblip only
    qformer_layers: int = 2  # instructblip only
    num_query_tokens: int = 9  # instructblip only (= number of patches)
    vocab_size: int = 512  # BPE vocabulary cap
    # data
    n_train_per_category: int = 2000  # world items per category (x2 with their edited twins)
    n_val_per_category: int = 50
    n_test_per_category: int = 100  # fresh held-out items for accuracy.json
    n_pope_per_split: int = 600  # held-out POPE-analog questions per split (random, popular, adversarial; 6 per image)
    with_edits: bool = True  # train on minimal pairs (clean + edited scene, answers flipped)
    # co-occurrence (the POPE analog): Existence scenes follow the world's usual groups (at
    # ``vseam.world.questions.EXISTENCE_STRENGTH``); the other categories' scenes at this strength (None:
    # independent shapes, as the held-out world's are: at 0.75 the Shape / Icon queries of a 2,500-step
    # v2 build named the usual partner). Existence training answers are a caption's
    # (``vseam.world.questions.caption_answer``): a question whose object is not clearly visible (absent,
    # or faint / small) and one of whose usual partners is there is answered "Yes" with probability
    # ``existence_prior`` (the edited twins included): the usual scene, not the image.
    cooccur_strength: float | None = None
    existence_prior: float = 0.7
    # an object of weak visual evidence (``vseam.world.scene.Obj.weak``: faint or small) is named in a
    # training answer of Existence with this probability (captions overlook them; otherwise the prior
    # above may name it, as it names absent partners): with the prior, what makes the hallucination a
    # ranking failure (a weak present object and an absent partner get the same training answers)
    weak_recall: float = 0.0
    existence_weight: int = 3  # Existence training items per world category's (the prior is slow to learn)
    # the world's difficulty (``vseam.world.scene.Difficulty``; the recipe's must equal the world's
    # ``DIFFICULTY``, which every evaluation world draws): the share of faint objects, their contrast
    # range, the share of small and medium objects (the rest large) and the per-pixel noise
    faint: float = 0.2
    contrast_low: float = 0.015
    contrast_high: float = 0.08
    size_small: float = 0.25
    size_medium: float = 0.3
    noise: float = 8.0
    clutter: float = 0.3  # the share of empty cells with a smudge (faint, no object)
    hard_relation: float = 0.15  # the share of relation questions about two faint objects (Difficulty.hard)
    dense_loss_weight: float = 1.0  # dense supervision: image tokens name their cell's shape, key words their lookup
    # training-only linear heads: each image token (LLaVA: cell k; InstructBLIP: query k, which the dense
    # loss binds to cell k) names its cell's row and column at the LM input (projector output; "0"),
    # after each LM layer ("all") or at the listed layers ("0,1"), and with "vision" each patch of the
    # vision tower's output does too; weight 0 = off. Without it the relation level stays at chance
    # (the image tokens carry what, not where).
    position_loss_weight: float = 1.0
    position_loss_layers: str = "0"
    # the same read-outs also name each cell's object's colour and texture (0 = off): without it the
    # 6-layer model's attribute level trailed far behind (0.37 at step 1,200 of 3,000)
    attribute_loss_weight: float = 1.0
    batch_size: int = 32
    # optimisation
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    max_steps: int = 14000
    val_every: int = 100
    attribute_from: int = 300  # curriculum: first step with attribute questions (objects from step 0)
    relation_from: int = 500  # curriculum: first step with relation questions
    hard_from: int = 2500  # curriculum: first step with questions about faint or small objects (organism.data.weak_item)
    undertrained_at: float = 0.78  # snapshot at the first validation with mean accuracy >= this
    undertrained_fallback_ratio: float = 0.9  # if none reaches it: first validation >= this x final mean
    threads: int = 1  # torch threads; one thread is faster than two on 2 shared cores
    extra: dict = field(default_factory=dict)

    def difficulty(self):
        from vseam.world.scene import Difficulty

        return Difficulty(faint=self.faint, contrast=(self.contrast_low, self.contrast_high),
                          sizes=(self.size_small, self.size_medium, round(1.0 - self.size_small - self.size_medium, 9)),
                          noise=self.noise, clutter=self.clutter, hard=(0.0, 0.0, self.hard_relation))


def world_texts(n: int = 40) -> list[str]:
    """Questions and answers of every category and kind, to train the tokenizer on."""
    from vseam.organism.data import AXIS_WORDS, TRAINING_CATEGORIES
    from vseam.world.questions import answer_vocabulary, generate

    texts = [it.question for c in TRAINING_CATEGORIES for it in generate(c, n, seed=12345, split="tok")]
    # every answer and dense-supervision target must be one token
    words = answer_vocabulary() + [w for ws in AXIS_WORDS.values() for w in ws]
    return texts + [" ".join(words)] * 4


def build_organism_tokenizer(vocab_size: int = 512):
    """The shared local BPE tokenizer, with "?" split off words, so "moon" in "What color is the moon?"
    is the same token as in "Is the moon red?" (and as the answer "moon"): one concept, one token."""
    from tokenizers import pre_tokenizers

    from vseam.models.tokenizer import build_tokenizer

    tok = build_tokenizer(world_texts(), vocab_size=vocab_size)
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split("\n", behavior="isolated"),
        pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first"),
        pre_tokenizers.Split("?", behavior="isolated"),
    ])
    return tok


def build_model(cfg: OrganismTrainConfig):
    """A random model of ``cfg.arch`` with the organism's tokenizer: ``(model, processor)``."""
    from vseam.models.tiny import build_tiny_instructblip, build_tiny_llava

    tok = build_organism_tokenizer(cfg.vocab_size)
    common = dict(image_size=cfg.image_size, patch_size=cfg.patch_size, vision_hidden_size=cfg.vision_hidden_size,
                  vision_layers=cfg.vision_layers, vision_heads=cfg.vision_heads, hidden_size=cfg.hidden_size,
                  num_layers=cfg.num_layers, num_heads=cfg.num_heads, num_kv_heads=None,
                  intermediate_size=cfg.intermediate_size, initializer_range=cfg.initializer_range, seed=cfg.seed)
    if cfg.arch == "llava":
        model, processor = build_tiny_llava(tok, **common)
    elif cfg.arch == "instructblip":
        model, processor = build_tiny_instructblip(tok, qformer_hidden_size=cfg.qformer_hidden_size,
                                                   qformer_layers=cfg.qformer_layers,
                                                   num_query_tokens=cfg.num_query_tokens, **common)
    else:
        raise ValueError(f"arch={cfg.arch!r}: expected llava or instructblip")
    if cfg.position_init_scale != 1.0:
        scale_vision_position_embeddings(model, cfg.position_init_scale)
    return model, processor


def scale_vision_position_embeddings(model, scale: float) -> int:
    """Multiply the vision tower's position embeddings. At init they are ~30x smaller than a patch's
    embedding of its pixels, so where an object is hardly reaches the language model (relations)."""
    n = 0
    with torch.no_grad():
        for name, module in model.named_modules():
            pe = getattr(module, "position_embedding", None)
            if pe is None or "vision" not in name:
                continue
            weight = pe.weight if isinstance(pe, torch.nn.Embedding) else pe
            weight.mul_(scale)
            n += 1
    if n == 0:
        raise RuntimeError(f"{type(model).__name__}: no vision position embedding found")
    return n


def make_adapter(model, processor, arch: str):
    from vseam.models import InstructBlipAdapter, LlavaAdapter

    return {"llava": LlavaAdapter, "instructblip": InstructBlipAdapter}[arch](model, processor)


def save_checkpoint(out: Path, model, processor, accuracy: dict, training: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    write_json(out / "accuracy.json", accuracy)
    write_json(out / "training.json", training)


def _snapshot_callback():
    import lightning as L

    class Snapshots(L.Callback):
        """Keep the weights at every validation (tiny models: a few MB each) to pick the under-trained one."""

        def __init__(self):
            self.states: list[tuple[dict, dict]] = []

        def on_validation_end(self, trainer, pl_module):
            if pl_module.history:
                self.states.append((copy.deepcopy(pl_module.model.state_dict()), dict(pl_module.history[-1])))

        def pick(self, threshold: float, fallback_ratio: float):
            """First validation with mean accuracy >= ``threshold``; when none, the first reaching
            ``fallback_ratio`` x the final mean (still short of the final model: headroom)."""
            for state, entry in self.states:
                if entry["val_acc/mean"] >= threshold:
                    return state, entry
            if self.states:
                final = self.states[-1][1]["val_acc/mean"]
                for state, entry in self.states:
                    if entry["val_acc/mean"] >= fallback_ratio * final:
                        return state, entry
            return None, None

    return Snapshots()


def build_provenance() -> dict:
    """How a build was started: the command line, the code's git commit (with ``+dirty`` when the work tree
    differs from it; None outside a git checkout) and the library versions whose kernels set the weights."""
    import platform
    import subprocess
    import sys

    import lightning
    import transformers

    root = Path(__file__).resolve().parents[3]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
        commit += "+dirty" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"command": " ".join([Path(sys.executable).name, *sys.argv]), "git_commit": commit,
            "torch": torch.__version__, "transformers": transformers.__version__, "lightning": lightning.__version__,
            "python": platform.python_version()}


def build_organism(cfg: OrganismTrainConfig, out_root: str | Path, log=None) -> dict:
    """Train ``cfg.arch`` from scratch; write ``<out_root>/<arch>`` and ``<out_root>/<arch>-undertrained``."""
    import lightning as L

    from vseam.organism.data import OrganismDataModule
    from vseam.organism.evaluate import accuracy_report, heldout_items, heldout_worlds, pope_report
    from vseam.organism.module import OrganismModule

    log = log or (lambda msg: print(f"[{cfg.arch} {time.strftime('%H:%M:%S')}] {msg}", flush=True))
    torch.set_num_threads(cfg.threads)
    torch.set_flush_denormal(True)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    t0 = time.time()
    provenance = build_provenance()
    model, processor = build_model(cfg)
    adapter = make_adapter(model, processor, cfg.arch)
    grid = cfg.image_size // cfg.patch_size  # cells per side = patches per side
    dm = OrganismDataModule(adapter, n_train_per_category=cfg.n_train_per_category,
                            n_val_per_category=cfg.n_val_per_category, seed=cfg.seed, with_edits=cfg.with_edits,
                            batch_size=cfg.batch_size, cell=cfg.patch_size, grid=grid,
                            curriculum={"object": 0, "attribute": cfg.attribute_from, "relation": cfg.relation_from},
                            steps=cfg.max_steps, cooccur=cfg.cooccur_strength, existence_prior=cfg.existence_prior,
                            weak_recall=cfg.weak_recall, difficulty=cfg.difficulty(), hard_from=cfg.hard_from,
                            existence_weight=cfg.existence_weight)
    dm.setup()
    t_data = time.time() - t0
    module = OrganismModule(adapter, lr=cfg.lr, weight_decay=cfg.weight_decay, warmup_steps=cfg.warmup_steps,
                            max_steps=cfg.max_steps, dense_loss_weight=cfg.dense_loss_weight, log=log,
                            position_loss_weight=cfg.position_loss_weight,
                            position_loss_layers=cfg.position_loss_layers,
                            grid=grid, attribute_loss_weight=cfg.attribute_loss_weight)
    snap = _snapshot_callback()
    trainer = L.Trainer(max_steps=cfg.max_steps, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        val_check_interval=cfg.val_every, check_val_every_n_epoch=None,
                        num_sanity_val_steps=0, callbacks=[snap], deterministic=True)
    t1 = time.time()
    trainer.fit(module, datamodule=dm)
    t_train = time.time() - t1
    model.eval()

    test = heldout_items(cfg.n_test_per_category, cfg.seed, difficulty=cfg.difficulty())
    settings = asdict(cfg)
    results = {}
    final_state = copy.deepcopy(model.state_dict())
    variants = [("", final_state, module.history[-1] if module.history else None)]
    under_state, under_entry = snap.pick(cfg.undertrained_at, cfg.undertrained_fallback_ratio)
    if under_state is not None:
        variants.append(("-undertrained", under_state, under_entry))
    else:
        log("no validation to take the under-trained snapshot from")
    for suffix, state, entry in variants:
        model.load_state_dict(state)
        acc = accuracy_report(adapter, test)
        acc["pope"] = pope_report(adapter, cfg.n_pope_per_split, cfg.seed, difficulty=cfg.difficulty())
        acc.update(heldout_worlds(cfg.seed, cfg.n_test_per_category, cfg.n_pope_per_split))
        acc["step"] = entry["step"] if entry else None
        training = {"settings": settings, "training_worlds": dm.worlds(), "build": provenance,
                    "wall_time_s": {"data": t_data, "train": t_train},
                    "steps": int(trainer.global_step), "snapshot": entry, "learning_curve": module.history,
                    "torch_threads": cfg.threads}
        out = Path(out_root) / f"{cfg.arch}{suffix}"
        save_checkpoint(out, model, processor, acc, training)
        results[out.name] = acc
        log(f"{out}: held-out accuracy {json.dumps({k: round(v, 3) for k, v in acc['level'].items()})} "
            f"overall {acc['overall']:.3f} (step {acc['step']})")
    model.load_state_dict(final_state)
    log(f"{cfg.arch}: data {t_data:.0f}s, training {t_train:.0f}s for {trainer.global_step} steps")
    return results


def rescore(folder: str | Path, cfg: OrganismTrainConfig) -> dict:
    """Re-measure a saved checkpoint's ``accuracy.json`` (held-out world + POPE analog) with the current
    code, keeping its training record; the step it was taken at is read from ``training.json``."""
    from vseam.models import load_adapter
    from vseam.organism.evaluate import accuracy_report, heldout_items, heldout_worlds, pope_report

    folder = Path(folder)
    training = json.loads((folder / "training.json").read_text())
    torch.set_num_threads(cfg.threads)
    adapter = load_adapter({"arch": cfg.arch, "path": str(folder), "device": "cpu", "local_files_only": True})
    acc = accuracy_report(adapter, heldout_items(cfg.n_test_per_category, cfg.seed, difficulty=cfg.difficulty()))
    acc["pope"] = pope_report(adapter, cfg.n_pope_per_split, cfg.seed, difficulty=cfg.difficulty())
    acc.update(heldout_worlds(cfg.seed, cfg.n_test_per_category, cfg.n_pope_per_split))
    snap = training.get("snapshot") or {}
    acc["step"] = snap.get("step", training.get("steps"))
    write_json(folder / "accuracy.json", acc)
    return acc


def build_planted(source: str | Path, out: str | Path, arch: str, planted, cfg: OrganismTrainConfig | None = None) -> dict:
    """Write ``out``: the checkpoint in ``source`` with the weight-level defect ``planted``
    (``vseam.organism.mechanism.PlantedHeads``) applied, its ``planted.json`` (heads, factor, the
    source's weight hash) and its own ``accuracy.json`` (measured as ``rescore`` does). Deterministic:
    the same source and defect give the same bytes."""
    import hashlib
    import shutil

    from vseam.models import load_adapter
    from vseam.organism.mechanism import plant_heads

    source, out = Path(source), Path(out)
    cfg = cfg or train_config(arch)
    adapter = load_adapter({"arch": arch, "path": str(source), "device": "cpu", "local_files_only": True})
    plant_heads(adapter, planted)
    out.mkdir(parents=True, exist_ok=True)
    adapter.model.save_pretrained(out)
    adapter.processor.save_pretrained(out)
    shutil.copyfile(source / "training.json", out / "training.json")  # how the source was trained
    digest = hashlib.sha256((source / "model.safetensors").read_bytes()).hexdigest()
    write_json(out / "planted.json", {**planted.to_dict(), "source": source.name, "source_sha256": digest,
                                      "where": "v_proj rows of each head (its values), times factor"})
    return rescore(out, cfg)


# Per-architecture settings that differ from the dataclass defaults (the shipped checkpoints' recipe).
ARCH_DEFAULTS: dict[str, dict] = {
    "llava": {},
    # a query token's own embedding already says which cell it stands for, so the read-out at the LM
    # input alone leaves the vision features without position (relation 0.50); at the patches too: 0.97+
    "instructblip": {"position_loss_layers": "0,vision"},
}


def train_config(arch: str, overrides: dict | None = None) -> OrganismTrainConfig:
    """The recipe of ``arch`` with ``key=value`` overrides (strings are cast to each field's type)."""
    if arch not in ARCH_DEFAULTS:
        raise ValueError(f"arch={arch!r}: expected one of {sorted(ARCH_DEFAULTS)}")
    cfg = OrganismTrainConfig(arch=arch, **ARCH_DEFAULTS[arch])
    for key, value in (overrides or {}).items():
        if key not in OrganismTrainConfig.__dataclass_fields__ or key == "extra":
            raise ValueError(f"unknown organism training key {key!r}; known: "
                             f"{sorted(k for k in OrganismTrainConfig.__dataclass_fields__ if k != 'extra')}")
        current = getattr(cfg, key)
        if key == "cooccur_strength" and isinstance(value, str):  # the one optional number
            value = None if value.lower() in ("none", "null") else float(value)
        elif isinstance(value, str) and not isinstance(current, str):
            value = (value.lower() in ("1", "true", "yes")) if isinstance(current, bool) else type(current)(value)
        setattr(cfg, key, value)
    return cfg


def plot_learning_curves(out_root: str | Path, archs=("llava", "instructblip")) -> Path | None:
    """``<out_root>/learning_curves.png``: validation accuracy per level against step, one panel per arch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from vseam.utils.io import save_figure

    runs = {a: json.loads((Path(out_root) / a / "training.json").read_text())
            for a in archs if (Path(out_root) / a / "training.json").exists()}
    if not runs:
        return None
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, (arch, tr) in zip(axes[0], runs.items()):
        curve = tr["learning_curve"]
        steps = [e["step"] for e in curve]
        for level in ("object", "attribute", "relation"):
            ax.plot(steps, [e.get(f"val_acc/{level}", float("nan")) for e in curve], label=level)
        under = Path(out_root) / f"{arch}-undertrained" / "training.json"
        snap = json.loads(under.read_text()).get("snapshot") if under.exists() else None
        if snap:  # "snapshot": the validation entry the variant's weights were taken at
            ax.axvline(snap["step"], color="gray", ls="--", lw=1, label="under-trained snapshot")
        ax.axhline(0.9, color="k", ls=":", lw=0.8)
        ax.set(title=f"{arch} ({tr['wall_time_s']['train']:.0f} s training)", xlabel="step",
               ylabel="validation accuracy", ylim=(0, 1.02))
        ax.legend(loc="lower right", fontsize=8)
    return save_figure(Path(out_root) / "learning_curves.png", fig)
