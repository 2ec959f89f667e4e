"""Signed webhooks (Standard Webhooks): what is sent, to where, and its record in the store.

Events: `clip.done` (one per clip), `job.succeeded`, `job.failed`. Each has an id that is
a function of the job, the event and the clip only (`webhook_id`), so every retry and
every re-emission after a crash carries the same `webhook-id` and a receiver de-duplicates
on it. Delivery is at-least-once: the record `jobs/{id}/hooks/{webhook id}.json` is
written (`pending`) before the delivery task is queued, and a pending record is queued
again by `uarnvc worker --resume` (which `uarnvc serve` runs whenever its worker starts).

A URL must be http(s) and resolve only to public addresses unless
`UARNVC_WEBHOOK_ALLOW_PRIVATE` is set: the workers must not be a way into the network they
run in (checked at job creation, 422, and again before each delivery, since DNS answers
change).
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from core.jobs import Keys, read_clip_record, read_json
from core.status import job_status
from core.storage import ObjectStore

Event = Literal["clip.done", "job.succeeded", "job.failed"]
EVENTS: tuple[str, ...] = ("clip.done", "job.succeeded", "job.failed")
MAX_URL = 2048


class BadWebhookUrl(ValueError):
    """The URL may not receive webhooks (the message says why)."""


def check_url(url: str, allow_private: bool) -> None:
    """Raise BadWebhookUrl unless `url` is http(s) with a host whose every address is
    public (or `allow_private`). Resolves the name: call it off the event loop."""
    if len(url) > MAX_URL:
        raise BadWebhookUrl(f"webhook_url is longer than {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise BadWebhookUrl(f"webhook_url is not a URL: {e}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadWebhookUrl("webhook_url must be an http:// or https:// URL with a host")
    if parts.username or parts.password:
        raise BadWebhookUrl("webhook_url must not carry credentials")
    try:
        infos = socket.getaddrinfo(parts.hostname, port or 443, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as e:
        raise BadWebhookUrl(f"webhook_url host {parts.hostname!r} does not resolve: {e}") from None
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if not allow_private and not ip.is_global:
            raise BadWebhookUrl(
                f"webhook_url host {parts.hostname!r} resolves to {ip}, a loopback, "
                "link-local or private address (refused unless UARNVC_WEBHOOK_ALLOW_PRIVATE)"
            )


def webhook_id(job_id: str, event: str, clip: int | None = None) -> str:
    """Deterministic: the same event of the same job (and clip) always has this id."""
    tail = f"_{clip}" if clip is not None else ""
    return f"msg_{job_id}_{event.replace('.', '_')}{tail}"


def record_key(job_id: str, wid: str) -> str:
    return f"{Keys(job_id).prefix}hooks/{wid}.json"


def read_record(store: ObjectStore, job_id: str, wid: str) -> dict[str, Any] | None:
    return read_json(store, record_key(job_id, wid))


def create_record(store: ObjectStore, job_id: str, event: str, clip: int | None) -> str | None:
    """The pending record of an event, unless it exists already; its id, or None when this
    event was emitted before (then its own record and task carry it)."""
    wid = webhook_id(job_id, event, clip)
    body = {
        "id": wid,
        "event": event,
        "clip": clip,
        "state": "pending",
        "attempts": 0,
        "at": time.time(),
    }
    if store.put_if_absent(record_key(job_id, wid), json.dumps(body).encode()):
        return wid
    rec = read_record(store, job_id, wid) or {}
    return wid if rec.get("state") == "pending" else None


def update_record(store: ObjectStore, job_id: str, wid: str, **fields: Any) -> dict[str, Any]:
    rec = read_record(store, job_id, wid) or {"id": wid}
    rec.update(fields, updated_at=time.time())
    store.put_bytes(record_key(job_id, wid), json.dumps(rec).encode())
    return rec


def pending(store: ObjectStore, job_id: str) -> list[dict[str, Any]]:
    """Records not delivered and not given up (for `resume`)."""
    out = []
    for key in store.list(f"{Keys(job_id).prefix}hooks/"):
        rec = read_json(store, key)
        if rec and rec.get("state") == "pending":
            out.append(rec)
    return out


def payload(
    store: ObjectStore,
    job_id: str,
    event: str,
    clip: int | None,
    at: float,
    links: dict[str, str],
) -> dict[str, Any]:
    """The event's body (Standard Webhooks' {type, timestamp, data}) from the store;
    `timestamp` is when the event was emitted, `links` the API's URLs for it
    (api/links.py `webhook_links`). Built once per event: the delivery keeps it in the
    record, so every retry sends the same bytes."""
    st = job_status(store, job_id)
    data: dict[str, Any] = {"job_id": job_id, "links": links}
    if st is not None:
        data["status"] = st.status
        data["clips_total"] = st.clips_total
    if event == "clip.done" and clip is not None:
        rec = read_clip_record(store, Keys(job_id).metrics(clip))
        fields = ("psnr", "bpp", "bytes", "seconds")
        data["clip"] = {"index": clip, **(rec.model_dump(include=set(fields)) if rec else {})}
    elif event == "job.succeeded" and st is not None:
        data.update(psnr=st.psnr, bpp=st.bpp, bytes=st.bytes, clips_done=st.clips_done)
    elif event == "job.failed" and st is not None and st.error is not None:
        data["error"] = st.error.model_dump()
    when = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    return {"type": event, "timestamp": when, "data": data}


def sign(secret: str, wid: str, at: datetime, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt."""
    from standardwebhooks import Webhook

    return {
        "webhook-id": wid,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(wid, at, body),
    }
