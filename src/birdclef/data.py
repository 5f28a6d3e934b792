"""Datasets: labelled clip crops with time shift and additive mix (SPEC 4.3, 4.4), the minimum-count
upsampling (SPEC 4.7), and the pseudo-label stream (SPEC 6.3).

Randomness is drawn from a generator seeded by (seed, epoch, item): an item's crop does not depend
on worker count or on the order items are fetched, and a resumed run draws what the uninterrupted
run drew.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from birdclef.audio import pad_centred
from birdclef.store import AudioStore


PL_STREAM_KEY = 2**31 - 1  # keeps the window choice apart from the clip crops


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def upsample(rows: pd.DataFrame, minimum: int, seed: int) -> pd.DataFrame:
    """SPEC 4.7: species with fewer than `minimum` rows get `minimum - n` rows drawn with
    replacement (random_state = seed), appended after the original rows."""
    extra = []
    for _, group in rows.groupby("primary_label", sort=True):
        if len(group) < minimum:
            extra.append(group.sample(minimum - len(group), replace=True, random_state=seed))
    return pd.concat([rows, *extra], ignore_index=True) if extra else rows.reset_index(drop=True)


class LabelledClips:
    """Training rows joined with their clip-store addresses, plus their targets and masks."""

    def __init__(self, rows: pd.DataFrame, classes: Sequence[str], store: AudioStore) -> None:
        index = store.index.set_index("record_id")
        missing = sorted(set(rows["record_id"]) - set(index.index))
        if missing:
            raise KeyError(f"{len(missing)} records are not in the clip store, e.g. {missing[:3]}")
        self.rows = rows.reset_index(drop=True)
        self.store = store
        self.addr = index.loc[self.rows["record_id"]].reset_index()
        position = {c: i for i, c in enumerate(classes)}
        n = len(self.rows)
        self.targets = np.zeros((n, len(classes)), dtype=np.float32)
        self.masks = np.ones((n, len(classes)), dtype=np.float32)
        for i, row in enumerate(self.rows.itertuples()):
            self.targets[i, position[row.first_species]] = 1.0
            self.targets[i, position[row.last_species]] = 1.0
            for label in row.secondary_labels:
                if label in position:
                    self.masks[i, position[label]] = 0.0
        # a primary label is never masked, even when also listed as secondary
        np.maximum(self.masks, self.targets, out=self.masks)

    def __len__(self) -> int:
        return len(self.rows)

    def part(self, i: int, which: str, start: int = 0, stop: int | None = None) -> np.ndarray:
        a = self.addr.iloc[i]
        return self.store.read(
            a[f"{which}_shard"], a[f"{which}_offset"], a[f"{which}_length"], start, stop
        )

    def train_crop(self, i: int, rng: np.random.Generator, window: int, span: int) -> np.ndarray:
        """SPEC 4.3: first or last `span` samples (p=0.5), then a uniform `window` crop or a
        random left zero-pad when shorter."""
        if rng.random() < 0.5:
            audio = self.part(i, "first", 0, span)
        else:
            length = int(self.addr.iloc[i]["last_length"])
            audio = self.part(i, "last", max(0, length - span))
        if audio.size >= window:
            start = int(rng.integers(0, audio.size - window, endpoint=True))
            return audio[start : start + window]
        out = np.zeros(window, dtype=np.float32)
        left = int(rng.integers(0, window - audio.size, endpoint=True))
        out[left : left + audio.size] = audio
        return out

    def valid_clip(self, i: int, window: int) -> np.ndarray:
        """SPEC 4.3: the first `window` samples, zero-padded centred when shorter."""
        return pad_centred(self.part(i, "first", 0, window), window)


class TrainDataset(Dataset):
    """(audio, target, mask) training items with the dataset-level additive mix of SPEC 4.4."""

    def __init__(
        self,
        clips: LabelledClips,
        window: int,
        span: int,
        seed: int,
        mix_p: float,
        mix_weight: tuple[float, float],
    ) -> None:
        self.clips, self.window, self.span, self.seed = clips, window, span, seed
        self.mix_p, self.mix_weight = mix_p, mix_weight
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = item_rng(self.seed, self.epoch, i)
        audio = self.clips.train_crop(i, rng, self.window, self.span)
        target = self.clips.targets[i].copy()
        mask = self.clips.masks[i].copy()
        if self.mix_p > 0 and rng.random() < self.mix_p:
            other = int(rng.integers(0, len(self.clips)))
            weight = rng.uniform(*self.mix_weight)
            audio = audio + np.float32(weight) * self.clips.train_crop(
                other, rng, self.window, self.span
            )
            np.maximum(target, self.clips.targets[other], out=target)
            # the other clip's secondary labels are excluded from the loss too
            mask = np.minimum(mask, self.clips.masks[other])
            np.maximum(mask, target, out=mask)
        return audio.astype(np.float32), target, mask


class ValidDataset(Dataset):
    def __init__(self, clips: LabelledClips, window: int) -> None:
        self.clips, self.window = clips, window

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.clips.valid_clip(i, self.window), self.clips.targets[i]


class PseudoLabelDataset(Dataset):
    """SPEC 6.3: item i is soundscape i mod n, all (or a random subset of) its 5-s windows with
    their soft targets (window, classes); the mask is all ones."""

    def __init__(
        self,
        store: AudioStore,
        soundscape_ids: Sequence[str],
        targets: Sequence[np.ndarray],
        window: int,
        dup: int,
        windows_per_item: int | None,
        seed: int,
    ) -> None:
        index = store.index.set_index("soundscape_id")
        self.store, self.window, self.dup = store, window, dup
        self.addr = index.loc[list(soundscape_ids)].reset_index()
        self.targets = list(targets)
        self.windows_per_item, self.seed = windows_per_item, seed
        for sid, target, length in zip(soundscape_ids, self.targets, self.addr["length"]):
            if target.shape[0] * window > length + window:
                raise ValueError(f"soundscape {sid}: {target.shape[0]} label rows, audio too short")

    def __len__(self) -> int:
        return len(self.addr) * self.dup

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        j = i % len(self.addr)
        a = self.addr.iloc[j]
        target = self.targets[j]
        rows = np.arange(target.shape[0])
        if self.windows_per_item is not None and self.windows_per_item < rows.size:
            rows = np.sort(item_rng(self.seed, PL_STREAM_KEY, i).choice(rows, self.windows_per_item, False))
        windows = np.zeros((rows.size, self.window), dtype=np.float32)
        for k, r in enumerate(rows):
            start, stop = int(r) * self.window, (int(r) + 1) * self.window
            piece = self.store.read(a["shard"], a["offset"], a["length"], start, stop)
            left = (self.window - piece.size) // 2  # last partial window: centred, as in SPEC 5
            windows[k, left : left + piece.size] = piece
        return windows, target[rows].astype(np.float32), np.ones_like(target[rows], np.float32)


def _flatten_collate(items):
    audio, target, mask = zip(*items)
    return (
        torch.from_numpy(np.concatenate(audio)),
        torch.from_numpy(np.concatenate(target)),
        torch.from_numpy(np.concatenate(mask)),
    )


class PseudoLabelStream:
    """Endless batches of pseudo-labelled windows, continuing across epochs.

    SPEC 9.2: the original rebuilt its exhausted iterator into a local variable and crashed with
    StopIteration; `restart=True` starts a new pass instead (reshuffled when `shuffle`), and
    `restart=False` reproduces the crash as a clear error.
    """

    def __init__(
        self, dataset: PseudoLabelDataset, soundscapes_per_batch: int, shuffle: bool, seed: int,
        restart: bool, num_workers: int = 0,
    ) -> None:
        self.dataset, self.batch, self.shuffle = dataset, soundscapes_per_batch, shuffle
        self.seed, self.restart, self.num_workers = seed, restart, num_workers
        self.passes = 0
        self.consumed = 0  # batches taken in the current pass, for resume
        self._iterator: Iterator | None = None

    def _loader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed * 1000 + self.passes)
        return DataLoader(
            self.dataset,
            batch_size=self.batch,
            shuffle=self.shuffle,
            generator=generator,
            num_workers=self.num_workers,
            collate_fn=_flatten_collate,
            drop_last=False,
        )

    def state(self) -> dict[str, int]:
        return {"passes": self.passes, "consumed": self.consumed}

    def load_state(self, state: dict[str, int]) -> None:
        self.passes, self.consumed = state["passes"], 0
        self._iterator = iter(self._loader())
        for _ in range(state["consumed"]):
            next(self._iterator)
            self.consumed += 1

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._iterator is None:
            self._iterator = iter(self._loader())
        try:
            batch = next(self._iterator)
        except StopIteration:
            if not self.restart:
                raise RuntimeError(
                    "pseudo-label stream exhausted (SPEC 9.2: the original crashes here); "
                    "set student.pseudo_labels.restart: true or raise pseudo_labels.dup"
                ) from None
            self.passes += 1
            self.consumed = 0
            self._iterator = iter(self._loader())
            batch = next(self._iterator)
        self.consumed += 1
        return batch
