"""The processes of a run: the Lightning Fabric of ``trainer.*`` (one process by default; DDP over
``trainer.devices`` on each of ``trainer.num_nodes`` nodes), and ``Ranks``, this process's place among
them with the one gather every job uses.

Several nodes follow Lightning's environment contract: under ``torchrun`` (``--nnodes``, ``--node-rank``,
a rendezvous address) or SLURM (``srun``, one task per device) the cluster starts the processes and
Fabric reads their ranks from the environment; the same command runs on every node (docs/cluster.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Ranks:
    """This process's rank among ``world_size`` processes, and the launched Fabric whose process group
    gathers and waits (None: one process)."""

    rank: int = 0
    world_size: int = 1
    fabric: Any = None

    @classmethod
    def of(cls, fabric: Any) -> Ranks:
        return cls() if fabric is None else cls(int(fabric.global_rank), int(fabric.world_size), fabric)

    @property
    def zero(self) -> bool:
        return self.rank == 0

    def gather(self, items: list) -> list:
        """Every rank's ``items`` on every rank, concatenated in rank order (``all_gather_object``)."""
        if self.world_size == 1:
            return list(items)
        import torch.distributed as dist

        everything: list = [None] * self.world_size
        dist.all_gather_object(everything, list(items))
        return [x for part in everything for x in part]

    def barrier(self) -> None:
        """Wait until every rank is here (nothing to wait for in one process)."""
        if self.fabric is not None and self.world_size > 1:
            self.fabric.barrier()


def fabric_of(cfg: Any):
    """The Lightning Fabric of ``cfg.trainer``, not launched yet (one process by default; DDP over
    ``trainer.devices`` x ``trainer.num_nodes``). Sets ``trainer.torch_threads``."""
    import torch
    from lightning.fabric import Fabric

    tc = cfg.trainer
    if int(tc.torch_threads) > 0:
        torch.set_num_threads(int(tc.torch_threads))
    return Fabric(accelerator=tc.accelerator, devices=tc.devices, strategy=tc.strategy, num_nodes=int(tc.num_nodes))


def launch(cfg: Any):
    """The launched Lightning Fabric of ``cfg.trainer``: its ranks exist from here on (a launcher that
    starts processes re-runs the command line; under torchrun or SLURM they exist already)."""
    fabric = fabric_of(cfg)
    fabric.launch()
    return fabric


def launch_ranks(cfg: Any):
    """The launched Fabric of ``cfg.trainer`` when it runs several processes that start by running the
    script again (DDP, Lightning's default for several devices, and processes started by torchrun or
    SLURM), else None. train.py's ranks then exist before anything is computed, so its head-score sweep
    shards over them as ``analyze.py heads`` does; the Trainer later finds them (``LOCAL_RANK`` is set)
    and starts no others. Strategies that spawn (``ddp_spawn``) are left to the Trainer: there rank 0
    computes the head scores alone."""
    from lightning.fabric.strategies.launchers.subprocess_script import _SubprocessScriptLauncher

    fabric = fabric_of(cfg)
    if fabric.world_size == 1 or not isinstance(fabric.strategy.launcher, _SubprocessScriptLauncher):
        return None
    fabric.launch()
    return fabric


def model_cfg(cfg: Any, fabric: Any) -> dict:
    """``cfg.model`` as a dict placed on this rank's device (``trainer.accelerator`` as Fabric resolved it:
    one GPU per rank)."""
    from omegaconf import OmegaConf

    mcfg = OmegaConf.to_container(cfg.model, resolve=True)
    mcfg["device"] = str(fabric.device)
    return mcfg
