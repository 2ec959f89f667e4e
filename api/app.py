"""FastAPI app factory: `uvicorn --factory api.app:create_app` or `uarnvc api`."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from api import guard, problems, routes_web
from api.metrics import ApiMetrics, MetricsMiddleware
from api.routes_jobs import router as jobs_router
from api.routes_ops import router as ops_router
from core.settings import Settings, get_settings
from core.storage import open_store
from worker.celeryconf import make_celery

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
    )
    app.state.settings = s
    app.state.store = guard.GuardedStore(open_store(s, fail_fast=True))  # 503 fast when down
    app.state.celery = make_celery(s)
    app.state.metrics = ApiMetrics()
    app.state.metrics.watch(app.state.store, app.state.celery, s.metrics_scan_seconds)
    s.tmp_dir.mkdir(parents=True, exist_ok=True)
    problems.install(app)
    app.include_router(jobs_router)
    app.include_router(ops_router)
    routes_web.install(app)  # the page at `/` (api/web/)
    guard.install(app)  # rate limit per key; CORS only if UARNVC_CORS_ORIGINS is set
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    if not s.api_keys:
        log.warning(
            "no API keys configured (UARNVC_API_KEYS): the API is unauthenticated and must "
            "listen on 127.0.0.1 only"
        )
    log.info("store %s, broker %s", app.state.store.url, s.effective_broker_url.split("@")[-1])
    return app
