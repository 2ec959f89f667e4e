"""Jobs and clips: pydantic models, the object layout, and their reads and writes.

The status of a job is derived from these objects in core/status.py; the URLs a status
carries are the API's (api/links.py).

Nothing about a job lives anywhere but the object store (docs/service.md), so any API
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
    jobs/{id}/lease/split       who splits the source now, until when
    jobs/{id}/reaped/{name}     one per re-queue by the reaper (worker/reaper.py)
    jobs/{id}/failed.json       ErrorInfo; the job is failed
    jobs/{id}/cancelled.json    tombstone; the job was cancelled and its data deleted
    jobs/{id}/hooks/{hook}.json a webhook event and its delivery (core/webhooks.py)
    owners/{owner}/{ms}-{id}    per-caller index for listing, ordered by creation
    active/{owner}/{id}         the caller's unfinished jobs (quotas; pruned lazily)
    idem/{owner}/{sha256(key)}/{generation}  Idempotency-Key claims -> job id
    uploads/{id}/...            resumable (tus) uploads (core/uploads.py)
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, create_model

from core.codec.options import CALLER_OPTIONS, SERVER_DECIDES, EncodeOptions, optional_fields
from core.storage import NotFound, ObjectStore

JOB_ID_RE = re.compile(r"[0-9a-f]{32}")  # fullmatch: `$` would let "...\n" through
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
ClipState = Literal["pending", "running", "done"]
ApiPreset = Literal["fast", "medium", "slow"]  # the presets a caller may choose (no GPU-only one)
API_PRESETS: tuple[str, ...] = get_args(ApiPreset)
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def new_job_id() -> str:
    """128 random bits as hex: unguessable, and safe as a path component."""
    return secrets.token_hex(16)


def valid_job_id(job_id: str) -> bool:
    return isinstance(job_id, str) and JOB_ID_RE.fullmatch(job_id) is not None


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

    split_lease = property(lambda self: self.prefix + "lease/split")

    def reaped(self, name: str) -> str:
        return f"{self.prefix}reaped/{name}"


def owner_index_key(owner: str, created_ms: int, job_id: str) -> str:
    return f"owners/{owner}/{created_ms:014d}-{job_id}"


def active_key(owner: str, job_id: str) -> str:
    return f"active/{owner}/{job_id}"


def idempotency_prefix(owner: str, key: str) -> str:
    """Claims of one Idempotency-Key live under this prefix, one object per generation."""
    return f"idem/{owner}/{hashlib.sha256(key.encode()).hexdigest()}/"


# ----------------------------------------------------------------------------- models


class _JobOptionsBase(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")

    def to_encode_options(self, device: str = "cpu") -> EncodeOptions:
        """The codec's options (raises pydantic ValidationError on what the codec refuses)."""
        data = self.model_dump(exclude_none=True, by_alias=True)
        return EncodeOptions.model_validate({**data, "device": device})


# What a caller may choose; None = the codec's default. Every field, its limits and its
# help text come from EncodeOptions (core/codec/options.py); the service only narrows the
# presets to those a CPU-or-GPU fleet serves in sane time.
JobOptions = create_model(
    "JobOptions",
    __base__=_JobOptionsBase,
    __doc__="What a caller may choose; None = the codec's default. Device is the worker's.",
    **{
        **optional_fields(n for n in CALLER_OPTIONS if n not in SERVER_DECIDES),
        "preset": (
            ApiPreset | None,
            Field(None, description=EncodeOptions.model_fields["preset"].description),
        ),
    },
)


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


class JobEstimate(BaseModel):
    """The encode-time estimate made when the job was accepted (core/codec/estimate.py)."""

    seconds: float = Field(description="The whole encode, on the API's device.")
    per_clip_seconds: float
    clips: int
    step_seconds: float
    device: str


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
    webhook_url: str | None = Field(
        None, description="Where clip.done, job.succeeded and job.failed are POSTed."
    )
    estimate: JobEstimate | None = Field(None, description="None: not estimable at creation.")


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
    started_at: datetime | None = Field(None, description="When a worker began the job.")


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
    # The chunk is in the store (it may be "running" still, its metrics not written yet):
    # what api/links.py needs to link it. Not part of the schema.
    _committed: bool = PrivateAttr(False)

    @property
    def committed(self) -> bool:
        return self._committed


class JobStatus(BaseModel):
    id: str
    status: JobState = Field(
        description="queued: no worker is working on it right now (not started yet, or "
        "waiting for a worker after one died or between clips for longer than the hand-off "
        "grace); running: a worker holds a live lease on a clip or on the split"
    )
    created_at: datetime
    filename: str | None
    options: JobOptions
    input: InputInfo
    clips_total: int = Field(
        description="Clips of the job: exact when clips_total_known, else the probe's estimate"
    )
    clips_total_known: bool = Field(
        False,
        description="The frame count is final (the split has finished, or the container "
        "states an exact count)",
    )
    clips_planned: int = Field(
        0, description="Clips whose frames the split has stored so far (ready to train)"
    )
    clips_done: int
    progress: float = Field(description="percent, 0..100")
    psnr: float | None = Field(None, description="dB over the frames done so far")
    bpp: float | None = Field(None, description="bits per pixel over the frames done so far")
    bytes: int = 0
    error: ErrorInfo | None = None
    webhook_url: str | None = None
    started_at: datetime | None = Field(None, description="When a worker began the job.")
    eta_seconds: float | None = Field(
        None,
        description="Seconds of encoding left: the clips not done times the measured mean "
        "clip time (the estimate's until a clip is done); null while not estimable, 0 "
        "once succeeded. Time waiting for a worker is not included.",
    )
    estimate_seconds: float | None = Field(None, description="The estimate at creation.")
    clips: list[ClipStatus]
    links: dict[str, str] = Field(default_factory=dict)


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


class LeaseRecord(BaseModel):
    """lease/{k} (and lease/split): who works on it, until when, how far. Written by
    worker/lease.py, read by the status, the chain and the reaper through this type."""

    holder: str = ""
    expires: float = 0.0  # Unix time; the holder renews it every ttl/3
    progress: float | None = None  # 0..1 of the clip's training steps

    def live(self, now: float | None = None) -> bool:
        return self.expires > (time.time() if now is None else now)


def read_lease(store: ObjectStore, key: str) -> LeaseRecord | None:
    """The lease at `key`; None when absent or unreadable (a torn write counts as none)."""
    try:
        return LeaseRecord.model_validate_json(store.get_bytes(key))
    except (NotFound, ValueError):
        return None


class ClipRecord(BaseModel):
    """`jobs/{id}/clips/{k}.json`, what the service reports of a committed clip. The
    worker writes the encoder's whole `ClipMetrics` (core/codec/report.py; its other
    fields are kept as extras), or, when a crash lost those, the fields below recomputed
    from the chunk and the source frames (`recomputed`: no training figures then)."""

    model_config = ConfigDict(extra="allow")

    bytes: int
    psnr: float
    bpp: float | None = None
    mse: float | None = None
    frames: int | None = None
    seconds: float | None = None  # the worker's time on the clip
    steps: int | None = None
    a_k: float | None = None
    key: bool | None = None
    done_at: float | None = None  # unix time of the commit: the hand-off to clip k+1
    recomputed: bool = False


def read_clip_record(store: ObjectStore, key: str) -> ClipRecord | None:
    """The record at `key` (Keys.metrics), None if missing or unreadable."""
    raw = read_json(store, key)
    if raw is None:
        return None
    try:
        return ClipRecord.model_validate(raw)
    except ValueError:
        return None


def write_clip_record(store: ObjectStore, key: str, record: ClipRecord) -> None:
    store.put_bytes(key, record.model_dump_json(exclude_none=True).encode())


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
