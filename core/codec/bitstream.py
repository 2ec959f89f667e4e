"""The `.uarv` format: a versioned stream header, then self-delimiting clip chunks.

Layout (all integers little-endian; see docs/bitstream.md for the full table):

    stream  = header chunk*
    header  = "UARV" version:u8 body_len:u32 body crc32(version..body):u32
    chunk   = "UC"   body_len:u32 body crc32("UC"..body):u32

A chunk is also a stored object on its own (clips/{k}.uarc), so a stream is the header
followed by the chunks in order and can be served while it grows. Every length is
checked against hard limits before anything is allocated, and every failure is a
BitstreamError naming the header field or the clip.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import BinaryIO, get_args

from core.codec.options import Mode

MAGIC = b"UARV"
CHUNK_MAGIC = b"UC"
VERSION = 2  # what this encoder writes
READABLE_VERSIONS = (1, 2)  # what this decoder reads (docs/bitstream.md, "Versions")
CHUNK_EXT = ".uarc"
STREAM_EXT = ".uarv"

MAX_SIDE = 16384
MAX_FRAMES = 10_000_000
MAX_HEADER_BODY = 1 << 16
MAX_CHUNK_BODY = 1 << 30
MAX_LAYERS = 4096

MODES: tuple[str, ...] = get_args(Mode)  # wire value = position (0 uar, 1 independent, 2 whole)
PIX_FMTS = ("rgb24",)

FLAG_KEY = 1


class BitstreamError(ValueError):
    """A malformed stream; `clip` is the chunk index when the fault is inside a chunk."""

    def __init__(self, message: str, clip: int | None = None) -> None:
        self.clip = clip
        super().__init__(f"clip {clip}: {message}" if clip is not None else f"header: {message}")


# ---------------------------------------------------------------------------- varints


def _put_varint(out: bytearray, v: int) -> None:
    if v < 0:
        raise ValueError("varint must be >= 0")
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return


class _Reader:
    """Bounds-checked cursor over a bytes object; errors name the field being read."""

    def __init__(self, data: bytes, clip: int | None) -> None:
        self.data, self.pos, self.clip = data, 0, clip

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise BitstreamError(
                f"truncated {what}: needs {n} bytes, {len(self.data) - self.pos} left", self.clip
            )
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def varint(self, what: str) -> int:
        v, shift = 0, 0
        for _ in range(5):
            (b,) = self.take(1, what)
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7
        raise BitstreamError(f"{what}: varint too long", self.clip)

    def rest(self) -> bytes:
        b = self.data[self.pos :]
        self.pos = len(self.data)
        return b


# ----------------------------------------------------------------------------- header

_HEADER_FIXED = "IIIIIIIBBI"  # width height fps_num fps_den frames clip_len clips mode pixfmt seed


@dataclass(frozen=True)
class StreamHeader:
    width: int
    height: int
    fps: Fraction
    frames: int
    clip_length: int
    mode: str
    seed: int
    backbone: dict  # BackboneConfig.to_dict(): rebuilds the identical network
    pix_fmt: str = "rgb24"
    version: int = VERSION

    @property
    def num_clips(self) -> int:
        return -(-self.frames // self.clip_length)

    def clip_frames(self, k: int) -> tuple[int, int]:
        """(first frame, frame count) of clip k."""
        first = k * self.clip_length
        return first, min(self.clip_length, self.frames - first)

    def to_bytes(self) -> bytes:
        body = bytearray(
            struct.pack(
                "<" + _HEADER_FIXED,
                self.width,
                self.height,
                self.fps.numerator,
                self.fps.denominator,
                self.frames,
                self.clip_length,
                self.num_clips,
                MODES.index(self.mode),
                PIX_FMTS.index(self.pix_fmt),
                self.seed,
            )
        )
        cfg = json.dumps(self.backbone, separators=(",", ":"), sort_keys=True).encode()
        body += struct.pack("<H", len(cfg)) + cfg
        head = struct.pack("<BI", self.version, len(body)) + bytes(body)
        return MAGIC + head + struct.pack("<I", zlib.crc32(head))

    @classmethod
    def read(cls, f: BinaryIO) -> StreamHeader:
        start = f.read(9)
        if len(start) < 4 or start[:4] != MAGIC:
            raise BitstreamError("not a .uarv stream (bad magic)")
        if len(start) < 9:
            raise BitstreamError("truncated stream header")
        version, body_len = struct.unpack("<BI", start[4:9])
        if version not in READABLE_VERSIONS:
            readable = ", ".join(map(str, READABLE_VERSIONS))
            raise BitstreamError(f"unsupported version {version} (this decoder reads {readable})")
        if body_len > MAX_HEADER_BODY:
            raise BitstreamError(f"header length {body_len} exceeds {MAX_HEADER_BODY}")
        rest = f.read(body_len + 4)
        if len(rest) < body_len + 4:
            raise BitstreamError(f"truncated stream header: {len(rest)} of {body_len + 4} bytes")
        body, (crc,) = rest[:body_len], struct.unpack("<I", rest[body_len:])
        if zlib.crc32(start[4:9] + body) != crc:
            raise BitstreamError("CRC32 mismatch")
        return cls._parse(body, version)

    @classmethod
    def from_bytes(cls, data: bytes) -> StreamHeader:
        import io

        return cls.read(io.BytesIO(data))

    @classmethod
    def _parse(cls, body: bytes, version: int) -> StreamHeader:
        r = _Reader(body, None)
        (w, h, fnum, fden, frames, clip_len, clips, mode, pix, seed) = r.unpack(
            _HEADER_FIXED, "fixed fields"
        )
        for name, v, hi in (("width", w, MAX_SIDE), ("height", h, MAX_SIDE)):
            if not 1 <= v <= hi:
                raise BitstreamError(f"{name} {v} outside 1..{hi}")
        if not 1 <= frames <= MAX_FRAMES:
            raise BitstreamError(f"frame count {frames} outside 1..{MAX_FRAMES}")
        if not 1 <= clip_len <= frames:
            raise BitstreamError(f"clip length {clip_len} outside 1..{frames}")
        if clips != -(-frames // clip_len):
            raise BitstreamError(f"clip count {clips} inconsistent with {frames}/{clip_len}")
        if fnum == 0 or fden == 0:
            raise BitstreamError(f"frame rate {fnum}/{fden} invalid")
        if mode >= len(MODES):
            raise BitstreamError(f"mode {mode} unknown")
        if pix >= len(PIX_FMTS):
            raise BitstreamError(f"pixel format {pix} unknown")
        (cfg_len,) = r.unpack("H", "backbone length")
        try:
            backbone = json.loads(r.take(cfg_len, "backbone config"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise BitstreamError(f"backbone config is not valid JSON ({e})") from e
        if not isinstance(backbone, dict):
            raise BitstreamError("backbone config is not an object")
        return cls(
            w, h, Fraction(fnum, fden), frames, clip_len, MODES[mode], seed, backbone,
            PIX_FMTS[pix], version,
        )  # fmt: skip


# ------------------------------------------------------------------------------ chunks


@dataclass(frozen=True)
class ClipChunk:
    index: int
    first_frame: int
    frames: int
    key: bool  # a key clip (flag FLAG_KEY): its start is the seeded init, not II
    alpha_num: int  # II strength alpha's numerator over warmstart.ALPHA_DEN (0: key clip)
    q_den: int  # quantisation precision: step_l = scale_l / q_den
    layers: list[tuple[int, int]] = field(default_factory=list)  # per layer (M, r)
    payload: bytes = b""

    def to_bytes(self) -> bytes:
        body = bytearray(
            struct.pack(
                "<IIHBBH",
                self.index,
                self.first_frame,
                self.frames,
                FLAG_KEY if self.key else 0,
                self.alpha_num,
                self.q_den,
            )
        )
        _put_varint(body, len(self.layers))
        for m, r in self.layers:
            _put_varint(body, m)
            if m:
                body += struct.pack("<H", r)
        _put_varint(body, len(self.payload))
        body += self.payload
        head = CHUNK_MAGIC + struct.pack("<I", len(body)) + bytes(body)
        return head + struct.pack("<I", zlib.crc32(head))

    @classmethod
    def from_bytes(cls, data: bytes, expect_index: int | None = None) -> ClipChunk:
        import io

        f = io.BytesIO(data)
        chunk = read_chunk(
            f,
            expect_index if expect_index is not None else 0,
            strict_index=expect_index is not None,
        )
        if chunk is None:
            raise BitstreamError("empty chunk", expect_index)
        if f.read(1):
            raise BitstreamError("trailing bytes after chunk", chunk.index)
        return chunk


READ_PIECE = 1 << 20


def _read_upto(f: BinaryIO, n: int) -> bytes:
    """Up to n bytes, read a piece at a time: a file's `read(n)` allocates n bytes before
    it knows how many exist, so a 20-byte file declaring a 1 GiB chunk would cost 1 GiB."""
    if n <= READ_PIECE:
        return f.read(n)
    parts: list[bytes] = []
    left = n
    while left > 0:
        b = f.read(min(left, READ_PIECE))
        if not b:
            break
        parts.append(b)
        left -= len(b)
    return b"".join(parts)


def read_chunk(f: BinaryIO, index: int, *, strict_index: bool = True) -> ClipChunk | None:
    """Read the next chunk, expected to be clip `index`; None at a clean end of stream."""
    head = f.read(6)
    if not head:
        return None
    if len(head) < 6:
        raise BitstreamError(f"truncated chunk header ({len(head)} of 6 bytes)", index)
    if head[:2] != CHUNK_MAGIC:
        raise BitstreamError("bad chunk magic (corrupt or misaligned stream)", index)
    (body_len,) = struct.unpack("<I", head[2:])
    if body_len > MAX_CHUNK_BODY:
        raise BitstreamError(f"chunk length {body_len} exceeds {MAX_CHUNK_BODY}", index)
    rest = _read_upto(f, body_len + 4)
    if len(rest) < body_len + 4:
        raise BitstreamError(f"truncated: {len(rest)} of {body_len + 4} bytes present", index)
    body, (crc,) = rest[:body_len], struct.unpack("<I", rest[body_len:])
    if zlib.crc32(head + body) != crc:
        raise BitstreamError("CRC32 mismatch (corrupted chunk)", index)
    r = _Reader(body, index)
    k, first, frames, flags, alpha_num, q_den = r.unpack("IIHBBH", "clip header")
    if strict_index and k != index:
        raise BitstreamError(f"chunk carries clip index {k}, expected {index}", index)
    n_layers = r.varint("layer count")
    if n_layers > MAX_LAYERS:
        raise BitstreamError(f"layer count {n_layers} exceeds {MAX_LAYERS}", k)
    layers = []
    for i in range(n_layers):
        m = r.varint(f"layer {i} range")
        (rr,) = r.unpack("H", f"layer {i} Laplace parameter") if m else (0,)
        layers.append((m, rr))
    plen = r.varint("payload length")
    payload = r.take(plen, "payload")
    if r.pos != len(body):
        raise BitstreamError(f"{len(body) - r.pos} unexpected bytes after payload", k)
    return ClipChunk(k, first, frames, bool(flags & FLAG_KEY), alpha_num, q_den, layers, payload)


def iter_chunks(f: BinaryIO, header: StreamHeader) -> Iterator[ClipChunk]:
    """Parsed chunks in order; the stream must hold exactly header.num_clips of them."""
    for k in range(header.num_clips):
        chunk = read_chunk(f, k)
        if chunk is None:
            raise BitstreamError(f"stream ends before clip {k} of {header.num_clips}", k)
        yield chunk
    if f.read(1):
        raise BitstreamError("trailing bytes after the last clip", header.num_clips - 1)


def read_stream(f: BinaryIO) -> tuple[StreamHeader, Iterator[bytes]]:
    """The header and an iterator over each chunk's bytes, validated as they are read."""
    header = StreamHeader.read(f)
    return header, (c.to_bytes() for c in iter_chunks(f, header))
