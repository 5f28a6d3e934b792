"""One training engine for teachers and students (SPEC 4.3-4.10, 6.1-6.4).

`train_fold` trains one fold and reads top to bottom: set up the fold (data, model, optimiser),
resume if a matching state exists, then per epoch `train_epoch` (crops, mixes, loudness gain,
batch-level mixup with max labels, the secondary-label masked BCE, AdamW + OneCycleLR, gradient
clipping by value, AMP on CUDA), `validate` (the competition metric) and a resume state; the last
epoch's weights are the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from birdclef.config import FrontendConfig, ModelConfig, TrainConfig
from birdclef.device import set_threads
from birdclef.distributed import SINGLE, Group, barrier
from birdclef.data import (BandLimit, LabelledClips, PseudoLabelStream, TrainDataset, ValidDataset,
                           WindowMix, upsample)
from birdclef.io import atomic_path, progress
from birdclef.metrics import competition_score
from birdclef.model import BirdModel, build_model, load_checkpoint, save_checkpoint, unwrap_model
from birdclef.optim import build_optimizer_and_scheduler
from birdclef.store import AudioStore
from birdclef.windows import window_samples

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldJob:
    """Everything one fold's training reads."""

    role: str
    fold: int
    cfg: TrainConfig
    model_cfg: ModelConfig
    frontend_cfg: FrontendConfig
    table: pd.DataFrame
    classes: Sequence[str]
    clip_store: AudioStore
    window_mixes: Sequence[WindowMix] = ()
    pseudo_labels: PseudoLabelStream | None = None
    init_checkpoint: Path | None = None  # start from these weights instead of fresh ones
    extra: dict[str, Any] | None = None  # recorded in the checkpoint and the resume fingerprint
    group: Group = SINGLE  # the stage's processes (DDP); rank 0 writes every output
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def seed(self) -> int:
        return self.cfg.seed + self.fold


@dataclass
class FoldResult:
    fold: int
    seed: int
    valid_index: np.ndarray  # positions of the validation rows in the table
    valid_probs: np.ndarray  # (n_valid, n_classes) sigmoid of the last epoch's logits
    valid_score: float
    history: list[dict[str, float]] = field(default_factory=list)
    state_sha256: str = ""
    run_id: str = ""


@dataclass
class Trainer:
    """The moving parts of one fold's training."""

    model: BirdModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    amp: bool


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def numerical_environment(device: torch.device, cfg: TrainConfig) -> dict[str, str]:
    """What makes checkpoints differ between machines: the same values give byte-identical
    weights on one machine; another CPU kernel path, thread count or library version may not."""
    env = {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "threads": str(torch.get_num_threads()),
        "device": str(device),
        "dtype": "float16-autocast" if cfg.amp and device.type == "cuda" else "float32",
        "channels_last": str(cfg.channels_last),
    }
    if device.type == "cuda":
        env["cuda"] = str(torch.version.cuda)
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """SPEC 4.6: BCE per element times the mask, averaged over ALL elements (masked ones too)."""
    loss = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none")
    return (loss * mask).mean()


def batch_mixup(
    audio: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weight: float,
    perm: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SPEC 6.4: audio + w * audio[perm]; targets max; masks min, then max with the targets."""
    audio = audio + weight * audio[perm]
    target = torch.maximum(target, target[perm])
    mask = torch.maximum(torch.minimum(mask, mask[perm]), target)
    return audio, target, mask


def state_sha256(model: torch.nn.Module) -> str:
    """Hash of the weights (names and bytes), independent of the checkpoint file's container."""
    digest = hashlib.sha256()
    for name, tensor in sorted(unwrap_model(model).state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def fingerprint(job: FoldJob) -> str:
    """What a resume state must match to be continued."""
    parts = (
        job.role, job.fold, job.cfg.model_dump(), job.model_cfg.model_dump(),
        job.frontend_cfg.model_dump(), list(job.classes),
        job.table[["record_id", "fold"]].to_dict("list"), job.extra,
        None if job.init_checkpoint is None else str(job.init_checkpoint),
    )
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@torch.inference_mode()
def predict_clips(model: BirdModel, dataset: ValidDataset, batch: int, device) -> np.ndarray:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False)
    out = [model(audio.to(device)).float().cpu() for audio, _ in loader]
    return torch.sigmoid(torch.cat(out)).numpy() if out else np.zeros((0, 0), np.float32)


def fold_datasets(job: FoldJob) -> tuple[TrainDataset, ValidDataset, pd.DataFrame]:
    """The fold's training set (upsampled, with its mixes) and validation set (SPEC 4.2-4.7)."""
    cfg, frontend = job.cfg, job.frontend_cfg
    train_rows = job.table if cfg.train_on_all_folds else job.table[job.table["fold"] != job.fold]
    valid_rows = job.table[job.table["fold"] == job.fold]
    train_rows = upsample(train_rows, cfg.resample_min, job.seed)
    window = window_samples(frontend)
    span = int(round((frontend.window_seconds + cfg.max_shift_seconds) * frontend.sample_rate))
    band = cfg.band_limit
    band_limit = (BandLimit(band.p, (band.cutoff_hz_min, band.cutoff_hz_max), band.order,
                            frontend.sample_rate) if band.p > 0 else None)
    train_set = TrainDataset(
        LabelledClips(train_rows, job.classes, job.clip_store), window, span, job.seed,
        cfg.mix_p, (cfg.mix_weight_min, cfg.mix_weight_max), job.window_mixes, band_limit,
    )
    valid_set = ValidDataset(LabelledClips(valid_rows, job.classes, job.clip_store), window)
    return train_set, valid_set, valid_rows


def build_trainer(job: FoldJob, steps_per_epoch: int) -> Trainer:
    cfg, device = job.cfg, job.device
    model = build_model(job.model_cfg, job.frontend_cfg, len(job.classes),
                        drop_path_rate=cfg.drop_path_rate)
    if job.init_checkpoint is not None:
        source, meta = load_checkpoint(job.init_checkpoint)
        if list(meta["classes"]) != list(job.classes):
            raise ValueError(f"{job.init_checkpoint}: its classes differ from the training table's")
        model.load_state_dict(source.state_dict())
    model = model.to(device)
    if cfg.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer_and_scheduler(model, cfg, steps_per_epoch)
    amp = cfg.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if cfg.compile:
        model.backbone = torch.compile(model.backbone)  # type: ignore[assignment]
    if job.group.distributed:  # gradients averaged over the processes at every step
        model = DistributedDataParallel(  # type: ignore[assignment]
            model, device_ids=[device.index] if device.type == "cuda" else None)
    return Trainer(model, optimizer, scheduler, scaler, device, amp)


def train_step(
    trainer: Trainer, cfg: TrainConfig, batch: tuple[torch.Tensor, ...], augment: torch.Generator
) -> tuple[float, int]:
    """One optimisation step on (audio, target, mask) (SPEC 4.8 gain, 6.4 mixup, 4.6 loss);
    (loss, items)."""
    audio, target, mask = batch
    n = audio.shape[0]
    # SPEC 4.8: per-clip gain 10^(-U * range/10); matters only through mixup (std norm)
    gain = 10 ** (-torch.rand(n, generator=augment) * cfg.loudness_db_range / 10)
    audio = audio * gain[:, None]
    if cfg.mixup_p > 0 and torch.rand(1, generator=augment).item() < cfg.mixup_p:
        perm = torch.randperm(n, generator=augment)
        weight = float(10 ** (-torch.rand(1, generator=augment) * cfg.loudness_db_range / 10))
        audio, target, mask = batch_mixup(audio, target, mask, weight, perm)
    device = trainer.device
    audio, target, mask = audio.to(device), target.to(device), mask.to(device)
    with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=trainer.amp):
        logits = trainer.model(audio)
    loss = masked_bce(logits, target, mask)
    trainer.optimizer.zero_grad(set_to_none=True)
    trainer.scaler.scale(loss).backward()
    if cfg.grad_clip_value > 0:
        trainer.scaler.unscale_(trainer.optimizer)
        torch.nn.utils.clip_grad_value_(trainer.model.parameters(), cfg.grad_clip_value)
    trainer.scaler.step(trainer.optimizer)
    trainer.scaler.update()
    trainer.scheduler.step()
    return float(loss.detach()), n


def epoch_loader(
    train_set: TrainDataset, cfg: TrainConfig, seed: int, epoch: int, group: Group = SINGLE
) -> DataLoader:
    """The epoch's batches. Under DDP each process takes its share of the shuffled items and
    `batch_size / processes` of each batch, so the global batch stays `batch_size`; items draw
    their randomness from (seed, epoch, index) either way, but which items meet in a batch (and
    so batch statistics and mixup partners) depends on the number of processes."""
    train_set.set_epoch(epoch)
    batch = min(cfg.batch_size, len(train_set))
    if not group.distributed:
        return DataLoader(train_set, batch_size=batch, shuffle=True, drop_last=True,
                          num_workers=cfg.num_workers,
                          generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    sampler = DistributedSampler(train_set, num_replicas=group.world, rank=group.rank,
                                 shuffle=True, seed=seed, drop_last=True)
    sampler.set_epoch(epoch)
    return DataLoader(train_set, batch_size=max(1, batch // group.world), sampler=sampler,
                      drop_last=True, num_workers=cfg.num_workers)


def steps_per_epoch(train_set: TrainDataset, cfg: TrainConfig, group: Group = SINGLE) -> int:
    return len(train_set) // group.world // max(1, min(cfg.batch_size, len(train_set)) // group.world)


@dataclass
class EpochStats:
    loss: float  # mean training loss per item
    items: int  # items through the model (labelled clips plus extra pseudo-labelled windows)
    steps: int  # optimisation steps
    pseudo_windows: int  # pseudo-labelled windows the model saw (mixed in or appended)
    seconds: float


def train_epoch(
    trainer: Trainer, job: FoldJob, train_set: TrainDataset, epoch: int, desc: str,
    max_steps: int | None = None,
) -> EpochStats:
    """One pass over the fold's training set (or its first `max_steps` batches: the training
    benchmark)."""
    augment = torch.Generator().manual_seed(job.seed * 7919 + epoch + 104729 * job.group.rank)
    trainer.model.train()
    started, seen, steps, pseudo, loss_sum = time.perf_counter(), 0, 0, 0, 0.0
    bar = progress(epoch_loader(train_set, job.cfg, job.seed, epoch, job.group), desc=desc,
                   leave=False, total=max_steps, disable=not job.group.main)
    for step, (audio, target, mask, mixed) in enumerate(bar):
        if step == max_steps:
            break
        pseudo += int(mixed.sum())
        if job.pseudo_labels is not None:  # SPEC 6.3: pseudo-labelled windows as extra items
            pl_audio, pl_target, pl_mask = job.pseudo_labels.next()
            audio, target = torch.cat([audio, pl_audio]), torch.cat([target, pl_target])
            mask = torch.cat([mask, pl_mask])
            pseudo += pl_audio.shape[0]
        loss, n = train_step(trainer, job.cfg, (audio, target, mask), augment)
        seen, steps, loss_sum = seen + n, steps + 1, loss_sum + loss * n
        rate = seen / (time.perf_counter() - started)
        # shown at the bar's next redraw: a forced redraw every step would defeat its interval
        bar.set_postfix(loss=f"{loss:.4f}", samples_s=f"{rate:.1f}", refresh=False)
    return EpochStats(loss_sum / max(seen, 1), seen, steps, pseudo, time.perf_counter() - started)


def validate(trainer: Trainer, valid_set: ValidDataset, cfg: TrainConfig) -> tuple[np.ndarray, float]:
    """The competition metric on the fold's validation clips (rank 0 only under DDP: the plain
    module runs without the other processes)."""
    model = unwrap_model(trainer.model)
    probs = predict_clips(model, valid_set, cfg.valid_batch_size, trainer.device)
    score = competition_score(valid_set.clips.targets, probs) if len(valid_set) else float("nan")
    return probs, score


def save_resume(path: Path, trainer: Trainer, job: FoldJob, epoch: int, history: list) -> None:
    state = {
        "fingerprint": fingerprint(job),
        "epoch": epoch,
        "model": unwrap_model(trainer.model).state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "pseudo_labels": job.pseudo_labels.state() if job.pseudo_labels is not None else None,
        "history": history,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_resume(path: Path, trainer: Trainer, job: FoldJob) -> tuple[int, list[dict[str, float]]]:
    """(first epoch to run, history so far); (0, []) when there is no matching state."""
    if not path.is_file():
        return 0, []
    state = torch.load(path, map_location=trainer.device, weights_only=False)
    if state.get("fingerprint") != fingerprint(job):
        return 0, []
    unwrap_model(trainer.model).load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scheduler.load_state_dict(state["scheduler"])
    trainer.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    if job.pseudo_labels is not None:
        job.pseudo_labels.load_state(state["pseudo_labels"])
    log.info("%s fold %d: resuming after epoch %d/%d", job.role, job.fold, state["epoch"] + 1,
             job.cfg.epochs)
    return state["epoch"] + 1, state["history"]


def epoch_record(job: FoldJob, trainer: Trainer, epoch: int, stats: EpochStats, score: float) -> dict:
    """The epoch's row of the training curves; counts are summed over the stage's processes."""
    items, pseudo = stats.items, stats.pseudo_windows
    if job.group.distributed:
        counts = torch.tensor([items, pseudo], dtype=torch.float64)
        torch.distributed.all_reduce(counts)
        items, pseudo = int(counts[0]), int(counts[1])
    return {"epoch": epoch + 1, "train_loss": stats.loss, "valid_auc": score,
            "lr": trainer.scheduler.get_last_lr()[0],
            "samples_per_s": items / max(stats.seconds, 1e-9), "steps": stats.steps,
            "pseudo_label_windows": pseudo}


def train_fold(job: FoldJob, checkpoint_path: Path, resume_path: Path, run: Any) -> FoldResult:
    """Train one fold, resuming from `resume_path` when it matches; write `checkpoint_path`.
    Under DDP every process trains; rank 0 validates, logs and writes (`run` is used there only)."""
    cfg, main = job.cfg, job.group.main
    seed_everything(job.seed)
    set_threads(cfg.threads)
    train_set, valid_set, valid_rows = fold_datasets(job)
    trainer = build_trainer(job, steps_per_epoch(train_set, cfg, job.group))
    start_epoch, history = load_resume(resume_path, trainer, job)
    valid_probs = np.zeros((len(valid_set), len(job.classes)), np.float32)
    for epoch in range(start_epoch, cfg.epochs):
        desc = f"{job.role} fold {job.fold} epoch {epoch + 1}/{cfg.epochs}"
        stats = train_epoch(trainer, job, train_set, epoch, desc)
        valid_probs, score = validate(trainer, valid_set, cfg) if main else (valid_probs, 0.0)
        row = epoch_record(job, trainer, epoch, stats, score)
        history.append(row)
        if main:
            run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
            log.info("%s: loss %.4f valid AUC %.4f (%.1f samples/s)", desc, stats.loss, score,
                     row["samples_per_s"])
            save_resume(resume_path, trainer, job, epoch, history)
    if main and start_epoch >= cfg.epochs:  # resumed after the last epoch: validation missing
        valid_probs, _ = validate(trainer, valid_set, cfg)
    final_score = competition_score(valid_set.clips.targets, valid_probs) if len(valid_set) else float("nan")
    sha = state_sha256(trainer.model)
    if main:
        save_checkpoint(
            checkpoint_path, trainer.model, model_cfg=job.model_cfg, frontend_cfg=job.frontend_cfg,
            classes=job.classes,
            extra={"role": job.role, "fold": job.fold, "seed": job.seed, "state_sha256": sha,
                   **(job.extra or {})},
        )
    barrier(job.group)
    return FoldResult(fold=job.fold, seed=job.seed, valid_index=valid_rows.index.to_numpy(),
                      valid_probs=valid_probs, valid_score=final_score, history=history,
                      state_sha256=sha, run_id=getattr(run, "run_id", ""))
