"""Attribution patching's quality against the exact scores on a trained model (issue 17, section 6), and why
it misses: the signed Spearman and top-10 overlap of the estimate at several points of the all-heads
ablation path (the clean run, the midpoint, and integrated gradients with 2, 4 and 8 midpoints), and, per
head, the exact signed score next to the clean estimate's, with the baseline probabilities' spread (a
saturated model makes single ablations large, non-linear moves).

    python benchmarks/atp_quality.py                                   # the organism llava, 96 samples
    python benchmarks/atp_quality.py --model checkpoints/organism/instructblip
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attribution_speed import exact_grid, world_samples  # noqa: E402

from vseam.attribution.patching import first_order  # noqa: E402
from vseam.attribution.scores import head_scores, spearman, top_k_overlap  # noqa: E402
from vseam.models import load_adapter  # noqa: E402

POINTS = {"clean (alpha 0, the default)": [0.0], "midpoint (alpha 0.5)": [0.5],
          "integrated gradients, 2 points": [0.25, 0.75],
          "integrated gradients, 4 points": [(k + 0.5) / 4 for k in range(4)],
          "integrated gradients, 8 points": [(k + 0.5) / 8 for k in range(8)]}


def path_estimate(adapter, samples, alphas, batch_size=8) -> torch.Tensor:
    """Estimated p_abl [N, L, H]: the log-odds derivative averaged over ``alphas`` (a Riemann sum of the
    all-heads path integral), added to the clean log-odds and mapped back through the sigmoid."""
    out = []
    for i in range(0, len(samples), batch_size):
        enc = adapter.encode(samples[i:i + batch_size]).to(adapter.device)
        with torch.no_grad():
            emb = adapter.embed(enc)
        mask = enc.answer_mask(adapter.vocab_size)
        lo, _, p, _ = first_order(adapter, emb, mask, alpha=0.0)
        d = torch.stack([first_order(adapter, emb, mask, alpha=al)[1] for al in alphas]).mean(0)
        lo, p, d = lo.double()[:, None, None], p.double()[:, None, None], d.double()
        out.append((p + torch.sigmoid(lo + d) - torch.sigmoid(lo)).float())
    return torch.cat(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="checkpoints/organism/llava")
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    arch = "instructblip" if "instructblip" in a.model else "llava"
    adapter = load_adapter({"arch": arch, "path": a.model, "dtype": "float32", "device": "cpu"})
    samples = world_samples(Path(tempfile.mkdtemp(prefix="vseam-atpq-")) / "world", a.samples)
    exact, p, c = exact_grid(adapter, samples, 8, 64)
    s_ex = head_scores(p, c, exact)
    L, H = adapter.num_layers, adapter.num_heads
    k = min(10, L * H)
    print(f"model: {a.model} ({L} x {H} = {L * H} heads), {len(samples)} samples ({s_ex.n_correct} baseline-correct); "
          f"baseline p: 5% {float(p.quantile(0.05)):.4f}, median {float(p.median()):.4f}, 95% {float(p.quantile(0.95)):.4f}; "
          f"two random top-{k} lists share {k * k / (L * H):.1f}")
    results = {}
    for name, alphas in POINTS.items():
        s = head_scores(p, c, path_estimate(adapter, samples, alphas))
        results[name] = s
        print(f"  {name:32} signed Spearman {spearman(s_ex.signed, s.signed):.3f}, top-{k} overlap "
              f"{top_k_overlap(s_ex.signed, s.signed, k)}/{k}; positive Spearman {spearman(s_ex.positive, s.positive):.3f}")
    clean = results["clean (alpha 0, the default)"]
    ratio = (s_ex.signed / clean.signed).flatten()
    print(f"exact signed / clean estimate per head: median {float(ratio.median()):.1f}x, range "
          f"{float(ratio.min()):.1f}x to {float(ratio.max()):.1f}x")
    for l in range(min(L, 8)):
        print(f"  layer {l}: exact " + " ".join(f"{x:7.4f}" for x in s_ex.signed[l].tolist()[:8])
              + " | clean estimate " + " ".join(f"{x:7.4f}" for x in clean.signed[l].tolist()[:8]))
    rho = spearman(s_ex.signed, clean.signed)
    print(f"spearman_default={rho:.3f} top{k}_default={top_k_overlap(s_ex.signed, clean.signed, k)} heads={L * H}")


if __name__ == "__main__":
    sys.exit(main())
