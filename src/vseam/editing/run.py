"""The editing run behind ``analyze.py edit``: read a GQA-style file, plan each edit by rule, mask,
inpaint in batches, write the edited images and a manifest, then apply the effective-edit filter.

Layout of ``out_dir``: ``edited/<category>/<id>.png``, ``masks/<category>/<id>.png``,
``edits.jsonl`` (``EditRecord`` lines: the organism's manifest name and format), ``skips.jsonl`` (id,
kind, reason), ``edit_report.json`` (counts), and with the filter ``edits.effective.jsonl`` +
``filter_report.json``. Resumable: samples already in the manifest or the skip list are not redone;
every finished batch is appended at once, so a killed run loses at most the batch in flight.
With ``data.format=organism`` the world's exact edits are used as they are (no inpainting) and only
the filter runs.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vseam.config import EditConfig, as_config
from vseam.data.sample import EditRecord, MissingImageError, Sample, load_image
from vseam.editing.masks import BoxOutsideImageError, box_mask, paste_unmasked, scale_box
from vseam.editing.rules import EditPlan, NotCovered
from vseam.utils.devices import torch_device
from vseam.utils.io import append_jsonl, atomic_path, read_jsonl, write_json, write_text

MANIFEST = "edits.jsonl"
SKIPS = "skips.jsonl"
EFFECTIVE = "edits.effective.jsonl"
SKIP_KINDS = ("missing_image", "box_outside_image", "not_covered")


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", str(name)) or "_"


def _key(category: str | None, sid: str) -> str:
    # ids are unique per annotation file only; the category keeps two subsets' ids apart
    return f"{category or 'all'}/{sid}"


def _save_png(path: Path, image) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def _reference_size(sample: Sample, default: Sequence[int] | None) -> tuple[int, int] | None:
    w, h = sample.meta.get("width"), sample.meta.get("height")
    if isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0:
        return int(w), int(h)
    return (int(default[0]), int(default[1])) if default else None


def edit_samples(samples: Sequence[Sample], out_dir: str | Path, inpainter: Callable, writer: Callable[[Sample], EditPlan],
                 *, margin: float = 0.1, margin_px: int = 4, box_reference_size: Sequence[int] | None = None,
                 refiner: Any = None, batch_size: int = 4, progress: bool = True) -> dict:
    """Edit every sample not done yet; return the counts (also written to ``edit_report.json``).

    ``inpainter(images, masks, prompts, ids) -> images`` (an ``Inpainter``); ``writer(sample) ->
    EditPlan`` (rules or LLM). Missing images, boxes outside the image and questions the writer does
    not cover are appended to ``skips.jsonl`` with their reason and the run goes on.
    """
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest, skips = out / MANIFEST, out / SKIPS
    done = {_key(r.get("category"), r["id"]) for r in read_jsonl(manifest)}
    done |= {_key(r.get("category"), r["id"]) for r in read_jsonl(skips)}
    pending, seen = [], set()
    for s in samples:
        k = _key(s.category, s.id)
        if k in seen:
            raise ValueError(f"sample id {s.id!r} appears twice in category {s.category!r}")
        seen.add(k)
        if k not in done:
            pending.append(s)
    run = Counter()
    run["already_done"] = len(samples) - len(pending)

    def skip(s: Sample, kind: str, reason: str) -> None:
        append_jsonl(skips, [{"id": s.id, "category": s.category, "level": s.level, "kind": kind,
                              "reason": reason, "image": s.image_path}])
        run[f"skipped_{kind}"] += 1

    batch: list[tuple[Sample, EditPlan, Any, np.ndarray, Any]] = []

    def flush() -> None:
        if not batch:
            return
        edited = inpainter([b[2] for b in batch], [b[3] for b in batch], [b[1].edit_prompt for b in batch],
                           [_key(b[0].category, b[0].id) for b in batch])
        from PIL import Image

        records = []
        for (s, plan, img, mask, mask_field), im in zip(batch, edited):
            # whatever the inpainter did, only the masked region may change
            im = Image.fromarray(paste_unmasked(np.asarray(img), np.asarray(im.convert("RGB").resize(img.size)), mask))
            sub = _safe(s.category or "all")
            ed_path = out / "edited" / sub / f"{_safe(s.id)}.png"
            _save_png(ed_path, im)
            mask_path = out / "masks" / sub / f"{_safe(s.id)}.png"
            _save_png(mask_path, Image.fromarray(mask.astype(np.uint8) * 255, mode="L"))
            records.append(EditRecord(
                id=s.id, question=s.question, answer=s.answer, image=str(Path(s.image_path).resolve())
                if s.image_path else "", edited_image=str(ed_path), edit_prompt=plan.edit_prompt,
                edited_answer=plan.edited_answer, mask=mask_field if mask_field is not None else str(mask_path),
                level=s.level, category=s.category, change=plan.change(), benchmark=s.benchmark,
            ).to_dict())
        append_jsonl(manifest, records)  # after the images: a manifest line always has its files
        run["edited"] += len(records)
        batch.clear()

    it: Any = pending
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(pending, desc="edit", unit="sample")
    for s in it:
        try:
            plan = writer(s)
        except NotCovered as e:
            skip(s, "not_covered", str(e))
            continue
        try:
            image = load_image(s)
        except MissingImageError as e:
            skip(s, "missing_image", str(e))
            continue
        try:
            mask, dil = box_mask(plan.boxes, image.size, _reference_size(s, box_reference_size), margin, margin_px)
        except BoxOutsideImageError as e:
            skip(s, "box_outside_image", str(e))
            continue
        mask_field: Any = [[float(v) for v in b] for b in dil]
        if refiner is not None:  # SAM is prompted with the annotated boxes in the image's pixels
            scaled = [scale_box(b, _reference_size(s, box_reference_size), image.size) for b in plan.boxes]
            mask, refined = refiner.refine(image, scaled, mask)
            if refined:
                mask_field = None  # the mask PNG is the mask
        batch.append((s, plan, image, mask, mask_field))
        if len(batch) >= batch_size:
            flush()
    flush()
    report = edit_report(out)
    report["this_run"] = dict(run)
    write_json(out / "edit_report.json", report)
    return report


def edit_report(out_dir: str | Path) -> dict:
    """Counts over everything written so far: edited and skipped (by kind and by reason), per category."""
    out = Path(out_dir)
    recs, skips = read_jsonl(out / MANIFEST), read_jsonl(out / SKIPS)
    per: dict[str, dict[str, Any]] = defaultdict(lambda: {"edited": 0, "skipped": {k: 0 for k in SKIP_KINDS}})
    for r in recs:
        per[r.get("category") or "all"]["edited"] += 1
    for r in skips:
        counts = per[r.get("category") or "all"]["skipped"]
        counts[r["kind"]] = counts.get(r["kind"], 0) + 1
    by_kind = Counter(r["kind"] for r in skips)
    by_reason = Counter(_reason_class(r["reason"]) for r in skips)
    return {"edited": len(recs), "skipped": len(skips), "skips_by_kind": {k: by_kind.get(k, 0) for k in SKIP_KINDS},
            "skips_by_reason": dict(by_reason.most_common()), "categories": {k: per[k] for k in sorted(per)},
            "manifest": str(out / MANIFEST), "skip_list": str(out / SKIPS)}


def _reason_class(reason: str) -> str:
    # group reasons that differ only in names/paths/numbers ("image not found: /x/1.jpg")
    r = re.sub(r"'[^']*'|\"[^\"]*\"|/\S+|\d+", "_", reason)
    return r[:120]


# ------------------------------------------------------------------------------------------- filter

def filter_manifest(out_dir: str | Path, adapter: Any, batch_size: int = 8, progress: bool = False,
                    log_fn: Callable[[dict], None] | None = None) -> dict:
    """Run the effective-edit filter over the whole manifest; write the kept records and the report."""
    import json

    from vseam.editing.filter import effective_edits, log_report

    out = Path(out_dir)
    records = [EditRecord.from_dict(r) for r in read_jsonl(out / MANIFEST)]
    kept, report = effective_edits(records, adapter, batch_size=batch_size, progress=progress)
    write_text(out / EFFECTIVE, "".join(json.dumps(r.to_dict()) + "\n" for r in kept))
    report["effective_manifest"] = str(out / EFFECTIVE)
    write_json(out / "filter_report.json", report)
    log_report(report, log_fn)
    return report


# -------------------------------------------------------------------------------------------- entry

def read_manifest(path: str | Path, effective: bool = True) -> list[EditRecord]:
    """Edit records from a manifest file, or from a folder (an edit run's ``out_dir`` or the organism's
    root): its ``edits.effective.jsonl`` when ``effective`` and present, else its ``edits.jsonl``."""
    p = Path(path)
    if p.is_dir():
        p = p / EFFECTIVE if effective and (p / EFFECTIVE).exists() else p / MANIFEST
    if not p.exists():
        raise FileNotFoundError(f"no edit manifest at {p}")
    return [EditRecord.from_dict(r) for r in read_jsonl(p)]


def make_writer(e: Any, seed: int = 0) -> Callable[[Sample], EditPlan]:
    from vseam.editing.writers import LLMWriter, RuleWriter

    e = as_config(e, EditConfig)
    vocab = {str(k): list(v) for k, v in (e.vocab or {}).items()}
    rules = RuleWriter(seed=int(seed), vocab=vocab, relation_mask=str(e.relation_mask),
                       prefer_opposites=bool(e.prefer_opposites),
                       strict_vocabulary=bool(e.strict_vocabulary))
    kind = str(e.prompt_writer)
    if kind == "rules":
        return rules
    if kind == "llm":
        model = e.llm_model
        if not model:
            raise ValueError("edit.prompt_writer=llm needs edit.llm_model (a text-generation model id or folder)")
        return LLMWriter.from_pretrained(str(model), fallback=rules)
    raise ValueError(f"edit.prompt_writer must be rules or llm, got {kind!r}")


def organism_records(data_cfg: Any) -> tuple[list[EditRecord], Path]:
    """The organism's exact edit records of the samples ``data_cfg`` names (world built on first use),
    and the manifest they come from."""
    from vseam.data.load import load_samples
    from vseam.world.write import ensure_world

    root = ensure_world(data_cfg)
    keep = {_key(s.category, s.id) for s in load_samples(data_cfg)}
    return [r for r in read_manifest(root, effective=False) if _key(r.category, r.id) in keep], root / MANIFEST


def _organism_edits(cfg: Any, out: Path) -> dict:
    """The organism's exact edits of the configured samples, copied into ``out/edits.jsonl``."""
    import json

    cfg = as_config(cfg)
    recs, source = organism_records(cfg.data)
    root = source.parent
    write_text(out / MANIFEST, "".join(json.dumps(r.to_dict()) + "\n" for r in recs))
    report = {"source": f"organism exact edits ({root / MANIFEST})", "edited": len(recs), "skipped": 0,
              "manifest": str(out / MANIFEST)}
    write_json(out / "edit_report.json", report)
    return report


def run_edit(cfg: Any, *, pipe: Any = None, adapter: Any = None) -> dict:
    """``analyze.py edit``: editing of ``cfg.data`` into ``cfg.out_dir``, then the filter with ``cfg.model``.

    ``pipe`` / ``adapter`` replace the pipeline / model the config names (tests, notebooks).
    """
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    cfg = as_config(cfg)
    validate(cfg, "edit")
    # a folder of another run's settings is refused, so edits made with other settings are never reused
    with run_folder(cfg, "edit") as out:
        return _edit(cfg, out.resolve(), pipe, adapter)


def _edit(cfg: Any, out: Path, pipe: Any, adapter: Any) -> dict:
    from vseam.data.load import load_samples
    from vseam.editing.inpaint import Inpainter, load_inpaint_pipeline

    e = cfg.edit
    fmt = str(cfg.data.format)
    if fmt == "organism":  # exact edits exist already: no diffusion, only the filter
        result = {"out_dir": str(out), "edit": _organism_edits(cfg, out)}
        result["samples"] = result["edit"]["edited"]
        return _filter_step(cfg, e, out, adapter, result)
    if fmt != "gqa":
        raise ValueError(f"edit needs GQA-style annotations with object_positions (data.format=gqa or organism), "
                         f"got data.format={fmt!r}")
    samples = load_samples(cfg.data)
    writer = make_writer(e, seed=int(cfg.seed))
    if pipe is None:
        pipe = load_inpaint_pipeline(str(e.model),
                                     device=torch_device(cfg.trainer.accelerator), dtype=str(e.dtype),
                                     local_files_only=bool(e.local_files_only))
    inpainter = Inpainter(pipe, steps=int(e.steps), guidance=float(e.guidance),
                          negative_prompt=e.negative_prompt or None,
                          seed=int(cfg.seed), resolution=int(e.resolution))
    refiner = None
    if bool(e.sam):
        from vseam.editing.sam import SamRefiner

        refiner = SamRefiner.from_pretrained(str(e.sam_model),
                                             device=torch_device(cfg.trainer.accelerator),
                                             local_files_only=bool(e.local_files_only),
                                             dilate_px=int(e.sam_dilate_px))
    ref = e.box_reference_size
    result = {"out_dir": str(out), "samples": len(samples)}
    result["edit"] = edit_samples(
        samples, out, inpainter, writer, margin=float(e.mask_margin),
        margin_px=int(e.mask_margin_px), box_reference_size=list(ref) if ref else None,
        refiner=refiner, batch_size=int(e.batch_size), progress=bool(e.progress))
    return _filter_step(cfg, e, out, adapter, result)


def edit_counts(report: dict, prefix: str = "edit") -> dict:
    """The editing counts as flat W&B keys: ``edit/edited``, ``edit/skipped/<kind>``, ``edit/<category>/edited``."""
    flat = {f"{prefix}/edited": report.get("edited", 0), f"{prefix}/skipped": report.get("skipped", 0)}
    flat.update({f"{prefix}/skipped/{k}": v for k, v in (report.get("skips_by_kind") or {}).items()})
    for cat, d in (report.get("categories") or {}).items():
        flat[f"{prefix}/{cat}/edited"] = d["edited"]
    return flat


def example_images(out: Path, n: int = 3) -> dict[str, str]:
    """The first ``n`` edits as clean / edited / mask image files (W&B keys ``edit/examples/<i>/...``;
    the mask only when it is a PNG, not boxes)."""
    paths: dict[str, str] = {}
    for i, r in enumerate(read_jsonl(out / MANIFEST)[:n]):
        files = {"clean": r.get("image"), "edited": r.get("edited_image"),
                 "mask": r.get("mask") if isinstance(r.get("mask"), str) else None}
        paths.update({f"edit/examples/{i}/{k}": str(v) for k, v in files.items() if v and Path(str(v)).exists()})
    return paths


def _filter_step(cfg: Any, e: Any, out: Path, adapter: Any, result: dict) -> dict:
    from vseam.utils.tracking import Tracker

    tracker = Tracker(cfg, out, "edit")

    def log_fn(d: dict) -> None:
        tracker.log(d)
        tracker.summary(d)

    try:
        log_fn(edit_counts(result["edit"]))
        tracker.images(example_images(out))
        if bool(e.filter):
            if adapter is None:
                from vseam.models import load_adapter

                adapter = load_adapter(cfg.model, device=torch_device(cfg.trainer.accelerator, cfg.trainer.devices))
            rep = filter_manifest(out, adapter, batch_size=int(e.filter_batch_size),
                                  progress=bool(e.progress), log_fn=log_fn)
            result["filter"] = {"total": rep["total"], "categories": rep["categories"]}
    finally:
        tracker.finish()
    write_json(out / "edit_summary.json", result)
    kept = (result.get("filter") or {}).get("total", {}).get("kept", "-")
    print(f"edit: {result['edit'].get('edited', 0)} edited, {result['edit'].get('skipped', 0)} skipped, "
          f"{kept} kept by the effective-edit filter\nwritten: {out / 'edit_summary.json'}", flush=True)
    return result
