"""One training engine for teachers and students (SPEC 4.3-4.10, 6.1-6.4).

`train_fold` trains one fold: crops with time shift, dataset-level mix, loudness gain, batch-level
mixup with max labels, the secondary-label masked BCE, AdamW + OneCycleLR, gradient clipping by value,
AMP on CUDA, per-epoch validation with the competition metric, a resume state after every epoch,
and the last epoch's weights as the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
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
from torch.utils.data import DataLoader
from tqdm import tqdm

from birdclef.config import FrontendConfig, ModelConfig, TrainConfig
from birdclef.data import LabelledClips, PseudoLabelStream, TrainDataset, ValidDataset, upsample
from birdclef.frontend import window_samples
from birdclef.io import atomic_path
from birdclef.metrics import competition_score
from birdclef.model import BirdModel, build_model, save_checkpoint, unwrap_model
from birdclef.optim import build_optimizer_and_scheduler
from birdclef.store import AudioStore
from birdclef.tracking import StageRun


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


def resolve_device(name: str) -> torch.device:
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def set_threads(threads: int) -> None:
    torch.set_num_threads(threads or os.cpu_count() or 1)


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


def _fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@torch.inference_mode()
def predict_clips(model: BirdModel, dataset: ValidDataset, batch: int, device) -> np.ndarray:
    model.eval()
    loader = DataLoader(dataset, batch_size=batch, shuffle=False)
    out = [model(audio.to(device)).float().cpu() for audio, _ in loader]
    return torch.sigmoid(torch.cat(out)).numpy() if out else np.zeros((0, 0), np.float32)


def train_fold(
    *,
    role: str,
    fold: int,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    frontend_cfg: FrontendConfig,
    table: pd.DataFrame,
    classes: Sequence[str],
    clip_store: AudioStore,
    checkpoint_path: Path,
    resume_path: Path,
    run: StageRun,
    pseudo_labels: PseudoLabelStream | None = None,
    extra: dict[str, Any] | None = None,
) -> FoldResult:
    seed = cfg.seed + fold
    seed_everything(seed)
    set_threads(cfg.threads)
    device = resolve_device(cfg.device)
    amp = cfg.amp and device.type == "cuda"

    train_rows = table if cfg.train_on_all_folds else table[table["fold"] != fold]
    valid_rows = table[table["fold"] == fold]
    train_rows = upsample(train_rows, cfg.resample_min, seed)
    window = window_samples(frontend_cfg)
    span = int(round((frontend_cfg.window_seconds + cfg.max_shift_seconds) * frontend_cfg.sample_rate))
    train_set = TrainDataset(
        LabelledClips(train_rows, classes, clip_store),
        window,
        span,
        seed,
        cfg.mix_p,
        (cfg.mix_weight_min, cfg.mix_weight_max),
    )
    valid_set = ValidDataset(LabelledClips(valid_rows, classes, clip_store), window)
    batch_size = min(cfg.batch_size, len(train_set))
    steps_per_epoch = len(train_set) // batch_size

    model = build_model(model_cfg, frontend_cfg, len(classes)).to(device)
    if cfg.channels_last:
        model.backbone.to(memory_format=torch.channels_last)
    optimizer, scheduler = build_optimizer_and_scheduler(model, cfg, steps_per_epoch)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    if cfg.compile:
        model.backbone = torch.compile(model.backbone)  # type: ignore[assignment]

    fingerprint = _fingerprint(
        role,
        fold,
        cfg.model_dump(),
        model_cfg.model_dump(),
        frontend_cfg.model_dump(),
        list(classes),
        table[["record_id", "fold"]].to_dict("list"),
        extra,
    )
    history: list[dict[str, float]] = []
    start_epoch = 0
    if resume_path.is_file():
        state = torch.load(resume_path, map_location=device, weights_only=False)
        if state.get("fingerprint") == fingerprint:
            unwrap_model(model).load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            torch.set_rng_state(state["torch_rng"])
            if pseudo_labels is not None:
                pseudo_labels.load_state(state["pseudo_labels"])
            history = state["history"]
            start_epoch = state["epoch"] + 1
            print(f"{role} fold {fold}: resuming after epoch {state['epoch'] + 1}/{cfg.epochs}")

    valid_probs = np.zeros((len(valid_set), len(classes)), np.float32)
    valid_targets = valid_set.clips.targets
    for epoch in range(start_epoch, cfg.epochs):
        train_set.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=cfg.num_workers,
            generator=torch.Generator().manual_seed(seed * 1000 + epoch),
            persistent_workers=False,
        )
        augment = torch.Generator().manual_seed(seed * 7919 + epoch)
        model.train()
        started, seen, loss_sum = time.perf_counter(), 0, 0.0
        bar = tqdm(loader, desc=f"{role} fold {fold} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for audio, target, mask in bar:
            if pseudo_labels is not None:
                pl_audio, pl_target, pl_mask = pseudo_labels.next()
                audio = torch.cat([audio, pl_audio])
                target = torch.cat([target, pl_target])
                mask = torch.cat([mask, pl_mask])
            n = audio.shape[0]
            # SPEC 4.8: per-clip gain 10^(-U * range/10); matters only through mixup (std norm)
            gain = 10 ** (-torch.rand(n, generator=augment) * cfg.loudness_db_range / 10)
            audio = audio * gain[:, None]
            if cfg.mixup_p > 0 and torch.rand(1, generator=augment).item() < cfg.mixup_p:
                perm = torch.randperm(n, generator=augment)
                weight = float(10 ** (-torch.rand(1, generator=augment) * cfg.loudness_db_range / 10))
                audio, target, mask = batch_mixup(audio, target, mask, weight, perm)
            audio, target, mask = audio.to(device), target.to(device), mask.to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                logits = model(audio)
            loss = masked_bce(logits, target, mask)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.grad_clip_value > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_value_(model.parameters(), cfg.grad_clip_value)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += n
            loss_sum += float(loss) * n
            bar.set_postfix(loss=f"{float(loss):.4f}", samples_s=f"{seen / (time.perf_counter() - started):.1f}")
        train_seconds = time.perf_counter() - started
        valid_probs = predict_clips(model, valid_set, cfg.valid_batch_size, device)
        score = competition_score(valid_targets, valid_probs) if len(valid_set) else float("nan")
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "valid_auc": score,
            "lr": scheduler.get_last_lr()[0],
            "samples_per_s": seen / max(train_seconds, 1e-9),
        }
        history.append(row)
        run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch + 1)
        print(
            f"{role} fold {fold} epoch {epoch + 1}/{cfg.epochs}: loss {row['train_loss']:.4f} "
            f"valid AUC {score:.4f} ({row['samples_per_s']:.1f} samples/s)"
        )
        state = {
            "fingerprint": fingerprint,
            "epoch": epoch,
            "model": unwrap_model(model).state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "pseudo_labels": pseudo_labels.state() if pseudo_labels is not None else None,
            "history": history,
        }
        with atomic_path(resume_path) as tmp:
            torch.save(state, tmp)

    if start_epoch >= cfg.epochs:  # resumed after the last epoch: only the validation is missing
        valid_probs = predict_clips(model, valid_set, cfg.valid_batch_size, device)
    final_score = competition_score(valid_targets, valid_probs) if len(valid_set) else float("nan")
    sha = state_sha256(model)
    save_checkpoint(
        checkpoint_path,
        model,
        model_cfg=model_cfg,
        frontend_cfg=frontend_cfg,
        classes=classes,
        extra={"role": role, "fold": fold, "seed": seed, "run_id": run.run_id, "state_sha256": sha,
               **(extra or {})},
    )
    return FoldResult(
        fold=fold,
        seed=seed,
        valid_index=valid_rows.index.to_numpy(),
        valid_probs=valid_probs,
        valid_score=final_score,
        history=history,
        state_sha256=sha,
        run_id=run.run_id,
    )
