"""A job's status, derived from the objects that exist in the store (core/jobs.py has
the layout): any API replica, the worker's webhooks and the local CLI read the same
answer, and nothing has to keep it up to date."""

from __future__ import annotations

import time

from core.jobs import (
    TERMINAL,
    ClipStatus,
    ErrorInfo,
    JobEstimate,
    JobState,
    JobStatus,
    Keys,
    LeaseRecord,
    Plan,
    PlannedClip,
    load_job,
    load_plan,
    planned_clips,
    read_clip_record,
    read_json,
    read_lease,
)
from core.storage import ObjectStore


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


# A clip committed less than this long ago counts as handing over to the next one: the
# message for clip k+1 is on its way to a worker (the embedded broker polls once a
# second), so the job is still "running". After it, no lease means no worker has it.
HANDOFF_GRACE = 15.0


def _lease_live(store: ObjectStore, key: str, now: float) -> tuple[bool, LeaseRecord]:
    lease = read_lease(store, key) or LeaseRecord()
    return lease.live(now), lease


def _clip_status(
    store: ObjectStore, k: Keys, keys: set[str], pc: PlannedClip, now: float
) -> tuple[ClipStatus, float]:
    """Clip pc's status from the objects that exist, and when it was committed (0: not)."""
    c = ClipStatus(index=pc.index, first_frame=pc.first_frame, frames=pc.frames, status="pending")
    if k.chunk(pc.index) in keys:
        c._committed = True
        if k.metrics(pc.index) not in keys:
            # Committed but its metrics not written yet (or lost in a crash and being
            # repaired): not "done", so a job never reports success with metrics missing.
            c.status, c.progress = "running", 1.0
            return c, 0.0
        c.status = "done"
        rec = read_clip_record(store, k.metrics(pc.index))
        if rec is None:
            return c, 0.0
        for f in ("bytes", "psnr", "bpp", "seconds", "steps", "a_k", "key"):
            if getattr(rec, f) is not None:
                setattr(c, f, getattr(rec, f))
        return c, rec.done_at or 0.0
    if k.lease(pc.index) in keys:
        live, lease = _lease_live(store, k.lease(pc.index), now)
        if live:
            c.status, c.progress = "running", lease.progress
    return c, 0.0


def _job_state(
    store: ObjectStore,
    k: Keys,
    keys: set[str],
    plan: Plan | None,
    clips: list[ClipStatus],
    now: float,
    last_done: float,
) -> tuple[JobState, ErrorInfo | None]:
    if k.cancelled in keys:
        return "cancelled", None
    if k.failed in keys:
        raw = read_json(store, k.failed) or {}
        return "failed", ErrorInfo(code=raw.get("code", "failed"), detail=raw.get("detail", ""))
    if plan is not None and all(c.status == "done" for c in clips):
        return "succeeded", None
    splitting = k.split_lease in keys and _lease_live(store, k.split_lease, now)[0]
    if splitting or any(c.status == "running" for c in clips) or now - last_done < HANDOFF_GRACE:
        return "running", None
    # No worker holds the job: not started yet, or a worker died (its lease lapsed) and
    # the reaper (worker/reaper.py) has re-queued the clip for the next free worker.
    return "queued", None


def job_status(store: ObjectStore, job_id: str) -> JobStatus | None:
    """Derive the whole status from the objects that exist (one LIST + small GETs),
    without links: those are the API's (api/links.py `linked`)."""
    job = load_job(store, job_id)
    if job is None:
        return None
    now = time.time()
    k = Keys(job_id)
    keys = set(store.list(k.prefix))
    plan = load_plan(store, job_id) if k.plan in keys else None
    width = plan.width if plan else job.input.width
    height = plan.height if plan else job.input.height
    planned = plan.clips if plan else planned_clips(job.frames_planned, job.clip_length)
    stored_frames = sum(1 for key in keys if key.startswith(k.prefix + "frames/"))

    clips: list[ClipStatus] = []
    last_done = 0.0
    for pc in planned:
        c, done_at = _clip_status(store, k, keys, pc, now)
        clips.append(c)
        last_done = max(last_done, done_at)
    done = [c for c in clips if c.status == "done"]
    state, error = _job_state(store, k, keys, plan, clips, now, last_done)

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
        started_at=plan.started_at if plan else None,
        eta_seconds=eta_seconds(state, clips, job.estimate),
        estimate_seconds=job.estimate.seconds if job.estimate else None,
        id=job_id,
        status=state,
        created_at=job.created_at,
        filename=job.filename,
        options=job.options,
        input=job.input,
        clips_total=len(clips),
        clips_total_known=plan is not None or k.header in keys,
        clips_planned=len(plan.clips) if plan else stored_frames,
        clips_done=len(done),
        progress=round(progress, 2),
        psnr=_psnr_of(done),
        bpp=bpp,
        bytes=total_bytes,
        error=error,
        webhook_url=job.webhook_url,
        clips=clips,
    )


def eta_seconds(
    state: JobState, clips: list[ClipStatus], estimate: JobEstimate | None
) -> float | None:
    """Encoding time left: clips still to train (the running ones' trained share taken
    off) times the mean measured time of the clips done, or the estimate's time per clip
    before any is done. None when neither is known, or the job will not finish."""
    if state == "succeeded":
        return 0.0
    if state in TERMINAL:
        return None
    measured = [c.seconds for c in clips if c.status == "done" and c.seconds is not None]
    if measured:
        per_clip = sum(measured) / len(measured)
    elif estimate is not None:
        # From the whole estimate rather than its rounded per-clip figure, so that a job
        # nobody has started shows exactly its estimate as its ETA.
        per_clip = estimate.seconds / max(1, estimate.clips)
    else:
        return None
    left = sum(
        1.0 - (c.progress or 0.0) if c.status == "running" else 1.0
        for c in clips
        if c.status != "done"
    )
    return round(max(0.0, left) * per_clip, 1)
