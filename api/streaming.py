"""Streams that grow with the job: the bitstream, the decoded video and the event feed.

Each follows the store: it sends what exists, then polls for the next object until the
job ends, so a client sees clip k the moment its chunk is committed. Store calls and
decoding run in worker threads; the event loop only moves bytes.

Event streams share one status computation per job (`JobFeed`): however many clients
watch a job, its status is derived from the store once per poll interval, and each
stream only sends what changed since its last event (new clips done, the progress of the
few clips training). Decoding is bounded by the callers (api/quotas.py) and uses one
torch thread, so a decode leaves the API's other core to the event loop.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import anyio
import av
import numpy as np

from api.links import linked_status
from api.quotas import Slot
from core.jobs import ClipStatus, JobStatus, Keys, is_stopped
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
        s.options = {
            "crf": "18",
            "preset": "veryfast",
            "tune": "zerolatency",
            "g": str(self.gop),
            "threads": "1",  # in the API process: leave cores to the requests
        }
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
    """The stream header and clip count, once split has written them (None if stopped).

    The header is final when it exists: split writes it before the first clip trains
    only when the frame count is exact, else with the plan (worker/pipeline.py)."""
    from core.codec.bitstream import StreamHeader

    while True:
        try:
            header = await anyio.to_thread.run_sync(store.get_bytes, keys.header)
            return header, StreamHeader.from_bytes(header).num_clips
        except NotFound:
            pass
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


_torch_threads_set = False


def _one_torch_thread() -> None:
    """The API process trains nothing: its torch (decoding) gets one thread, so a decode
    never takes every core from the event loop and the status polls."""
    global _torch_threads_set
    if not _torch_threads_set:
        import torch

        torch.set_num_threads(1)
        _torch_threads_set = True


async def decoded_video(
    store: ObjectStore, job_id: str, fmt: str, poll: float
) -> AsyncIterator[bytes]:
    """Decode clip by clip as chunks arrive and stream the container as it is written."""
    from core.codec.bitstream import StreamHeader
    from core.codec.chain import decode_clip

    _one_torch_thread()
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


async def held(slot: Slot, stream: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """`stream`, with `slot` given back when it ends, fails or the client goes away."""
    try:
        async for item in stream:
            yield item
    finally:
        slot.release()


# --------------------------------------------------------------------------- job feeds


@dataclass
class Snapshot:
    """One derivation of a job's status, shared by every stream watching the job."""

    version: int
    status: JobStatus | None  # None: the job is gone
    running: list[ClipStatus] = field(default_factory=list)


class JobFeed:
    """The status of one job, derived at most once per poll interval for all its streams.

    Streams call `next(version)`; the first caller after the interval refreshes (under a
    lock, in a thread) and every other caller gets the same snapshot. A refresh whose
    listing of the job's objects is unchanged, with no lease (whose progress changes in
    place), reuses the previous status instead of rebuilding it.
    """

    def __init__(self, store: ObjectStore, job_id: str, poll: float) -> None:
        self.store, self.job_id, self.poll = store, job_id, poll
        self.snapshot = Snapshot(0, None)
        self.at = -math.inf
        self.users = 0
        self.refreshes = 0  # status derivations done (for tests and metrics)
        self._listing: list[str] | None = None
        self._lock = anyio.Lock()

    def _derive(self) -> JobStatus | None:
        listing = self.store.list(Keys(self.job_id).prefix)
        lease = any("/lease/" in k for k in listing)
        if listing == self._listing and not lease and self.snapshot.version:
            return self.snapshot.status
        self.refreshes += 1
        st = linked_status(self.store, self.job_id)
        self._listing = listing
        return st

    async def next(self, seen: int) -> Snapshot:
        """The first snapshot newer than `seen` (at most one poll interval away)."""
        while self.snapshot.version <= seen:
            async with self._lock:
                if self.snapshot.version > seen:
                    break
                wait = self.at + self.poll - time.monotonic()
                if wait > 0:
                    await anyio.sleep(wait)
                st = await anyio.to_thread.run_sync(self._derive)
                running = [c for c in st.clips if c.status == "running"] if st else []
                self.snapshot = Snapshot(self.snapshot.version + 1, st, running)
                self.at = time.monotonic()
        return self.snapshot


class Feeds:
    """The feeds of the jobs being watched in this process (`app.state.feeds`)."""

    def __init__(self, store: ObjectStore, poll: float) -> None:
        self.store, self.poll = store, poll
        self.feeds: dict[str, JobFeed] = {}

    def join(self, job_id: str) -> JobFeed:
        feed = self.feeds.get(job_id)
        if feed is None:
            feed = self.feeds[job_id] = JobFeed(self.store, job_id, self.poll)
        feed.users += 1
        return feed

    def leave(self, feed: JobFeed) -> None:
        feed.users -= 1
        if feed.users <= 0 and self.feeds.get(feed.job_id) is feed:
            del self.feeds[feed.job_id]


_EVENT_ID = re.compile(r"[0-9]{1,9}")  # ASCII digits: "²".isdigit() is true, int() fails


def first_clip(last_event_id: str | None) -> int:
    """The clip to start from after `Last-Event-ID` (anything but a clip index: 0)."""
    if last_event_id and _EVENT_ID.fullmatch(last_event_id.strip()):
        return int(last_event_id) + 1
    return 0


async def events(
    feeds: Feeds,
    job_id: str,
    last_event_id: str | None = None,
    is_disconnected: Callable[[], Any] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """SSE events: `clip_done` per clip (id = clip index), then `job_done`, `job_failed`
    or `job_cancelled`. A reconnecting client's Last-Event-ID skips clips it has.

    While a clip trains, `clip_progress` {index, progress 0..1} is sent whenever its
    progress moved (no id: it does not advance Last-Event-ID), so a page can draw a
    live bar per clip without polling the job."""
    sent = first_clip(last_event_id)
    waited: dict[int, int] = {}
    progress_sent: dict[int, float] = {}
    feed = feeds.join(job_id)
    version = 0
    try:
        while True:
            snap = await feed.next(version)
            version, st = snap.version, snap.status
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
            for clip in snap.running:
                p = clip.progress
                if p is not None and progress_sent.get(clip.index) != p:
                    progress_sent[clip.index] = p
                    data = json.dumps({"index": clip.index, "progress": p})
                    yield {"event": "clip_progress", "data": data}
            if terminal and (sent >= len(st.clips) or st.status != "succeeded"):
                summary = st.model_dump(mode="json", exclude={"clips"})
                name = {"succeeded": "job_done", "failed": "job_failed"}.get(
                    st.status, "job_cancelled"
                )
                yield {"event": name, "data": json.dumps(summary)}
                return
            if is_disconnected is not None and await is_disconnected():
                return
    finally:
        feeds.leave(feed)
