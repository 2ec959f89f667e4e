from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import pytest

from core.codec.bitstream import (
    BitstreamError,
    ClipChunk,
    StreamHeader,
    iter_chunks,
    read_stream,
)

HEADER = StreamHeader(
    width=161,
    height=91,
    fps=Fraction(30000, 1001),
    frames=50,
    clip_length=16,
    mode="uar",
    seed=9,
    backbone={"name": "grid", "channels": [4, 3]},
)
CHUNK = ClipChunk(2, 32, 16, False, 48, 8, [(0, 0), (3, 40000), (200, 65000)], b"\x01\x02\x03\x04")


def test_header_round_trip_keeps_metadata() -> None:
    h = StreamHeader.from_bytes(HEADER.to_bytes())
    assert h == HEADER
    assert h.num_clips == 4 and h.clip_frames(3) == (48, 2)


def test_chunk_round_trip() -> None:
    assert ClipChunk.from_bytes(CHUNK.to_bytes(), 2) == CHUNK


def test_stream_of_chunks() -> None:
    chunks = [
        ClipChunk(k, 16 * k, HEADER.clip_frames(k)[1], k == 0, 64, 8, [(1, 30000)], b"\0\0\0\0")
        for k in range(4)
    ]
    data = HEADER.to_bytes() + b"".join(c.to_bytes() for c in chunks)
    header, it = read_stream(io.BytesIO(data))
    assert header == HEADER
    assert [ClipChunk.from_bytes(b) for b in it] == chunks


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:4] + bytes([9]) + b[5:], "unsupported version 9"),
        (lambda b: b[:20], "truncated"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "CRC32"),
        (lambda b: b[:5] + (10**6).to_bytes(4, "little") + b[9:], "header length"),
    ],
)
def test_bad_headers_are_named(mutate, match: str) -> None:
    with pytest.raises(BitstreamError, match=match) as e:
        StreamHeader.from_bytes(mutate(HEADER.to_bytes()))
    assert e.value.clip is None and str(e.value).startswith("header:")


def test_every_flipped_byte_in_a_chunk_is_caught_and_names_the_clip() -> None:
    good = CHUNK.to_bytes()
    for i in range(len(good)):
        bad = bytearray(good)
        bad[i] ^= 0x10
        with pytest.raises(BitstreamError) as e:
            ClipChunk.from_bytes(bytes(bad), 2)
        assert e.value.clip == 2, (i, str(e.value))


def test_truncated_and_missing_chunks() -> None:
    data = HEADER.to_bytes() + CHUNK.to_bytes()[:-3]
    f = io.BytesIO(data)
    h = StreamHeader.read(f)
    with pytest.raises(BitstreamError, match="clip 0: "):
        list(iter_chunks(f, h))
    f = io.BytesIO(HEADER.to_bytes())
    h = StreamHeader.read(f)
    with pytest.raises(BitstreamError, match="ends before clip 0"):
        list(iter_chunks(f, h))


def test_huge_declared_chunk_is_refused_before_allocation() -> None:
    bad = b"UC" + (2**31).to_bytes(4, "little") + b"\0" * 16
    with pytest.raises(BitstreamError, match="exceeds"):
        ClipChunk.from_bytes(bad, 0)


def test_real_stream_flip_names_the_clip(tiny_stream: tuple[Path, dict]) -> None:
    path, _ = tiny_stream
    data = path.read_bytes()
    header_len = len(StreamHeader.from_bytes(data).to_bytes())
    bad = bytearray(data)
    bad[header_len + 30] ^= 0xFF  # inside clip 0's chunk
    _header, it = read_stream(io.BytesIO(bytes(bad)))
    with pytest.raises(BitstreamError, match="clip 0"):
        list(it)
