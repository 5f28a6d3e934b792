"""Several processes for one stage, with PyTorch's own engine (torchrun, torch.distributed, DDP).
(torch is imported where it is used: a stage that finds nothing to do must not pay for it.)

A stage whose config asks for `ddp_processes: N > 1` re-launches its own command under
`torch.distributed.run --nproc-per-node N` (so `dvc repro` needs nothing else); each process then
joins the group with NCCL on GPUs or gloo on CPUs. Rank 0 writes every output (checkpoints, resume
states, tables, metrics, MLflow runs); the others compute and wait.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from birdclef.config import ConfigError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Group:
    """This process's place among the stage's processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


SINGLE = Group()


def processes(device: str, ddp_processes: int) -> int:
    return ddp_processes if device == "ddp" else 1


def launch(device: str, ddp_processes: int) -> None:
    """Re-run this command under torchrun when the config asks for several processes (unless it
    already runs under torchrun)."""
    if processes(device, ddp_processes) <= 1 or "LOCAL_RANK" in os.environ:
        return
    from birdclef.device import resolve_device

    if resolve_device(device).type == "cuda":  # NCCL: one GPU a process, never two on one GPU
        import torch

        gpus = torch.cuda.device_count()
        if ddp_processes > gpus:
            raise ConfigError(
                f"ddp_processes: {ddp_processes} needs one GPU a process and this machine has {gpus}: "
                f"set it to at most {gpus}, or hide the GPUs (CUDA_VISIBLE_DEVICES=) to run CPU processes")
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc-per-node={ddp_processes}", "-m", "birdclef.cli", *sys.argv[1:]]
    sys.stdout.flush()
    os.execv(sys.executable, argv)


def join(device_name: str) -> tuple[Group, torch.device]:
    """Join the process group torchrun set up (if any); the group and this process's device."""
    import torch
    import torch.distributed as dist

    from birdclef.device import resolve_device

    if "LOCAL_RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return SINGLE, resolve_device(device_name)
    group = Group(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                  int(os.environ["LOCAL_RANK"]))
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", group.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return group, device


def barrier(group: Group) -> None:
    if group.distributed:
        import torch.distributed as dist

        dist.barrier()


@contextlib.contextmanager
def main_first(group: Group) -> Iterator[bool]:
    """Run the block on rank 0 (yields True there); the other ranks wait until it is done."""
    try:
        yield group.main
    finally:
        barrier(group)
