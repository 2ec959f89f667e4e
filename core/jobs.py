"""Jobs and clips: pydantic models, the object layout, and status derived from the store.

Nothing about a job lives anywhere but the object store (DESIGN.md §3), so any API
replica can answer for any job, a retried task sees exactly what was done, and a crashed
worker loses at most the clip it was training. Layout, one prefix per job:

    jobs/{id}/job.json          Job: options, owner, input info (written once, at creation)
    jobs/{id}/source            the upload
    jobs/{id}/plan.json         Plan: exact frame count and clip list (written by split)
    jobs/{id}/header            the stream header bytes (written by split)
    jobs/{id}/frames/{k}.mkv    lossless frames of clip k (FFV1)
    jobs/{id}/clips/{k}.uarc    chunk k: THE commit point of clip k (created exclusively)
    jobs/{id}/clips/{k}.json    metrics of clip k
    jobs/{id}/state/{k}         theta_hat_k (a cache: rebuildable from chunks 0..k)
    jobs/{id}/lease/{k}         who trains clip k now, until when, how far
    jobs/{id}/failed.json       ErrorInfo; the job is failed
    jobs/{id}/cancelled.json    tombstone; the job was cancelled and its data deleted
    owners/{owner}/{ms}-{id}    per-caller index for listing, ordered by creation
    idem/{owner}/{sha256(key)}  Idempotency-Key -> job id
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from core.storage import NotFound, ObjectStore

if TYPE_CHECKING:
    from core.codec.options import EncodeOptions

JOB_ID_RE = re.compile(r"^[0-9a-f]{32}$")
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ClipState = Literal["pending", "running", "done"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def new_job_id() -> str:
    """128 random bits as hex: unguessable, and safe as a path component."""
    return secrets.token_hex(16)


def valid_job_id(job_id: str) -> bool:
    return bool(JOB_ID_RE.match(job_id))


def owner_id(api_key: str | None) -> str:
    """A stable, non-reversible owner name for a key (keys are never stored or logged)."""
    if not api_key:
        return "local"
    return hashlib.sha256(b"uarnvc-owner:" + api_key.encode()).hexdigest()[:32]


# ------------------------------------------------------------------------------- keys


class Keys:
    """Object names of one job (the layout above), so no module spells them by hand."""

    def __init__(self, job_id: str) -> None:
        if not valid_job_id(job_id):
            raise ValueError(f"invalid job id {job_id!r}")
        self.id = job_id
        self.prefix = f"jobs/{job_id}/"

    job = property(lambda self: self.prefix + "job.json")
    source = property(lambda self: self.prefix + "source")
    plan = property(lambda self: self.prefix + "plan.json")
    header = property(lambda self: self.prefix + "header")
    failed = property(lambda self: self.prefix + "failed.json")
    cancelled = property(lambda self: self.prefix + "cancelled.json")

    def frames(self, k: int) -> str:
        return f"{self.prefix}frames/{k}.mkv"

    def chunk(self, k: int) -> str:
        return f"{self.prefix}clips/{k}.uarc"

    def metrics(self, k: int) -> str:
        return f"{self.prefix}clips/{k}.json"

    def state(self, k: int) -> str:
        return f"{self.prefix}state/{k}"

    def lease(self, k: int) -> str:
        return f"{self.prefix}lease/{k}"


def owner_index_key(owner: str, created_ms: int, job_id: str) -> str:
    return f"owners/{owner}/{created_ms:014d}-{job_id}"


def idempotency_key(owner: str, key: str) -> str:
    return f"idem/{owner}/{hashlib.sha256(key.encode()).hexdigest()}"


# ----------------------------------------------------------------------------- models


class JobOptions(BaseModel):
    """What a caller may choose; None = the codec's default. Device is the worker's."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    mode: Literal["uar", "independent", "whole"] | None = None
    clip_length: int | None = Field(None, ge=1, le=10_000)
    preset: Literal["fast", "medium", "slow"] | None = None
    lam: float | None = Field(None, alias="lambda", ge=0)
    params: int | None = Field(None, ge=1)
    steps: int | None = Field(None, ge=1, le=1_000_000)
    key_interval: int | None = Field(None, ge=0)
    frames: int | None = Field(None, ge=1)
    width: int | None = Field(None, ge=8)
    seed: int | None = Field(None, ge=0)

    def to_encode_options(self, device: str = "cpu") -> EncodeOptions:
        """The codec's options (raises pydantic ValidationError on what the codec refuses)."""
        from core.codec.options import EncodeOptions

        data = self.model_dump(exclude_none=True, by_alias=True)
        return EncodeOptions.model_validate({**data, "device": device})


class InputInfo(BaseModel):
    """The probed source (before --frames/--width)."""

    width: int
    height: int
    fps: float
    fps_num: int
    fps_den: int
    frames: int
    codec: str
    frames_exact: bool = True


class ErrorInfo(BaseModel):
    code: str
    detail: str


class Job(BaseModel):
    """job.json: written once when the job is accepted, never changed."""

    id: str
    owner: str
    created_at: datetime
    created_ms: int
    filename: str | None = None
    source_bytes: int
    options: JobOptions
    input: InputInfo
    frames_planned: int = Field(description="From the probe; plan.json has the exact count.")
    clip_length: int = Field(description="Effective clip length (the whole video in mode whole).")


class PlannedClip(BaseModel):
    index: int
    first_frame: int
    frames: int


class Plan(BaseModel):
    """plan.json: the exact clip list, written by split after decoding the source."""

    width: int
    height: int
    frames: int
    clips: list[PlannedClip]


class ClipStatus(BaseModel):
    index: int
    first_frame: int
    frames: int
    status: ClipState
    bytes: int | None = None
    psnr: float | None = None
    bpp: float | None = None
    seconds: float | None = None
    steps: int | None = None
    a_k: float | None = None
    key: bool | None = None
    progress: float | None = Field(None, description="0..1 while running")
    links: dict[str, str] = Field(default_factory=dict)


class JobStatus(BaseModel):
    id: str
    status: JobState
    created_at: datetime
    filename: str | None
    options: JobOptions
    input: InputInfo
    clips_total: int
    clips_done: int
    progress: float = Field(description="percent, 0..100")
    psnr: float | None = Field(None, description="dB over the frames done so far")
    bpp: float | None = Field(None, description="bits per pixel over the frames done so far")
    bytes: int = 0
    error: ErrorInfo | None = None
    clips: list[ClipStatus]
    links: dict[str, str]


class JobSummary(BaseModel):
    id: str
    created_at: datetime
    links: dict[str, str]


# ------------------------------------------------------------------------- reads/writes


def utcnow() -> datetime:
    return datetime.now(UTC)


def write_job(store: ObjectStore, job: Job) -> None:
    """job.json first, then the owner index entry (a listing never names a missing job)."""
    store.put_bytes(Keys(job.id).job, job.model_dump_json(by_alias=True).encode())
    store.put_bytes(owner_index_key(job.owner, job.created_ms, job.id), b"")


def load_job(store: ObjectStore, job_id: str) -> Job | None:
    if not valid_job_id(job_id):
        return None
    try:
        return Job.model_validate_json(store.get_bytes(Keys(job_id).job))
    except NotFound:
        return None


def load_plan(store: ObjectStore, job_id: str) -> Plan | None:
    try:
        return Plan.model_validate_json(store.get_bytes(Keys(job_id).plan))
    except NotFound:
        return None


def read_json(store: ObjectStore, key: str) -> dict[str, Any] | None:
    try:
        return json.loads(store.get_bytes(key))
    except (NotFound, ValueError):
        return None


def mark_failed(store: ObjectStore, job_id: str, code: str, detail: str) -> None:
    """First failure wins: a later, secondary error does not overwrite the root cause."""
    body = ErrorInfo(code=code, detail=detail[:2000]).model_dump_json().encode()
    store.put_if_absent(Keys(job_id).failed, body)


def is_cancelled(store: ObjectStore, job_id: str) -> bool:
    return store.exists(Keys(job_id).cancelled)


def is_stopped(store: ObjectStore, job_id: str) -> bool:
    """Cancelled, failed or deleted: workers stop touching it."""
    k = Keys(job_id)
    return store.exists(k.cancelled) or store.exists(k.failed) or not store.exists(k.job)


def cancel_job(store: ObjectStore, job_id: str) -> None:
    """Tombstone first (so workers stop), then delete everything but job.json + tombstone."""
    k = Keys(job_id)
    store.put_if_absent(k.cancelled, json.dumps({"at": utcnow().isoformat()}).encode())
    for key in store.list(k.prefix):
        if key not in (k.job, k.cancelled):
            store.delete(key)


def planned_clips(frames: int, clip_length: int) -> list[PlannedClip]:
    n = max(1, math.ceil(frames / clip_length))
    return [
        PlannedClip(
            index=i, first_frame=i * clip_length, frames=min(clip_length, frames - i * clip_length)
        )
        for i in range(n)
    ]


def _psnr_of(clips: list[ClipStatus]) -> float | None:
    """The mean of per-frame PSNR over the frames done: a clip's psnr is already the
    mean over its frames, so this is their frame-weighted mean. The same definition as
    `uarnvc encode` and core.metrics, so the API and a local decode agree."""
    num = den = 0.0
    for c in clips:
        if c.psnr is None:
            return None
        num += c.frames * c.psnr
        den += c.frames
    return None if den == 0 else num / den


def job_links(job_id: str, base: str = "/v1") -> dict[str, str]:
    j = f"{base}/jobs/{job_id}"
    return {
        "self": j,
        "bitstream": j + "/bitstream",
        "decode": j + "/decode?format=mkv",
        "events": j + "/events",
    }


def job_status(store: ObjectStore, job_id: str, *, base: str = "/v1") -> JobStatus | None:
    """Derive the whole status from the objects that exist (one LIST + small GETs)."""
    job = load_job(store, job_id)
    if job is None:
        return None
    k = Keys(job_id)
    keys = set(store.list(k.prefix))
    plan = load_plan(store, job_id) if k.plan in keys else None
    width = plan.width if plan else job.input.width
    height = plan.height if plan else job.input.height
    planned = plan.clips if plan else planned_clips(job.frames_planned, job.clip_length)

    clips: list[ClipStatus] = []
    for pc in planned:
        c = ClipStatus(
            index=pc.index, first_frame=pc.first_frame, frames=pc.frames, status="pending"
        )
        if k.chunk(pc.index) in keys and k.metrics(pc.index) not in keys:
            # Committed but its metrics not written yet (or lost in a crash and being
            # repaired): not "done", so a job never reports success with metrics missing.
            c.status, c.progress = "running", 1.0
            c.links = {"chunk": f"{base}/jobs/{job_id}/clips/{pc.index}"}
        elif k.chunk(pc.index) in keys:
            c.status = "done"
            c.links = {"chunk": f"{base}/jobs/{job_id}/clips/{pc.index}"}
            m = read_json(store, k.metrics(pc.index)) if k.metrics(pc.index) in keys else None
            if m:
                for f in ("bytes", "psnr", "bpp", "seconds", "steps", "a_k", "key"):
                    if m.get(f) is not None:
                        setattr(c, f, m[f])
        elif k.lease(pc.index) in keys:
            lease = read_json(store, k.lease(pc.index)) or {}
            if lease.get("expires", 0) > time.time():
                c.status = "running"
                c.progress = lease.get("progress")
        clips.append(c)

    done = [c for c in clips if c.status == "done"]
    error = None
    if k.cancelled in keys:
        state: JobState = "cancelled"
    elif k.failed in keys:
        state = "failed"
        raw = read_json(store, k.failed) or {}
        error = ErrorInfo(code=raw.get("code", "failed"), detail=raw.get("detail", ""))
    elif plan is not None and len(done) == len(clips):
        state = "succeeded"
    elif plan is not None or any(c.status != "pending" for c in clips):
        state = "running"
    else:
        state = "queued"

    running = sum(c.progress or 0.0 for c in clips if c.status == "running")
    progress = 100.0 * (len(done) + running) / max(1, len(clips))
    if state == "succeeded":
        progress = 100.0
    total_bytes = sum(c.bytes or 0 for c in done)
    pixels = sum(c.frames for c in done) * width * height
    bpp = None
    if done and pixels and all(c.bytes is not None for c in done):
        bpp = 8 * total_bytes / pixels
    return JobStatus(
        id=job_id,
        status=state,
        created_at=job.created_at,
        filename=job.filename,
        options=job.options,
        input=job.input,
        clips_total=len(clips),
        clips_done=len(done),
        progress=round(progress, 2),
        psnr=_psnr_of(done),
        bpp=bpp,
        bytes=total_bytes,
        error=error,
        clips=clips,
        links=job_links(job_id, base),
    )


def list_jobs(
    store: ObjectStore, owner: str, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[str], str | None]:
    """The owner's job ids, oldest first, and the cursor of the next page (or None)."""
    prefix = f"owners/{owner}/"
    start = prefix + cursor if cursor else None
    entries = store.list(prefix, start_after=start)
    page = entries[:limit]
    ids = [e.rsplit("-", 1)[1] for e in page]
    next_cursor = page[-1][len(prefix) :] if len(entries) > limit else None
    return ids, next_cursor
