"""What the tasks do, as plain functions of (store, settings, job id): testable without
Celery, and idempotent, because every decision is taken from the objects in the store.

`split`   source -> frames/{k}.mkv (lossless), header, plan.json; the first clip of every
          chain (one per group of `key_interval` clips, one per clip in mode independent,
          else one for the whole job) is queued as soon as its frames are stored (when the
          frame count is exact), the rest of the split runs ahead: N workers train N chains.
`encode`  frames/{k} + state/{k-1} -> clips/{k}.uarc (+ state/{k}, clips/{k}.json);
          then clip k+1 is queued if it is in the same chain. The chunk is created
          exclusively and is the commit point; the state is a cache that `load_state`
          rebuilds from chunks if missing.
`resume`  re-queues whatever an unfinished job needs next (used at embedded start-up,
          where the filesystem broker cannot redeliver after a crash).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from core.jobs import (
    ClipRecord,
    Job,
    Keys,
    Plan,
    PlannedClip,
    is_stopped,
    load_job,
    load_plan,
    read_lease,
    utcnow,
    write_clip_record,
)
from core.settings import Settings
from core.storage import NotFound, ObjectStore
from worker import hooks
from worker.lease import Lease

log = logging.getLogger(__name__)

Enqueue = Callable[[str, list[Any]], None]  # (task kind "split"|"encode"|"hook", args)


class JobStopped(Exception):
    """The job was cancelled, failed elsewhere or deleted: drop this task quietly."""


class FramesNotReady(Exception):
    """Clip k's frames are not stored yet (the split runs ahead of the chain): retry soon."""


class LeaseBusy(Exception):
    """Another live worker holds this clip; retry after `remaining` seconds."""

    def __init__(self, remaining: float) -> None:
        super().__init__(f"clip leased by another worker for {remaining:.0f}s more")
        self.remaining = remaining


@contextlib.contextmanager
def _tempfile(settings: Settings, suffix: str) -> Iterator[Path]:
    settings.tmp_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=settings.tmp_dir, suffix=suffix)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        with contextlib.suppress(OSError):
            os.unlink(name)


def _download(store: ObjectStore, key: str, dst: Path) -> None:
    with store.get_stream(key) as src, open(dst, "wb") as f:
        while chunk := src.read(1024 * 1024):
            f.write(chunk)


# ------------------------------------------------------------------------------ split


def split(
    store: ObjectStore,
    settings: Settings,
    job_id: str,
    enqueue: Enqueue,
    *,
    holder: str | None = None,
) -> None:
    """Decode the source once and store each clip's frames losslessly; each chain's first
    clip is queued as soon as its frames are stored, so training starts while the split
    runs ahead.

    The header must be final before any clip trains (every clip is coded against it), so
    clips start early only when the container states an exact frame count: the header
    planned from the probe is then the header of the whole stream, and the end of the
    split checks that it was. Without an exact count (an estimate from the duration)
    the header, the plan and the chains' first clips come at the end, as the count is only
    known then. Holds the split lease (`lease/split`) throughout, so the reaper re-queues
    a split whose worker died (worker/reaper.py)."""
    keys = Keys(job_id)
    job = load_job(store, job_id)
    if job is None or is_stopped(store, job_id):
        return
    if store.exists(keys.plan):  # already split (a redelivery): just make sure it moves on
        plan = load_plan(store, job_id)
        for run in chains_of(job, len(plan.clips) if plan else 1):
            _continue_chain(store, keys, run, enqueue)
        return
    holder = holder or f"{socket.gethostname()}:{os.getpid()}"
    lease = Lease(store, keys.split_lease, holder, settings.lease_seconds)
    remaining = lease.acquire()
    if remaining is not None:
        raise LeaseBusy(remaining)
    lease.start_heartbeat()
    try:
        _split(store, settings, job_id, enqueue)
    finally:
        lease.release()


def _split(store: ObjectStore, settings: Settings, job_id: str, enqueue: Enqueue) -> None:
    from core.codec.chain import plan_stream
    from core.video import VideoError, probe

    keys = Keys(job_id)
    job = load_job(store, job_id)
    assert job is not None
    opts = job.options.to_encode_options(settings.device)
    started = utcnow()
    early: bytes | None = None  # the header stored before the split ends
    starts: set[int] = set()  # the chains' first clips, queued as their frames are stored
    with _tempfile(settings, ".src") as src:
        _download(store, keys.source, src)
        try:
            info = probe(src, max_pixels=settings.max_pixels)
            first = plan_stream(info, opts)
            # Mode whole is one clip of everything: read it as one (bounded by max_frames).
            read_len = first.clip_length if opts.mode != "whole" else settings.max_frames + 1
            if info.frames_exact and opts.mode != "whole":
                early = first.to_bytes()
                store.put_bytes(keys.header, early)
                starts = {run.start for run in chains_of(job, first.num_clips)}
            clips, shape = _store_frames(
                store, settings, job_id, src, info.fps, opts, read_len, starts, enqueue
            )
        except VideoError as e:
            _cleanup_split(store, keys)
            hooks.fail(store, job_id, "invalid_video", str(e), enqueue)
            return
        except JobStopped:
            _cleanup_split(store, keys)
            return
    n = sum(c.frames for c in clips)
    header = plan_stream(replace(info, frames=n, frames_exact=True), opts)
    wrong = _split_mismatch(header, clips, shape, early, first.frames)
    if wrong is not None:
        hooks.fail(store, job_id, *wrong, enqueue)
        return
    if early is None:
        store.put_bytes(keys.header, header.to_bytes())
    plan = Plan(width=header.width, height=header.height, frames=n, clips=clips, started_at=started)
    store.put_bytes(keys.plan, plan.model_dump_json().encode())  # the split commit point
    runs = chains_of(job, len(clips))
    log.info(
        "job %s: split into %d clips of up to %d frames, %d chain(s)",
        job_id, len(clips), read_len, len(runs),
    )  # fmt: skip
    if early is None:
        for run in runs:
            enqueue("encode", [job_id, run.start])


def _store_frames(
    store: ObjectStore,
    settings: Settings,
    job_id: str,
    src: Path,
    fps: Any,
    opts: Any,
    read_len: int,
    starts: set[int],
    enqueue: Enqueue,
) -> tuple[list[PlannedClip], tuple[int, int]]:
    """Each clip's frames, stored losslessly (FFV1) as they are read; a chain whose first
    clip is stored is queued at once (`starts`), so training runs ahead of the split."""
    from core.video import VideoError, VideoWriter, iter_clips

    keys = Keys(job_id)
    clips: list[PlannedClip] = []
    shape = (0, 0)
    n = 0
    for k, frames in enumerate(iter_clips(src, read_len, frames=opts.frames, width=opts.width)):
        if is_stopped(store, job_id):
            raise JobStopped
        shape = frames.shape[1:3]
        with _tempfile(settings, ".mkv") as tmp:
            w = VideoWriter(tmp, fps, ".mkv")
            w.write(frames)
            w.close()
            with open(tmp, "rb") as f:
                store.put_stream(keys.frames(k), f)
        clips.append(PlannedClip(index=k, first_frame=n, frames=len(frames)))
        n += len(frames)
        if n > settings.max_frames:
            raise VideoError(f"video has more than {settings.max_frames} frames")
        if k in starts:
            enqueue("encode", [job_id, k])  # a chain starts; the split runs ahead
    return clips, shape


def _split_mismatch(
    header: Any,
    clips: list[PlannedClip],
    shape: tuple[int, int],
    early: bytes | None,
    announced: int,
) -> tuple[str, str] | None:
    """(code, detail) when the stored clips are not the stream the header plans."""
    if header.num_clips != len(clips) or (header.height, header.width) != tuple(shape):
        return (
            "internal",
            f"split produced {len(clips)} clips of {shape[1]}x{shape[0]} but the stream "
            f"header plans {header.num_clips} of {header.width}x{header.height}",
        )
    if early is not None and header.to_bytes() != early:
        # The container announced a frame count the decoder did not find: the clips
        # already trained used a header that is not this stream's.
        return (
            "invalid_video",
            f"the container announced {announced} frames but "
            f"{sum(c.frames for c in clips)} were decoded",
        )
    return None


def _cleanup_split(store: ObjectStore, keys: Keys) -> None:
    store.delete_prefix(keys.prefix + "frames/")


# ----------------------------------------------------------------------------- encode


def _load_header(store: ObjectStore, keys: Keys) -> Any:
    from core.codec.bitstream import StreamHeader

    return StreamHeader.from_bytes(store.get_bytes(keys.header))


def _read_clip_frames(store: ObjectStore, settings: Settings, keys: Keys, k: int) -> np.ndarray:
    from core.video import read_frames

    with _tempfile(settings, ".mkv") as tmp:
        _download(store, keys.frames(k), tmp)
        return read_frames(tmp)


def clip_metrics(chunk: bytes, original: np.ndarray, decoded: np.ndarray) -> ClipRecord:
    """Metrics from a chunk and its frames (used when a crash lost the encoder's own)."""
    from core.metrics import mse_per_frame, psnr_per_frame

    n, h, w = original.shape[:3]
    return ClipRecord(
        # The same definitions as the encoder's own metrics (mean of per-frame PSNR).
        psnr=float(np.mean(psnr_per_frame(original, decoded))),
        mse=float(np.mean(mse_per_frame(original, decoded))),
        bytes=len(chunk),
        bpp=8 * len(chunk) / (n * h * w),
        frames=n,
        recomputed=True,
    )


def load_state(store: ObjectStore, settings: Settings, job_id: str, k: int) -> Any:
    """theta_hat_k: from state/{k}, or rebuilt by decoding chunks after the newest state."""
    from core.codec.chain import ChainState, decode_clip

    keys = Keys(job_id)
    j = k
    state = None
    while j >= 0:
        try:
            state = ChainState.from_bytes(store.get_bytes(keys.state(j)))
            break
        except NotFound:
            j -= 1
    if j == k:
        return state
    header = _load_header(store, keys)
    for i in range(j + 1, k + 1):
        chunk = store.get_bytes(keys.chunk(i))  # NotFound here means clip i is not done
        _frames, state = decode_clip(header, chunk, state)
        _restore_thumb(store, settings, keys, i, state)
        store.put_bytes(keys.state(i), state.to_bytes())
        log.info("job %s: rebuilt state %d from its chunk", job_id, i)
    return state


def _restore_thumb(store: ObjectStore, settings: Settings, keys: Keys, k: int, state: Any) -> None:
    """A decoder's state lacks the encoder-only thumbnail of the clip's last source frame
    (used for scene-cut detection): put it back so a resumed chain decides as the
    uninterrupted one would have."""
    from core.codec.scenecut import thumbnail

    if getattr(state, "thumb", None) is None and store.exists(keys.frames(k)):
        state.thumb = thumbnail(_read_clip_frames(store, settings, keys, k)[-1])


def _repair(store: ObjectStore, settings: Settings, job_id: str, k: int) -> None:
    """A committed clip whose state or metrics a crash lost: rebuild them from the chunk."""
    from core.codec.chain import decode_clip

    keys = Keys(job_id)
    if store.exists(keys.state(k)) and store.exists(keys.metrics(k)):
        return
    prev = load_state(store, settings, job_id, k - 1) if k > 0 else None
    chunk = store.get_bytes(keys.chunk(k))
    decoded, state = decode_clip(_load_header(store, keys), chunk, prev)
    _restore_thumb(store, settings, keys, k, state)
    if not store.exists(keys.state(k)):
        store.put_bytes(keys.state(k), state.to_bytes())
    if not store.exists(keys.metrics(k)):
        original = _read_clip_frames(store, settings, keys, k)
        write_clip_record(store, keys.metrics(k), clip_metrics(chunk, original, decoded))


def chains_of(job: Any, n: int) -> list[range]:
    """The job's independent runs of clips (see core/codec/files.py `chains`)."""
    from core.codec.files import chains

    return chains(n, job.options.to_encode_options())


def _chain_of(job: Any, n: int, k: int) -> range:
    return next(r for r in chains_of(job, n) if k in r)


def _first_missing(store: ObjectStore, keys: Keys, run: range) -> int | None:
    done = set(store.list(keys.prefix + "clips/"))
    return next((i for i in run if keys.chunk(i) not in done), None)


def _lease_live(store: ObjectStore, keys: Keys, k: int) -> bool:
    lease = read_lease(store, keys.lease(k))
    return lease is not None and lease.live()


def clip_count(store: ObjectStore, keys: Keys, plan: Plan | None = None) -> int | None:
    """Clips of the job: from the plan, or from the header stored early by a split still
    running (an exact count); None before either exists."""
    from core.codec.bitstream import StreamHeader

    plan = plan or load_plan(store, keys.id)
    if plan is not None:
        return len(plan.clips)
    try:
        return StreamHeader.from_bytes(store.get_bytes(keys.header)).num_clips
    except NotFound:
        return None


def _continue_chain(store: ObjectStore, keys: Keys, run: range, enqueue: Enqueue) -> None:
    """Queue the chain's first clip not done, unless a live worker already holds it."""
    nxt = _first_missing(store, keys, run)
    if nxt is not None and not _lease_live(store, keys, nxt):
        enqueue("encode", [keys.id, nxt])


def encode(
    store: ObjectStore,
    settings: Settings,
    job_id: str,
    k: int,
    enqueue: Enqueue,
    *,
    holder: str | None = None,
) -> ClipRecord | None:
    """Train clip k and commit it; returns its metrics, or None when there was nothing
    to do (already done, job stopped). Raises LeaseBusy, StoreError (retry) or the
    codec's error (the caller marks the job failed)."""
    keys = Keys(job_id)
    job = load_job(store, job_id)
    run = _turn(store, settings, job, keys, k, enqueue) if job is not None else None
    if job is None or run is None:
        return None
    holder = holder or f"{socket.gethostname()}:{os.getpid()}"
    lease = Lease(store, keys.lease(k), holder, settings.lease_seconds)
    remaining = lease.acquire()
    if remaining is not None:
        raise LeaseBusy(remaining)
    watch = _Watch(store, job_id, lease)
    lease.start_heartbeat(on_tick=watch.check_stopped)
    try:
        metrics = _train_and_commit(store, settings, job, keys, k, run, watch.progress)
    except JobStopped:
        log.info("job %s: stopped during clip %d", job_id, k)
        return None
    finally:
        lease.release()
    if metrics is None:
        return None
    hooks.emit_done(store, job, k, enqueue)
    if k + 1 in run:
        enqueue("encode", [job_id, k + 1])
    return metrics


def _turn(
    store: ObjectStore, settings: Settings, job: Job, keys: Keys, k: int, enqueue: Enqueue
) -> range | None:
    """Clip k's chain if clip k is to train now; None when there is nothing to do (done
    before: repaired and moved on; out of order; job stopped). FramesNotReady while the
    split has not stored its frames yet."""
    plan = load_plan(store, keys.id)
    n_clips = clip_count(store, keys, plan)
    if n_clips is None or is_stopped(store, keys.id) or k >= n_clips:
        return None
    run = _chain_of(job, n_clips, k)
    if store.exists(keys.chunk(k)):  # done before (a redelivery): repair, move on
        _repair(store, settings, keys.id, k)
        hooks.emit_done(store, job, k, enqueue)  # again: the crash may have come before
        _continue_chain(store, keys, run, enqueue)
        return None
    if k > run.start and not store.exists(keys.chunk(k - 1)):
        # Out of order (should not happen): the chain must go through k-1 first.
        _continue_chain(store, keys, run, enqueue)
        return None
    if plan is None and not store.exists(keys.frames(k)):
        raise FramesNotReady(f"clip {k}: frames not split yet")
    return run


class _Watch:
    """A training clip's link to the world: progress into the lease (which carries it to
    the API), and JobStopped at the next progress call once the job is cancelled."""

    def __init__(self, store: ObjectStore, job_id: str, lease: Lease) -> None:
        self.store, self.job_id, self.lease = store, job_id, lease
        self.stopped = False
        self.last_write = time.monotonic()

    def check_stopped(self) -> None:  # from the lease's heartbeat thread
        self.stopped = self.stopped or is_stopped(self.store, self.job_id)

    def progress(self, step: int, total: int, *_: Any) -> None:
        self.lease.progress = round(step / max(1, total), 4)
        if time.monotonic() - self.last_write > 1.0:
            self.last_write = time.monotonic()
            with contextlib.suppress(Exception):
                self.lease.renew()
        if self.stopped:
            raise JobStopped


def _train_and_commit(
    store: ObjectStore,
    settings: Settings,
    job: Job,
    keys: Keys,
    k: int,
    run: range,
    progress: Any,
) -> ClipRecord | None:
    """Train clip k and create its chunk exclusively (the commit point); its metrics, or
    None when the job was cancelled during the commit (then nothing is left behind)."""
    from core.codec.chain import encode_clip

    header = _load_header(store, keys)
    opts = job.options.to_encode_options(settings.device)
    # A chain's first clip starts from nothing (an I-model), like the CLI's `--jobs`.
    prev = load_state(store, settings, keys.id, k - 1) if k > run.start else None
    frames = _read_clip_frames(store, settings, keys, k)
    result = encode_clip(header, k, frames, prev, opts, progress=progress)
    del frames
    metrics = ClipRecord.model_validate(
        {
            **{k_: _jsonable(v) for k_, v in result.metrics.model_dump().items()},
            "done_at": round(time.time(), 3),  # the hand-off to k+1 (job status)
        }
    )
    if is_stopped(store, keys.id):
        raise JobStopped
    if store.put_if_absent(keys.chunk(k), result.chunk):
        store.put_bytes(keys.state(k), result.state.to_bytes())
        write_clip_record(store, keys.metrics(k), metrics)
        log.info("job %s: clip %d done (%s)", keys.id, k, _short(metrics))
    else:  # a duplicate won the race; its chunk (and state) are the truth
        log.warning("job %s: clip %d was committed by another worker", keys.id, k)
    if is_stopped(store, keys.id):  # cancelled during the commit: leave nothing behind
        for key in (keys.chunk(k), keys.state(k), keys.metrics(k)):
            store.delete(key)
        return None
    return metrics


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    return v


def _short(m: ClipRecord) -> str:
    return ", ".join(
        f"{k}={v:.4g}" for k in ("psnr", "bpp", "seconds") if (v := getattr(m, k)) is not None
    )


# ----------------------------------------------------------------------------- resume


def resume(store: ObjectStore, enqueue: Enqueue) -> int:
    """Queue the next step of every unfinished job, and every webhook still pending;
    returns how many were queued.

    Safe to run any time: duplicates are absorbed by the idempotent tasks and the leases.
    """
    n = 0
    for job_id in store.list_dirs("jobs/"):
        try:
            keys = Keys(job_id)
        except ValueError:
            continue
        if not store.exists(keys.job):
            continue
        n += hooks.requeue_pending(store, job_id, enqueue)  # finished jobs' too
        if is_stopped(store, job_id):
            continue
        plan = load_plan(store, job_id)
        if plan is None:
            enqueue("split", [job_id])
            n += 1
        else:
            job = load_job(store, job_id)
            for run in chains_of(job, len(plan.clips)) if job else []:
                if (nxt := _first_missing(store, keys, run)) is not None:
                    enqueue("encode", [job_id, nxt])
                    n += 1
    return n
