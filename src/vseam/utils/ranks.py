"""Which process of a distributed run this is: the one ``is_rank_zero`` of the project."""

from __future__ import annotations

import os

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # torchrun / Lightning's launchers; srun


def is_rank_zero() -> bool:
    """True in the launching process and on global rank 0, False on every other rank.

    Both sources are asked: the launchers' environment variables (``RANK`` / ``LOCAL_RANK`` /
    ``NODE_RANK``, set by torchrun and Lightning's launchers before any strategy exists, so a DDP child
    knows it is not rank 0 from its first line; SLURM's ``SLURM_PROCID`` for a task ``srun`` started), and Lightning's ``rank_zero_only.rank``, which a
    Trainer or Fabric strategy sets to the global rank once it is set up.
    """
    from lightning_utilities.core.rank_zero import rank_zero_only

    if any(os.environ.get(k, "0") != "0" for k in RANK_VARIABLES):
        return False
    return getattr(rank_zero_only, "rank", 0) == 0
