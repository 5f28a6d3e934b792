"""Weight-decay split by name and the one-cycle LR trajectory of SPEC 4.9."""

from __future__ import annotations

import math

import pytest
import torch

from birdclef.config import FrontendConfig, ModelConfig, TrainConfig
from birdclef.model import BirdModel, build_model
from birdclef.optim import build_optimizer_and_scheduler, decays, param_groups


def _train_cfg(**overrides: object) -> TrainConfig:
    values: dict[str, object] = dict(
        seed=2024, epochs=30, batch_size=128, valid_batch_size=128, max_lr=3e-3, weight_decay=0.01,
        pct_start=0.1, div_factor=25, final_div_factor=100, grad_clip_value=2.0, max_shift_seconds=1.0,
        resample_min=10, mix_p=0.5, mix_weight_min=0.2, mix_weight_max=1.0, mixup_p=0.0,
        loudness_db_range=10, num_workers=0,
    )  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def model() -> BirdModel:
    return build_model(ModelConfig(backbone="efficientvit_b0"), FrontendConfig(), 182)


def test_groups_on_efficientvit(model: BirdModel) -> None:
    groups = param_groups(model, 0.01)
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert len(decay) == 53 and len(no_decay) == 66
    assert len(decay | no_decay) == len(names) == 119  # every parameter exactly once
    # SPEC 9.16: the head LayerNorm is named classifier.1 and so is decayed; the rule is by name only
    assert isinstance(model.backbone.head.classifier[1], torch.nn.LayerNorm)
    assert "backbone.head.classifier.1.weight" in decay
    assert "backbone.head.classifier.1.bias" in no_decay
    assert "backbone.head.classifier.4.weight" in decay
    assert "backbone.head.in_conv.norm.weight" in no_decay  # BatchNorm named 'norm'
    assert "backbone.stem.in_conv.conv.weight" in decay
    assert all(decays(n) == ("bias" not in n and "norm" not in n) for n in names.values())


def test_frozen_parameters_are_left_out(model: BirdModel) -> None:
    head = torch.nn.Linear(3, 2)
    head.bias.requires_grad_(False)
    groups = param_groups(head, 0.1)
    assert len(groups) == 1 and groups[0]["params"] == [head.weight]


def test_one_cycle_trajectory(model: BirdModel) -> None:
    cfg = _train_cfg()
    steps_per_epoch = 10
    total = cfg.epochs * steps_per_epoch
    opt, sched = build_optimizer_and_scheduler(model, cfg, steps_per_epoch)
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.9, 0.999) and opt.defaults["eps"] == 1e-8
    lrs, betas = [], []
    for _ in range(total):
        lrs.append(opt.param_groups[0]["lr"])
        betas.append(opt.param_groups[0]["betas"][0])
        assert all(g["lr"] == lrs[-1] for g in opt.param_groups)
        opt.step()
        sched.step()
    peak = round(cfg.pct_start * total) - 1  # OneCycleLR's warm-up ends at step pct_start*total - 1
    assert lrs[0] == pytest.approx(1.2e-4, rel=1e-12)
    assert max(lrs) == lrs[peak] == pytest.approx(3e-3, rel=1e-12)
    assert lrs[-1] == pytest.approx(1.2e-6, rel=1e-9)
    # cosine anneal: half-way through the decay the LR is the mean of peak and floor
    mid = peak + (total - 1 - peak) // 2
    frac = (mid - peak) / (total - 1 - peak)
    want = 1.2e-6 + (3e-3 - 1.2e-6) * (1 + math.cos(math.pi * frac)) / 2
    assert lrs[mid] == pytest.approx(want, rel=1e-9)
    # beta1 cycles 0.95 -> 0.85 -> 0.95 (OneCycleLR's cycle_momentum default)
    assert betas[0] == pytest.approx(0.95) and betas[peak] == pytest.approx(0.85) and betas[-1] == pytest.approx(0.95)
    assert [g["weight_decay"] for g in opt.param_groups] == [0.01, 0.0]


def test_rejects_empty_epoch(model: BirdModel) -> None:
    with pytest.raises(ValueError, match="steps_per_epoch"):
        build_optimizer_and_scheduler(model, _train_cfg(), 0)
