"""The runtime every long job shares: chunked work that resumes (a progress fingerprint with the weights'
hash), sharded over ranks across processes and nodes and gathered again, the Lightning Fabric launch, the
progress bar, and row batches that halve themselves on out-of-memory. Jobs (``attribution``, ``study``,
``tracing``, ``modulation``) build on it; it knows none of them."""

from vseam.runtime.batching import RowBatches, is_oom
from vseam.runtime.chunks import (
    Chunks,
    ProgressMismatchError,
    Runtime,
    chunk_bounds,
    fingerprint,
    fresh_progress,
    model_fingerprint,
    rank_chunks,
    read_chunk,
)
from vseam.runtime.launch import Ranks, fabric_of, launch, launch_ranks, model_cfg
from vseam.runtime.progress import Progress

__all__ = ["Chunks", "Runtime", "ProgressMismatchError", "chunk_bounds", "fingerprint", "fresh_progress", "model_fingerprint",
           "rank_chunks", "read_chunk", "Ranks", "fabric_of", "launch", "launch_ranks", "model_cfg", "Progress",
           "RowBatches", "is_oom"]
