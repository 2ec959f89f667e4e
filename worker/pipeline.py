"""What the tasks do, as plain functions of (store, settings, job id): testable without
Celery, and idempotent, because every decision is taken from the objects in the store.

`split`   source -> frames/{k}.mkv (lossless), plan.json, header; then clip 0 is queued.
`encode`  frames/{k} + state/{k-1} -> clips/{k}.uarc (+ state/{k}, clips/{k}.json);
          then clip k+1 is queued. The chunk is created exclusively and is the commit
          point; the state is a cache that `load_state` rebuilds from chunks if missing.
`resume`  re-queues whatever an unfinished job needs next (used at embedded start-up,
          where the filesystem broker cannot redeliver after a crash).
"""

from __future__ import annotations

import contextlib
import json
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
    Keys,
    Plan,
    PlannedClip,
    is_stopped,
    load_job,
    load_plan,
    mark_failed,
    read_json,
)
from core.settings import Settings
from core.storage import NotFound, ObjectStore
from worker.lease import Lease

log = logging.getLogger(__name__)

Enqueue = Callable[[str, list[Any]], None]  # (task kind "split"|"encode", args)


class JobStopped(Exception):
    """The job was cancelled, failed elsewhere or deleted: drop this task quietly."""


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


def split(store: ObjectStore, settings: Settings, job_id: str, enqueue: Enqueue) -> None:
    """Decode the source once, store each clip's frames losslessly, then queue clip 0."""
    from core.codec.stream import plan_stream
    from core.video import VideoError, VideoWriter, iter_clips, probe

    keys = Keys(job_id)
    job = load_job(store, job_id)
    if job is None or is_stopped(store, job_id):
        return
    if store.exists(keys.plan):  # already split (a redelivery): just make sure it moves on
        enqueue("encode", [job_id, 0])
        return
    opts = job.options.to_encode_options(settings.device)
    with _tempfile(settings, ".src") as src:
        _download(store, keys.source, src)
        try:
            info = probe(src, max_pixels=settings.max_pixels)
            first = plan_stream(info, opts)
            # Mode whole is one clip of everything: read it as one (bounded by max_frames).
            read_len = first.clip_length if opts.mode != "whole" else settings.max_frames + 1
            clips: list[PlannedClip] = []
            shape: tuple[int, int] | None = None
            n = 0
            for k, frames in enumerate(
                iter_clips(src, read_len, frames=opts.frames, width=opts.width)
            ):
                if is_stopped(store, job_id):
                    raise JobStopped
                shape = frames.shape[1:3]
                with _tempfile(settings, ".mkv") as tmp:
                    w = VideoWriter(tmp, info.fps, ".mkv")
                    w.write(frames)
                    w.close()
                    with open(tmp, "rb") as f:
                        store.put_stream(keys.frames(k), f)
                clips.append(PlannedClip(index=k, first_frame=n, frames=len(frames)))
                n += len(frames)
                if n > settings.max_frames:
                    raise VideoError(f"video has more than {settings.max_frames} frames")
        except VideoError as e:
            _cleanup_split(store, keys)
            mark_failed(store, job_id, "invalid_video", str(e))
            return
        except JobStopped:
            _cleanup_split(store, keys)
            return
    assert shape is not None
    header = plan_stream(replace(info, frames=n, frames_exact=True), opts)
    if header.num_clips != len(clips) or (header.height, header.width) != tuple(shape):
        mark_failed(
            store,
            job_id,
            "internal",
            f"split produced {len(clips)} clips of {shape[1]}x{shape[0]} but the stream "
            f"header plans {header.num_clips} of {header.width}x{header.height}",
        )
        return
    store.put_bytes(keys.header, header.to_bytes())
    plan = Plan(width=header.width, height=header.height, frames=n, clips=clips)
    store.put_bytes(keys.plan, plan.model_dump_json().encode())  # the split commit point
    log.info("job %s: split into %d clips of up to %d frames", job_id, len(clips), read_len)
    enqueue("encode", [job_id, 0])


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


def clip_metrics(chunk: bytes, original: np.ndarray, decoded: np.ndarray) -> dict[str, Any]:
    """Metrics from a chunk and its frames (used when a crash lost the encoder's own)."""
    from core.metrics import mse_per_frame, psnr_per_frame

    n, h, w = original.shape[:3]
    return {
        # The same definitions as the encoder's own metrics (mean of per-frame PSNR).
        "psnr": float(np.mean(psnr_per_frame(original, decoded))),
        "mse": float(np.mean(mse_per_frame(original, decoded))),
        "bytes": len(chunk),
        "bits": 8 * len(chunk),
        "bpp": 8 * len(chunk) / (n * h * w),
        "frames": n,
        "recomputed": True,
    }


def load_state(store: ObjectStore, settings: Settings, job_id: str, k: int) -> Any:
    """theta_hat_k: from state/{k}, or rebuilt by decoding chunks after the newest state."""
    from core.codec.stream import ChainState, decode_clip

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
    from core.codec.init import thumbnail

    if getattr(state, "thumb", None) is None and store.exists(keys.frames(k)):
        state.thumb = thumbnail(_read_clip_frames(store, settings, keys, k)[-1])


def _repair(store: ObjectStore, settings: Settings, job_id: str, k: int) -> None:
    """A committed clip whose state or metrics a crash lost: rebuild them from the chunk."""
    from core.codec.stream import decode_clip

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
        store.put_bytes(
            keys.metrics(k), json.dumps(clip_metrics(chunk, original, decoded)).encode()
        )


def _first_missing(store: ObjectStore, keys: Keys, n: int) -> int | None:
    done = set(store.list(keys.prefix + "clips/"))
    return next((i for i in range(n) if keys.chunk(i) not in done), None)


def _lease_live(store: ObjectStore, keys: Keys, k: int) -> bool:
    lease = read_json(store, keys.lease(k))
    return bool(lease) and float(lease.get("expires", 0)) > time.time()


def _continue_chain(store: ObjectStore, keys: Keys, plan: Plan, enqueue: Enqueue) -> None:
    """Queue the first clip not done, unless a live worker already holds it."""
    nxt = _first_missing(store, keys, len(plan.clips))
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
) -> dict[str, Any] | None:
    """Train clip k and commit it; returns its metrics, or None when there was nothing
    to do (already done, job stopped). Raises LeaseBusy, StoreError (retry) or the
    codec's error (the caller marks the job failed)."""
    from core.codec.stream import encode_clip

    keys = Keys(job_id)
    job = load_job(store, job_id)
    plan = load_plan(store, job_id)
    if job is None or plan is None or is_stopped(store, job_id) or k >= len(plan.clips):
        return None
    if store.exists(keys.chunk(k)):  # done before (a redelivery): repair, move on
        _repair(store, settings, job_id, k)
        _continue_chain(store, keys, plan, enqueue)
        return None
    if k > 0 and not store.exists(keys.chunk(k - 1)):
        # Out of order (should not happen): the chain must go through k-1 first.
        _continue_chain(store, keys, plan, enqueue)
        return None

    holder = holder or f"{socket.gethostname()}:{os.getpid()}"
    lease = Lease(store, keys.lease(k), holder, settings.lease_seconds)
    remaining = lease.acquire()
    if remaining is not None:
        raise LeaseBusy(remaining)
    stopped = False

    def check_stopped() -> None:
        nonlocal stopped
        stopped = stopped or is_stopped(store, job_id)

    last_write = time.monotonic()

    def progress(step: int, total: int, *_: Any) -> None:
        nonlocal last_write
        lease.progress = round(step / max(1, total), 4)
        if time.monotonic() - last_write > 1.0:  # the lease carries progress to the API
            last_write = time.monotonic()
            with contextlib.suppress(Exception):
                lease.renew()
        if stopped:
            raise JobStopped

    lease.start_heartbeat(on_tick=check_stopped)
    try:
        header = _load_header(store, keys)
        opts = job.options.to_encode_options(settings.device)
        prev = load_state(store, settings, job_id, k - 1) if k > 0 else None
        frames = _read_clip_frames(store, settings, keys, k)
        t0 = time.monotonic()
        result = encode_clip(header, k, frames, prev, opts, progress=progress)
        del frames
        metrics = {k_: _jsonable(v) for k_, v in dict(result.metrics).items()}
        metrics.setdefault("seconds", round(time.monotonic() - t0, 3))
        metrics.setdefault("bytes", len(result.chunk))
        if is_stopped(store, job_id):
            raise JobStopped
        if store.put_if_absent(keys.chunk(k), result.chunk):
            store.put_bytes(keys.state(k), result.state.to_bytes())
            store.put_bytes(keys.metrics(k), json.dumps(metrics).encode())
            log.info("job %s: clip %d done (%s)", job_id, k, _short(metrics))
        else:  # a duplicate won the race; its chunk (and state) are the truth
            log.warning("job %s: clip %d was committed by another worker", job_id, k)
        if is_stopped(store, job_id):  # cancelled during the commit: leave nothing behind
            for key in (keys.chunk(k), keys.state(k), keys.metrics(k)):
                store.delete(key)
            return None
    except JobStopped:
        log.info("job %s: stopped during clip %d", job_id, k)
        return None
    finally:
        lease.release()
    if k + 1 < len(plan.clips):
        enqueue("encode", [job_id, k + 1])
    return metrics


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else v
    return v


def _short(m: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={m[k]:.4g}" for k in ("psnr", "bpp", "seconds") if isinstance(m.get(k), float | int)
    )


# ----------------------------------------------------------------------------- resume


def resume(store: ObjectStore, enqueue: Enqueue) -> int:
    """Queue the next step of every unfinished job; returns how many were queued.

    Safe to run any time: duplicates are absorbed by the idempotent tasks and the leases.
    """
    n = 0
    for job_id in store.list_dirs("jobs/"):
        try:
            keys = Keys(job_id)
        except ValueError:
            continue
        if not store.exists(keys.job) or is_stopped(store, job_id):
            continue
        plan = load_plan(store, job_id)
        if plan is None:
            enqueue("split", [job_id])
            n += 1
        elif (nxt := _first_missing(store, keys, len(plan.clips))) is not None:
            enqueue("encode", [job_id, nxt])
            n += 1
    return n
