"""Health, readiness and Prometheus metrics (unauthenticated: for probes and scrapers)."""

from __future__ import annotations

import logging

import anyio
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.problems import problem_response

log = logging.getLogger(__name__)
router = APIRouter(tags=["ops"])
READY_TIMEOUT = 5.0


@router.get("/healthz", summary="The process is alive")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _check_broker(request: Request) -> None:
    with request.app.state.celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, timeout=READY_TIMEOUT)


@router.get("/readyz", summary="Broker and object store reachable (503 otherwise)")
async def readyz(request: Request) -> Response:
    checks: dict[str, str] = {}
    for name, fn in (
        ("store", request.app.state.store.ping),
        ("broker", lambda: _check_broker(request)),
    ):
        try:
            with anyio.fail_after(READY_TIMEOUT + 1):
                await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
            checks[name] = "ok"
        except Exception as e:
            log.warning("readyz: %s not ready: %s", name, e)
            checks[name] = f"unavailable: {type(e).__name__}"
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ready", "checks": checks})
    return problem_response(
        503,
        "a dependency is unreachable",
        code="not-ready",
        checks=checks,
        headers={"Retry-After": "5"},
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    if request.app.state.settings.metrics_port:  # served on a port of their own instead
        raise StarletteHTTPException(404)
    # In a thread: collecting scans the store and the broker (ServiceCollector).
    body = await anyio.to_thread.run_sync(generate_latest, request.app.state.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def serve_metrics_port(app: FastAPI) -> None:
    """With `UARNVC_METRICS_PORT`, /metrics moves to that port (prometheus_client's own
    server, on the API's host), so it can be firewalled apart from the API."""
    s = app.state.settings
    if s.metrics_port:
        host = s.host if s.api_keys else "127.0.0.1"  # keyless: loopback, as the API
        server, _thread = start_http_server(
            s.metrics_port, addr=host, registry=app.state.metrics.registry
        )
        app.state.metrics_server = server
        log.info("metrics on http://%s:%d/metrics", host, s.metrics_port)
