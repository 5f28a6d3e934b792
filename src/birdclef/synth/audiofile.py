"""Writing audio files: OGG Vorbis or MP3 through libsndfile, Ogg byte-identical across runs."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import soundfile as sf

# libsndfile's encoders are fed in blocks of this many seconds (one huge write can crash them).
WRITE_BLOCK_SECONDS = 10.0

_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def _ogg_crc(page: bytes) -> int:
    # Ogg's CRC-32 is unreflected (poly 0x04C11DB7, init 0, no final xor); zlib's is the
    # reflected twin, so feed it bit-reversed bytes and reverse its result.
    reflected = zlib.crc32(page.translate(_BIT_REVERSED), 0xFFFFFFFF) ^ 0xFFFFFFFF
    return int(f"{reflected:032b}"[::-1], 2)


def _fix_ogg_serial(path: Path, serial: int) -> None:
    """Replace the random stream serial libsndfile writes with `serial`: byte-identical reruns."""
    data = bytearray(path.read_bytes())
    pos = 0
    while pos < len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"{path}: not an Ogg page at byte {pos}")
        n_segments = data[pos + 26]
        body = sum(data[pos + 27 : pos + 27 + n_segments])
        end = pos + 27 + n_segments + body
        data[pos + 14 : pos + 18] = serial.to_bytes(4, "little")
        data[pos + 22 : pos + 26] = b"\0\0\0\0"
        data[pos + 22 : pos + 26] = _ogg_crc(bytes(data[pos:end])).to_bytes(4, "little")
        pos = end
    path.write_bytes(bytes(data))


def write_audio(path: Path, audio: np.ndarray, sample_rate: int, fmt: str) -> None:
    """Write OGG Vorbis or MP3 in blocks; `audio` is (frames,) or (frames, channels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    subtype = {"ogg": "VORBIS", "mp3": "MPEG_LAYER_III"}[fmt]
    block = int(WRITE_BLOCK_SECONDS * sample_rate)
    data = audio.astype(np.float32)
    # Variable-bitrate mp3 encodes a little faster than the default constant bitrate.
    options = {"bitrate_mode": "VARIABLE", "compression_level": 0.5} if fmt == "mp3" else {}
    with sf.SoundFile(
        path, "w", sample_rate, channels, format=fmt.upper(), subtype=subtype, **options
    ) as fh:
        for start in range(0, len(data), block):
            fh.write(data[start : start + block])
    if fmt == "ogg":
        _fix_ogg_serial(path, zlib.crc32(path.name.encode()) & 0x7FFFFFFF)
