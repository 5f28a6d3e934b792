"""AdamW with the original's weight-decay split and the one-cycle schedule (SPEC 4.9).

The split is by parameter *name* only, as in the original: names containing 'bias' or 'norm' get
no decay. With timm's efficientvit the head LayerNorm is `head.classifier.1.weight`, whose name has
no 'norm', so it *is* decayed (SPEC 9.16); that is kept on purpose.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.optim import AdamW
from torch.optim.lr_scheduler import OneCycleLR

from birdclef.config import TrainConfig

NO_DECAY_MARKERS = ("bias", "norm")


def decays(name: str) -> bool:
    """True when a parameter of this name gets weight decay."""
    return not any(marker in name for marker in NO_DECAY_MARKERS)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups, trainable parameters only: decayed ('decay') and not decayed ('no_decay')."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if decays(name) else no_decay).append(param)
    groups = [
        {"params": decay, "weight_decay": weight_decay, "group_name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "group_name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def build_optimizer_and_scheduler(
    model: nn.Module, cfg: TrainConfig, steps_per_epoch: int
) -> tuple[AdamW, OneCycleLR]:
    """AdamW (default betas and eps) + OneCycleLR stepped once per optimizer step.

    OneCycleLR overwrites the group LRs with max_lr / div_factor at construction; the LR passed to
    AdamW is set to the same value so the optimizer is consistent even before that.
    """
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch} (fewer rows than one batch?)")
    optimizer = AdamW(param_groups(model, cfg.weight_decay), lr=cfg.max_lr / cfg.div_factor)
    scheduler = OneCycleLR(
        optimizer,
        max_lr=cfg.max_lr,
        epochs=cfg.epochs,
        steps_per_epoch=steps_per_epoch,
        pct_start=cfg.pct_start,
        anneal_strategy="cos",
        div_factor=cfg.div_factor,
        final_div_factor=cfg.final_div_factor,
    )
    return optimizer, scheduler
