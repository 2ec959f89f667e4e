"""FastAPI app factory: `uvicorn --factory api.app:create_app` or `uarnvc api`."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api import browser_guard, guard, problems, routes_web, uploads
from api.headers import SecurityHeadersMiddleware
from api.metrics import ApiMetrics, MetricsMiddleware
from api.routes_jobs import router as jobs_router
from api.routes_ops import router as ops_router
from api.routes_ops import serve_metrics_port
from api.shed import LoadShedMiddleware
from core.queue import make_celery
from core.settings import Settings, get_settings
from core.storage import open_store

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Everything the app needs hangs off `app.state` (settings, store, celery client,
    metrics), so tests build isolated apps and nothing reads globals per request."""
    s = settings or get_settings()
    app = FastAPI(
        title="uar-nvc",
        version="0.1.0",
        summary="Autoregressive neural video compression as a service",
        description="Upload a video; each clip's bitstream is published as soon as it is trained.",
        responses=problems.ERROR_RESPONSES,
        # UARNVC_PUBLIC_DOCS=0 hides the schema and both UIs (then 404).
        openapi_url="/openapi.json" if s.public_docs else None,
        docs_url="/docs" if s.public_docs else None,
        redoc_url="/redoc" if s.public_docs else None,
    )
    app.state.settings = s
    app.state.store = guard.GuardedStore(open_store(s, fail_fast=True))  # 503 fast when down
    app.state.celery = make_celery(s)
    app.state.metrics = ApiMetrics()
    app.state.metrics.watch(app.state.store, app.state.celery, s.metrics_scan_seconds)
    s.tmp_dir.mkdir(parents=True, exist_ok=True)
    problems.install(app)
    app.include_router(jobs_router)
    uploads.install(app, s, app.state.store)  # tus at /v1/uploads
    app.include_router(ops_router)
    routes_web.install(app)  # the page at `/` (api/web/)
    guard.install(app)  # rate limit per key; CORS only if UARNVC_CORS_ORIGINS is set
    browser_guard.install(app)  # Host allow-list; cross-site writes refused
    app.add_middleware(SecurityHeadersMiddleware)  # nosniff, CSP, on every answer
    # Inside the metrics (sheds are counted as 503s), outside everything else (a shed
    # request costs no routing, auth or store work).
    app.add_middleware(LoadShedMiddleware, max_inflight=s.shed_max_inflight, max_lag=s.shed_max_lag)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    serve_metrics_port(app)  # only with UARNVC_METRICS_PORT
    if not s.api_keys:
        log.warning(
            "no API keys configured (UARNVC_API_KEYS): the API is unauthenticated and must "
            "listen on 127.0.0.1 only"
        )
    log.info("store %s, broker %s", app.state.store.url, s.effective_broker_url.split("@")[-1])
    return app
