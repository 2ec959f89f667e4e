"""Load shedding: when the API cannot keep up, answer 503 at once instead of queueing.

An overloaded server that accepts everything answers everything late: requests wait in
the event loop's queue, the thread pool or the client for seconds, and pollers time out
and retry, which makes it worse. Two signals say the process is behind, and while either
holds, new `/v1` requests get `503 overloaded` problem+json with `Retry-After` from this
outermost middleware, before any routing, auth or store work:

- **requests in flight** above `UARNVC_SHED_MAX_INFLIGHT` (long-lived streams, i.e.
  `/events`, `/bitstream` and `/decode`, are not counted: they are limited by quotas);
- **event-loop lag** above `UARNVC_SHED_MAX_LAG` seconds: a timer that should fire every
  `PROBE` seconds is measured; when it fires late twice in a row the loop is saturated
  (CPU starvation or blocking work) and whatever is admitted now would queue behind it.

Probes, metrics and the web page are never shed (an orchestrator must see the process
alive, and a 503 on `/readyz` would take the replica out of rotation on its own terms).
"""

from __future__ import annotations

import asyncio
import time

from starlette.types import ASGIApp, Receive, Scope, Send

from api.problems import retry_later

PROBE = 0.05  # seconds between two lag measurements
STREAMS = ("/events", "/bitstream", "/decode")
RETRY_AFTER = 1


class LoadShedMiddleware:
    """Pure ASGI, outermost: a shed request costs a counter check and a fixed answer."""

    def __init__(self, app: ASGIApp, max_inflight: int, max_lag: float) -> None:
        self.app = app
        self.max_inflight = max_inflight
        self.max_lag = max_lag
        self.inflight = 0
        self.lag = 0.0
        self.shed = 0  # answered 503 since start (also in /metrics)
        self._monitor: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _ensure_monitor(self) -> None:
        loop = asyncio.get_running_loop()
        if self._monitor is None or self._loop is not loop or self._monitor.done():
            self._loop = loop
            self._monitor = loop.create_task(self._watch_lag())

    async def _watch_lag(self) -> None:
        """`lag` is the smaller of the last two late wake-ups: one late timer (a pause of
        the whole process, a slow GC) is a blip, two in a row mean the loop is behind."""
        last = 0.0
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(PROBE)
            now = max(0.0, time.perf_counter() - t0 - PROBE)
            self.lag, last = min(now, last), now

    def _overloaded(self) -> str | None:
        if self.max_inflight and self.inflight >= self.max_inflight:
            return f"{self.inflight} requests in flight (limit {self.max_inflight})"
        if self.max_lag and self.lag > self.max_lag:
            return f"the event loop is {1000 * self.lag:.0f} ms behind"
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        if self.max_lag:
            self._ensure_monitor()
        if scope["path"].endswith(STREAMS):
            await self.app(scope, receive, send)
            return
        why = self._overloaded()
        if why is not None:
            self.shed += 1
            resp = retry_later(
                503,
                f"the API is overloaded ({why}); retry in {RETRY_AFTER} s",
                code="overloaded",
                instance=scope["path"],
                seconds=RETRY_AFTER,
            )
            await resp(scope, receive, send)
            return
        self.inflight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.inflight -= 1
