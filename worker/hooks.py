"""Webhook emission and delivery (core/webhooks.py says what is sent and recorded).

`emit` is called by the pipeline at each fact (a clip committed, the last clip committed,
the job failed), also when a redelivered task finds the fact already in the store, so a
crash between the fact and its emission loses nothing. `deliver` makes one attempt; the
Celery task (worker/tasks.py, queue `hooks`) retries it with exponential backoff. Nothing
here can fail a job: every error ends in the hook's record.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import httpx

from api.links import webhook_links
from core import webhooks
from core.jobs import Job, Keys, load_job, load_plan, mark_failed
from core.settings import Settings
from core.storage import ObjectStore

log = logging.getLogger(__name__)
Enqueue = Any  # worker.pipeline.Enqueue (kind, args); "hook" takes [job_id, webhook id]


class DeliveryFailed(Exception):
    """This attempt did not get a 2xx; retry later."""


def emit(
    store: ObjectStore, job: Job | None, event: str, enqueue: Enqueue, clip: int | None = None
) -> None:
    """Record the event as pending and queue its delivery (no-op without a webhook URL)."""
    if job is None or not job.webhook_url:
        return
    try:
        wid = webhooks.create_record(store, job.id, event, clip)
        if wid is not None:
            enqueue("hook", [job.id, wid])
    except Exception as e:  # never fails the job; `resume` re-queues pending records
        log.warning("job %s: could not queue webhook %s: %s", job.id, event, e)


def fail(store: ObjectStore, job_id: str, code: str, detail: str, enqueue: Enqueue) -> None:
    """Mark the job failed (first failure wins) and emit job.failed."""
    mark_failed(store, job_id, code, detail)
    emit(store, load_job(store, job_id), "job.failed", enqueue)


def emit_done(store: ObjectStore, job: Job | None, k: int, enqueue: Enqueue) -> None:
    """clip.done for clip k, and job.succeeded when every clip is committed."""
    if job is None or not job.webhook_url:
        return
    emit(store, job, "clip.done", enqueue, clip=k)
    plan = load_plan(store, job.id)
    if plan is None:
        return
    keys = Keys(job.id)
    done = set(store.list(keys.prefix + "clips/"))
    if all(keys.chunk(i) in done for i in range(len(plan.clips))):
        emit(store, job, "job.succeeded", enqueue)


def requeue_pending(store: ObjectStore, job_id: str, enqueue: Enqueue) -> int:
    """Queue every pending hook of a job again (after a crash); how many."""
    recs = webhooks.pending(store, job_id)
    for rec in recs:
        enqueue("hook", [job_id, rec["id"]])
    return len(recs)


def deliver(store: ObjectStore, settings: Settings, job_id: str, wid: str) -> str:
    """One attempt. Returns the record's new state ("delivered", "failed" for a URL that
    may not be used, or "skipped" when there is nothing to do); raises DeliveryFailed for
    anything worth retrying."""
    rec = webhooks.read_record(store, job_id, wid)
    if rec is None or rec.get("state") != "pending":
        return "skipped"
    job = load_job(store, job_id)
    if job is None or not job.webhook_url:
        webhooks.update_record(store, job_id, wid, state="dropped", error="job gone")
        return "skipped"
    if settings.webhook_secret is None:
        webhooks.update_record(store, job_id, wid, state="failed", error="no webhook secret")
        return "failed"
    try:
        webhooks.check_url(job.webhook_url, settings.webhook_allow_private)
    except webhooks.BadWebhookUrl as e:
        webhooks.update_record(store, job_id, wid, state="failed", error=str(e))
        return "failed"
    body = rec.get("body")
    if body is None:  # built once: every retry sends the same bytes
        event, clip = rec["event"], rec.get("clip")
        links = webhook_links(job_id, event, clip)
        data = webhooks.payload(store, job_id, event, clip, rec["at"], links)
        body = json.dumps(data, separators=(",", ":"))
        rec = webhooks.update_record(store, job_id, wid, body=body)
    attempts = int(rec.get("attempts", 0)) + 1
    webhooks.update_record(store, job_id, wid, attempts=attempts, last_attempt_at=time.time())
    headers = webhooks.sign(
        settings.webhook_secret.get_secret_value(), wid, datetime.now(UTC), body
    )
    try:
        r = httpx.post(
            job.webhook_url,
            content=body.encode(),
            headers={
                **headers,
                "content-type": "application/json",
                "user-agent": "uarnvc-webhooks/0.1",
            },
            timeout=settings.webhook_timeout,
            follow_redirects=False,
        )
    except httpx.HTTPError as e:
        webhooks.update_record(store, job_id, wid, error=f"{type(e).__name__}: {e}"[:500])
        raise DeliveryFailed(str(e)) from e
    if not r.is_success:
        webhooks.update_record(store, job_id, wid, error=f"HTTP {r.status_code}")
        raise DeliveryFailed(f"HTTP {r.status_code}")
    webhooks.update_record(
        store, job_id, wid, state="delivered", status=r.status_code, delivered_at=time.time()
    )
    log.info("job %s: webhook %s delivered (attempt %d)", job_id, wid, attempts)
    return "delivered"


def give_up(store: ObjectStore, job_id: str, wid: str, error: str) -> None:
    webhooks.update_record(store, job_id, wid, state="failed", error=error[:500])
    log.warning("job %s: webhook %s given up: %s", job_id, wid, error)
