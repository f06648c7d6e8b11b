"""Resumable work in chunks, sharded over ranks: what every long job (the head sweep, the ablation study,
tracing, train.py's head scores) does with its items.

Items are cut into fixed chunks of ``chunk_size`` (in dataset order). Chunk ``c`` belongs to rank
``c % world_size``; each finished chunk is saved atomically under the progress folder with a fingerprint
of everything that shapes its numbers (the job's settings, the item ids, the model's settings and the
sha256 of its weights: ``model_fingerprint``). A restarted run with the same configuration loads finished
chunks and computes only the rest, so it ends bit-identical to an uninterrupted run; and because a chunk
is computed the same way whatever rank holds it, any number of ranks (processes, nodes) gives the same
numbers as one. A chunk saved under another fingerprint is refused (``ProgressMismatchError``), never
mixed in; a damaged one is named (``BadFileError``).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from vseam.runtime.launch import Ranks
from vseam.utils.io import BadFileError, read_safetensors


class ProgressMismatchError(RuntimeError):
    """Saved progress was made with a different configuration than this run's."""


class Chunk(Protocol):
    """What a job's chunk result offers the loop: its chunk index and a save under a fingerprint (its
    class reads it back with ``load(path, fingerprint)``)."""

    index: int

    def save(self, path: Path, fingerprint: str) -> None: ...


C = TypeVar("C", bound=Chunk)


def fingerprint(**parts) -> str:
    """A short hash of the JSON of ``parts`` (config values, item ids): what a chunk's numbers depend on."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def model_fingerprint(mcfg: Any, adapter: Any) -> dict:
    """What the per-item numbers depend on besides a job's own settings and the item ids: the model
    settings and the weights themselves (``vseam.models.identity.weights_sha256``), so progress saved
    with another checkpoint in the same folder, even one of the same path and shape, is not reused."""
    from vseam.models.identity import weights_sha256

    fp = {"model": {k: mcfg.get(k) for k in ("arch", "path", "dtype", "seed", "attn_implementation",
                                             "prompt_template")},
          "weights_sha256": weights_sha256(adapter)}
    definition = mcfg.get("answer_definition") or "project"
    if definition != "project":  # named only when not the default: progress saved before the key still matches
        fp["answer_definition"] = definition
    return fp


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of ``n`` items cut into chunks of ``chunk_size`` (the last one shorter)."""
    return [(i, min(n, i + chunk_size)) for i in range(0, n, chunk_size)]


def rank_chunks(n_chunks: int, rank: int, world_size: int) -> list[int]:
    """The chunks rank ``rank`` of ``world_size`` owns: chunk c belongs to rank c % world_size."""
    return [c for c in range(n_chunks) if c % world_size == rank]


def read_chunk(path: Path, fingerprint: str, resume_key: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Tensors and metadata of a saved progress chunk: ``BadFileError`` naming it when it is damaged,
    ``ProgressMismatchError`` when another configuration wrote it (``resume_key`` is the config key
    that discards saved progress)."""
    try:
        t, meta = read_safetensors(path, "progress chunk")
    except BadFileError as e:
        raise BadFileError(f"{e}; delete it to recompute that chunk, or {resume_key}=false to discard all "
                           f"saved progress") from None
    if meta.get("fingerprint") != fingerprint:
        raise ProgressMismatchError(
            f"{path} was written by a run with a different configuration, sample set or model weights; use a fresh "
            f"out_dir, or {resume_key}=false to discard the saved progress")
    return t, meta


def fresh_progress(progress_dir: Path, resume: bool) -> None:
    """With ``resume`` off (``attribution.resume``, ``study.resume``, ``trace.resume``), discard the saved
    chunks: a fresh start was asked for. Rank 0 calls it, before a barrier."""
    if not resume and progress_dir.exists():
        shutil.rmtree(progress_dir)


class Chunks:
    """``n`` items in chunks of ``chunk_size``, this rank's share of them, and where each is saved
    (``<progress_dir>/<tag>-chunk<c>.safetensors``; nothing is saved without a progress folder)."""

    def __init__(self, n: int, chunk_size: int, *, fingerprint: str, tag: str,
                 progress_dir: str | Path | None = None, ranks: Ranks | None = None):
        self.chunk_size = max(1, int(chunk_size))
        self.bounds = chunk_bounds(int(n), self.chunk_size)
        self.fingerprint, self.tag = fingerprint, tag
        self.progress_dir = Path(progress_dir) if progress_dir else None
        self.ranks = ranks or Ranks()

    def mine(self) -> list[int]:
        """This rank's chunks, in order."""
        return rank_chunks(len(self.bounds), self.ranks.rank, self.ranks.world_size)

    def size(self, c: int) -> int:
        lo, hi = self.bounds[c]
        return hi - lo

    def path(self, c: int) -> Path | None:
        return None if self.progress_dir is None else self.progress_dir / f"{self.tag}-chunk{c:05d}.safetensors"

    def run(self, compute: Callable[[int], C], load: Callable[[Path, str], C], *,
            units: Callable[[int], int] | None = None, on_progress: Callable[[int], None] | None = None,
            on_chunk: Callable[[C], None] | None = None) -> list[C]:
        """This rank's chunk results, in chunk order: ``load(path, fingerprint)`` of a saved chunk, else
        ``compute(c)``, then saved. ``on_progress(units(c))`` for a loaded chunk (a computed one reports
        its own progress); ``on_chunk(result)`` after each newly computed chunk is saved (W&B progress;
        tests raise there to simulate a kill)."""
        results = []
        for c in self.mine():
            path = self.path(c)
            if path is not None and path.exists():
                results.append(load(path, self.fingerprint))
                if on_progress is not None and units is not None:
                    on_progress(units(c))
                continue
            res = compute(c)
            if path is not None:
                res.save(path, self.fingerprint)
            results.append(res)
            if on_chunk is not None:
                on_chunk(res)
        return results

    def gather(self, mine: list[C]) -> list[C]:
        """Every rank's chunk results on every rank, in chunk order (per-item values: no floating-point
        reduction order enters, so what is computed from them is the same for any number of ranks)."""
        everything = sorted(self.ranks.gather(mine), key=lambda r: r.index)
        idx = [r.index for r in everything]
        if len(set(idx)) != len(idx):
            raise RuntimeError(f"chunks computed twice: {idx}")
        return everything


@dataclass(frozen=True)
class Runtime:
    """How a job's chunks run: where finished chunks are kept (``progress_dir``; None: nowhere, nothing
    resumes), what else their numbers depend on (``parts``: ``model_fingerprint``, the model's settings
    and weights), and the ranks they are sharded over."""

    progress_dir: Path | None = None
    parts: dict = field(default_factory=dict)
    ranks: Ranks = field(default_factory=Ranks)

    def chunks(self, n: int, size: int, tag: str, /, **settings: Any) -> Chunks:
        """``n`` items in chunks of ``size``, saved as ``<tag>-chunk<c>``, fingerprinted by the job's
        ``settings`` (its keys, the item ids) and this runtime's ``parts``."""
        return Chunks(n, size, fingerprint=fingerprint(**settings, **self.parts), tag=tag,
                      progress_dir=self.progress_dir, ranks=self.ranks)
