"""Classic codecs (x264, x265, SVT-AV1) through PyAV on exactly the frames the INR sees.

Why this shape:
* The INR codec is measured in RGB PSNR on RGB frames, so the classic codecs get the same
  uint8 RGB frames (``core.video.read_frames`` at the same ``--frames``/``--width``),
  converted to **yuv444p** (no chroma subsampling, so they are not handicapped against an
  RGB codec), decoded back to RGB and scored with ``core.metrics.psnr_per_frame``. The
  RGB -> YUV -> RGB round trip alone costs a little (8-bit limited range), which caps
  their PSNR in the high 40s; that is far above the rates compared here.
* SVT-AV1 only takes 4:2:0, so it is run in **yuv420p** (odd sizes padded to even by
  edge replication and cropped back after decoding); its curve is labelled accordingly.
* Rate is the sum of the encoded packet sizes plus any out-of-band extradata (SPS/PPS),
  i.e. the elementary stream without container overhead, divided by frames x W x H,
  **minus SEI NAL units**: x264 and x265 embed their whole settings string as SEI
  (about 0.6-2 KB), which decoders ignore and which at 48 small frames is a large share
  of the low-rate points (x265 could not go below ~0.03 bpp at 160 px because of it).
  The raw count is kept as ``bytes_raw``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import av
import numpy as np

from core.metrics import psnr_per_frame

# SVT-AV1 prints a config banner per encoder instance to stderr; errors only, please.
os.environ.setdefault("SVT_LOG", "1")


@dataclass(frozen=True)
class ClassicCodec:
    """One classic encoder configuration swept over quality values."""

    label: str  # curve name in results and plots
    encoder: str  # PyAV/FFmpeg encoder name
    decoder: str
    pix_fmt: str
    options: dict[str, str] = field(default_factory=dict)
    quality_key: str = "crf"
    qualities: tuple[int, ...] = ()
    even_dims: bool = False  # the encoder rejects odd sizes: pad and crop back


# A dense CRF grid: it costs little at these sizes, and the BD computation then picks the
# points that bracket the INR's range (bdrate.bracket) instead of us guessing it in advance.
X26X_CRFS = tuple(range(6, 52, 3))
# veryslow costs ~1 s per point at 160 px, more at low CRF: a coarser grid over the same span.
VERYSLOW_CRFS = tuple(range(9, 52, 6))

CODECS: dict[str, ClassicCodec] = {
    "x264": ClassicCodec(
        "x264", "libx264", "h264", "yuv444p", {"preset": "medium"}, qualities=X26X_CRFS
    ),
    "x265": ClassicCodec(
        "x265",
        "libx265",
        "hevc",
        "yuv444p",
        {"preset": "medium", "x265-params": "log-level=error"},
        qualities=X26X_CRFS,
    ),
    "x265-veryslow": ClassicCodec(
        "x265-veryslow",
        "libx265",
        "hevc",
        "yuv444p",
        {"preset": "veryslow", "x265-params": "log-level=error"},
        qualities=VERYSLOW_CRFS,
    ),
    "svtav1": ClassicCodec(
        "svtav1 (yuv420p)",
        "libsvtav1",
        "libdav1d",
        "yuv420p",
        {"preset": "6"},
        qualities=tuple(range(8, 64, 5)),
        even_dims=True,
    ),
}


def available(codec: ClassicCodec) -> str | None:
    """None if the encoder and decoder exist in this PyAV build, else why not."""
    for name, mode in ((codec.encoder, "w"), (codec.decoder, "r")):
        try:
            av.codec.Codec(name, mode)
        except Exception as e:  # PyAV raises UnknownCodecError (a ValueError subclass)
            return f"{name} unavailable: {e}"
    return None


# NAL unit types of SEI messages, which carry no picture data.
_SEI = {"h264": lambda b: b & 0x1F == 6, "hevc": lambda b: (b >> 1) & 0x3F in (39, 40)}


def annexb_bytes_without_sei(data: bytes, decoder: str) -> int:
    """Size of an Annex-B H.264/HEVC stream with its SEI NAL units left out."""
    is_sei = _SEI.get(decoder)
    if is_sei is None:
        return len(data)
    starts = []
    i = data.find(b"\x00\x00\x01")
    while i >= 0:
        starts.append(i + 3)
        i = data.find(b"\x00\x00\x01", i + 3)
    drop = 0
    for k, start in enumerate(starts):
        end = starts[k + 1] - 3 if k + 1 < len(starts) else len(data)
        if start < len(data) and is_sei(data[start]):
            drop += end - start + 3
    return len(data) - drop


def _pad_even(frames: np.ndarray) -> np.ndarray:
    _, h, w, _ = frames.shape
    return np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")


def encode_decode(
    frames: np.ndarray, codec: ClassicCodec, quality: int, fps: Fraction = Fraction(25)
) -> tuple[int, int, np.ndarray, float]:
    """Encode RGB frames (T, H, W, 3) at one quality; return (bytes without SEI, raw bytes,
    decoded RGB, seconds)."""
    t, h, w, _ = frames.shape
    src = _pad_even(frames) if codec.even_dims else frames
    ph, pw = src.shape[1:3]
    t0 = time.perf_counter()
    enc = av.CodecContext.create(codec.encoder, "w")
    enc.width, enc.height, enc.pix_fmt = pw, ph, codec.pix_fmt
    enc.time_base = 1 / fps
    enc.framerate = fps
    enc.options = {**codec.options, codec.quality_key: str(quality)}
    packets: list[av.Packet] = []
    for i, rgb in enumerate(src):
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        vf = vf.reformat(format=codec.pix_fmt)
        vf.pts = i
        vf.time_base = enc.time_base
        packets += enc.encode(vf)
    packets += enc.encode(None)
    seconds = time.perf_counter() - t0
    extradata = bytes(enc.extradata or b"")
    stream = b"".join(bytes(p) for p in packets)
    raw = len(stream) + len(extradata)
    size = annexb_bytes_without_sei(stream, codec.decoder) + annexb_bytes_without_sei(
        extradata, codec.decoder
    )

    dec = av.CodecContext.create(codec.decoder, "r")
    if enc.extradata:
        dec.extradata = enc.extradata
    out: list[np.ndarray] = []
    for p in packets:
        out += [f.to_ndarray(format="rgb24") for f in dec.decode(p)]
    out += [f.to_ndarray(format="rgb24") for f in dec.decode(None)]
    if len(out) != t:
        raise RuntimeError(f"{codec.label} q={quality}: decoded {len(out)} of {t} frames")
    return size, raw, np.stack(out)[:, :h, :w], seconds


def sweep(frames: np.ndarray, codec: ClassicCodec) -> list[dict[str, float]]:
    """RD points of one codec over its quality grid, on the given RGB frames."""
    t, h, w, _ = frames.shape
    points = []
    for q in codec.qualities:
        size, raw, dec, seconds = encode_decode(frames, codec, q)
        points.append(
            {
                codec.quality_key: q,
                "psnr": float(np.mean(psnr_per_frame(frames, dec))),
                "bpp": size * 8 / (t * h * w),
                "bytes": size,
                "bytes_raw": raw,
                "seconds": seconds,
            }
        )
    return points


def describe(codec: ClassicCodec) -> dict[str, object]:
    """JSON-able settings of a codec, for the results file."""
    return asdict(codec)
