"""Causal tracing of clean / edited pairs: patch one run's block outputs into the other, many patches per forward.

For a batch of pairs, the clean and the edited (corrupt) inputs are encoded in one batch (each image
once) and run once, recording every layer's input (``vseam.interventions.replay.clean_run``) and the outputs
of the attention block, the MLP block and the residual stream of every layer (``Read`` at the
``attn_out`` / ``mlp_out`` / ``resid_post`` hook points of the one intervention mechanism). A patch
of layer ``l`` cannot change layers ``< l``, so each patched row starts from the recorded input of
layer ``l`` (``vseam.interventions.replay.run_from_layer``). One row of a forward is one (pair, block, layer,
positions) patch: per row a position mask selects where ``Patch`` writes the other run's values, so
any mix of blocks, positions and pairs shares a forward.

Denoising (default): the base run is the edited input and the source the clean one; noising swaps
them. Effects on the answer (the clean answer's token ids, as in the effective-edit filter): summed
probability and mean logit, raw ``m(patched) - m(base)`` and normalised by ``m(source) - m(base)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import torch

from vseam.config import TraceBlock, TraceConfig, settings_of
from vseam.interventions import Patch, Read, intervene
from vseam.interventions.replay import clean_run, run_from_layer
from vseam.models.base import Encoded, VLMAdapter, answer_stats
from vseam.runtime import RowBatches
from vseam.tracing.positions import layouts

BLOCK_SITES = {"attn": "attn_out", "mlp": "mlp_out", "resid": "resid_post"}  # block (trace.blocks) -> hook point
assert tuple(BLOCK_SITES) == get_args(TraceBlock)


def effects(patched: torch.Tensor, base: float | torch.Tensor, source: float | torch.Tensor,
            min_gap: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """(raw, normalised) effect of a patch: ``patched - base`` and ``(patched - base) / (source - base)``.

    The normalised effect is NaN when ``|source - base| < min_gap`` (no difference to restore).
    """
    base = torch.as_tensor(base, dtype=patched.dtype)
    gap = torch.as_tensor(source, dtype=patched.dtype) - base
    raw = patched - base
    norm = torch.where(gap.abs() < min_gap, torch.full_like(raw, float("nan")), raw / gap)
    return raw, norm


@dataclass
class PairTrace:
    """Everything traced for one pair; arrays over the pair's real positions only (padding dropped)."""

    id: str
    tokens: list[str]  # [T] the prompt's tokens
    roles: list[str]  # [T] image | question | text
    clean: dict  # {"prob", "logit", "correct", "pred"} on the clean input
    corrupt: dict  # the same on the edited input (scored against the clean answer)
    blocks: list[str]
    groups: list[str]
    direction: str
    tokenwise_prob: torch.Tensor | None  # [blocks, L, T] answer probability of each patched run (None: off)
    tokenwise_logit: torch.Tensor | None  # [blocks, L, T] mean answer logit of each patched run
    group_prob: torch.Tensor  # [blocks, L, G]
    group_logit: torch.Tensor  # [blocks, L, G]
    lens_prob: torch.Tensor  # [2, L] logit lens at the last position: answer probability (clean, corrupt)
    lens_rank: torch.Tensor  # [2, L] rank of the gold token (0 = top)
    lens_top: list = field(default_factory=list)  # [2][L] -> [[token, prob], ...] top tokens
    meta: dict = field(default_factory=dict)  # category, level, question, answer, edit

    @property
    def base(self) -> dict:
        return self.corrupt if self.direction == "denoise" else self.clean

    @property
    def source(self) -> dict:
        return self.clean if self.direction == "denoise" else self.corrupt

    def effects(self, kind: str = "tokenwise", metric: str = "prob") -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, normalised) effects of the ``kind`` (tokenwise | group) patches on ``metric`` (prob | logit)."""
        patched = getattr(self, f"{kind}_{metric}")
        if patched is None:
            raise ValueError(f"pair {self.id!r}: token-wise tracing was off")
        return effects(patched, self.base[metric], self.source[metric])


def logit_lens(adapter: VLMAdapter, resid_last: torch.Tensor, answer_mask: torch.Tensor, gold: torch.Tensor,
               top_k: int = 5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each layer's residual stream at the last position [L, B, d] through the final norm and the
    unembedding: (answer probability [L, B], gold rank [L, B], top-k ids [L, B, k], their probs)."""
    logits = adapter.unembed(adapter.norm(resid_last)).float()
    probs = logits.softmax(-1)
    prob = (probs * answer_mask.unsqueeze(0)).sum(-1)
    gold_logit = logits.gather(-1, gold.view(1, -1, 1).expand(logits.shape[0], -1, 1))
    rank = (logits > gold_logit).sum(-1)
    top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
    return prob, rank, top.indices, top.values


class TraceEngine:
    """Token-wise and group tracing plus the logit lens of batches of pairs, as the ``trace`` config group
    (``TraceConfig``; a config node, a mapping of some of its keys, or None: the defaults) says: ``blocks``,
    ``groups``, ``direction``, ``tokenwise``, ``lens_top_k`` and ``rows_per_forward``, the number of patched
    rows in one forward pass (the memory knob; halves itself on out-of-memory: ``vseam.runtime.RowBatches``).
    """

    def __init__(self, adapter: VLMAdapter, settings: Any = None):
        st = settings_of(settings, TraceConfig)
        if not st.blocks:
            raise ValueError("no trace block chosen")
        self.adapter = adapter
        self.blocks, self.groups = list(st.blocks), list(st.groups)
        self.direction, self.tokenwise = st.direction, bool(st.tokenwise)
        self.batches = RowBatches(st.rows_per_forward, "trace.rows_per_forward")
        self.lens_top_k = int(st.lens_top_k)

    @property
    def rows_per_forward(self) -> int:
        """Patched rows per forward now (halved from the setting after an out-of-memory error)."""
        return self.batches.size

    # ------------------------------------------------------------------ recording
    def record(self, enc: Encoded):
        """One pass over ``enc``: the recorded run (layer inputs, logits) and the cache of every block site."""
        a = self.adapter
        with torch.no_grad():
            emb = a.embed(enc)
            sites = sorted(set(BLOCK_SITES.values()))
            with intervene(a, *[Read(site=s) for s in sites]) as cache:
                run = clean_run(a, emb)
        return run, cache

    def patched_metrics(self, run, cache, layer: int, base_rows: torch.Tensor, source_rows: torch.Tensor,
                        block_of_row: Sequence[str], positions: torch.Tensor,
                        answer_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(prob, mean logit) [R] of the base rows ``base_rows`` with the source rows' values of each row's
        block at layer ``layer`` written at ``positions`` (bool [R, T]), in forwards of ``rows_per_forward``."""
        a = self.adapter

        def forward(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            sl = slice(start, stop)
            edits = []
            for b in sorted(set(block_of_row[sl])):
                site = BLOCK_SITES[b]
                sel = torch.tensor([x == b for x in block_of_row[sl]])
                src = cache[site, layer].index_select(0, source_rows[sl].to(cache[site, layer].device))
                edits.append(Patch(layer, src, positions=positions[sl] & sel[:, None], site=site))
            with torch.no_grad():
                out = run_from_layer(a, run, layer, base_rows[sl].to(a.device), *edits)
            p, _, ml = answer_stats(out, answer_mask[sl].to(out.device))
            return p.cpu(), ml.cpu()

        parts = self.batches.run(len(base_rows), forward)
        if not parts:
            return torch.zeros(0), torch.zeros(0)
        return torch.cat([p for p, _ in parts]), torch.cat([m for _, m in parts])

    # ------------------------------------------------------------------ pairs
    def trace_pairs(self, enc: Encoded, questions: Sequence[str], *, keep: Callable[[dict, dict], bool] | None = None,
                    on_progress: Callable[[int], None] | None = None) -> tuple[list[PairTrace], list[tuple[int, dict, dict]]]:
        """Trace the P pairs of ``enc``: rows 0..P-1 are the clean inputs, rows P..2P-1 the edited ones
        (same prompts, so the same positions). ``keep(clean, corrupt)`` decides from the two runs'
        metrics whether a pair is traced (e.g. only effective edits); returns (traces of the kept pairs,
        [(index, clean metrics, edited metrics)] of the others).
        """
        a = self.adapter
        B = enc.batch_size
        if B % 2:
            raise ValueError(f"a batch of pairs has an even number of rows, got {B}")
        P = B // 2
        ids = enc.inputs["input_ids"]
        for p in range(P):
            if not torch.equal(ids[p], ids[P + p]):
                raise ValueError(f"pair {enc.ids[p]!r}: the clean and edited prompts tokenize differently, so their "
                                 f"positions cannot be matched")
        lay = layouts(a, ids[:P], enc.inputs["attention_mask"][:P], list(questions), enc.ids[:P])
        run, cache = self.record(enc)
        amask = enc.answer_mask(a.vocab_size)
        prob, correct, mlogit = answer_stats(run.logits, amask)
        pred = a.token_text(run.logits.argmax(-1).tolist())
        stats = [{"prob": float(prob[i]), "logit": float(mlogit[i]), "correct": bool(correct[i]),
                  "pred": pred[i]} for i in range(B)]
        kept = [p for p in range(P) if keep is None or keep(stats[p], stats[P + p])]
        dropped = [(p, stats[p], stats[P + p]) for p in range(P) if p not in kept]
        if on_progress is not None and dropped:
            on_progress(sum(self.units(len(lay[p].real())) for p, _, _ in dropped))
        L, T = a.num_layers, ids.shape[1]
        base_of = (lambda p: P + p) if self.direction == "denoise" else (lambda p: p)
        source_of = (lambda p: p) if self.direction == "denoise" else (lambda p: P + p)

        # rows: (pair, block, kind, index, positions); the same for every layer
        rows: list[tuple[int, str, str, int, torch.Tensor]] = []
        for p in kept:
            for b in self.blocks:
                if self.tokenwise:
                    for j, t in enumerate(lay[p].real()):
                        m = torch.zeros(T, dtype=torch.bool)
                        m[t] = True
                        rows.append((p, b, "tok", j, m))
                for gi, g in enumerate(self.groups):
                    m = lay[p].group_mask(g)
                    if m.any():
                        rows.append((p, b, "grp", gi, m))
        nan = float("nan")
        tok_p = {p: torch.full((len(self.blocks), L, len(lay[p].real())), nan) for p in kept}
        tok_l = {p: torch.full((len(self.blocks), L, len(lay[p].real())), nan) for p in kept}
        grp_p = {p: torch.full((len(self.blocks), L, len(self.groups)), nan) for p in kept}
        grp_l = {p: torch.full((len(self.blocks), L, len(self.groups)), nan) for p in kept}
        if rows:
            base_rows = torch.tensor([base_of(r[0]) for r in rows])
            source_rows = torch.tensor([source_of(r[0]) for r in rows])
            block_of_row = [r[1] for r in rows]
            positions = torch.stack([r[4] for r in rows])
            row_amask = amask.index_select(0, base_rows.to(amask.device))
            bi = {b: i for i, b in enumerate(self.blocks)}
            for l in range(L):
                pr, lg = self.patched_metrics(run, cache, l, base_rows, source_rows, block_of_row, positions, row_amask)
                for (p, b, kind, j, _), vp, vl in zip(rows, pr.tolist(), lg.tolist()):
                    (tok_p if kind == "tok" else grp_p)[p][bi[b], l, j] = vp
                    (tok_l if kind == "tok" else grp_l)[p][bi[b], l, j] = vl
                if on_progress is not None:
                    on_progress(len(rows) * (L - l))

        # logit lens at the last position, both inputs
        resid_last = cache.stack("resid_post")[:, :, -1]  # [L, B, d]
        with torch.no_grad():
            lp, lr, ti, tv = logit_lens(a, resid_last, amask, enc.target, self.lens_top_k)
        out = []
        for p in kept:
            real = lay[p].real()
            top = [[[[text, round(float(tv[l, i, k]), 6)] for k, text in enumerate(a.token_text(ti[l, i].tolist()))]
                    for l in range(L)] for i in (p, P + p)]
            out.append(PairTrace(
                id=enc.ids[p], tokens=[lay[p].tokens[t] for t in real], roles=[lay[p].roles[t] for t in real],
                clean=stats[p], corrupt=stats[P + p], blocks=list(self.blocks), groups=list(self.groups),
                direction=self.direction, tokenwise_prob=tok_p[p] if self.tokenwise else None,
                tokenwise_logit=tok_l[p] if self.tokenwise else None, group_prob=grp_p[p], group_logit=grp_l[p],
                lens_prob=torch.stack([lp[:, p], lp[:, P + p]]).float().cpu(),
                lens_rank=torch.stack([lr[:, p], lr[:, P + p]]).cpu(), lens_top=top))
        return out, dropped

    def units(self, n_real_tokens: int) -> int:
        """Progress units (row x layer passes) of one pair with ``n_real_tokens`` prompt tokens."""
        L = self.adapter.num_layers
        per_layer = len(self.blocks) * ((n_real_tokens if self.tokenwise else 0) + len(self.groups))
        return per_layer * L * (L + 1) // 2
