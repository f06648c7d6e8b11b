"""Result files of head attribution: ``head_scores.json`` (small schema), ``head_scores.safetensors``
(the matrices and per-sample values), labelled PNG heatmaps, and a reader for other tools.

``head_scores.json`` keys: ``schema``, ``model_id``, ``arch``, ``num_layers``, ``num_heads``,
``method``, ``ablation``, ``dataset_id``, ``dataset`` (format, categories, files), ``n`` (scored samples), ``n_total``, ``skipped`` (``[{id,
reason}]``), ``n_skipped``, ``baseline`` (``accuracy``, ``mean_prob``), ``n_correct``, ``n_incorrect``,
``positive`` / ``negative`` / ``signed`` (L x H lists, or null when undefined), ``undefined`` (names of
undefined matrices with the reason), ``top_k`` (``k``, ``positive``, ``negative``, ``signed``: lists of
``{layer, head, score}``, null when undefined), ``exact_heads`` (for ``atp+exact_topk``: the heads whose
scores are exact) with ``rescore_top_k``, ``cell_method`` (L x H of exact | estimate), a ``method`` on every
top-K entry, ``top_k_exact`` (the exact heads ranked by their exact scores) and ``estimate`` (the pure
first-order matrices), ``atp_space`` (for atp: prob | logodds), ``atp_alpha`` (for atp: the
strength at which the gradient was taken), ``atp_path`` (for atp: the heads ablated together there),
``answer_definition`` (project | reference: how the answer
probability and correctness were read, ``model.answer_definition``), ``files`` and ``config``.

``by_category`` and ``by_level``: for each category (and semantic level) of the data, the same block
from the same per-sample values (no second pass): ``n``, ``n_correct``, ``n_incorrect``, ``baseline``,
``positive`` / ``negative`` / ``signed``, ``undefined``, ``top_k`` (for ``atp+exact_topk`` also
``exact_heads``, ``cell_method``, ``top_k_exact`` and ``estimate``, as above); a category's block also names
its ``level``. In the safetensors file their matrices are ``category/<name>/<matrix>`` and
``level/<name>/<matrix>``; for ``atp+exact_topk`` it also holds ``exact_cells`` (uint8 L x H) and the pure
estimates ``estimate/<matrix>``, ``category/<name>/estimate/<matrix>``, ``level/<name>/estimate/<matrix>``.
The per-sample values (``prob``, ``correct``, ``ablated``) are stored with each sample's ``ids``,
``categories`` and ``levels`` in the metadata, so the study's permutation tests regroup them
(``load_per_sample``) without a forward pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from vseam.attribution.scores import MATRICES, HeadScores, exact_cells, only_exact, top_k
from vseam.interventions.hooks import HeadShapeError
from vseam.utils.io import BadFileError, save_figure, save_safetensors, write_json

SCHEMA = "vseam.head_scores/1"
UNDEFINED_REASON = {"positive": "no baseline-correct sample", "negative": "no baseline-incorrect sample",
                    "signed": "no scored sample"}


def build_result(scores: HeadScores, *, model_id: str, arch: str, num_layers: int, num_heads: int, method: str,
                 ablation: str, dataset_id: str, n_total: int, skipped: list[dict], prob: torch.Tensor,
                 correct: torch.Tensor, k: int, exact_heads: list[list[int]] | None = None,
                 dataset: dict | None = None, config: dict | None = None) -> dict:
    """The ``head_scores.json`` dictionary (no NaN: undefined matrices are null and named)."""
    n = int(prob.numel())
    result = {
        "schema": SCHEMA,
        "model_id": model_id, "arch": arch, "num_layers": num_layers, "num_heads": num_heads,
        # which weights: a file of another checkpoint is refused where it is used (vseam.models.identity)
        "model_path": scores.meta.get("model_path"), "weights_sha256": scores.meta.get("weights_sha256"),
        # whose heads (language model | vision tower) and the prompt the samples were run with
        "tower": scores.meta.get("tower", "language"), "prompt_template": scores.meta.get("prompt_template"),
        "method": method, "ablation": ablation, "dataset_id": dataset_id, "dataset": dataset,
        "n": n, "n_total": n_total, "n_skipped": len(skipped), "skipped": skipped,
        "sample_keys": scores.meta.get("sample_keys"),  # vseam.data.sample.sample_key of each scored sample
        "baseline": {"accuracy": float(correct.float().mean()) if n else None,
                     "mean_prob": float(prob.float().mean()) if n else None},
        **score_block(scores, k),
        "exact_heads": exact_heads,
        "rescore_top_k": scores.meta.get("rescore_top_k"),
        "config": config,
        **{group: {name: {**sc.meta, "n": sc.n, **score_block(sc, k)} for name, sc in getattr(scores, group).items()}
           for group in GROUPINGS},
    }
    if exact_heads:  # every block, the whole data's and each category's and level's, says which cell is which
        mask = exact_cells(scores, exact_heads)
        mark_exact_and_estimate(result, mask, scores.meta.get("estimate"), k)
        for group in GROUPINGS:
            for name, block in result[group].items():
                mark_exact_and_estimate(block, mask, getattr(scores, group)[name].meta.get("estimate"), k)
    return result


def mark_exact_and_estimate(block: dict, mask: torch.Tensor, estimate: dict | None, k: int) -> None:
    """For ``atp+exact_topk``, in a result block: which cell holds which kind of value (``cell_method``:
    L x H of exact | estimate), the method of every top-K entry, ``top_k_exact`` (the exactly scored heads
    ranked by their exact scores: the honest ranking among them) and ``estimate`` (the pure first-order
    matrices)."""
    block["cell_method"] = cell_method(mask)
    for lst in block["top_k"].values():
        for d in lst if isinstance(lst, list) else []:
            d["method"] = "exact" if mask[d["layer"], d["head"]] else "estimate"
    block["top_k_exact"] = {name: None if block[name] is None else
                            top_k(only_exact(torch.tensor(block[name]), mask), min(k, int(mask.sum())))
                            for name in MATRICES}
    block["estimate"] = estimate


def cell_method(mask: torch.Tensor) -> list[list[str]]:
    """The L x H ``cell_method`` list of an exact-cell mask: "exact" | "estimate" per head."""
    return [["exact" if e else "estimate" for e in row] for row in mask.tolist()]


GROUPINGS = ("by_category", "by_level")  # HeadScores fields (and head_scores.json keys) of per-group blocks


def score_block(scores: HeadScores, k: int) -> dict:
    """Counts, the three matrices (null when undefined, and named in ``undefined``) and the top-K lists."""
    mats = scores.matrices()
    return {"n_correct": scores.n_correct, "n_incorrect": scores.n_incorrect,
            **{name: (None if m is None else m.tolist()) for name, m in mats.items()},
            "undefined": {name: UNDEFINED_REASON[name] for name, m in mats.items() if m is None},
            "top_k": {"k": k, **{name: top_k(m, k) for name, m in mats.items()}}}


def write_results(out_dir: str | Path, result: dict, scores: HeadScores, prob: torch.Tensor, correct: torch.Tensor,
                  ablated: torch.Tensor, ids: list[str], heatmaps: bool = True) -> dict[str, str]:
    """Write JSON, safetensors and heatmaps atomically; return {kind: path} (also stored in the JSON)."""
    out = Path(out_dir)
    files: dict[str, str] = {}
    tensors = {name: m for name, m in scores.matrices().items() if m is not None}
    tensors.update({"prob": prob.float(), "correct": correct.to(torch.uint8), "ablated": ablated.float()})
    for group, prefix in zip(GROUPINGS, ("category", "level")):
        for gname, sc in getattr(scores, group).items():
            tensors.update({f"{prefix}/{gname}/{m}": t for m, t in sc.matrices().items() if t is not None})
    mask = exact_cells(scores)
    if mask is not None:  # atp+exact_topk: which cells are exact, and the pure estimates beside the mixed matrices
        tensors["exact_cells"] = mask.to(torch.uint8)
        for prefix, sc in [("", scores)] + [(f"{p}/{g}/", s) for grp, p in zip(GROUPINGS, ("category", "level"))
                                             for g, s in getattr(scores, grp).items()]:
            tensors.update({f"{prefix}estimate/{m}": torch.tensor(t, dtype=torch.float32)
                            for m, t in (sc.meta.get("estimate") or {}).items() if t is not None})
    meta = {"schema": SCHEMA, "method": result["method"], "ablation": result["ablation"],
            "model_id": str(result["model_id"]), "weights_sha256": str(result.get("weights_sha256") or ""),
            "dataset_id": str(result["dataset_id"]),
            "answer_definition": str(result.get("answer_definition", "project")),
            "ids": json.dumps(ids), "undefined": json.dumps(sorted(result["undefined"]))}
    per_sample = scores.per_sample
    if per_sample is not None and per_sample.categories is not None and list(per_sample.ids) == list(ids):
        # each sample's category and level: the study regroups the per-sample values by them (load_per_sample)
        meta.update(categories=json.dumps(per_sample.categories), levels=json.dumps(per_sample.levels))
    files["safetensors"] = str(save_safetensors(out / "head_scores.safetensors", tensors, metadata=meta))
    if heatmaps:
        for name, m in scores.matrices().items():
            if m is not None:
                fig = heatmap_figure(m, name, result)
                files[f"heatmap_{name}"] = str(save_figure(out / f"heatmap_{name}.png", fig))
                import matplotlib.pyplot as plt

                plt.close(fig)
    files["json"] = str(out / "head_scores.json")
    result["files"] = files
    write_json(out / "head_scores.json", result)
    return files


def load_per_sample(path: str | Path):
    """The per-sample values of a head-attribution result (``head_scores.safetensors`` beside
    ``head_scores.json``): a ``ChunkResult`` with ``ids``, ``prob`` [N], ``correct`` [N], ``ablated`` [N, L, H]
    and each sample's ``categories`` / ``levels``. A file without them (written before they were stored),
    or one that does not match its JSON, is a ``BadFileError`` naming it."""
    from vseam.attribution.sweep import ChunkResult
    from vseam.utils.io import read_safetensors

    path = Path(path)
    js = path / "head_scores.json" if path.is_dir() else path
    st = js.with_suffix(".safetensors")
    again = "run `python analyze.py heads` again to write it"
    if not st.exists():
        raise FileNotFoundError(f"{st} does not exist: the per-sample values of {js} are needed; {again}")
    t, meta = read_safetensors(st, "head scores")
    try:
        ids = json.loads(meta["ids"])
        cats, levels = json.loads(meta["categories"]), json.loads(meta["levels"])
    except KeyError as e:
        raise BadFileError(f"{st} lacks {e} in its metadata (written before each sample's category and level "
                           f"were stored); {again}") from None
    missing = [k for k in ("prob", "correct", "ablated") if k not in t]
    if missing:
        raise BadFileError(f"{st} lacks the tensors {missing}; {again}")
    n = len(ids)
    if t["prob"].shape != (n,) or t["correct"].shape != (n,) or t["ablated"].dim() != 3 or \
            t["ablated"].shape[0] != n or len(cats) != n or len(levels) != n:
        raise BadFileError(f"{st} is inconsistent: {n} ids, {len(cats)} categories, {len(levels)} levels, prob "
                           f"{tuple(t['prob'].shape)}, ablated {tuple(t['ablated'].shape)}")
    if js.exists():
        d = json.loads(js.read_text())
        if d.get("n") != n or str(d.get("model_id")) != meta.get("model_id"):
            raise BadFileError(f"{st} ({n} samples, model {meta.get('model_id')!r}) does not belong to {js} "
                               f"({d.get('n')} samples, model {d.get('model_id')!r}); {again}")
    return ChunkResult(-1, ids, t["prob"].float(), t["correct"].bool(), t["ablated"].float(), [], cats, levels)


def heatmap_figure(matrix: torch.Tensor, name: str, result: dict):
    """A labelled layer x head heat map of one score matrix."""
    import matplotlib

    matrix_np = matrix.detach().float().cpu().numpy()
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    L, H = matrix_np.shape
    fig, ax = plt.subplots(figsize=(max(4.0, 0.22 * H + 2), max(3.0, 0.18 * L + 1.5)))
    if name == "signed":
        lim = float(abs(matrix_np).max()) or 1.0
        im = ax.imshow(matrix_np, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
    else:
        im = ax.imshow(matrix_np, cmap="viridis", aspect="auto", origin="lower")
    over = {"positive": f"{result['n_correct']} baseline-correct samples",
            "negative": f"{result['n_incorrect']} baseline-incorrect samples",
            "signed": f"all {result['n']} samples"}[name]
    kind = (f"exact at the {len(result['exact_heads'])} heads marked x, first-order estimate elsewhere"
            if result.get("exact_heads") else result["method"])
    ax.set_title(f"{name} head score ({kind}; {result['ablation']} ablation)\n"
                 f"{result['model_id']} on {result['dataset_id']}: mean over {over}", fontsize=9)
    if result.get("exact_heads"):
        mark_exact_cells(ax, result["exact_heads"])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_xticks(range(0, H, 1 if H <= 16 else 4))
    ax.set_yticks(range(0, L, 1 if L <= 16 else 4))
    fig.colorbar(im, ax=ax, format="%.1e", label={"positive": "mean max(0, p - p_ablated)",
                                   "negative": "mean max(0, p_ablated - p)",
                                   "signed": "mean (p - p_ablated)"}[name])
    return fig


def mark_exact_cells(ax, heads, size: float = 30) -> None:
    """An x on each exactly scored head (layer, head) of a layer x head heat map: white with a black
    outline, so it shows on every colour of the map."""
    import matplotlib.patheffects as pe

    ax.scatter([h for _, h in heads], [l for l, _ in heads], marker="x", c="white", s=size, linewidths=1.2,
               path_effects=[pe.withStroke(linewidth=2.5, foreground="black")])


CORE_KEYS = ("schema", "model_id", "model", "method", "num_layers", "num_heads", "n_correct", "n_incorrect", *MATRICES,
             *GROUPINGS)


def scores_from_dict(d: dict, where: str = "head scores") -> HeadScores:
    """Validate a ``head_scores.json`` mapping into ``HeadScores``: the shape comes from ``num_layers`` /
    ``num_heads`` (or the matrices), every defined matrix must have it, other keys go to ``meta``."""
    if not isinstance(d, dict):
        raise BadFileError(f"{where}: expected a JSON object, got {type(d).__name__}")
    if d.get("schema", SCHEMA) != SCHEMA:
        raise BadFileError(f"{where}: schema {d.get('schema')!r}, expected {SCHEMA!r}")
    mats = {k: d.get(k) for k in MATRICES}
    if all(v is None for v in mats.values()):
        raise BadFileError(f"{where}: none of {MATRICES} is present")
    parsed = {name: None if v is None else _matrix(v, name, where) for name, v in mats.items()}
    first = next(t for t in parsed.values() if t is not None)
    try:
        L = int(d.get("num_layers", first.shape[0]))
        H = int(d.get("num_heads", first.shape[1]))
    except (TypeError, ValueError):
        raise BadFileError(f"{where}: num_layers / num_heads are not integers") from None
    for name, t in parsed.items():
        if t is not None and tuple(t.shape) != (L, H):
            raise HeadShapeError(f"{where}: matrix {name!r} has shape {tuple(t.shape)}, the file says {(L, H)}")
    model, method = str(d.get("model_id", d.get("model", "")) or ""), str(d.get("method", "") or "")
    groups = {group: {name: scores_from_dict({"num_layers": L, "num_heads": H, "model_id": model, "method": method,
                                              **block}, where=f"{where}: {group}[{name!r}]")
                      for name, block in (d.get(group) or {}).items()} for group in GROUPINGS}
    return HeadScores(parsed["positive"], parsed["negative"], parsed["signed"], int(d.get("n_correct") or 0),
                      int(d.get("n_incorrect") or 0), L, H, model=model, method=method,
                      meta={k: v for k, v in d.items() if k not in CORE_KEYS}, **groups)


def _matrix(value: Any, name: str, where: str) -> torch.Tensor:
    """An L x H matrix of finite numbers, or a ``BadFileError`` saying what is wrong with it."""
    if not isinstance(value, list) or not value or not all(isinstance(r, list) for r in value):
        raise BadFileError(f"{where}: matrix {name!r} is not a list of rows (L x H nested lists)")
    widths = sorted({len(r) for r in value})
    if len(widths) != 1 or widths[0] == 0:
        raise BadFileError(f"{where}: matrix {name!r} is ragged: its {len(value)} rows have {widths} entries")
    bad = [(i, j, x) for i, r in enumerate(value) for j, x in enumerate(r)
           if isinstance(x, bool) or not isinstance(x, (int, float))]
    if bad:
        i, j, x = bad[0]
        raise BadFileError(f"{where}: matrix {name!r} has a non-numeric entry at [{i}][{j}]: {x!r} "
                           f"({len(bad)} in all)")
    t = torch.tensor(value, dtype=torch.float32)
    if not torch.isfinite(t).all():
        raise BadFileError(f"{where}: matrix {name!r} holds {int((~torch.isfinite(t)).sum())} NaN / infinite "
                           f"values; an undefined matrix is null, never NaN")
    return t


def scores_to_dict(scores: HeadScores) -> dict:
    """The ``head_scores.json`` mapping of ``scores`` (``scores_from_dict`` reads it back)."""
    mat = lambda t: None if t is None else t.tolist()  # noqa: E731
    mask = exact_cells(scores)
    return {"schema": SCHEMA, "model_id": scores.model, "method": scores.method, "num_layers": scores.num_layers,
            "num_heads": scores.num_heads, "n_correct": scores.n_correct, "n_incorrect": scores.n_incorrect,
            **{k: mat(m) for k, m in scores.matrices().items()}, **scores.meta,
            **({} if mask is None else {"cell_method": cell_method(mask)}),
            **{group: {name: scores_to_dict(sc) for name, sc in getattr(scores, group).items()}
               for group in GROUPINGS if getattr(scores, group)}}


def load_head_scores(path: str | Path) -> HeadScores:
    """Read a ``head_scores.json`` file (or a folder holding one) written by ``analyze.py heads`` or ``train.py``."""
    path = Path(path)
    if path.is_dir():
        path = path / "head_scores.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (`python analyze.py heads` writes head_scores.json)")
    try:
        d = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BadFileError(f"{path}: not valid JSON (truncated?): {e}") from None
    return scores_from_dict(d, where=str(path))
