"""A small typed Python client of the `/v1` API (httpx), used by `uarnvc submit|status|fetch`.

    from api.client import UarnvcClient

    with UarnvcClient("http://127.0.0.1:8000", api_key="...") as c:
        job = c.submit("clip.mp4", {"clip_length": 8, "preset": "fast"})
        final = c.wait(job.id, on_event=print)
        c.fetch_bitstream(job.id, "out.uarv")

Errors from the server arrive as `ApiError`, carrying the RFC 9457 problem document, so
callers branch on `status`/`code` instead of parsing messages. The server URL and key
default to `UARNVC_SERVER` / `UARNVC_API_KEY` (`ClientSettings`), never to the service's
own settings: a client machine has no data dir or broker.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
from httpx_sse import ServerSentEvent, connect_sse
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.jobs import TERMINAL, JobStatus

DecodeFormat = Literal["mkv", "y4m", "mp4"]
EVENT_RETRIES = 5
TUS_VERSION = "1.0.0"
UPLOAD_CHUNK = 8 * 1024 * 1024  # bytes per PATCH: what a cut connection can cost at most


class ClientSettings(BaseSettings):
    """Where the client talks to; `UARNVC_SERVER`, `UARNVC_API_KEY`, `UARNVC_CLIENT_TIMEOUT`."""

    model_config = SettingsConfigDict(env_prefix="UARNVC_", extra="ignore")

    server: str = Field("http://127.0.0.1:8000", description="Base URL of the API.")
    api_key: SecretStr | None = Field(None, description="Bearer key (one of UARNVC_API_KEYS).")
    client_timeout: float = Field(60.0, gt=0, description="Seconds per request (not streams).")


class ApiError(Exception):
    """A non-2xx answer. `problem` is the problem+json body (or one built from the
    response when the body was not JSON, e.g. a proxy's HTML error page)."""

    def __init__(self, problem: Mapping[str, Any]) -> None:
        self.problem = dict(problem)
        self.status: int = int(self.problem.get("status") or 0)
        self.code: str | None = self.problem.get("code") or _code_of(self.problem.get("type"))
        super().__init__(self.describe())

    def describe(self) -> str:
        p = self.problem
        text = f"{p.get('title') or 'error'} ({self.status})"
        if p.get("detail"):
            text += f": {p['detail']}"
        errors = p.get("errors") or []
        if errors:
            text += " — " + "; ".join(
                f"{e['field']}: {e.get('message')}" if e.get("field") else str(e.get("message"))
                for e in errors
                if isinstance(e, dict)
            )
        return text


def _code_of(type_uri: Any) -> str | None:
    if isinstance(type_uri, str) and ":problem:" in type_uri:
        return type_uri.rsplit(":", 1)[1]
    return None


@dataclass(frozen=True)
class Event:
    """One server-sent event: clip_done, clip_progress, job_done, job_failed, job_cancelled."""

    event: str
    data: dict[str, Any] = field(default_factory=dict)
    id: str | None = None


RETRIES = 8  # of a GET answered 503 overloaded / 429 rate-limited
MAX_RETRY_WAIT = 5.0  # seconds, whatever Retry-After says
RETRYABLE = {(503, "overloaded"), (429, "rate-limited")}


def _retryable(r: httpx.Response) -> bool:
    if r.status_code not in (429, 503) or "retry-after" not in r.headers:
        return False
    try:
        return (r.status_code, _code_of(r.json().get("type"))) in RETRYABLE
    except ValueError:
        return False


def _retry_after(r: httpx.Response) -> float:
    try:
        return max(0.1, float(r.headers["retry-after"]))
    except ValueError:
        return 1.0


class UarnvcClient:
    """Blocking client. One instance holds one connection pool; use it as a context
    manager (or call close())."""

    def __init__(
        self,
        server: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        env = ClientSettings()
        self.server = (server or env.server).rstrip("/")
        key = api_key if api_key is not None else (env.api_key and env.api_key.get_secret_value())
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout or env.client_timeout
        self._http = httpx.Client(
            base_url=self.server,
            headers={**headers, "User-Agent": "uarnvc-client/0.1"},
            timeout=self.timeout,
            transport=transport,
        )

    def __enter__(self) -> UarnvcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------------ basics

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.is_success:
            return r
        if r.is_stream_consumed is False:
            r.read()
        try:
            body = r.json()
            if not isinstance(body, dict):
                raise ValueError
        except ValueError:
            body = {"detail": r.text[:300] or None}
        body.setdefault("status", r.status_code)
        body.setdefault("title", r.reason_phrase)
        raise ApiError(body)

    def _get(self, path: str, **kw: Any) -> httpx.Response:
        """GET, waiting out a server that sheds load (503 `overloaded`, api/shed.py) or a
        rate limit (429 `rate-limited`) as its Retry-After says, a few times; a GET is
        safe to repeat."""
        for attempt in range(RETRIES + 1):
            r = self._http.get(path, **kw)
            if attempt == RETRIES or not _retryable(r):
                return self._check(r)
            time.sleep(min(MAX_RETRY_WAIT, _retry_after(r)))
        raise AssertionError("unreachable")

    # -------------------------------------------------------------------------- jobs

    def submit(
        self,
        video: str | os.PathLike[str],
        options: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        on_upload: Callable[[int, int], None] | None = None,
        webhook_url: str | None = None,
    ) -> JobStatus:
        """Upload a video (resumably, `upload`) and create a job from it with encode
        options (mode, clip_length, preset, lambda, params, steps, frames, width,
        key_interval, seed, quality, target_bpp, target_psnr); the accepted job's status
        (202)."""
        upload_id = self.upload(video, on_upload=on_upload)
        body: dict[str, Any] = {k: v for k, v in (options or {}).items() if v is not None}
        body["upload_id"] = upload_id
        if webhook_url:
            body["webhook_url"] = webhook_url
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        r = self._http.post("/v1/jobs", json=body, headers=headers)
        return JobStatus.model_validate(self._check(r).json())

    def upload(
        self,
        video: str | os.PathLike[str],
        *,
        on_upload: Callable[[int, int], None] | None = None,
        chunk_size: int = UPLOAD_CHUNK,
        upload_url: str | None = None,
    ) -> str:
        """Send a file with the tus protocol (`/v1/uploads`); its upload id. A dropped
        connection is resumed from the offset the server holds (HEAD), up to
        EVENT_RETRIES times in a row; `upload_url` continues an earlier upload."""
        path = Path(video)
        total = path.stat().st_size
        tus = {"Tus-Resumable": TUS_VERSION}
        if upload_url is None:
            meta = "filename " + base64.b64encode(path.name.encode()).decode()
            r = self._check(
                self._http.post(
                    "/v1/uploads",
                    headers={**tus, "Upload-Length": str(total), "Upload-Metadata": meta},
                )
            )
            upload_url = r.headers["location"]
        offset, failures = self._upload_offset(upload_url, tus), 0
        with open(path, "rb") as f:
            while offset < total:
                f.seek(offset)
                chunk = f.read(chunk_size)
                try:
                    r = self._http.patch(
                        upload_url,
                        content=chunk,
                        headers={
                            **tus,
                            "Upload-Offset": str(offset),
                            "Content-Type": "application/offset+octet-stream",
                        },
                        timeout=httpx.Timeout(self.timeout, write=None),
                    )
                    if r.status_code == 409:  # another try got further: ask where we are
                        offset = self._upload_offset(upload_url, tus)
                        continue
                    offset = int(self._check(r).headers["upload-offset"])
                    failures = 0
                except httpx.TransportError:
                    failures += 1
                    if failures > EVENT_RETRIES:
                        raise
                    time.sleep(min(5.0, 0.5 * 2**failures))
                    offset = self._upload_offset(upload_url, tus)
                if on_upload is not None:
                    on_upload(offset, total)
        return upload_url.rstrip("/").rsplit("/", 1)[-1]

    def _upload_offset(self, url: str, tus: dict[str, str]) -> int:
        return int(self._check(self._http.head(url, headers=tus)).headers["upload-offset"])

    def status(self, job_id: str) -> JobStatus:
        return JobStatus.model_validate(self._get(f"/v1/jobs/{job_id}").json())

    def jobs(self, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Every job of this key, oldest first (follows the pagination)."""
        url: str | None = f"/v1/jobs?limit={limit}"
        while url:
            body = self._get(url).json()
            yield from body["jobs"]
            url = (body.get("links") or {}).get("next")

    def cancel(self, job_id: str) -> None:
        self._check(self._http.delete(f"/v1/jobs/{job_id}"))

    # ------------------------------------------------------------------------ events

    def events(self, job_id: str, last_event_id: str | None = None) -> Iterator[Event]:
        """The job's SSE feed until its final event; reconnects (with Last-Event-ID, so
        no clip is repeated or lost) when the connection drops."""
        failures = 0
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            timeout = httpx.Timeout(self.timeout, read=60.0)  # the server pings every 15 s
            try:
                with connect_sse(
                    self._http, "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
                ) as source:
                    self._check(source.response)
                    failures = 0
                    for sse in source.iter_sse():
                        ev = _event(sse)
                        if ev.id is not None:
                            last_event_id = ev.id
                        yield ev
                        if ev.event.startswith("job_"):
                            return
            except httpx.TransportError:
                failures += 1
                if failures > EVENT_RETRIES:
                    raise
                time.sleep(min(5.0, 0.5 * 2**failures))

    def wait(
        self,
        job_id: str,
        on_event: Callable[[Event], None] | None = None,
        timeout: float | None = None,
    ) -> JobStatus:
        """Follow the events until the job ends; its final status. TimeoutError after
        `timeout` seconds (checked between events)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for ev in self.events(job_id):
            if on_event is not None:
                on_event(ev)
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still running after {timeout} s")
        st = self.status(job_id)
        # The feed can end a moment before the status settles; it is derived, so re-read.
        for _ in range(20):
            if st.status in TERMINAL:
                break
            time.sleep(0.25)
            st = self.status(job_id)
        return st

    # --------------------------------------------------------------------- downloads

    def _download(self, path: str, dst: str | os.PathLike[str]) -> int:
        """Stream to `dst` atomically (temp file + rename): a failed download leaves no
        truncated file that looks finished."""
        dst = Path(dst)
        tmp = dst.with_name(f".{dst.name}.part")
        n = 0
        try:
            with (
                self._http.stream("GET", path, timeout=httpx.Timeout(self.timeout, read=None)) as r,
                open(tmp, "wb") as f,
            ):
                self._check(r)
                for chunk in r.iter_bytes():
                    f.write(chunk)
                    n += len(chunk)
            os.replace(tmp, dst)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return n

    def fetch_bitstream(self, job_id: str, dst: str | os.PathLike[str]) -> int:
        """The `.uarv`; while the job runs the server holds the stream open until it ends."""
        return self._download(f"/v1/jobs/{job_id}/bitstream", dst)

    def fetch_decoded(
        self, job_id: str, dst: str | os.PathLike[str], format: DecodeFormat = "mkv"
    ) -> int:
        """The reconstruction decoded by the server (mkv: the exact frames, FFV1)."""
        return self._download(f"/v1/jobs/{job_id}/decode?format={format}", dst)

    def fetch_clip(self, job_id: str, k: int) -> bytes:
        """Chunk k (`.uarc`), available as soon as clip k is done."""
        return self._get(f"/v1/jobs/{job_id}/clips/{k}").content


def _event(sse: ServerSentEvent) -> Event:
    """One parsed SSE event (httpx-sse does the framing) as the client's Event: its data is
    JSON (a non-object is wrapped, unparsable text kept raw)."""
    try:
        payload = json.loads(sse.data)
    except ValueError:
        payload = {"raw": sse.data}
    data = payload if isinstance(payload, dict) else {"value": payload}
    return Event(sse.event, data, sse.id or None)
