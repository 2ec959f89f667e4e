"""Creating a job, in the order its steps must run and with what each undoes when a
later one fails; api/routes_jobs.py only receives the body and answers.

1. receive: the body streams to a temp file (api/upload.py), or a finished tus upload is
   spooled (api/uploads.py); every refusal is counted by its problem code.
2. validate: options (core/jobs.py `JobOptions`, then what the codec refuses), the
   webhook URL, the video itself (probe, plan, compute budget, encode-time estimate).
3. claim the Idempotency-Key (a replay answers the first job's status), reserve a quota
   slot, store the source and the job record, queue the split. A failure after the claim
   removes the job's objects, its index entry, the quota slot and the claim: nothing
   half-created is left behind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import anyio
from celery import Celery
from pydantic import ValidationError

from api import idempotency, uploads
from api.links import linked_status
from api.metrics import ApiMetrics
from api.problems import Problem
from api.quotas import JobQuotas, check_job_size
from api.upload import Upload, receive_upload
from core.jobs import (
    API_PRESETS,
    InputInfo,
    Job,
    JobEstimate,
    JobOptions,
    JobStatus,
    Keys,
    new_job_id,
    owner_id,
    owner_index_key,
    utcnow,
    write_job,
)
from core.logs import bind
from core.queue import send
from core.settings import Settings
from core.storage import ObjectStore
from core.uploads import delete_upload
from core.webhooks import BadWebhookUrl, check_url

log = logging.getLogger(__name__)
OPTION_FIELDS = set(JobOptions.model_fields) - {"lam"} | {"lambda"}
MIN_SIDE = 8  # smallest source frame side accepted (the `width` option's minimum too)


@dataclass
class Received:
    """A request's video (spooled to a temp file) and the fields that are not options."""

    upload: Upload
    upload_id: str | None  # the tus upload it came from, deleted once the job has its copy
    webhook_url: str | None


@dataclass
class Created:
    status: JobStatus
    replayed: bool = False  # an Idempotency-Key replay: the first request's job


@dataclass
class JobService:
    """What creating a job needs from the app (one per app, api/routes_jobs.py)."""

    settings: Settings
    store: ObjectStore
    celery: Celery
    quotas: JobQuotas
    metrics: ApiMetrics

    async def receive(self, request: Any, owner: str) -> Received:
        """The request's video and fields; Problem 400/404/409/413/415/422."""
        await uploads.maybe_sweep(self.store, self.settings)
        try:
            up = await receive_upload(
                request, self.settings.tmp_dir, self.settings.max_upload_bytes
            )
            upload_id = up.fields.pop("upload_id", None)
            hook_url = up.fields.pop("webhook_url", None)
            if upload_id is not None:  # a finished tus upload (/v1/uploads) is the video
                up = await self._spool(up, upload_id, owner)
        except Problem as p:
            self.metrics.uploads_rejected.labels(p.code or str(p.status)).inc()
            raise
        return Received(up, upload_id, hook_url)

    async def create(self, got: Received, owner: str, idem: str | None) -> Created:
        """Validate, then claim, reserve, store and queue (the module docstring)."""
        opts, inp, header, est, hook_url = await self._validate(got, owner)
        job_id = new_job_id()
        bind(job_id=job_id)
        claimed: idempotency.Claimed | None = None
        if idem:
            fingerprint = got.upload.sha256 + ":" + opts.model_dump_json(by_alias=True)
            claim = await idempotency.claim(self.store, owner, idem, job_id, fingerprint)
            if isinstance(claim, idempotency.Replay):
                st = await anyio.to_thread.run_sync(linked_status, self.store, claim.job_id)
                if st is not None:
                    return Created(st, replayed=True)
            else:
                claimed = claim
        try:
            await self.quotas.reserve(owner, job_id)  # 429 at a limit; else counted from now
        except BaseException:
            await anyio.to_thread.run_sync(idempotency.roll_back, self.store, claimed)
            raise
        now = utcnow()
        job = Job(
            id=job_id,
            owner=owner,
            created_at=now,
            created_ms=int(now.timestamp() * 1000),
            filename=got.upload.filename,
            source_bytes=got.upload.size,
            options=opts,
            input=inp,
            frames_planned=header.frames,
            clip_length=header.clip_length,
            webhook_url=hook_url,
            estimate=est,
        )
        await self._store_and_queue(job, got.upload, claimed)
        if got.upload_id is not None:  # the job has its own copy now: the upload is spent
            await anyio.to_thread.run_sync(self._delete_upload, got.upload_id)
        self.metrics.jobs_created.inc()
        self.metrics.upload_bytes.inc(got.upload.size)
        log.info(
            "job %s accepted: %s, %d bytes, %s", job_id, job.filename, job.source_bytes, inp.codec
        )
        st = await anyio.to_thread.run_sync(linked_status, self.store, job_id)
        assert st is not None
        return Created(st)

    async def _validate(
        self, got: Received, owner: str
    ) -> tuple[JobOptions, InputInfo, Any, JobEstimate | None, str | None]:
        """Options, webhook URL and video, each refusal counted by its code."""
        try:
            opts = parse_options(got.upload.fields, self.settings.device)
            hook_url = await self._webhook_url(owner, got.webhook_url)
            inp, header, est = await anyio.to_thread.run_sync(
                probe_upload, got.upload, opts, self.settings
            )
        except Problem as p:
            self.metrics.uploads_rejected.labels(p.code or str(p.status)).inc()
            raise
        except ValidationError:
            self.metrics.uploads_rejected.labels("invalid-options").inc()
            raise
        return opts, inp, header, est, hook_url

    async def _store_and_queue(
        self, job: Job, up: Upload, claimed: idempotency.Claimed | None
    ) -> None:
        """The source, the job record, the split task; all of it undone on a failure."""

        def persist() -> None:
            assert up.path is not None  # probe_upload refused a request without a video
            with open(up.path, "rb") as f:
                self.store.put_stream(Keys(job.id).source, f)
            write_job(self.store, job)

        try:
            await anyio.to_thread.run_sync(persist)
            await anyio.to_thread.run_sync(
                lambda: send(self.celery, "split", [job.id], patient=False)
            )
        except Exception as e:
            log.exception("job %s: could not be queued", job.id)
            await anyio.to_thread.run_sync(self._forget, job, claimed)
            raise Problem(
                503,
                "the job could not be stored or queued; retry",
                code="unavailable",
                headers={"Retry-After": "5"},
                retry_after=5,
            ) from e

    def _forget(self, job: Job, claimed: idempotency.Claimed | None) -> None:
        """Undo a job that could not be queued: its objects, index entry, quota slot, claim."""
        self.store.delete_prefix(Keys(job.id).prefix)
        self.store.delete(owner_index_key(job.owner, job.created_ms, job.id))
        self.quotas.release(job.owner, job.id)
        idempotency.roll_back(self.store, claimed)

    async def _spool(self, fields_only: Upload, upload_id: str, owner: str) -> Upload:
        """The finished tus upload `upload_id` as an Upload with the request's other fields."""
        if fields_only.path is not None:
            fields_only.discard()
            raise Problem(
                422, "send either `file` or `upload_id`, not both", code="file-and-upload"
            )
        spooled = await anyio.to_thread.run_sync(
            uploads.spool,
            self.store,
            upload_id,
            owner,
            self.settings.tmp_dir,
            self.settings.max_upload_bytes,
        )
        spooled.fields = fields_only.fields
        return spooled

    def _delete_upload(self, upload_id: str) -> None:
        try:
            delete_upload(self.store, upload_id)
        except Exception as e:  # the job exists; the upload expires on its own
            log.warning("upload %s: not deleted after its job was created: %s", upload_id, e)

    async def _webhook_url(self, owner: str, given: str | None) -> str | None:
        """The job's webhook URL: the request's, else the key's default; 422 if unusable."""
        defaults = default_webhooks(self.settings)
        url = given or defaults.get(owner) or defaults.get("*")
        if not url:
            return None
        if self.settings.webhook_secret is None:
            raise Problem(
                422,
                "this server sends no webhooks (UARNVC_WEBHOOK_SECRET is not set)",
                code="webhooks-disabled",
            )
        try:
            with anyio.fail_after(5):
                await anyio.to_thread.run_sync(
                    check_url, url, self.settings.webhook_allow_private, abandon_on_cancel=True
                )
        except BadWebhookUrl as e:
            raise Problem(422, str(e), code="invalid-webhook-url") from None
        except TimeoutError:
            raise Problem(
                422,
                "webhook_url: the host name did not resolve in time",
                code="invalid-webhook-url",
            ) from None
        return url


def default_webhooks(settings: Settings) -> dict[str, str]:
    """UARNVC_WEBHOOK_URLS by owner id (`*`: every key, and the key-less mode)."""
    return {(k if k == "*" else owner_id(k)): v for k, v in settings.webhook_urls.items()}


def parse_options(fields: dict[str, str], device: str) -> JobOptions:
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


def estimate_encode(settings: Settings, info: Any, header: Any, enc: Any) -> JobEstimate | None:
    """The job's encode-time estimate on the configured device, measured here (cached per
    configuration, core/codec/estimate.py); 422 when it is over
    UARNVC_MAX_ENCODE_SECONDS, with the estimate and the options that would fit. None
    where this process cannot run the device (a CPU API in front of GPU workers): the
    job's ETA then starts with its first measured clip."""
    from core.codec.estimate import alternatives, duration, estimate

    try:
        est = estimate(header, enc, settings.calibration_dir)
    except (ValueError, RuntimeError) as e:
        log.warning("no encode-time estimate on %s: %s", enc.device, e)
        return None
    limit = settings.api_max_encode_seconds
    if limit and est.seconds > limit:
        fits = alternatives(
            info,
            enc,
            limit,
            settings.calibration_dir,
            presets=API_PRESETS,
            suggest_device=False,
        )
        hint = "; ".join(
            ", ".join(f"{k}={v}" for k, v in f.options.items()) + f" (~{duration(f.seconds)})"
            for f in fits
        )
        raise Problem(
            422,
            f"the job is estimated to take {duration(est.seconds)} ({est.clips} clips of "
            f"{duration(est.per_clip)}), over this server's limit of {duration(limit)}"
            + (f"; these options would fit: {hint}" if hint else ""),
            code="job-too-long",
            estimate_seconds=round(est.seconds, 1),
            limit_seconds=limit,
            estimate=est.to_dict(),
            fits=[f.to_dict() for f in fits],
        )
    return JobEstimate(
        seconds=round(est.seconds, 1),
        per_clip_seconds=round(est.per_clip, 2),
        clips=est.clips,
        step_seconds=est.calibration.step,
        device=est.calibration.device,
    )


def probe_upload(
    up: Upload, opts: JobOptions, settings: Settings
) -> tuple[InputInfo, Any, JobEstimate | None]:
    """Probe the spooled upload, plan the stream and estimate its encode; Problem 422 for
    anything unusable or over a limit."""
    from core.codec.chain import plan_stream
    from core.video import VideoError, probe

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
    check_job_size(settings, header, enc)  # 422: over the compute budget or clip count
    est = estimate_encode(settings, info, header, enc)  # 422: estimated over the time limit
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
    return inp, header, est
