"""The sharded audio store: many decoded arrays packed into a few large `.npy` shards.

Layout of a store directory:
    index.parquet       one row per stored array: key columns + shard, offset, length
    shard-00000.npy     1-D float32 (or float16) arrays, concatenated

Shards are read with memory mapping, so a 5-s crop of a record or one window of a soundscape costs
one small read and no decoding. A store of the real 2024 data is a few hundred shard files rather
than 60k small `.npy` files, which keeps DVC fast.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

INDEX = "index.parquet"


class ShardWriter:
    """Append arrays in a fixed order; a shard is flushed once it reaches `shard_bytes`."""

    def __init__(self, directory: Path, dtype: str, shard_bytes: int) -> None:
        self.directory = directory
        self.dtype = np.dtype(dtype)
        self.shard_bytes = shard_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._pending: list[np.ndarray] = []
        self._pending_samples = 0
        self._shard = 0
        self.rows: list[dict[str, object]] = []
        self.total_bytes = 0

    def append(self, array: np.ndarray) -> tuple[int, int, int]:
        """Queue one array; returns its (shard, offset, length) address."""
        array = np.ascontiguousarray(array, dtype=self.dtype)
        address = (self._shard, self._pending_samples, int(array.size))
        self._pending.append(array)
        self._pending_samples += array.size
        if self._pending_samples * self.dtype.itemsize >= self.shard_bytes:
            self._flush()
        return address

    def _flush(self) -> None:
        if not self._pending:
            return
        data = np.concatenate(self._pending)
        np.save(self.directory / f"shard-{self._shard:05d}.npy", data)
        self.total_bytes += data.nbytes
        self._pending, self._pending_samples = [], 0
        self._shard += 1

    def close(self, index: pd.DataFrame) -> None:
        """Flush the last shard and write the index (the caller builds it from the addresses)."""
        self._flush()
        index.to_parquet(self.directory / INDEX, index=False)


class AudioStore:
    """Read-only access to a store directory written by ShardWriter."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        index_path = self.directory / INDEX
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path}: audio store index not found (run preprocess)")
        self.index = pd.read_parquet(index_path)
        self._shards: dict[int, np.ndarray] = {}

    def shard(self, shard: int) -> np.ndarray:
        # Opened lazily per process: safe to use from DataLoader workers after fork.
        if shard not in self._shards:
            path = self.directory / f"shard-{shard:05d}.npy"
            self._shards[shard] = np.load(path, mmap_mode="r")
        return self._shards[shard]

    def read(self, shard: int, offset: int, length: int, start: int = 0, stop: int | None = None):
        """Samples [start, stop) of one stored array, as a float32 copy."""
        stop = length if stop is None else min(stop, length)
        view = self.shard(int(shard))[offset + start : offset + stop]
        return np.array(view, dtype=np.float32)  # a copy: shards are read-only maps

    def __getstate__(self) -> dict[str, object]:
        return {"directory": self.directory, "index": self.index, "_shards": {}}
