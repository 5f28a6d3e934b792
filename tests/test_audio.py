"""Decoding real files: partial reads equal whole-file decoding; windows, padding and row ids;
bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from birdclef.audio import AudioDecodeError, NoSamplesError, Repairs, decode, decode_edges
from birdclef.windows import frame_windows, pad_centred, row_ids, window_count
from birdclef.store import AudioStore, ShardWriter
from tests.conftest import tone, write_audio

SR = 32000


def test_edges_of_long_ogg_equal_slices_of_whole_decode(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "long.ogg", tone(25.0))
    whole, repairs = decode(path, SR)
    (first, last, total, rate), edge_repairs = decode_edges(path, SR, 10.0)
    assert repairs == edge_repairs == Repairs()
    assert (total, rate) == (whole.size, SR)
    np.testing.assert_allclose(first, whole[:320000], atol=1e-6)
    np.testing.assert_allclose(last, whole[-320000:], atol=1e-6)
    assert first.dtype == np.float32 and first.size == last.size == 320000


def test_short_record_is_returned_whole_for_both_parts(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "short.ogg", tone(3.0))
    (first, last, total, _), _ = decode_edges(path, SR, 10.0)
    assert first.size == last.size == total == 96000
    np.testing.assert_array_equal(first, last)


def test_stereo_44k_mp3_is_mono_32k_and_matches_whole_resample(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "st.mp3", tone(30.0, sr=44100, channels=2), sr=44100)
    whole, _ = decode(path, SR)
    (first, last, total, rate), repairs = decode_edges(path, SR, 10.0)
    assert rate == 44100 and whole.ndim == 1 and repairs == Repairs()
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


def test_nan_and_inf_samples_are_set_to_zero_and_counted(tmp_path: Path) -> None:
    audio = tone(12.0, channels=2)
    audio[[100, 200, 300], 0] = np.nan  # within the first 10 s
    audio[-50, 1] = np.inf  # within the last 10 s
    path = tmp_path / "nan.wav"
    sf.write(path, audio, SR, subtype="FLOAT")
    whole, repairs = decode(path, SR)
    assert np.isfinite(whole).all() and repairs.non_finite == 4 and repairs.missing_seconds == 0
    assert whole[100] == pytest.approx(audio[100, 1] / 2)  # the finite channel is kept
    (first, last, _, _), edge_repairs = decode_edges(path, SR, 10.0)
    assert np.isfinite(first).all() and np.isfinite(last).all() and edge_repairs.non_finite == 4
    assert list(repairs.problems()) == ["non_finite"]
    # resampled: NaN would spread over the filter's taps if it were not zeroed first
    resampled, _ = decode(path, 22050)
    assert np.isfinite(resampled).all()


def truncated_ogg(path: Path, seconds: float = 10.0, keep: float = 0.26) -> Path:
    """An ogg whose pages after the first `keep` of the bytes are lost but whose last page is
    intact: its header (the last page's granule position) promises `seconds`, less decodes."""
    noise = (0.3 * np.random.default_rng(0).standard_normal(int(seconds * SR))).astype(np.float32)
    full = write_audio(path.with_name(f"{path.stem}-full.ogg"), noise)
    data = full.read_bytes()
    full.unlink()
    cut = data.find(b"OggS", int(len(data) * keep))
    path.write_bytes(data[:cut] + data[data.rfind(b"OggS"):])
    return path


def test_truncated_file_decodes_as_far_as_it_goes_and_says_so(tmp_path: Path) -> None:
    path = truncated_ogg(tmp_path / "cut.ogg")
    with sf.SoundFile(path) as handle:
        assert handle.frames == 10 * SR  # what the header promises
    whole, repairs = decode(path, SR)
    assert 1.0 < whole.size / SR < 4.0
    assert repairs.header_seconds == 10.0
    assert repairs.missing_seconds == pytest.approx(10.0 - whole.size / SR)
    assert "truncated: the header says 10.00 s" in repairs.problems()["truncated"]
    (first, last, total, _), edge_repairs = decode_edges(path, SR, 4.0)
    assert edge_repairs == repairs and total == whole.size
    np.testing.assert_array_equal(first, whole[: 4 * SR])
    np.testing.assert_array_equal(last, whole[-4 * SR :])


def test_header_only_file_has_no_samples(tmp_path: Path) -> None:
    path = tmp_path / "header.ogg"
    with sf.SoundFile(path, "w", SR, 1, format="OGG", subtype="VORBIS"):
        pass  # no frames: the file holds the Vorbis headers only
    for fn in (lambda: decode(path, SR), lambda: decode_edges(path, SR, 10.0)):
        with pytest.raises(NoSamplesError, match="no samples"):
            fn()


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
