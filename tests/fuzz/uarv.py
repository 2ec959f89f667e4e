"""Shared pieces of the `.uarv` fuzzers (hypothesis tests and the atheris target).

- `build_seed` encodes a tiny synthetic video with the real encoder, so the fuzzers start
  from a valid stream that follows the current format (no binary is committed).
- `decode_all` is the code under test: parse the header, then every chunk, then decode
  the chain, as `uarnvc decode` and the API's streaming decoder do.
- `reseal` recomputes the CRC32s after a mutation: without it almost every mutated input
  stops at the CRC check, and the parser logic behind it (lengths, varints, ranges,
  backbone config, entropy decoding) would never see hostile values.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from core.codec.bitstream import CHUNK_MAGIC, MAGIC, BitstreamError, StreamHeader, iter_chunks
from core.codec.chain import decode_clip

SEED_OPTS = {"steps": 5, "params": 6000, "clip_length": 4, "width": 48}
# What the harness lets a fuzzed header make the decoder render (a caller's policy, like
# the API's max_pixels for uploads): a valid stream may legitimately declare 16384x16384
# frames, which decodes to gigabytes; the fuzzers check parsing and decoding logic, not
# this machine's memory.
MAX_DECODE_PIXELS = 1 << 20


def build_seed(dst_dir: Path) -> bytes:
    """A valid 3-clip `.uarv` (12 frames, 48x36) made by the real encoder."""
    from core.codec.files import encode_file
    from core.codec.options import EncodeOptions
    from tests.fixtures.media import make_video

    src = make_video(dst_dir / "seed-src.mkv", frames=12, width=64, height=48)
    out = dst_dir / "seed.uarv"
    encode_file(src, out, EncodeOptions(**SEED_OPTS))
    return out.read_bytes()


def split_stream(data: bytes) -> tuple[bytes, list[bytes]]:
    """A valid stream's header bytes and chunk bytes (no validation beyond lengths)."""
    (hlen,) = struct.unpack("<I", data[5:9])
    end = 9 + hlen + 4
    header, rest, chunks = data[:end], data[end:], []
    while rest:
        (blen,) = struct.unpack("<I", rest[2:6])
        chunks.append(rest[: 6 + blen + 4])
        rest = rest[6 + blen + 4 :]
    return header, chunks


def reseal(data: bytes) -> bytes:
    """Recompute the header and chunk CRC32s of a (possibly mutated) stream, in place as
    far as the declared lengths allow; bytes past a broken length are left as they are."""
    out = bytearray(data)
    if len(out) < 9 or out[:4] != MAGIC:
        return bytes(out)
    (hlen,) = struct.unpack("<I", out[5:9])
    end = 9 + hlen
    if end + 4 > len(out):
        return bytes(out)
    out[end : end + 4] = struct.pack("<I", zlib.crc32(bytes(out[4:end])))
    pos = end + 4
    while pos + 6 <= len(out) and out[pos : pos + 2] == CHUNK_MAGIC:
        (blen,) = struct.unpack("<I", out[pos + 2 : pos + 6])
        cend = pos + 6 + blen
        if cend + 4 > len(out):
            break
        out[cend : cend + 4] = struct.pack("<I", zlib.crc32(bytes(out[pos:cend])))
        pos = cend + 4
    return bytes(out)


def decode_all(data: bytes, render: bool = True) -> int:
    """Parse and decode a whole stream (only parse it with render=False); returns the
    frames decoded. The only exception it may raise is BitstreamError."""
    f = io.BytesIO(data)
    header = StreamHeader.read(f)
    n = 0
    state = None
    budget_ok = render and header.width * header.height * header.clip_length <= MAX_DECODE_PIXELS
    for chunk in iter_chunks(f, header):
        if not budget_ok:
            continue  # parse every chunk anyway; render nothing this large
        frames, state = decode_clip(header, chunk, state)
        n += len(frames)
    return n


def check(data: bytes, render: bool = True) -> str:
    """Run `decode_all`; 'ok' or the BitstreamError's message (anything else propagates)."""
    try:
        decode_all(data, render)
    except BitstreamError as e:
        msg = str(e)
        assert msg.startswith(("header: ", "clip ")), msg
        return msg
    return "ok"
