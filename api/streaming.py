"""Streams that grow with the job: the bitstream, the decoded video and the event feed.

Each follows the store: it sends what exists, then polls for the next object until the
job ends, so a client sees clip k the moment its chunk is committed. Store calls and
decoding run in worker threads; the event loop only moves bytes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from fractions import Fraction
from typing import Any

import anyio
import av
import numpy as np

from core.jobs import JobStatus, Keys, is_stopped, job_status, load_plan
from core.storage import NotFound, ObjectStore
from core.video import VideoWriter

log = logging.getLogger(__name__)

MEDIA_TYPES = {"mkv": "video/x-matroska", "y4m": "video/x-yuv4mpeg", "mp4": "video/mp4"}
FMP4_FLAGS = "frag_keyframe+frag_every_frame+empty_moov+default_base_moof"


class PipeBuffer:
    """A write-only, non-seekable file for PyAV: the muxer writes, we drain between clips.

    Having no `seek` makes muxers write streamable output (no index rewritten at the end).
    """

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, b: bytes) -> int:
        self._parts.append(bytes(b))
        return len(b)

    def drain(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class FragmentedMP4Writer(VideoWriter):
    """H.264 in fragmented MP4 (one fragment per frame, keyframe at each clip start), the
    form a browser `<video>` (or MSE) plays while it downloads."""

    def __init__(self, dst: Any, fps: Fraction, gop: int) -> None:
        # Same attributes as VideoWriter, but the container is opened with movflags.
        self.ext = ".mp4"
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self.container = av.open(dst, mode="w", format="mp4", options={"movflags": FMP4_FLAGS})
        self.stream = None
        self.gop = max(1, gop)

    def _open_stream(self, h: int, w: int) -> av.VideoStream:
        s = super()._open_stream(h, w)
        s.options = {"crf": "18", "preset": "veryfast", "tune": "zerolatency", "g": str(self.gop)}
        return s


def make_writer(fmt: str, sink: PipeBuffer, fps: Fraction, clip_length: int) -> VideoWriter:
    if fmt == "mp4":
        return FragmentedMP4Writer(sink, fps, clip_length)
    return VideoWriter(sink, fps, "." + fmt)


async def _next_chunk(
    store: ObjectStore, keys: Keys, k: int, n: int | None, poll: float
) -> bytes | None:
    """Chunk k as soon as it exists; None once the job can no longer produce it."""
    while True:
        try:
            return await anyio.to_thread.run_sync(store.get_bytes, keys.chunk(k))
        except NotFound:
            pass
        if await anyio.to_thread.run_sync(is_stopped, store, keys.id):
            return None
        await anyio.sleep(poll)


async def wait_header(store: ObjectStore, keys: Keys, poll: float) -> tuple[bytes, int] | None:
    """The stream header and clip count, once split has written them (None if stopped)."""
    while True:
        plan = await anyio.to_thread.run_sync(load_plan, store, keys.id)
        if plan is not None:
            header = await anyio.to_thread.run_sync(store.get_bytes, keys.header)
            return header, len(plan.clips)
        if await anyio.to_thread.run_sync(is_stopped, store, keys.id):
            return None
        await anyio.sleep(poll)


async def bitstream(store: ObjectStore, job_id: str, poll: float) -> AsyncIterator[bytes]:
    """A `.uarv`: header + chunks in order, held open until the last chunk or the end."""
    keys = Keys(job_id)
    got = await wait_header(store, keys, poll)
    if got is None:
        return
    header, n = got
    yield header
    for k in range(n):
        chunk = await _next_chunk(store, keys, k, n, poll)
        if chunk is None:
            log.info("job %s stopped: bitstream ends after %d clips", job_id, k)
            return
        yield chunk


async def decoded_video(
    store: ObjectStore, job_id: str, fmt: str, poll: float
) -> AsyncIterator[bytes]:
    """Decode clip by clip as chunks arrive and stream the container as it is written."""
    from core.codec.bitstream import StreamHeader
    from core.codec.stream import decode_clip

    keys = Keys(job_id)
    got = await wait_header(store, keys, poll)
    if got is None:
        return
    raw_header, n = got
    header = StreamHeader.from_bytes(raw_header)
    sink = PipeBuffer()
    writer = make_writer(fmt, sink, header.fps, header.clip_length)
    state = None
    try:
        for k in range(n):
            chunk = await _next_chunk(store, keys, k, n, poll)
            if chunk is None:
                break
            frames, state = await anyio.to_thread.run_sync(decode_clip, header, chunk, state)
            await anyio.to_thread.run_sync(writer.write, np.ascontiguousarray(frames))
            if data := sink.drain():
                yield data
    finally:
        await anyio.to_thread.run_sync(writer.close)
    if data := sink.drain():
        yield data


async def events(
    store: ObjectStore,
    job_id: str,
    poll: float,
    last_event_id: str | None = None,
    is_disconnected: Callable[[], Any] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """SSE events: `clip_done` per clip (id = clip index), then `job_done`, `job_failed`
    or `job_cancelled`. A reconnecting client's Last-Event-ID skips clips it has.

    While a clip trains, `clip_progress` {index, progress 0..1} is sent whenever its
    progress moved (no id: it does not advance Last-Event-ID), so a page can draw a
    live bar per clip without polling the job."""
    sent = int(last_event_id) + 1 if last_event_id and last_event_id.isdigit() else 0
    waited: dict[int, int] = {}
    progress_sent: dict[int, float] = {}
    while True:
        st: JobStatus | None = await anyio.to_thread.run_sync(lambda: job_status(store, job_id))
        if st is None:
            yield {"event": "job_cancelled", "data": json.dumps({"id": job_id})}
            return
        terminal = st.status in ("succeeded", "failed", "cancelled")
        while sent < len(st.clips) and st.clips[sent].status == "done":
            clip = st.clips[sent]
            # Metrics land just after the chunk; give them a couple of polls.
            if clip.psnr is None and not terminal and waited.get(sent, 0) < 3:
                waited[sent] = waited.get(sent, 0) + 1
                break
            yield {"event": "clip_done", "id": str(sent), "data": clip.model_dump_json()}
            sent += 1
        for clip in st.clips:
            p = clip.progress
            if clip.status == "running" and p is not None and progress_sent.get(clip.index) != p:
                progress_sent[clip.index] = p
                data = json.dumps({"index": clip.index, "progress": p})
                yield {"event": "clip_progress", "data": data}
        if terminal and (sent >= len(st.clips) or st.status != "succeeded"):
            summary = st.model_dump(mode="json", exclude={"clips"})
            name = {"succeeded": "job_done", "failed": "job_failed"}.get(st.status, "job_cancelled")
            yield {"event": name, "data": json.dumps(summary)}
            return
        if is_disconnected is not None and await is_disconnected():
            return
        await anyio.sleep(poll)
