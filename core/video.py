"""Video I/O, all through PyAV: probe, read RGB frames (whole or clip by clip), write.

Frames are uint8 numpy arrays shaped (T, H, W, 3), RGB. Reading is streaming: `iter_clips`
holds at most one clip in memory, which is what keeps the autoregressive encoder's memory
flat as videos grow.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import av
import numpy as np

from core.storage import ByteSink

PathOrFile = str | Path | BinaryIO
# What PyAV can mux into: a file name or anything with `write` (no seek: streamable output).
SinkOrPath = str | Path | BinaryIO | ByteSink


class VideoError(ValueError):
    """The input is not a usable video; the message says why, for a human."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: Fraction
    frames: int
    codec: str
    pix_fmt: str
    frames_exact: bool  # False when the count is an estimate from the container's duration

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["fps"] = float(self.fps)
        return d


def _open(src: PathOrFile) -> av.container.InputContainer:
    if isinstance(src, str | Path):
        p = Path(src)
        if not p.exists():
            raise VideoError(f"{p}: no such file")
        if p.stat().st_size == 0:
            raise VideoError(f"{p}: file is empty")
    try:
        return av.open(src if not isinstance(src, Path) else str(src), mode="r")
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(f"{_name(src)}: not a readable video container ({e})") from e


def _name(src: SinkOrPath) -> str:
    return str(src) if isinstance(src, str | Path) else getattr(src, "name", "<stream>")


def _video_stream(container: av.container.InputContainer, src: PathOrFile) -> av.VideoStream:
    if not container.streams.video:
        kinds: list[str] = sorted({str(s.type) for s in container.streams}) or ["none"]
        raise VideoError(f"{_name(src)}: no video stream (streams: {', '.join(kinds)})")
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    return stream


def _count_frames(container: av.container.InputContainer, stream: av.VideoStream) -> int:
    """Count by demuxing packets (cheap: no decoding) when the container does not say."""
    n = 0
    for packet in container.demux(stream):
        if packet.size:
            n += 1
    return n


def probe(
    src: PathOrFile, *, count_frames: bool = True, max_pixels: int | None = None
) -> VideoInfo:
    """Read size, rate, frame count and codec; raise VideoError for anything unusable.

    The frame count comes from the stream header when present, else from demuxing
    packets (no decode). A video whose first frame cannot be decoded is refused here,
    so a job never starts on a file that fails later.
    """
    with _open(src) as container:
        stream = _video_stream(container, src)
        cc = stream.codec_context
        width, height = int(cc.width or 0), int(cc.height or 0)
        if width <= 0 or height <= 0:
            raise VideoError(f"{_name(src)}: video stream has no frame size")
        if max_pixels is not None and width * height > max_pixels:
            raise VideoError(
                f"{_name(src)}: {width}x{height} exceeds the limit of {max_pixels} pixels per frame"
            )
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = Fraction(rate) if rate else Fraction(25)
        if fps <= 0 or fps > 1000:
            fps = Fraction(25)
        frames = int(stream.frames or 0)
        exact = frames > 0
        if frames <= 0 and count_frames:
            try:  # a damaged or fake container (e.g. text taken for `tty`) fails here
                frames = _count_frames(container, stream)
                container.seek(0)
            except (av.error.FFmpegError, ValueError) as e:
                raise VideoError(f"{_name(src)}: video stream cannot be read ({e})") from e
            exact = True
        elif frames <= 0 and stream.duration and stream.time_base:
            frames = math.ceil(float(stream.duration * stream.time_base * fps))
        codec = cc.name
        pix_fmt = cc.format.name if cc.format else "unknown"
        # Decode one frame: catches truncated files whose header looks fine.
        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, ValueError) as e:
            raise VideoError(f"{_name(src)}: video stream cannot be decoded ({e})") from e
        if first is None or frames <= 0:
            raise VideoError(f"{_name(src)}: video has zero decodable frames")
        if first.width * first.height <= 0:
            raise VideoError(f"{_name(src)}: decoded frame has no pixels")
    return VideoInfo(width, height, fps, frames, codec, pix_fmt, exact)


def scaled_size(width: int, height: int, target_width: int | None) -> tuple[int, int]:
    """Output size for `--width`: keep the aspect ratio, odd sizes allowed, never upscale."""
    if target_width is None or target_width >= width:
        return width, height
    if target_width < 1:
        raise VideoError(f"width must be >= 1, got {target_width}")
    return target_width, max(1, round(height * target_width / width))


def iter_frames(
    src: PathOrFile, *, frames: int | None = None, width: int | None = None
) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (H, W, 3) one at a time, resized with swscale if asked."""
    if frames is not None and frames < 1:
        raise VideoError(f"frames must be >= 1, got {frames}")
    with _open(src) as container:
        stream = _video_stream(container, src)
        out_w = out_h = None
        n = 0
        try:
            for frame in container.decode(stream):
                if out_w is None:
                    out_w, out_h = scaled_size(frame.width, frame.height, width)
                rgb = frame.reformat(width=out_w, height=out_h, format="rgb24")
                yield rgb.to_ndarray()
                n += 1
                if frames is not None and n >= frames:
                    return
        except av.error.FFmpegError as e:
            if n == 0:
                raise VideoError(f"{_name(src)}: video stream cannot be decoded ({e})") from e
            # A truncated tail: keep what decoded, as players do.
        if n == 0:
            raise VideoError(f"{_name(src)}: video has zero decodable frames")


def iter_clips(
    src: PathOrFile,
    clip_length: int,
    *,
    frames: int | None = None,
    width: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield consecutive clips (L, H, W, 3); the last may be shorter. One clip in memory."""
    if clip_length < 1:
        raise VideoError(f"clip_length must be >= 1, got {clip_length}")
    buf: list[np.ndarray] = []
    for frame in iter_frames(src, frames=frames, width=width):
        buf.append(frame)
        if len(buf) == clip_length:
            yield np.stack(buf)
            buf = []
    if buf:
        yield np.stack(buf)


def read_frames(
    src: PathOrFile, *, frames: int | None = None, width: int | None = None
) -> np.ndarray:
    """All frames at once (T, H, W, 3). Only for short inputs: memory grows with length."""
    return np.stack(list(iter_frames(src, frames=frames, width=width)))


# ---------------------------------------------------------------------------- writing

_FORMATS = {".mkv", ".y4m", ".mp4"}


def _pad_even(frame: np.ndarray) -> np.ndarray:
    """H.264 in 4:2:0 needs even sizes: repeat the last row/column (viewing copy only)."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")


class VideoWriter:
    """Write RGB uint8 frames by extension.

    `.mkv` is FFV1 in RGB (bgr0): lossless, the exact decoded frames.
    `.y4m` is YUV 4:4:4 (Y4M carries no RGB), `.mp4` is H.264 (yuv420p, CRF 18) for viewing;
    both are lossy colour conversions of the exact frames.
    """

    def __init__(self, dst: SinkOrPath, fps: Fraction, fmt: str | None = None) -> None:
        ext = fmt or Path(_name(dst)).suffix.lower()
        if not ext.startswith("."):
            ext = "." + ext
        if ext not in _FORMATS:
            raise VideoError(f"unsupported output format {ext!r}: use one of {sorted(_FORMATS)}")
        self.ext = ext
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        container_fmt = {".mkv": "matroska", ".y4m": "yuv4mpegpipe", ".mp4": "mp4"}[ext]
        target = str(dst) if isinstance(dst, Path) else dst
        self.container = av.open(target, mode="w", format=container_fmt)
        self.stream: av.VideoStream | None = None

    def _open_stream(self, h: int, w: int) -> av.VideoStream:
        if self.ext == ".mkv":
            s = self.container.add_stream("ffv1", rate=self.fps)
            s.pix_fmt = "bgr0"  # FFV1 codes it losslessly (RCT); gbrp fails to open here
        elif self.ext == ".y4m":
            s = self.container.add_stream("rawvideo", rate=self.fps)
            s.pix_fmt = "yuv444p"
        else:
            s = self.container.add_stream("libx264", rate=self.fps)
            s.pix_fmt = "yuv420p"
            s.options = {"crf": "18", "preset": "medium"}
            h, w = h + h % 2, w + w % 2
        s.width, s.height = w, h
        return s

    def write(self, frames: np.ndarray) -> None:
        """Write one frame (H, W, 3) or a batch (T, H, W, 3)."""
        batch = frames[None] if frames.ndim == 3 else frames
        for f in batch:
            if self.stream is None:
                self.stream = self._open_stream(f.shape[0], f.shape[1])
            if self.ext == ".mp4":
                f = _pad_even(f)
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            for packet in self.stream.encode(vf):
                self.container.mux(packet)

    def close(self) -> None:
        if self.stream is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_video(dst: PathOrFile, frames: Iterable[np.ndarray], fps: Fraction) -> int:
    """Write frames (an array or an iterable of frames/clips); return the frame count."""
    n = 0
    with VideoWriter(dst, fps) as w:
        for item in frames:
            w.write(item)
            n += 1 if item.ndim == 3 else item.shape[0]
    return n
