"""`/v1/jobs`: create, list, inspect, cancel, and the streams of a job."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from sse_starlette import EventSourceResponse

from api import streaming
from api.auth import current_owner
from api.problems import Problem
from api.status_cache import StatusCache
from api.upload import Upload, receive_upload
from core.jobs import (
    InputInfo,
    Job,
    JobOptions,
    JobStatus,
    Keys,
    cancel_job,
    idempotency_key,
    job_status,
    list_jobs,
    load_job,
    new_job_id,
    utcnow,
    write_job,
)
from core.logs import bind
from core.storage import NotFound, ObjectStore
from worker.celeryconf import QUEUE_CPU, SPLIT

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1", tags=["jobs"])
Owner = Annotated[str, Depends(current_owner)]
OPTION_FIELDS = set(JobOptions.model_fields) - {"lam"} | {"lambda"}
MIN_SIDE = 8  # smallest source frame side accepted (the `width` option's minimum too)


def _store(request: Request) -> ObjectStore:
    return request.app.state.store


async def _owned_job(request: Request, job_id: str, owner: str) -> Job:
    """The job if it exists and belongs to the caller; 404 otherwise (never 403: the
    existence of another caller's job is not disclosed)."""
    bind(job_id=job_id)  # this request's log lines (JSON logs) name the job
    job = await anyio.to_thread.run_sync(load_job, _store(request), job_id)
    if job is None or job.owner != owner:
        raise Problem(404, f"no job {job_id}", code="job-not-found")
    return job


def _parse_options(fields: dict[str, str], device: str) -> JobOptions:
    unknown = set(fields) - OPTION_FIELDS
    if unknown:
        raise Problem(
            422,
            f"unknown option(s): {', '.join(sorted(unknown))}",
            code="invalid-options",
            allowed=sorted(OPTION_FIELDS),
        )
    data = {k: v for k, v in fields.items() if v != ""}
    opts = JobOptions.model_validate(data)  # ValidationError -> 422 problem
    opts.to_encode_options(device)  # what the codec itself refuses, refused now
    return opts


def _probe(up: Upload, opts: JobOptions, request: Request) -> tuple[InputInfo, Any]:
    """Probe the spooled upload and plan the stream; Problem 422 for anything unusable."""
    from core.codec.stream import plan_stream
    from core.video import VideoError, probe

    settings = request.app.state.settings
    if up.path is None:
        raise Problem(422, "no video: send it as the multipart field `file`", code="no-file")
    if up.size == 0:
        raise Problem(422, "the uploaded file is empty", code="empty-file")
    try:
        info = probe(up.path, max_pixels=settings.max_pixels)
    except VideoError as e:
        msg = str(e).replace(str(up.path), up.filename or "upload")
        raise Problem(422, msg, code="invalid-video") from None
    if min(info.width, info.height) < MIN_SIDE:  # nothing to learn; a degenerate model
        raise Problem(
            422,
            f"{info.width}x{info.height} frames are smaller than {MIN_SIDE}x{MIN_SIDE}",
            code="video-too-small",
        )
    enc = opts.to_encode_options(settings.device)
    frames = min(info.frames, enc.frames) if enc.frames else info.frames
    if frames > settings.max_frames:
        raise Problem(
            422,
            f"{frames} frames exceed the limit of {settings.max_frames}; use the `frames` option",
            code="too-many-frames",
        )
    try:
        header = plan_stream(info, enc)
    except ValueError as e:
        raise Problem(
            422, f"cannot encode with these options: {e}", code="invalid-options"
        ) from None
    inp = InputInfo(
        width=info.width,
        height=info.height,
        fps=float(info.fps),
        fps_num=info.fps.numerator,
        fps_den=info.fps.denominator,
        frames=info.frames,
        codec=info.codec,
        frames_exact=info.frames_exact,
    )
    return inp, header


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
        "preset, lambda, params, steps, frames, width, key_interval, seed), or the raw "
        "video as the body with options in the query string."
    ),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}},
                    }
                },
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            },
        }
    },
)
async def create_job(
    request: Request,
    owner: Owner,
    idem: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> JSONResponse:
    settings = request.app.state.settings
    store = _store(request)
    metrics = request.app.state.metrics
    try:
        up = await receive_upload(request, settings.tmp_dir, settings.max_upload_bytes)
    except Problem as p:
        metrics.uploads_rejected.labels(p.code or str(p.status)).inc()
        raise
    try:
        try:
            opts = _parse_options(up.fields, settings.device)
            inp, header = await anyio.to_thread.run_sync(_probe, up, opts, request)
        except Problem as p:
            metrics.uploads_rejected.labels(p.code or str(p.status)).inc()
            raise
        except ValidationError:
            metrics.uploads_rejected.labels("invalid-options").inc()
            raise

        job_id = new_job_id()
        bind(job_id=job_id)
        fingerprint = up.sha256 + ":" + opts.model_dump_json(by_alias=True)
        if idem:
            existing = await anyio.to_thread.run_sync(
                _claim_idempotency, store, idempotency_key(owner, idem), job_id, fingerprint
            )
            if existing is not None:
                st = await anyio.to_thread.run_sync(lambda: job_status(store, existing))
                if st is not None:
                    return _accepted(st, replayed=True)
        now = utcnow()
        job = Job(
            id=job_id,
            owner=owner,
            created_at=now,
            created_ms=int(now.timestamp() * 1000),
            filename=up.filename,
            source_bytes=up.size,
            options=opts,
            input=inp,
            frames_planned=header.frames,
            clip_length=header.clip_length,
        )
        keys = Keys(job_id)

        def _persist() -> None:
            with open(up.path, "rb") as f:  # type: ignore[arg-type]
                store.put_stream(keys.source, f)
            write_job(store, job)

        try:
            await anyio.to_thread.run_sync(_persist)
            await anyio.to_thread.run_sync(
                lambda: request.app.state.celery.send_task(SPLIT, args=[job_id], queue=QUEUE_CPU)
            )
        except Exception as e:
            log.exception("job %s: could not be queued", job_id)
            await anyio.to_thread.run_sync(_forget, store, job, idem)
            raise Problem(
                503,
                "the job could not be stored or queued; retry",
                code="unavailable",
                headers={"Retry-After": "5"},
                retry_after=5,
            ) from e
        metrics.jobs_created.inc()
        metrics.upload_bytes.inc(up.size)
        log.info("job %s accepted: %s, %d bytes, %s", job_id, up.filename, up.size, inp.codec)
        st = await anyio.to_thread.run_sync(lambda: job_status(store, job_id))
        assert st is not None
        return _accepted(st)
    finally:
        up.discard()


def _claim_idempotency(store: ObjectStore, key: str, job_id: str, fingerprint: str) -> str | None:
    """Reserve the key for `job_id`; return the earlier job's id if the key was used.

    The same key with a different file or options is an error (422), as in the IETF
    Idempotency-Key draft; a key pointing to a job that no longer exists is reused.
    """
    body = json.dumps({"job": job_id, "fingerprint": fingerprint}).encode()
    for _ in range(3):
        if store.put_if_absent(key, body):
            return None
        try:
            prev = json.loads(store.get_bytes(key))
        except NotFound:
            continue
        if load_job(store, prev.get("job", "")) is None:
            store.put_bytes(key, body)
            return None
        if prev.get("fingerprint") != fingerprint:
            raise Problem(
                422,
                "this Idempotency-Key was used for a different request",
                code="idempotency-key-reused",
            )
        return prev["job"]
    return None


def _forget(store: ObjectStore, job: Job, idem: str | None) -> None:
    from core.jobs import owner_index_key

    store.delete_prefix(Keys(job.id).prefix)
    store.delete(owner_index_key(job.owner, job.created_ms, job.id))
    if idem:
        store.delete(idempotency_key(job.owner, idem))


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
            st = job_status(store, job_id)
            if st is not None:
                items.append(st.model_dump(mode="json", exclude={"clips"}))
        links = {"next": f"/v1/jobs?limit={limit}&cursor={nxt}"} if nxt else {}
        return {"jobs": items, "next_cursor": nxt, "links": links}

    return await anyio.to_thread.run_sync(_page)


@router.get("/jobs/{job_id}", response_model=JobStatus, summary="Status, progress and clips")
async def get_job(request: Request, job_id: str, owner: Owner) -> JobStatus:
    bind(job_id=job_id)
    store = _store(request)

    def load() -> tuple[Job | None, JobStatus | None]:
        job = load_job(store, job_id)
        return job, job_status(store, job_id) if job is not None else None

    job_owner, st = await anyio.to_thread.run_sync(lambda: _status_cache(request).get(job_id, load))
    if st is None or job_owner != owner:
        raise Problem(404, f"no job {job_id}", code="job-not-found")
    return st


def _status_cache(request: Request) -> StatusCache:
    app_state = request.app.state
    if getattr(app_state, "status_cache", None) is None:
        app_state.status_cache = StatusCache(request.app.state.settings.poll_interval)
    return app_state.status_cache


@router.delete("/jobs/{job_id}", status_code=204, summary="Cancel the job and delete its data")
async def delete_job(request: Request, job_id: str, owner: Owner) -> Response:
    await _owned_job(request, job_id, owner)
    await anyio.to_thread.run_sync(cancel_job, _store(request), job_id)
    _status_cache(request).drop(job_id)
    log.info("job %s cancelled", job_id)
    return Response(status_code=204)


@router.get(
    "/jobs/{job_id}/clips/{k}",
    summary="One clip's chunk (`.uarc`)",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def get_clip(request: Request, job_id: str, k: int, owner: Owner) -> Response:
    await _owned_job(request, job_id, owner)
    if k < 0:
        raise Problem(404, f"no clip {k}", code="clip-not-found")
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


@router.get(
    "/jobs/{job_id}/bitstream",
    summary="The `.uarv` so far; while running, held open until the job ends",
    response_class=StreamingResponse,
)
async def get_bitstream(request: Request, job_id: str, owner: Owner) -> StreamingResponse:
    await _owned_job(request, job_id, owner)
    poll = request.app.state.settings.poll_interval
    return StreamingResponse(
        streaming.bitstream(_store(request), job_id, poll),
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{job_id}.uarv"'},
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
    format: Literal["mkv", "y4m", "mp4"] = "mkv",
) -> StreamingResponse:
    await _owned_job(request, job_id, owner)
    poll = request.app.state.settings.poll_interval
    return StreamingResponse(
        streaming.decoded_video(_store(request), job_id, format, poll),
        media_type=streaming.MEDIA_TYPES[format],
        headers={"Content-Disposition": f'inline; filename="{job_id}.{format}"'},
    )


@router.get("/jobs/{job_id}/events", summary="Server-sent events: clip_done, job_done, job_failed")
async def get_events(
    request: Request,
    job_id: str,
    owner: Owner,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> EventSourceResponse:
    await _owned_job(request, job_id, owner)
    poll = request.app.state.settings.poll_interval
    return EventSourceResponse(
        streaming.events(_store(request), job_id, poll, last_event_id, request.is_disconnected),
        ping=15,
    )
