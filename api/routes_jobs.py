"""`/v1/jobs`: create, list, inspect, cancel, and the streams of a job."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from sse_starlette import EventSourceResponse
from starlette.background import BackgroundTask

from api import streaming
from api.deps import OwnedJob, Owner, get_store
from api.job_service import JobService
from api.links import jobs_page_url, linked_status
from api.problems import Problem
from api.quotas import Quotas
from api.status_cache import StatusCache
from core.jobs import (
    Job,
    JobStatus,
    Keys,
    cancel_job,
    list_jobs,
    load_job,
    load_plan,
    planned_clips,
)
from core.logs import bind
from core.storage import NotFound, ObjectStore

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["jobs"])


_store = get_store


def _quotas(request: Request) -> Quotas:
    state = request.app.state
    if getattr(state, "quotas", None) is None:
        state.quotas = Quotas(state.store, state.settings)
    return state.quotas


def _feeds(request: Request) -> streaming.Feeds:
    state = request.app.state
    if getattr(state, "feeds", None) is None:
        state.feeds = streaming.Feeds(state.store, state.settings.poll_interval)
    return state.feeds


def _accepted(st: JobStatus, replayed: bool = False) -> JSONResponse:
    headers = {"Location": st.links["self"]}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(st.model_dump(mode="json"), status_code=202, headers=headers)


@router.post(
    "/jobs",
    status_code=202,
    response_model=JobStatus,
    summary="Upload a video and start encoding it",
    description=(
        "multipart/form-data with a `file` field and option fields (mode, clip_length, "
        "preset, lambda, params, steps, frames, width, key_interval, seed, quality, "
        "target_bpp, target_psnr, webhook_url), "
        "the raw video as the body with options in the query string, or the fields as "
        "JSON (or a urlencoded form) with `upload_id`, the last path segment of a finished "
        "upload's URL (`/v1/uploads`), instead of the file."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "webhook_url": {"type": "string"},
                        },
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["upload_id"],
                        "properties": {
                            "upload_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                            "webhook_url": {"type": "string", "format": "uri"},
                            "clip_length": {"type": "integer", "minimum": 1},
                            "steps": {"type": "integer", "minimum": 1},
                        },
                    }
                },
            },
        }
    },
)
async def create_job(
    request: Request,
    owner: Owner,
    idem: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> JSONResponse:
    service = _job_service(request)
    if not idem:  # a replay must not be refused: those are judged after the claim
        await service.quotas.precheck(owner)  # 429 before the body is read
    got = await service.receive(request, owner)
    try:
        created = await service.create(got, owner, idem)
    finally:
        got.upload.discard()
    return _accepted(created.status, replayed=created.replayed)


def _job_service(request: Request) -> JobService:
    state = request.app.state
    if getattr(state, "job_service", None) is None:
        state.job_service = JobService(
            state.settings, state.store, state.celery, _quotas(request).jobs, state.metrics
        )
    return state.job_service


@router.get("/jobs", summary="The caller's jobs, oldest first, paginated")
async def get_jobs(
    request: Request,
    owner: Owner,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64, pattern=r"^[0-9]{14}-[0-9a-f]{32}$")] = None,
) -> dict[str, Any]:
    store = _store(request)

    def _page() -> dict[str, Any]:
        ids, nxt = list_jobs(store, owner, limit=limit, cursor=cursor)
        items = []
        for job_id in ids:
            st = linked_status(store, job_id)
            if st is not None:
                items.append(st.model_dump(mode="json", exclude={"clips"}))
        links = {"next": jobs_page_url(limit, nxt)} if nxt else {}
        return {"jobs": items, "next_cursor": nxt, "links": links}

    return await anyio.to_thread.run_sync(_page)


@router.get("/jobs/{job_id}", response_model=JobStatus, summary="Status, progress and clips")
async def get_job(request: Request, job_id: str, owner: Owner) -> Response:
    """The hot path of every poller: answered from the status cache (pre-encoded JSON)
    on the event loop, so a poll costs no store call and no serialisation
    (api/status_cache.py)."""
    store = _store(request)

    def load() -> tuple[Job | None, JobStatus | None]:
        job = load_job(store, job_id)
        return job, linked_status(store, job_id) if job is not None else None

    entry = await _status_cache(request).get(job_id, load)
    if entry is None or entry.owner != owner:
        bind(job_id=job_id)
        raise Problem(404, f"no job {job_id}", code="job-not-found")
    return Response(entry.body, media_type="application/json")


def _status_cache(request: Request) -> StatusCache:
    app_state = request.app.state
    if getattr(app_state, "status_cache", None) is None:
        app_state.status_cache = StatusCache(request.app.state.settings.poll_interval)
    return app_state.status_cache


@router.delete("/jobs/{job_id}", status_code=204, summary="Cancel the job and delete its data")
async def delete_job(request: Request, job_id: str, owner: Owner, _: OwnedJob) -> Response:
    await anyio.to_thread.run_sync(cancel_job, _store(request), job_id)
    await anyio.to_thread.run_sync(_quotas(request).jobs.release, owner, job_id)
    _status_cache(request).drop(job_id)
    log.info("job %s cancelled", job_id)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/clips/{k}",
    summary="One clip's chunk (`.uarc`)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def get_clip(request: Request, job_id: str, k: int, job: OwnedJob) -> Response:
    # Against the plan, before any store call: a clip number is never an object name the
    # store has to judge (a 251-digit one used to open the store's circuit breaker).
    n = await anyio.to_thread.run_sync(_clip_count, _store(request), job)
    if not 0 <= k < n:
        raise Problem(404, f"no clip {k}: job {job_id} has {n} clips", code="clip-not-found")
    try:
        data = await anyio.to_thread.run_sync(_store(request).get_bytes, Keys(job_id).chunk(k))
    except NotFound:
        raise Problem(
            404, f"clip {k} of job {job_id} is not done (or does not exist)", code="clip-not-found"
        ) from None
    return Response(
        data,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{job_id}-{k}.uarc"'},
    )


def _clip_count(store: ObjectStore, job: Job) -> int:
    plan = load_plan(store, job.id)
    return len(plan.clips) if plan else len(planned_clips(job.frames_planned, job.clip_length))


@router.get(
    "/jobs/{job_id}/bitstream",
    summary="The `.uarv` so far; while running, held open until the job ends",
    response_class=StreamingResponse,
)
async def get_bitstream(
    request: Request, job_id: str, owner: Owner, _: OwnedJob
) -> StreamingResponse:
    poll = request.app.state.settings.poll_interval
    slot = _quotas(request).streams.acquire(owner)  # 429 over the key's stream limit
    return StreamingResponse(
        streaming.held(slot, streaming.bitstream(_store(request), job_id, poll)),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.uarv"'},
        background=BackgroundTask(slot.release),
    )


@router.get(
    "/jobs/{job_id}/decode",
    summary="Reconstructed video, streamed clip by clip as clips finish",
    response_class=StreamingResponse,
)
async def get_decoded(
    request: Request,
    job_id: str,
    owner: Owner,
    _: OwnedJob,
    format: Literal["mkv", "y4m", "mp4"] = "mkv",
) -> StreamingResponse:
    poll = request.app.state.settings.poll_interval
    slot = _quotas(request).decodes.acquire(owner)  # 429 over the key's or process's limit
    return StreamingResponse(
        streaming.held(slot, streaming.decoded_video(_store(request), job_id, format, poll)),
        media_type=streaming.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'inline; filename="{job_id}.{format}"'},
        background=BackgroundTask(slot.release),
    )


@router.get("/jobs/{job_id}/events", summary="Server-sent events: clip_done, job_done, job_failed")
async def get_events(
    request: Request,
    job_id: str,
    owner: Owner,
    _: OwnedJob,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> EventSourceResponse:
    slot = _quotas(request).streams.acquire(owner)  # 429 over the key's stream limit
    stream = streaming.events(_feeds(request), job_id, last_event_id, request.is_disconnected)
    return EventSourceResponse(
        streaming.held(slot, stream), ping=15, background=BackgroundTask(slot.release)
    )
