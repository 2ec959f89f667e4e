"""Load shedding (api/shed.py): over the in-flight limit or with a lagging event loop, new
/v1 requests are answered 503 problem+json with Retry-After at once; streams and probes
are never shed."""

from __future__ import annotations

import asyncio
import time

import httpx
from starlette.types import Receive, Scope, Send

from api.shed import LoadShedMiddleware


class SlowApp:
    """Answers 200 after `release` is set (or at once for probes)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.block_loop = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"].startswith("/v1/slow"):
            await self.release.wait()
        if self.block_loop:
            time.sleep(self.block_loop)  # a handler that blocks the loop (what lag means)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def _client(app: LoadShedMiddleware) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t")


def test_sheds_over_the_inflight_limit_at_once() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        shed = LoadShedMiddleware(inner, max_inflight=2, max_lag=0)
        async with _client(shed) as c:
            held = [asyncio.create_task(c.get(f"/v1/slow/{i}")) for i in range(2)]
            while shed.inflight < 2:
                await asyncio.sleep(0.01)
            t0 = time.perf_counter()
            r = await c.get("/v1/jobs/x")
            took = time.perf_counter() - t0
            assert r.status_code == 503 and took < 0.05, (r.status_code, took)
            assert r.headers["content-type"] == "application/problem+json"
            assert r.headers["retry-after"] == "1"
            body = r.json()
            assert body["type"] == "urn:uarnvc:problem:overloaded" and "in flight" in body["detail"]
            # Streams and probes pass whatever the load.
            assert (await c.get("/healthz")).status_code == 200
            assert (await c.get("/v1/jobs/x/events")).status_code == 200
            inner.release.set()
            assert [(await t).status_code for t in held] == [200, 200]
            assert (await c.get("/v1/jobs/x")).status_code == 200  # recovered
            assert shed.shed == 1 and shed.inflight == 0

    asyncio.run(scenario())


def test_sheds_while_the_event_loop_lags() -> None:
    async def scenario() -> None:
        inner = SlowApp()
        inner.release.set()
        shed = LoadShedMiddleware(inner, max_inflight=0, max_lag=0.3)

        async def until_served(c: httpx.AsyncClient) -> None:
            # The machine may be busy itself (shared CPUs): wait for an on-time loop.
            for _ in range(100):
                if (await c.get("/v1/jobs/x")).status_code == 200:
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("never served")

        async with _client(shed) as c:
            await until_served(c)  # (the first request starts the lag probe)
            await asyncio.sleep(0.1)  # the probe is measuring
            inner.block_loop = 1.0
            assert (await c.get("/v1/jobs/x")).status_code == 200  # blocks the loop 1 s
            await asyncio.sleep(0.01)  # the probe wakes up late: one blip is not enough
            assert shed.lag < 0.9  # the 1 s blip alone does not count
            assert (await c.get("/v1/jobs/x")).status_code == 200  # blocks it again
            inner.block_loop = 0.0
            await asyncio.sleep(0.01)  # late twice in a row: the loop is behind
            t0 = time.perf_counter()
            r = await c.get("/v1/jobs/x")
            assert r.status_code == 503 and "behind" in r.json()["detail"], r.text
            assert time.perf_counter() - t0 < 0.2
            await until_served(c)  # the loop is idle again: the next probe is on time

    asyncio.run(scenario())


def test_client_waits_out_a_shedding_server() -> None:
    """The Python client (and so the CLI and the demo) repeats a GET answered 503
    overloaded after its Retry-After, instead of failing the user's command."""
    from api.client import ApiError, UarnvcClient
    from api.problems import problem_response

    shed_body = problem_response(
        503, "busy", code="overloaded", headers={"Retry-After": "1"}, retry_after=1
    )
    answers = [shed_body, shed_body]
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if answers:
            a = answers.pop(0)
            return httpx.Response(a.status_code, headers=dict(a.headers), content=a.body)
        return httpx.Response(200, json={"jobs": [], "links": {}})

    with UarnvcClient("http://t", api_key="", transport=httpx.MockTransport(handler)) as c:
        assert list(c.jobs()) == []
    assert len(seen) == 3 and seen[2] - seen[0] >= 1.9  # waited Retry-After each time
    # A 503 that is not shedding (the store is down) is an error at once.
    down = problem_response(503, "store down", code="unavailable", headers={"Retry-After": "5"})
    with UarnvcClient(
        "http://t",
        api_key="",
        transport=httpx.MockTransport(
            lambda r: httpx.Response(503, headers=dict(down.headers), content=down.body)
        ),
    ) as c:
        try:
            list(c.jobs())
        except ApiError as e:
            assert e.status == 503 and e.code == "unavailable"
        else:
            raise AssertionError("no error")
