"""Where models run: the device a config names, and the CPU threads torch may use."""

from __future__ import annotations

import torch

from birdclef.parallel import usable_cores


def resolve_device(name: str) -> torch.device:
    """`auto` (and `ddp`, per process) is CUDA when there is a GPU, else the CPU."""
    if name == "cuda" or (name in ("auto", "ddp") and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def set_threads(threads: int) -> None:
    """torch's CPU threads: `threads`, or one per usable core when 0."""
    torch.set_num_threads(threads or usable_cores())
