"""Decoding real files: partial reads equal whole-file decoding; windows, padding and row ids;
bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from birdclef.audio import AudioDecodeError, decode, decode_edges
from birdclef.windows import frame_windows, pad_centred, row_ids, window_count
from birdclef.store import AudioStore, ShardWriter
from tests.conftest import tone, write_audio

SR = 32000


def test_edges_of_long_ogg_equal_slices_of_whole_decode(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.ogg", tone(25.0))
    whole = decode(path, SR)
    first, last, total, rate = decode_edges(path, SR, 10.0)
    assert (total, rate) == (whole.size, SR)
    np.testing.assert_allclose(first, whole[:320000], atol=1e-6)
    np.testing.assert_allclose(last, whole[-320000:], atol=1e-6)
    assert first.dtype == np.float32 and first.size == last.size == 320000


def test_short_record_is_returned_whole_for_both_parts(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "short.ogg", tone(3.0))
    first, last, total, _ = decode_edges(path, SR, 10.0)
    assert first.size == last.size == total == 96000
    np.testing.assert_array_equal(first, last)


def test_stereo_44k_mp3_is_mono_32k_and_matches_whole_resample(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "st.mp3", tone(30.0, sr=44100, channels=2), sr=44100)
    whole = decode(path, SR)
    first, last, total, rate = decode_edges(path, SR, 10.0)
    assert rate == 44100 and whole.ndim == 1
    assert abs(total - whole.size) <= 2
    # resampling only a part differs from the whole-file resample only within filter taps of a cut
    np.testing.assert_allclose(first[:300000], whole[:300000], atol=2e-3)
    assert np.corrcoef(last[20000:], whole[-320000:][20000:])[0, 1] > 0.999


def test_empty_and_corrupt_files_name_the_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ogg"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.ogg"
    corrupt.write_bytes(b"OggS" + bytes(range(256)) * 8)
    for path in (empty, corrupt):
        with pytest.raises(AudioDecodeError, match=path.name):
            decode_edges(path, SR, 10.0)
        with pytest.raises(AudioDecodeError, match=path.name):
            decode(path, SR)


@pytest.mark.parametrize(
    ("seconds", "expected"), [(240.0, 48), (239.9, 48), (240.2, 48), (37.0, 8), (3.0, 1), (0.2, 1)]
)
def test_window_count_rule(seconds: float, expected: int) -> None:
    assert window_count(int(seconds * SR), 5 * SR, SR) == expected


def test_frame_windows_pads_last_partial_window_centred() -> None:
    audio = np.arange(1, 7 * SR + 1, dtype=np.float32)  # 7 s -> 2 windows, the 2nd has 2 s
    windows = frame_windows(audio, 5 * SR, SR)
    assert windows.shape == (2, 5 * SR)
    np.testing.assert_array_equal(windows[0], audio[: 5 * SR])
    left = (5 * SR - 2 * SR) // 2
    assert windows[1, left] == audio[5 * SR] and windows[1, left - 1] == 0
    assert windows[1, left + 2 * SR - 1] == audio[-1] and windows[1, left + 2 * SR] == 0


def test_pad_centred() -> None:
    out = pad_centred(np.ones(3, dtype=np.float32), 8)
    assert out.tolist() == [0, 0, 1, 1, 1, 0, 0, 0]
    assert pad_centred(np.arange(10, dtype=np.float32), 4).tolist() == [0, 1, 2, 3]


def test_row_ids_end_seconds() -> None:
    assert row_ids("XC1", 3, 5.0) == ["XC1_5", "XC1_10", "XC1_15"]


def test_store_round_trip_across_shards(tmp_path: Path) -> None:
    writer = ShardWriter(tmp_path / "store", "float32", shard_bytes=4 * 100)
    arrays = [np.arange(n, dtype=np.float32) + n for n in (60, 70, 10, 200)]
    addresses = [writer.append(a) for a in arrays]
    writer.close(pd.DataFrame(addresses, columns=["shard", "offset", "length"]))
    assert len(list((tmp_path / "store").glob("shard-*.npy"))) == 2  # [60+70], [10+200]
    store = AudioStore(tmp_path / "store")
    for array, (shard, offset, length) in zip(arrays, addresses, strict=True):
        np.testing.assert_array_equal(store.read(shard, offset, length), array)
    np.testing.assert_array_equal(store.read(*addresses[3], start=5, stop=9), arrays[3][5:9])
