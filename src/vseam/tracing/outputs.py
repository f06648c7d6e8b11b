"""Averages over traced pairs, the result files and the figures of ``analyze.py trace``.

The averaged token-wise map is drawn on a common layout of the prompt: the template's tokens before
the question (with the image tokens, one slot each), the question as three slots (its first token,
the mean of its middle tokens, its last token) and the template's tokens after it. Pairs whose
template tokens differ from the most common layout are left out of that average and counted.
Averages are means over pairs with the standard error of the mean (NaN values, e.g. a normalised
effect with nothing to restore, are left out and counted per cell).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import torch

from vseam.tracing.engine import PairTrace

METRICS = ("prob_norm", "prob_raw", "logit_norm", "logit_raw")
Q_SLOTS = ("question[first]", "question[mid]", "question[last]")


def mean_se(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, standard error and count over dim 0, ignoring NaN."""
    ok = ~torch.isnan(x)
    n = ok.sum(0)
    xs = torch.where(ok, x, torch.zeros_like(x))
    mean = xs.sum(0) / n.clamp(min=1)
    var = (torch.where(ok, x - mean, torch.zeros_like(x)) ** 2).sum(0) / (n - 1).clamp(min=1)
    se = (var / n.clamp(min=1)).sqrt()
    nan = torch.full_like(mean, float("nan"))
    return torch.where(n > 0, mean, nan), torch.where(n > 1, se, nan), n


def pair_effects(pair: PairTrace, kind: str) -> dict[str, torch.Tensor]:
    """{metric: array} of one pair's ``kind`` (tokenwise | group) effects, for every name in METRICS."""
    out = {}
    for m in ("prob", "logit"):
        raw, norm = pair.effects(kind, m)
        out[f"{m}_raw"], out[f"{m}_norm"] = raw, norm
    return out


def _split(pair: PairTrace) -> tuple[list[int], list[int], list[int]]:
    q = [i for i, r in enumerate(pair.roles) if r == "question"]
    pre = list(range(q[0]))
    post = list(range(q[-1] + 1, len(pair.roles)))
    return pre, q, post


def common_layout(pairs: Sequence[PairTrace]) -> tuple[list[str], list[str], list[PairTrace], bool]:
    """(slot labels, slot roles, the pairs that fit, whether the question is kept token by token) of the
    most common template layout. The question keeps its tokens when every fitting pair has the same
    number of them (a question token's label is ``*`` where the pairs' tokens differ), else it is
    collapsed to three slots (``Q_SLOTS``)."""
    keys = []
    for p in pairs:
        pre, _, post = _split(p)
        keys.append((tuple(p.tokens[i] for i in pre), tuple(p.tokens[i] for i in post)))
    if not keys:
        return [], [], [], False
    (pre_tok, post_tok), _ = Counter(keys).most_common(1)[0]
    fit = [p for p, k in zip(pairs, keys) if k == (pre_tok, post_tok)]
    ref = fit[0]
    pre, q, post = _split(ref)
    full = len({len(_split(p)[1]) for p in fit}) == 1
    if full:
        qtok = [{p.tokens[_split(p)[1][j]] for p in fit} for j in range(len(q))]
        qlabels = [next(iter(t)) if len(t) == 1 else "*" for t in qtok]
    else:
        qlabels = list(Q_SLOTS)
    labels = list(pre_tok) + qlabels + list(post_tok)
    roles = [ref.roles[i] for i in pre] + ["question"] * len(qlabels) + [ref.roles[i] for i in post]
    return labels, roles, fit, full


def to_layout(x: torch.Tensor, pair: PairTrace, full: bool = False) -> torch.Tensor:
    """A pair's [..., T] array on the common layout [..., S] (the question collapsed to three slots
    unless ``full``)."""
    if full:
        return x
    pre, q, post = _split(pair)
    mid = q[1:-1]
    nan = torch.full_like(x[..., :1], float("nan"))
    qs = [x[..., q[0]:q[0] + 1], x[..., mid].mean(-1, keepdim=True) if mid else nan, x[..., q[-1]:q[-1] + 1]]
    return torch.cat([x[..., pre], *qs, x[..., post]], -1)


def tokenwise_average(pairs: Sequence[PairTrace], arrays: dict, prefix: str) -> dict:
    """The mean token-wise maps of ``pairs`` on their common layout (JSON part; arrays under ``prefix``)."""
    labels, roles, fit, full = common_layout(pairs)
    out = {"labels": labels, "roles": roles, "n_pairs": len(fit), "n_left_out": len(pairs) - len(fit),
           "question": "tokens" if full else "first/mid/last", "metrics": {}}
    for m in METRICS:
        x = torch.stack([to_layout(pair_effects(p, "tokenwise")[m], p, full) for p in fit])
        mean, se, _ = mean_se(x)
        arrays[f"{prefix}.{m}"], arrays[f"{prefix}.{m}.se"] = mean, se
        out["metrics"][m] = {b: {"mean": mean[bi].tolist(), "se": se[bi].tolist()} for bi, b in enumerate(fit[0].blocks)}
    return out


def aggregate(pairs: Sequence[PairTrace], num_layers: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON summary of the averages, arrays for the safetensors file) over ``pairs``."""
    arrays: dict[str, torch.Tensor] = {}
    summary: dict = {"n_pairs": len(pairs)}
    if not pairs:
        return summary, arrays
    ref = pairs[0]
    # groups: [N, blocks, L, G]
    grp = {m: torch.stack([pair_effects(p, "group")[m] for p in pairs]) for m in METRICS}
    summary["groups"] = {}
    for m, x in grp.items():
        mean, se, n = mean_se(x)
        arrays[f"pairs.groups.{m}"] = x
        arrays[f"average.groups.{m}"], arrays[f"average.groups.{m}.se"] = mean, se
        summary["groups"][m] = {b: {g: {"mean": mean[bi, :, gi].tolist(), "se": se[bi, :, gi].tolist(),
                                        "n": n[bi, :, gi].tolist()}
                                    for gi, g in enumerate(ref.groups)} for bi, b in enumerate(ref.blocks)}
    # token-wise on the common layout: [N', blocks, L, S]
    if ref.tokenwise_prob is not None:
        summary["tokenwise"] = tokenwise_average(pairs, arrays, "average.tokenwise")
        cats = sorted({str(p.meta.get("category")) for p in pairs})
        summary["tokenwise_by_category"] = {
            c: tokenwise_average([p for p in pairs if str(p.meta.get("category")) == c], arrays,
                                 f"category.{c}.tokenwise") for c in cats}
        for i, p in enumerate(pairs):
            for m, x in pair_effects(p, "tokenwise").items():
                arrays[f"pair.{i}.tokenwise.{m}"] = x
    # logit lens: [N, 2, L]
    lp = torch.stack([p.lens_prob for p in pairs])
    lr = torch.stack([p.lens_rank for p in pairs]).float()
    arrays["pairs.lens_prob"], arrays["pairs.lens_rank"] = lp, lr.long()
    lens = {}
    for k, name in enumerate(("clean", "edited")):
        pm, ps, _ = mean_se(lp[:, k])
        rm, rs, _ = mean_se(lr[:, k])
        top1 = [Counter(p.lens_top[k][l][0][0] for p in pairs).most_common(1)[0] for l in range(num_layers)]
        lens[name] = {"prob_mean": pm.tolist(), "prob_se": ps.tolist(), "rank_mean": rm.tolist(),
                      "rank_se": rs.tolist(), "rank_median": lr[:, k].median(0).values.tolist(),
                      "top1": [{"token": t, "share": c / len(pairs)} for t, c in top1]}
    summary["logit_lens"] = lens
    return summary, arrays


def lens_table(summary: dict, num_layers: int) -> tuple[list[str], list[list]]:
    """The logit-lens table: one row per layer (columns, rows)."""
    cols = ["layer", "clean prob", "clean rank (mean)", "clean top-1 (share)", "edited prob", "edited rank (mean)",
            "edited top-1 (share)"]
    lens = summary["logit_lens"]
    rows = []
    for l in range(num_layers):
        row = [l]
        for name in ("clean", "edited"):
            d = lens[name]
            row += [round(d["prob_mean"][l], 4), round(d["rank_mean"][l], 2),
                    f"{d['top1'][l]['token']} ({d['top1'][l]['share']:.2f})"]
        rows.append(row)
    return cols, rows


def format_table(cols: list[str], rows: list[list]) -> str:
    w = [max(len(str(c)), *(len(str(r[i])) for r in rows)) for i, c in enumerate(cols)]

    def line(r):
        return "  ".join(str(v).rjust(w[i]) for i, v in enumerate(r))

    return "\n".join([line(cols), "-" * (sum(w) + 2 * (len(w) - 1)), *map(line, rows)]) + "\n"


# ------------------------------------------------------------------------------------------- figures

def _visual_name(arch: str) -> str:
    return "query tokens" if arch == "instructblip" else "image tokens"


def _xticks(ax, labels: Sequence[str], roles: Sequence[str], arch: str) -> None:
    """Tick every token by its text, except the image tokens: one labelled band."""
    img = [i for i, r in enumerate(roles) if r == "image"]
    ticks = [i for i, r in enumerate(roles) if r != "image"]
    ax.set_xticks(ticks)
    ax.set_xticklabels([repr(labels[i])[1:-1].replace("▁", "_") for i in ticks], rotation=90, fontsize=7)
    if img:
        lo, hi = min(img) - 0.5, max(img) + 0.5
        ax.axvspan(lo, hi, ymin=0, ymax=1, fill=False, edgecolor="0.35", lw=1.0, ls="--")
        ax.annotate(f"{_visual_name(arch)} ({len(img)})", xy=((lo + hi) / 2, 1.0), xycoords=("data", "axes fraction"),
                    ha="center", va="bottom", fontsize=7)


def heatmap_figure(arrays: torch.Tensor, blocks: Sequence[str], labels: Sequence[str], roles: Sequence[str],
                   *, title: str, cbar_label: str, arch: str):
    """One panel per block: layer (y) x token (x) of ``arrays`` [blocks, L, S]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(blocks)
    S = arrays.shape[-1]
    fig, axes = plt.subplots(n, 1, figsize=(max(6, 0.28 * S + 2), 1.6 + 0.35 * arrays.shape[1] * n + 0.9 * n),
                             squeeze=False)
    finite = arrays[~torch.isnan(arrays)]
    vmax = float(finite.abs().max()) if finite.numel() else 1.0
    vmax = max(vmax, 1e-6)
    for ax, b, a in zip(axes[:, 0], blocks, arrays):
        im = ax.imshow(a.numpy(), aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, origin="lower",
                       interpolation="nearest")
        ax.set_ylabel("layer")
        ax.set_yticks(range(a.shape[0]))
        ax.set_title({"attn": "attention block output", "mlp": "MLP block output",
                      "resid": "residual stream (layer output)"}.get(b, b), fontsize=9, pad=12)
        _xticks(ax, labels, roles, arch)
        cb = fig.colorbar(im, ax=ax, fraction=0.03, pad=0.01)
        cb.set_label(cbar_label, fontsize=7)
    axes[-1, 0].set_xlabel("token position")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def group_figure(mean: torch.Tensor, se: torch.Tensor, blocks: Sequence[str], groups: Sequence[str], *,
                 title: str, ylabel: str, arch: str):
    """One panel per block: the effect of patching each group over layers, +- one standard error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    L = mean.shape[1]
    fig, axes = plt.subplots(1, len(blocks), figsize=(3.6 * len(blocks), 3.2), squeeze=False, sharey=True)
    names = {"image": _visual_name(arch), "question": "question tokens", "last": "last token"}
    for ax, b, m, s in zip(axes[0], blocks, mean, se):
        for gi, g in enumerate(groups):
            y, e = m[:, gi].numpy(), torch.nan_to_num(s[:, gi]).numpy()
            ax.plot(range(L), y, marker="o", label=names[g])
            ax.fill_between(range(L), y - e, y + e, alpha=0.2)
        ax.set_title({"attn": "attention block", "mlp": "MLP block", "resid": "residual stream"}.get(b, b), fontsize=9)
        ax.set_xlabel("layer")
        ax.set_xticks(range(L))
        ax.axhline(0, color="grey", lw=0.5)
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def lens_figure(summary: dict, num_layers: int, *, title: str):
    """The gold token's rank (left, log scale) and the answer probability (right) by layer, clean and edited."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lens = summary["logit_lens"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(8, 3.2))
    x = list(range(num_layers))
    for name in ("clean", "edited"):
        d = lens[name]
        r = torch.tensor(d["rank_mean"]) + 1
        a1.errorbar(x, r.tolist(), yerr=torch.nan_to_num(torch.tensor(d["rank_se"])).tolist(), marker="o", label=name,
                    capsize=2)
        a2.errorbar(x, d["prob_mean"], yerr=torch.nan_to_num(torch.tensor(d["prob_se"])).tolist(), marker="o",
                    label=name, capsize=2)
    a1.set_yscale("log")
    a1.set_ylabel("rank of the gold token + 1 (mean)")
    a2.set_ylabel("answer probability (mean)")
    for a in (a1, a2):
        a.set_xlabel("layer (residual stream after it)")
        a.set_xticks(x)
        a.grid(alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def write_figures(out: Path, pairs: Sequence[PairTrace], summary: dict, arrays: dict, *, arch: str, model: str,
                  num_layers: int, plot_pairs: int = 2) -> dict[str, str]:
    """Every PNG of a trace run; returns {name: path}."""
    from matplotlib import pyplot as plt

    from vseam.utils.io import save_figure

    files: dict[str, str] = {}
    if not pairs:
        return files
    ref = pairs[0]
    d = ref.direction
    what = "clean into edited (denoising)" if d == "denoise" else "edited into clean (noising)"
    n = len(pairs)

    def save(name: str, fig) -> None:
        files[name] = str(save_figure(out / f"{name}.png", fig))
        plt.close(fig)

    for m, unit in (("prob", "answer probability"), ("logit", "mean answer logit")):
        if "tokenwise" in summary:
            tw = summary["tokenwise"]
            save(f"heatmap_{m}", heatmap_figure(
                arrays[f"average.tokenwise.{m}_norm"], ref.blocks, tw["labels"], tw["roles"], arch=arch,
                cbar_label=f"normalised effect ({m})",
                title=f"{model}: patching {what}, one position at a time\nnormalised effect on the {unit}, "
                      f"mean of {tw['n_pairs']} pairs"))
            if m == "prob":
                for c, tc in summary.get("tokenwise_by_category", {}).items():
                    save(f"categories/heatmap_{c}", heatmap_figure(
                        arrays[f"category.{c}.tokenwise.prob_norm"], ref.blocks, tc["labels"], tc["roles"], arch=arch,
                        cbar_label="normalised effect (prob)",
                        title=f"{model}, {c}: patching {what}, one position at a time\nnormalised effect on the "
                              f"answer probability, mean of {tc['n_pairs']} pairs (* = the pairs' tokens differ)"))
        save(f"groups_{m}", group_figure(
            arrays[f"average.groups.{m}_norm"], arrays[f"average.groups.{m}_norm.se"], ref.blocks, ref.groups, arch=arch,
            ylabel=f"normalised effect on {unit}", title=f"{model}: patching groups of positions, {what} ({n} pairs)"))
    save("logit_lens", lens_figure(summary, num_layers, title=f"{model}: logit lens at the last position ({n} pairs)"))
    if ref.tokenwise_prob is not None:
        for i, p in enumerate(pairs[:max(0, int(plot_pairs))]):
            raw, norm = p.effects("tokenwise", "prob")
            save(f"pairs/heatmap_{i}", heatmap_figure(
                norm, p.blocks, p.tokens, p.roles, arch=arch, cbar_label="normalised effect (prob)",
                title=f"{p.id}: {p.meta.get('question', '')!r}, {p.meta.get('edit', '')}\nclean p={p.clean['prob']:.3f}, "
                      f"edited p={p.corrupt['prob']:.3f}; normalised effect on the answer probability"))
    return files
