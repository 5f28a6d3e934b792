"""Datasets: labelled clip crops with time shift and additive mix (SPEC 4.3, 4.4), the minimum-count
upsampling (SPEC 4.7), soundscape windows mixed under the clips (background augmentation and
Noisy-Student pseudo-label mixing), and the pseudo-label stream of extra batch items (SPEC 6.3).

Randomness is drawn from generators seeded by (seed, epoch, item, purpose): an item's crop does not
depend on worker count or on the order items are fetched, a resumed run draws what the uninterrupted
run drew, and switching the soundscape mixing on or off leaves every other draw unchanged (the
control arm sees the same crops as the student arm).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from birdclef.distributed import SINGLE, Group
from birdclef.store import AudioStore
from birdclef.windows import pad_centred, window_bounds, window_count

# Keys that keep the random streams of one item apart.
PL_STREAM_KEY = 2**31 - 1  # which windows the extra-items stream takes
BACKGROUND_KEY = 2**31 - 2  # background soundscape mixing
PSEUDO_MIX_KEY = 2**31 - 3  # pseudo-label mixing
BAND_LIMIT_KEY = 2**31 - 4  # the channel's low-pass


def item_rng(seed: int, epoch: int, index: int, purpose: int | None = None) -> np.random.Generator:
    key = [seed, epoch, index] if purpose is None else [seed, epoch, index, purpose]
    return np.random.default_rng(key)


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


class SoundscapeWindows:
    """Every window of the unlabelled soundscapes (the window rule), in (soundscape_id, window)
    order: the pseudo-label table's row order for one fold."""

    def __init__(self, store: AudioStore, window: int, sample_rate: int) -> None:
        self.store, self.window = store, window
        index = store.index.sort_values("soundscape_id", kind="stable").reset_index(drop=True)
        counts = [window_count(int(n), window, sample_rate) for n in index["length"]]
        self.soundscape = np.repeat(np.arange(len(index)), counts)
        self.position = np.concatenate([np.arange(c) for c in counts]) if counts else np.zeros(0, int)
        self.index = index
        self.keys = pd.DataFrame({
            "soundscape_id": index["soundscape_id"].to_numpy()[self.soundscape],
            "window": self.position.astype(np.int32),
        })

    def __len__(self) -> int:
        return len(self.soundscape)

    def read(self, k: int) -> np.ndarray:
        a = self.index.iloc[int(self.soundscape[k])]
        start, stop = window_bounds(int(self.position[k]), self.window)
        return pad_centred(self.store.read(a["shard"], a["offset"], a["length"], start, stop),
                           self.window)


@dataclass(frozen=True)
class WindowMix:
    """Soundscape windows added under clips: chance, weight range and (optionally) their targets.

    `targets` is (windows, classes) for pseudo-label mixing with pseudo-label targets, None for
    background augmentation and the labelled-only arm; `weights` makes some windows likelier than
    others (None: uniform); `pseudo` marks windows that stand for pseudo-labelled ones (counted).
    """

    windows: SoundscapeWindows
    p: float
    weight: tuple[float, float]
    key: int
    targets: np.ndarray | None = None
    weights: np.ndarray | None = None
    pseudo: bool = False

    def __post_init__(self) -> None:
        cumulative = None if self.weights is None else np.cumsum(self.weights, dtype=np.float64)
        object.__setattr__(self, "_cumulative", cumulative)

    def pick(self, rng: np.random.Generator) -> int:
        cumulative = self._cumulative  # type: ignore[attr-defined]
        if cumulative is None or cumulative[-1] <= 0:
            return int(rng.integers(0, len(self.windows)))
        return int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))

    def apply(
        self, audio: np.ndarray, target: np.ndarray, mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, bool]:
        """Mix one window into `audio` with chance p (targets and mask are updated in place);
        (audio, whether a window was added)."""
        if self.p <= 0 or rng.random() >= self.p:
            return audio, False
        k = self.pick(rng)
        weight = np.float32(rng.uniform(*self.weight))
        audio = audio + weight * self.windows.read(k)
        if self.targets is not None:
            np.maximum(target, self.targets[k], out=target)
            np.maximum(mask, target, out=mask)  # SPEC 6.4: a soft target is never masked out
        return audio, True


@dataclass(frozen=True)
class BandLimit:
    """Channel augmentation: with chance p a clip is low-pass filtered, the magnitude response of a
    Butterworth filter of `order` at a cutoff drawn log-uniformly from `cutoff_hz` (zero phase, by
    FFT). Calls far from a soundscape recorder reach it without their high frequencies."""

    p: float
    cutoff_hz: tuple[float, float]
    order: int
    sample_rate: int

    def apply(self, audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.p <= 0 or rng.random() >= self.p:
            return audio
        cutoff = np.exp(rng.uniform(*np.log(self.cutoff_hz)))
        frequencies = np.fft.rfftfreq(len(audio), 1.0 / self.sample_rate)
        response = 1.0 / np.sqrt(1.0 + (frequencies / cutoff) ** (2 * self.order))
        return np.fft.irfft(np.fft.rfft(audio) * response, n=len(audio)).astype(np.float32)


class TrainDataset(Dataset):
    """(audio, target, mask, pseudo-labelled windows mixed in) training items: the clip crop, the
    dataset-level additive mix of SPEC 4.4, the channel's low-pass (clips only), then the
    soundscape-window mixes (background, pseudo-label), each drawn from its own random stream."""

    def __init__(
        self,
        clips: LabelledClips,
        window: int,
        span: int,
        seed: int,
        mix_p: float,
        mix_weight: tuple[float, float],
        window_mixes: Sequence[WindowMix] = (),
        band_limit: BandLimit | None = None,
    ) -> None:
        self.clips, self.window, self.span, self.seed = clips, window, span, seed
        self.mix_p, self.mix_weight = mix_p, mix_weight
        self.window_mixes = list(window_mixes)
        self.band_limit = band_limit
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
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
        if self.band_limit is not None:
            audio = self.band_limit.apply(audio, item_rng(self.seed, self.epoch, i, BAND_LIMIT_KEY))
        pseudo = 0
        for mix in self.window_mixes:
            audio, added = mix.apply(audio, target, mask, item_rng(self.seed, self.epoch, i, mix.key))
            pseudo += int(added and mix.pseudo)
        return audio.astype(np.float32), target, mask, pseudo


class ValidDataset(Dataset):
    def __init__(self, clips: LabelledClips, window: int) -> None:
        self.clips, self.window = clips, window

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return self.clips.valid_clip(i, self.window), self.clips.targets[i]


class PseudoLabelDataset(Dataset):
    """SPEC 6.3: item i is soundscape i mod n, all (or a random subset of) its windows with their
    soft targets (window, classes) and a mask of ones; with the targets dropped, targets and mask
    are zeros (the windows carry no loss and pass no label to a mixup partner)."""

    def __init__(
        self,
        windows: SoundscapeWindows,
        targets: np.ndarray,
        dup: int,
        windows_per_item: int | None,
        seed: int,
        use_targets: bool = True,
    ) -> None:
        self.windows, self.targets, self.dup = windows, targets, dup
        self.windows_per_item, self.seed, self.use_targets = windows_per_item, seed, use_targets
        self.first = np.searchsorted(windows.soundscape, np.arange(len(windows.index)))
        self.count = np.bincount(windows.soundscape, minlength=len(windows.index))

    def __len__(self) -> int:
        return len(self.windows.index) * self.dup

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        j = i % len(self.windows.index)
        rows = np.arange(self.count[j])
        if self.windows_per_item is not None and self.windows_per_item < rows.size:
            rng = item_rng(self.seed, PL_STREAM_KEY, i)
            rows = np.sort(rng.choice(rows, self.windows_per_item, False))
        keys = self.first[j] + rows
        audio = np.stack([self.windows.read(int(k)) for k in keys])
        if self.use_targets:
            target = self.targets[keys].astype(np.float32)
            return audio, target, np.ones_like(target)
        # labelled-only: no label information at all, even through a batch mixup partner
        empty = np.zeros((len(keys), self.targets.shape[1]), np.float32)
        return audio, empty, empty.copy()


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
    `restart=False` reproduces the crash as a clear error. Under DDP each process streams its own
    share of the soundscapes, `soundscapes_per_batch / processes` of them per step.
    """

    def __init__(
        self, dataset: PseudoLabelDataset, soundscapes_per_batch: int, shuffle: bool, seed: int,
        restart: bool, num_workers: int = 0, group: Group = SINGLE,
    ) -> None:
        self.dataset, self.shuffle, self.group = dataset, shuffle, group
        self.batch = max(1, soundscapes_per_batch // group.world)
        self.seed, self.restart, self.num_workers = seed, restart, num_workers
        self.passes = 0
        self.consumed = 0  # batches taken in the current pass, for resume
        self._iterator: Iterator | None = None

    def _loader(self) -> DataLoader:
        if self.group.distributed:
            sampler = DistributedSampler(self.dataset, self.group.world, self.group.rank,
                                         shuffle=self.shuffle, seed=self.seed * 1000 + self.passes)
            return DataLoader(self.dataset, batch_size=self.batch, sampler=sampler,
                              num_workers=self.num_workers, collate_fn=_flatten_collate)
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
