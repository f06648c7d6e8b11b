"""One self-contained HTML report of a results folder: ``python analyze.py report results_dir=DIR``.

The folder is searched (recursively) for the result files the project writes: ``head_scores.json``
(head attribution, with its per-category blocks), ``ablation.json`` (the ablation study),
``overlap.json`` (cross-level overlap), tracing results and the modulation job's ``summary.json``;
each part is shown with the ``config.yaml`` that produced it. Figures are PNG files (also sent to
W&B) embedded as ``data:`` URIs, so the page needs no network and no other file. A section whose
inputs are missing is not drawn empty: it is named, with the command that makes its input, in the
"Missing sections" list at the end.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vseam.attribution.scores import MATRICES
from vseam.study import ablation

log = logging.getLogger(__name__)

# section id -> (title, the command that makes its input)
SECTIONS = {
    "head-scores": ("Per-category head scores (heat maps)", "python analyze.py heads"),
    "head-bars": ("Per-layer and per-head positive / negative scores", "python analyze.py heads"),
    "overlap": ("Cross-level overlap of head sets", "python analyze.py overlap"),
    "ablation": ("Head ablation study", "python analyze.py ablate"),
    "tracing": ("Causal tracing and logit lens", "python analyze.py trace"),
    "modulation": ("Learned modulation", "python train.py"),
    "configs": ("Configurations", "any of the above (each writes config.yaml)"),
}


@dataclass
class Figure:
    key: str  # file stem (also the W&B key)
    caption: str
    png: bytes


@dataclass
class Section:
    id: str
    title: str
    body: list[str] = field(default_factory=list)  # HTML fragments
    figures: list[Figure] = field(default_factory=list)


# ------------------------------------------------------------------------------------- discovery
def find_results(results_dir: str | Path) -> dict[str, list[Path]]:
    """Result files under ``results_dir`` by kind (paths sorted), ignoring progress / log folders."""
    root = Path(results_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"results_dir={root}: no such folder")
    found: dict[str, list[Path]] = {"heads": [], "ablation": [], "overlap": [], "tracing": [], "modulation": []}
    for p in sorted(root.rglob("*.json")):
        rel = p.relative_to(root).parts
        if any(part in ("progress", "logs", "wandb") for part in rel[:-1]):
            continue
        if p.name == "head_scores.json":
            found["heads"].append(p)
        elif p.name == "ablation.json":
            found["ablation"].append(p)
        elif p.name == "overlap.json":
            found["overlap"].append(p)
        elif p.name == "summary.json" and _has_key(p, "methods"):
            found["modulation"].append(p)
        elif p.name == "trace.json" or _schema(p).startswith("vseam.trac"):
            found["tracing"].append(p)
    return found


def _load(p: Path) -> Any:
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}: not valid JSON ({e})") from None


def _has_key(p: Path, key: str) -> bool:
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, OSError):
        return False
    return isinstance(d, dict) and key in d


def _schema(p: Path) -> str:
    try:
        d = json.loads(p.read_text())
    except (json.JSONDecodeError, OSError):
        return ""
    return str(d.get("schema", "")) if isinstance(d, dict) else ""


# ------------------------------------------------------------------------------------- figures
def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _plt().close(fig)
    return buf.getvalue()


def heatmap_grid(d: dict, name: str):
    """One panel per category (and the whole data) of one score matrix of a head_scores.json dict."""
    import numpy as np

    from vseam.attribution.outputs import mark_exact_cells

    plt = _plt()
    blocks = [("all samples", d)] + [(f"{c} ({b.get('level')})", b) for c, b in (d.get("by_category") or {}).items()]
    n = len(blocks)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    L = int(d["num_layers"])
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, (0.16 * L + 1.6) * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.axis("off")
    for ax, (label, b) in zip(axes.flat, blocks):
        m = b.get(name)
        count = {"positive": b.get("n_correct"), "negative": b.get("n_incorrect"), "signed": b.get("n")}[name]
        if m is None:
            ax.text(0.5, 0.5, f"undefined:\n{(b.get('undefined') or {}).get(name, 'no samples')}", ha="center",
                    va="center", fontsize=8, transform=ax.transAxes)
            ax.set_xticks([])
            ax.set_yticks([])
        else:
            a = np.asarray(m, dtype=float)
            if name == "signed":
                lim = float(np.nanmax(np.abs(a))) or 1.0
                im = ax.imshow(a, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto", origin="lower")
            else:
                im = ax.imshow(a, cmap="viridis", aspect="auto", origin="lower")
            exact = [(l, h) for l, row in enumerate(b.get("cell_method") or []) for h, c in enumerate(row)
                     if c == "exact"]
            if exact:  # atp+exact_topk: x marks the exact cells, the others are first-order estimates
                mark_exact_cells(ax, exact, size=20)
            fig.colorbar(im, ax=ax, format="%.0e", fraction=0.046)
            ax.set_xlabel("head", fontsize=7)
            ax.set_ylabel("layer", fontsize=7)
            ax.tick_params(labelsize=6)
        ax.set_title(f"{label}\nN={count}", fontsize=8)
    kind = (f"exact at the {len(d['exact_heads'])} heads marked x, first-order estimate elsewhere"
            if d.get("exact_heads") else d.get("method"))
    fig.suptitle(f"{name} head scores, {d.get('model_id')} ({kind}, {d.get('ablation')} ablation)", fontsize=9)
    fig.tight_layout()
    return fig


def layer_head_bars(d: dict):
    """Per-layer sums and per-head values of the positive and negative scores (negative drawn downwards)."""
    import numpy as np

    plt = _plt()
    L, H = int(d["num_layers"]), int(d["num_heads"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [1, 3]})
    for name, sign, color in (("positive", 1, "#c0392b"), ("negative", -1, "#2471a3")):
        m = d.get(name)
        if m is None:
            continue
        a = np.asarray(m, dtype=float)
        axes[0].bar(np.arange(L), sign * np.nansum(a, 1), color=color, label=name)
        axes[1].bar(np.arange(L * H), sign * a.reshape(-1), color=color, label=name, width=1.0)
    axes[0].set_xlabel("layer")
    axes[0].set_title("per layer: sum over heads", fontsize=9)
    axes[1].set_xlabel(f"head (layer x {H} + head)")
    axes[1].set_title("per head (negative scores drawn downwards)", fontsize=9)
    for ax in axes:
        ax.axhline(0, color="black", lw=0.6)
        ax.legend(fontsize=7)
    fig.suptitle(f"{d.get('model_id')}: mean probability change when the head is ablated", fontsize=9)
    fig.tight_layout()
    return fig


def overlap_figure(ov: dict):
    """Jaccard matrices of the positive and negative top-K sets, one panel per (kind, K)."""
    import numpy as np

    plt = _plt()
    kinds = [kind for kind, block in ov["kinds"].items() if block["per_k"]]  # kinds with at least 2 categories
    ks = ov["ks"]
    fig, axes = plt.subplots(len(kinds), len(ks), figsize=(3.3 * len(ks), 3.1 * len(kinds)), squeeze=False)
    for r, kind in enumerate(kinds):
        for c, entry in enumerate(ov["kinds"][kind]["per_k"]):
            ax = axes[r][c]
            jm = np.array([[np.nan if v is None else v for v in row] for row in entry["jaccard"]], dtype=float)
            im = ax.imshow(jm, vmin=0, vmax=1, cmap="magma")
            labels = [f"{cat} ({lv[0]})" for cat, lv in zip(entry["categories"], entry["levels"])]
            ax.set_xticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=60, fontsize=6, ha="right")
            ax.set_yticks(range(len(labels)))
            ax.set_yticklabels(labels, fontsize=6)
            for i, j in np.ndindex(jm.shape):
                if not np.isnan(jm[i, j]):
                    ax.text(j, i, f"{jm[i, j]:.2f}", ha="center", va="center", fontsize=5,
                            color="white" if jm[i, j] < 0.6 else "black")
            ax.set_title(f"{kind}, K={entry['k']}", fontsize=8)
            fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Jaccard overlap of top-K head sets between categories (level initial in brackets)", fontsize=9)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------- sections
def _label(p: Path, root: Path) -> str:
    rel = p.parent.relative_to(root)
    return "." if str(rel) == "." else str(rel)


def _parts(paths: list[Path], root: Path):
    """(path, loaded JSON, folder label) of each result file."""
    for p in paths:
        yield p, _load(p), _label(p, root)


def _section(sid: str, paths: list[Path], root: Path, part) -> Section:
    """Section ``sid`` with ``part(section, path, loaded JSON, folder label)`` applied to each result file."""
    sec = Section(sid, SECTIONS[sid][0])
    for p, d, where in _parts(paths, root):
        part(sec, p, d, where)
    return sec


def _table(header: list[str], rows: list[list[Any]]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return html.escape("" if v is None else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def heads_sections(paths: list[Path], root: Path) -> tuple[Section, Section]:
    maps, bars = Section("head-scores", SECTIONS["head-scores"][0]), Section("head-bars", SECTIONS["head-bars"][0])
    for _, d, where in _parts(paths, root):
        tag = where.replace("/", "_").replace(".", "root")
        cats = d.get("by_category") or {}
        maps.body.append(f"<h3>{html.escape(where)}: {html.escape(str(d.get('model_id')))} on "
                         f"{html.escape(str(d.get('dataset_id')))}</h3><p>N={d.get('n')} "
                         f"({d.get('n_correct')} baseline-correct, {d.get('n_incorrect')} incorrect), "
                         f"baseline accuracy {_fmt((d.get('baseline') or {}).get('accuracy'))}, "
                         f"{len(cats)} categories.</p>")
        if not cats:
            maps.body.append("<p>This result has no per-category blocks (made before they existed).</p>")
        est = lambda t: " (estimate)" if t.get("method") == "estimate" else ""  # noqa: E731 (atp+exact_topk)
        rows = [[c, b.get("level"), b["n"], b["n_correct"], b["n_incorrect"],
                 ", ".join(f"L{t['layer']}H{t['head']}{est(t)}" for t in (b["top_k"].get("positive") or [])[:5]),
                 ", ".join(f"L{t['layer']}H{t['head']}{est(t)}" for t in (b["top_k"].get("negative") or [])[:5])]
                for c, b in cats.items()]
        if rows:
            maps.body.append(_table(["category", "level", "N", "correct", "incorrect", "top-5 positive",
                                     "top-5 negative"], rows))
        for name in MATRICES:
            maps.figures.append(Figure(f"heads_{tag}_{name}", f"{where}: {name} scores per category",
                                       _png(heatmap_grid(d, name))))
        bars.figures.append(Figure(f"bars_{tag}", f"{where}: per-layer and per-head scores", _png(layer_head_bars(d))))
    return maps, bars


def _overlap_part(sec: Section, p: Path, ov: dict, where: str) -> None:
    sec.body.append(f"<h3>{html.escape(where)}: {html.escape(str(ov.get('model_id')))}</h3>")
    sec.body.append("<ul class='claims'>" + "".join(
        f"<li class='verdict-{html.escape(c['verdict'].replace(' ', '-'))}'><b>{html.escape(c['verdict'])}</b>: "
        f"{html.escape(c['sentence'])}</li>" for c in ov["claims"]) + "</ul>")
    if ov.get("power_note"):
        sec.body.append(f"<p>{html.escape(ov['power_note'])}</p>")
    if ov.get("schema") != "vseam.overlap/2":  # an overlap.json of the earlier tests: its sentences only
        sec.body.append(f"<p>{html.escape(str(p))} was written by an earlier version (schema "
                        f"{html.escape(str(ov.get('schema')))}) whose tests did not answer the claims; "
                        f"run <code>python analyze.py overlap</code> again.</p>")
        return
    rows = [[c["key"], d["k"], d["effect"], "" if d["ci"] is None else f"[{d['ci'][0]:.3f}, {d['ci'][1]:.3f}]",
             d.get("null_mean"), d["p"], d.get("floor"), d.get("p_sample"), d.get("p_regrouping"), d["verdict"]]
            for c in ov["claims"] for d in c["per_k"]]
    if rows:
        sec.body.append(_table(["claim", "K", "effect", "95% CI (bootstrap)", "null mean", "p", "floor",
                                "p sample-level null", "p regrouping", "verdict"], rows))
    kinds = ov["kinds"]
    cats = list(next(iter(kinds.values()))["counts"]) if kinds else []
    sec.body.append(_table(["category"] + [f"{kind}: {b['stratum']} samples (enters?)" for kind, b in kinds.items()],
                           [[c] + [f"{b['counts'][c]} ({'yes' if c in b['categories'] else 'no'})"
                                   for b in kinds.values()] for c in cats]))
    rows = []
    for kind, block in kinds.items():
        for e in block["per_k"]:
            r = e["beyond_random"]
            halves = [v for v in e["split_half"].values() if v is not None]
            rows.append([kind, e["k"], e["within"], e["across"],
                         ", ".join(f"{c} {v:.2f}" for c, v in e["split_half"].items() if v is not None),
                         min(halves) if halves else None, r["p_within"], r["p_across"]])
    if rows:
        sec.body.append(_table(["kind", "K", "within", "across", "split-half Jaccard per category", "lowest",
                                "top heads not random: p within", "p across"], rows))
    sec.figures.append(Figure(f"overlap_{where.replace('/', '_')}", f"{where}: Jaccard matrices",
                              _png(overlap_figure(ov))))


def _ablation_part(sec: Section, p: Path, ab: dict, where: str) -> None:
    sec.body.append(f"<h3>{html.escape(where)}: {html.escape(str(ab['model_id']))}, {ab['ablation']} ablation, "
                    f"heads from {ab['heads_from']}, N={ab['n']}, {ab['random_trials']} random trials</h3>")
    header = ["group", "heads removed", "K", "N", "accuracy", "accuracy drop", "mean prob", "prob drop",
              "vs random sets of K heads"]
    main = {g: s for g, s in ab["groups"].items() if not g.startswith("category/")}
    cats = {g: s for g, s in ab["groups"].items() if g.startswith("category/")}
    sec.body.append(_table(header, _ablation_rows(main)))
    if cats:
        sec.body.append(f"<details><summary>per category ({len(cats)})</summary>"
                        f"{_table(header, _ablation_rows(cats))}</details>")
    if ab.get("skipped_conditions"):
        sec.body.append("<p>Not run: " + html.escape("; ".join(f"{s['name']}: {s['reason']}"
                                                               for s in ab["skipped_conditions"])) + "</p>")
    sec.figures.append(Figure(f"ablation_{where.replace('/', '_')}", f"{where}: drops (random: mean ± std over trials)",
                              _png(ablation.ablation_figure(ab, f"{ab['model_id']}, {ab['ablation']} ablation"))))


def _ablation_rows(groups: dict) -> list[list]:
    rows = []
    for g, s in groups.items():
        if not s.get("n"):
            continue
        rows.append([g, "none", "", s["n"], s["baseline"]["accuracy"], "", s["baseline"]["mean_prob"], "", ""])
        for c in s["conditions"].values():
            if c["kind"] != "random":
                vs = c.get("vs_random")
                rows.append([g, c["kind"], c["k"], s["n"], c["accuracy"], c["accuracy_drop"], c["mean_prob"],
                             c["prob_drop"], "" if not vs else _vs_random(vs)])
        for k, sp in s["random"].items():
            rows.append([g, f"random x {sp['accuracy']['n_trials']}", int(k), s["n"],
                         f"{sp['accuracy']['mean']:.3f} ± {sp['accuracy']['std']:.3f}",
                         f"{sp['accuracy_drop']['mean']:.3f} ± {sp['accuracy_drop']['std']:.3f}", "",
                         f"{sp['prob_drop']['mean']:.3f} ± {sp['prob_drop']['std']:.3f}", ""])
    return rows


def _vs_random(vs: dict) -> str:
    """A top-K condition against its random sets: rank, p and floor by accuracy, and p by probability drop."""
    if "rank" not in vs:  # an ablation.json of before ranks and floors
        return f"{vs['n_random_as_bad']}/{vs['n_trials']} as bad (p={vs['p']:.2g})"
    kind = "every set (exact)" if vs.get("exact") else f"{vs['n_trials']} random sets"
    return (f"rank {vs['rank']} among {kind}: p={vs['p']:.2g} (floor {vs['floor']:.2g}); "
            f"by prob. drop p={vs['prob_drop']['p']:.2g}")


def _tracing_part(sec: Section, p: Path, d: dict, where: str) -> None:
    """Tracing results (``analyze.py trace``: ``trace.json``): its top-level numbers, the logit-lens
    table and every PNG beside it and in ``categories/`` (layer x token maps, group curves, logit lens;
    not the per-pair maps)."""
    sec.body.append(f"<h3>{html.escape(where)}: {html.escape(p.name)}</h3>")
    scalars = [[k, v] for k, v in d.items() if isinstance(v, (int, float, str)) and k != "schema"]
    if scalars:
        sec.body.append(_table(["key", "value"], scalars[:30]))
    lens = p.parent / "logit_lens.txt"
    if lens.exists():
        sec.body.append(f"<pre>{html.escape(lens.read_text())}</pre>")
    for png in sorted(p.parent.glob("*.png")) + sorted(p.parent.glob("categories/*.png")):
        sec.figures.append(Figure(f"tracing_{where.replace('/', '_')}_{png.stem}", f"{where}: {png.name}",
                                  png.read_bytes()))


def _modulation_part(sec: Section, p: Path, d: dict, where: str) -> None:
    sec.body.append(f"<h3>{html.escape(where)}: {html.escape(str(d.get('model')))} on "
                    f"{html.escape(str(d.get('data')))}</h3>")
    table = p.parent / "table.txt"
    if table.exists():
        sec.body.append(f"<pre>{html.escape(table.read_text())}</pre>")
    else:
        rows = [[m, r.get("trainable"), (r.get("val") or {}).get("accuracy"), (r.get("test") or {}).get("accuracy")]
                for m, r in d["methods"].items()]
        sec.body.append(_table(["method", "trainable", "val acc", "test acc"], rows))


def configs_section(files: list[Path], root: Path) -> Section:
    sec = Section("configs", SECTIONS["configs"][0])
    seen = set()
    for p in files:
        cfg = p.parent / "config.yaml"
        if cfg.exists() and cfg not in seen:
            seen.add(cfg)
            sec.body.append(f"<details><summary>{html.escape(_label(p, root))}/config.yaml</summary>"
                            f"<pre>{html.escape(cfg.read_text())}</pre></details>")
    return sec


# ------------------------------------------------------------------------------------- page
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f2f2f2}img{max-width:100%;display:block}figure{margin:1em 0}figcaption{font-size:12px;color:#555}
pre{background:#f7f7f7;padding:.5em;font-size:11px;overflow-x:auto}.verdict-holds b{color:#1e8449}
.verdict-contradicted b{color:#c0392b}.verdict-undecided b{color:#b9770e}.verdict-insufficient-data b{color:#7f8c8d}
nav a{margin-right:1em}"""


def build_report(results_dir: str | Path, title: str | None = None) -> tuple[str, list[Section], list[dict]]:
    """The HTML page of a results folder, its sections (with their figures) and the missing sections
    (``[{"id", "title", "reason"}]``)."""
    root = Path(results_dir)
    found = find_results(root)
    sections: list[Section] = []
    if found["heads"]:
        sections += list(heads_sections(found["heads"], root))
    if found["overlap"]:
        sections.append(_section("overlap", found["overlap"], root, _overlap_part))
    if found["ablation"]:
        sections.append(_section("ablation", found["ablation"], root, _ablation_part))
    if found["tracing"]:
        sections.append(_section("tracing", found["tracing"], root, _tracing_part))
    if found["modulation"]:
        sections.append(_section("modulation", found["modulation"], root, _modulation_part))
    every = [p for kind in found.values() for p in kind]
    cfg = configs_section(every, root)
    if cfg.body:
        sections.append(cfg)
    present = {s.id for s in sections}
    need = {"head-scores": "head_scores.json", "head-bars": "head_scores.json", "overlap": "overlap.json",
            "ablation": "ablation.json", "tracing": "trace.json",
            "modulation": "summary.json of train.py", "configs": "config.yaml beside a result"}
    missing = [{"id": sid, "title": t, "reason": f"no {need[sid]} under {root}; made by `{cmd}`"}
               for sid, (t, cmd) in SECTIONS.items() if sid not in present]
    page = render(sections, missing, title or f"vseam report: {root}")
    return page, sections, missing


def render(sections: list[Section], missing: list[dict], title: str) -> str:
    nav = " ".join(f"<a href='#{s.id}'>{html.escape(s.title)}</a>" for s in sections)
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>"]
    for s in sections:
        parts.append(f"<section id='{s.id}' data-section='{s.id}'><h2>{html.escape(s.title)}</h2>")
        parts += s.body
        for f in s.figures:
            uri = "data:image/png;base64," + base64.b64encode(f.png).decode("ascii")
            parts.append(f"<figure><img src='{uri}' alt='{html.escape(f.caption)}' data-figure='{html.escape(f.key)}'>"
                         f"<figcaption>{html.escape(f.caption)}</figcaption></figure>")
        parts.append("</section>")
    items = "".join(f"<li data-missing='{m['id']}'><b>{html.escape(m['title'])}</b>: {html.escape(m['reason'])}</li>"
                    for m in missing)
    parts.append(f"<section id='missing' data-section='missing'><h2>Missing sections</h2>"
                 f"{'<ul>' + items + '</ul>' if missing else '<p>None: every section has its inputs.</p>'}</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def run_report(cfg: Any) -> dict:
    """``python analyze.py report results_dir=DIR``: write ``report.html`` (and its figures as PNG) into
    ``out_dir``, by default beside the results (``<results_dir>/report``); the same figures go to W&B.
    Returns {"html", "sections", "missing", "figures"}."""
    from vseam.utils.rundir import run_folder
    from vseam.validate import validate

    validate(cfg, "report")
    if cfg.results_dir and not Path(cfg.results_dir).is_dir():  # before a folder is taken for nothing
        raise FileNotFoundError(f"results_dir={cfg.results_dir}: no such folder")
    if cfg.results_dir and not cfg.out_dir:  # the report of a results folder sits beside its results
        cfg.out_dir = str(Path(cfg.results_dir) / "report")
    with run_folder(cfg, "report") as out:
        return _report(cfg, Path(out))


def _report(cfg: Any, out: Path) -> dict:
    from vseam.utils.io import write_bytes, write_text
    from vseam.utils.tracking import log_analysis

    results = Path(cfg.results_dir or out)
    page, sections, missing = build_report(results)
    path = write_text(out / "report.html", page)
    figs = {}
    for s in sections:
        for f in s.figures:
            figs[f.key] = str(write_bytes(out / "figures" / f"{f.key}.png", f.png))
    log_analysis(cfg, out, "report", {"report/sections": len(sections), "report/missing": len(missing),
                                      "report/figures": len(figs)}, figs)
    log.info("report written to %s (%d sections, %d missing)", path, len(sections), len(missing))
    print(f"report: {path} ({len(sections)} sections, {len(figs)} figures; missing: "
          f"{', '.join(m['id'] for m in missing) or 'none'})", flush=True)
    return {"html": str(path), "sections": [s.id for s in sections], "missing": missing, "figures": figs}
