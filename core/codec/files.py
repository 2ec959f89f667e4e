"""Whole-file encode/decode/info on top of the clip chain (what the CLI and bench call).

Encoding streams the source clip by clip (core.video.iter_clips) and writes each chunk to
the output as soon as it is coded, so memory is bounded by one clip and a partially
written file is never left behind: the stream goes to a temporary file renamed at the end.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from core.codec.bitstream import BitstreamError, ClipChunk, StreamHeader, iter_chunks
from core.codec.chain import ChainState, ClipResult, decode_clip, encode_clips, plan_stream
from core.codec.fit import Progress
from core.codec.options import EncodeOptions
from core.codec.warmstart import ALPHA_DEN
from core.video import VideoWriter, iter_clips, probe

ClipProgress = Callable[[int, int], Progress | None]  # (clip, clips) -> per-step callback
ClipDone = Callable[[ClipResult], None]


def chains(num_clips: int, opts: EncodeOptions) -> list[range]:
    """The runs of clips that depend on each other. Different runs share nothing (each
    starts with an I-model), so they may train concurrently: every clip in `independent`
    mode, every group of `key_interval` clips in `uar` mode, else the whole stream."""
    n = num_clips
    if opts.mode == "independent":
        size = 1
    elif opts.mode == "uar" and opts.key_interval > 0:
        size = opts.key_interval
    else:
        size = n
    return [range(a, min(a + size, n)) for a in range(0, n, size)]


def encode_file(
    src: str | Path,
    dst: str | Path,
    opts: EncodeOptions,
    *,
    jobs: int = 1,
    clip_progress: ClipProgress | None = None,
    on_clip: ClipDone | None = None,
) -> dict[str, Any]:
    """Encode `src` to the .uarv `dst`; return the report (per clip and total metrics).

    With jobs > 1, up to `jobs` independent chains of clips (see `chains`) train at once
    on the device; the stream's bytes are the same as with jobs = 1.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    t0 = time.perf_counter()
    info = probe(src)
    header = plan_stream(info, opts)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=".uarv", dir=dst.parent)
    clips: list[dict[str, Any]] = []
    psnr_frames: list[float] = []
    sq_err = 0.0
    try:
        with os.fdopen(fd, "wb") as f, tempfile.TemporaryDirectory(dir=dst.parent) as cache:
            header_bytes = header.to_bytes()
            f.write(header_bytes)
            source = _ClipSource(src, header, opts, Path(cache))
            runs = chains(header.num_clips, opts)
            for b in range(0, len(runs), jobs):
                for res in _encode_runs(header, runs[b : b + jobs], source, opts, clip_progress):
                    f.write(res.chunk)
                    f.flush()
                    m = res.metrics
                    clips.append(m.model_dump(exclude={"psnr_frames"}))
                    psnr_frames += m.psnr_frames
                    sq_err += m.mse * m.frames
                    if on_clip:
                        on_clip(res)
            source.check_complete()
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    total_bytes = dst.stat().st_size
    pixels = header.frames * header.width * header.height
    return {
        "input": {**info.to_dict(), "path": str(src)},
        "output": str(dst),
        "options": opts.model_dump(by_alias=True),
        "jobs": jobs,
        "width": header.width,
        "height": header.height,
        "frames": header.frames,
        "clip_length": header.clip_length,
        "clips": clips,
        "total": {
            "psnr": float(np.mean(psnr_frames)),
            "psnr_mse": float(10 * np.log10(255.0**2 / max(sq_err / header.frames, 1e-12))),
            "bytes": total_bytes,
            "bits": total_bytes * 8,
            "header_bytes": len(header_bytes),
            "bpp": total_bytes * 8 / pixels,
            "kbps": total_bytes * 8 * float(header.fps) / header.frames / 1000,
            "seconds": time.perf_counter() - t0,
            "peak_rss_mb": max(c["peak_rss_mb"] for c in clips),
            "key_clips": sum(1 for c in clips if c["key"]),
        },
    }


class _ClipSource:
    """The source's clips in order, decoded once. A clip wanted out of order (a later
    chain starting before the earlier ones end) is read ahead and parked in `cache` as
    .npy, so memory stays bounded by the clips in training, not by the video."""

    def __init__(self, src: str | Path, header: StreamHeader, opts: EncodeOptions, cache: Path):
        self.it = iter_clips(src, header.clip_length, frames=header.frames, width=opts.width)
        self.src, self.header, self.cache = src, header, cache
        self.read = 0  # clips decoded so far
        self.frames = 0

    def get(self, k: int) -> np.ndarray:
        path = self.cache / f"{k}.npy"
        if k < self.read:
            frames = np.load(path)
            path.unlink()
            return frames
        while True:
            frames = next(self.it, None)
            if frames is None:
                raise ValueError(
                    f"{self.src}: decoded {self.frames} frames, the container announced "
                    f"{self.header.frames}"
                )
            self.read += 1
            self.frames += len(frames)
            if self.read - 1 == k:
                return frames
            np.save(self.cache / f"{self.read - 1}.npy", frames)

    def check_complete(self) -> None:
        # The container over-reported its length: the header must not lie.
        if self.frames != self.header.frames:
            raise ValueError(
                f"{self.src}: decoded {self.frames} frames, the container announced "
                f"{self.header.frames}"
            )


def _encode_runs(
    header: StreamHeader,
    runs: list[range],
    source: _ClipSource,
    opts: EncodeOptions,
    clip_progress: ClipProgress | None,
) -> list[ClipResult]:
    """Encode chains of clips side by side (round r trains the r-th clip of every chain
    together); results come back in stream order."""
    done: list[list[ClipResult]] = [[] for _ in runs]
    prev: list[ChainState | None] = [None] * len(runs)
    for r in range(max(len(run) for run in runs)):
        active = [i for i, run in enumerate(runs) if r < len(run)]
        items = [(runs[i][r], source.get(runs[i][r]), prev[i]) for i in active]
        callbacks = [
            clip_progress(k, header.num_clips) if clip_progress else None for k, _, _ in items
        ]
        for i, res in zip(active, encode_clips(header, items, opts, callbacks), strict=True):
            res.frames = None  # the reconstruction is in the metrics; free it
            done[i].append(res)
            prev[i] = res.state
    return [res for run in done for res in run]


def parse_clip_range(spec: str | None, num_clips: int) -> range:
    """`A:B` (B exclusive, either side optional, Python style) or `A` -> a range of clips."""
    if not spec:
        return range(num_clips)
    try:
        if ":" in spec:
            a, b = spec.split(":", 1)
            lo = int(a) if a else 0
            hi = int(b) if b else num_clips
        else:
            lo = int(spec)
            hi = lo + 1
    except ValueError:
        raise ValueError(f"clip range {spec!r} is not A:B") from None
    if not 0 <= lo < hi <= num_clips:
        raise ValueError(f"clip range {spec!r} outside 0:{num_clips}")
    return range(lo, hi)


def iter_decode(
    f: BinaryIO, clips: range | None = None, device: str = "cpu"
) -> tuple[StreamHeader, Iterator[tuple[int, np.ndarray]]]:
    """Decode a stream clip by clip. For a sub-range the chain is decoded from the group
    start of its first clip (random access at I-model boundaries)."""
    header = StreamHeader.read(f)
    wanted = clips if clips is not None else range(header.num_clips)

    def gen() -> Iterator[tuple[int, np.ndarray]]:
        prev: ChainState | None = None
        pending: list[ClipChunk] = []
        for chunk in iter_chunks(f, header):
            k = chunk.index
            if k >= wanted.stop:
                return
            if k < wanted.start:
                # Keep only what the chain back to the last I-model needs.
                pending = [chunk] if chunk.key else [*pending, chunk]
                continue
            for c in pending:
                _, prev = decode_clip(header, c, prev, device)
            pending = []
            frames, prev = decode_clip(header, chunk, prev, device)
            yield k, frames

    return header, gen()


def decode_file(
    src: str | Path, dst: str | Path, clips: str | None = None, device: str = "cpu"
) -> dict[str, Any]:
    """Decode a .uarv to .mkv (lossless RGB), .y4m or .mp4; written atomically."""
    dst = Path(dst)
    ext = dst.suffix.lower()
    with open(src, "rb") as f:
        header = StreamHeader.read(f)
        f.seek(0)
        wanted = parse_clip_range(clips, header.num_clips)
        _, frames_iter = iter_decode(f, wanted, device)
        fd, tmp = tempfile.mkstemp(prefix=".part-", suffix=ext, dir=dst.parent or ".")
        os.close(fd)
        n = 0
        try:
            with VideoWriter(tmp, header.fps, ext) as w:
                for _, frames in frames_iter:
                    w.write(frames)
                    n += len(frames)
            os.replace(tmp, dst)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return {"output": str(dst), "frames": n, "clips": [wanted.start, wanted.stop]}


def stream_info(src: str | Path) -> dict[str, Any]:
    """Header fields and per-clip sizes, validating every chunk's CRC on the way."""
    with open(src, "rb") as f:
        header = StreamHeader.read(f)
        header_bytes = f.tell()
        clips = []
        try:
            for c in iter_chunks(f, header):
                clips.append(
                    {
                        "index": c.index,
                        "first_frame": c.first_frame,
                        "frames": c.frames,
                        "key": c.key,
                        "a_k": c.alpha_num / ALPHA_DEN if not c.key else 0.0,
                        "bytes": len(c.to_bytes()),
                        "payload_bytes": len(c.payload),
                        "zero_layers": sum(1 for m, _ in c.layers if m == 0),
                        "layers": len(c.layers),
                    }
                )
            error = None
        except BitstreamError as e:
            error = str(e)
    size = Path(src).stat().st_size
    return {
        "version": header.version,
        "width": header.width,
        "height": header.height,
        "fps": float(header.fps),
        "fps_fraction": f"{header.fps.numerator}/{header.fps.denominator}",
        "frames": header.frames,
        "clip_length": header.clip_length,
        "num_clips": header.num_clips,
        "mode": header.mode,
        "pix_fmt": header.pix_fmt,
        "seed": header.seed,
        "backbone": header.backbone,
        "header_bytes": header_bytes,
        "bytes": size,
        "bpp": size * 8 / (header.frames * header.width * header.height),
        "clips": clips,
        "error": error,
    }
