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

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import httpx
from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.jobs import TERMINAL, JobStatus

DecodeFormat = Literal["mkv", "y4m", "mp4"]
EVENT_RETRIES = 5


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


class _ProgressReader:
    """Wraps an upload file so each read reports the bytes sent so far."""

    def __init__(self, f: IO[bytes], callback: Callable[[int], None]) -> None:
        self._f, self._cb, self._n = f, callback, 0

    def read(self, size: int = -1) -> bytes:
        b = self._f.read(size)
        self._n += len(b)
        self._cb(self._n)
        return b


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
        return self._check(self._http.get(path, **kw))

    # -------------------------------------------------------------------------- jobs

    def submit(
        self,
        video: str | os.PathLike[str],
        options: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
        on_upload: Callable[[int, int], None] | None = None,
    ) -> JobStatus:
        """Upload a video with encode options (mode, clip_length, preset, lambda, params,
        steps, frames, width, key_interval, seed); the accepted job's status (202)."""
        path = Path(video)
        total = path.stat().st_size
        data = {k: str(v) for k, v in (options or {}).items() if v is not None}
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        with open(path, "rb") as f:
            body: Any = f
            if on_upload is not None:
                body = _ProgressReader(f, lambda n: on_upload(n, total))
            r = self._http.post(
                "/v1/jobs",
                files={"file": (path.name, body, "application/octet-stream")},
                data=data,
                headers=headers,
                timeout=httpx.Timeout(self.timeout, write=None),
            )
        return JobStatus.model_validate(self._check(r).json())

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
                with self._http.stream(
                    "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=timeout
                ) as r:
                    self._check(r)
                    failures = 0
                    for ev in _parse_sse(r.iter_lines()):
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


def _parse_sse(lines: Iterator[str]) -> Iterator[Event]:
    name, data, eid = "message", [], None
    for line in lines:
        line = line.rstrip("\r")
        if not line:
            if data:
                raw = "\n".join(data)
                try:
                    payload = json.loads(raw)
                except ValueError:
                    payload = {"raw": raw}
                yield Event(name, payload if isinstance(payload, dict) else {"value": payload}, eid)
            name, data, eid = "message", [], None
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if key == "event":
            name = value
        elif key == "data":
            data.append(value)
        elif key == "id":
            eid = value
