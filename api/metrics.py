"""Prometheus metrics for the API: one registry per app (tests build many apps)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class ApiMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "uarnvc_http_requests_total",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "uarnvc_http_request_seconds",
            "Time to the response headers, by route template",
            ["method", "route"],
            registry=self.registry,
        )
        self.jobs_created = Counter(
            "uarnvc_jobs_created_total", "Jobs accepted", registry=self.registry
        )
        self.upload_bytes = Counter(
            "uarnvc_upload_bytes_total", "Bytes of accepted uploads", registry=self.registry
        )
        self.uploads_rejected = Counter(
            "uarnvc_uploads_rejected_total",
            "Uploads refused, by reason",
            ["reason"],
            registry=self.registry,
        )


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not buffer streaming responses."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                self.metrics.latency.labels(scope["method"], path).observe(time.perf_counter() - t0)
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(scope["method"], path, str(status)).inc()
