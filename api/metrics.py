"""Prometheus metrics for the API: one registry per app (tests build many apps)."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.jobs import read_clip_record

log = logging.getLogger(__name__)


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
        self.service: ServiceCollector | None = None

    def watch(self, store: Any, celery: Any, scan_seconds: float) -> None:
        """Also export the store- and broker-derived metrics (see ServiceCollector)."""
        self.service = ServiceCollector(store, celery, scan_seconds)
        self.registry.register(self.service)


# Label values come from this fixed set and the route templates, never from the request
# itself: a made-up method or path must not add series (anyone can send one, keyless).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in METHODS else "other"


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
        method = method_label(scope["method"])

        async def _send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                self.metrics.latency.labels(method, path).observe(time.perf_counter() - t0)
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.requests.labels(method, path, str(status)).inc()


# ------------------------------------------------------------------- store-derived metrics

JOB_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
CLIP_SECONDS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600)
QUEUES = ("cpu", "gpu")


class ServiceCollector(Collector):
    """Job, clip, queue and storage metrics, derived at scrape time from the object store
    and the broker: the two places where the service's state really lives.

    Why here and not in the workers: a worker's own registry would need every worker
    scraped (and prometheus_client's multiprocess mode under a prefork pool); clip
    metrics are already written to the store by whichever worker trained the clip, so
    one API process can report them all. The cost is one LIST of `jobs/` plus a GET of
    each clip's metrics the first time it is seen, at most once per
    `UARNVC_METRICS_SCAN_SECONDS`.

    Every API replica reports the same store-wide values (gauges and the clip histogram):
    aggregate across replicas with `max`, not `sum` (the Grafana dashboard does).
    """

    def __init__(self, store: Any, celery: Any, scan_seconds: float = 10.0) -> None:
        self.store, self.celery, self.scan_seconds = store, celery, scan_seconds
        self._lock = threading.Lock()
        self._at = -math.inf
        self._seen: set[str] = set()  # metrics objects already observed
        self._plans: dict[str, int] = {}  # job id -> clip count (plans never change)
        self._jobs: dict[str, int] = dict.fromkeys(JOB_STATES, 0)
        self._clips: dict[str, int] = {"done": 0, "leased": 0}
        self._bytes: dict[str, int] = {}
        self._queues: dict[str, int] = {}
        self._store_up = 1
        self._scan_time = 0.0
        # Not registered anywhere: collect() yields it next to the gauges.
        self.clip_seconds = Histogram(
            "uarnvc_clip_train_seconds",
            "Wall time to train one clip, from the clip metrics workers write to the store",
            buckets=CLIP_SECONDS_BUCKETS,
            registry=None,
        )
        self.clip_bytes = Counter(
            "uarnvc_clip_bytes", "Bytes of committed clip chunks", registry=None
        )

    # -- scanning

    def refresh(self, force: bool = False) -> None:
        """Rescan if the last scan is older than scan_seconds (thread-safe)."""
        with self._lock:
            if not force and time.monotonic() - self._at < self.scan_seconds:
                return
            t0 = time.perf_counter()
            try:
                self._scan_store()
                self._store_up = 1
            except Exception as e:  # a scrape must not fail because S3 hiccuped
                log.warning("metrics: store scan failed: %s", e)
                self._store_up = 0
            self._queues = self._queue_depths()
            self._scan_time = time.perf_counter() - t0
            self._at = time.monotonic()

    def _scan_store(self) -> None:
        from core.jobs import Plan

        sizes = self.store.list_sizes("jobs/")
        per_job: dict[str, dict[str, int]] = {}
        by_kind: dict[str, int] = {}
        for key, size in sizes.items():
            parts = key.split("/", 2)
            if len(parts) < 3:
                continue
            per_job.setdefault(parts[1], {})[parts[2]] = size
            kind = parts[2].split("/", 1)[0].split(".", 1)[0]
            kind = kind if kind in ("source", "frames", "clips", "state") else "meta"
            by_kind[kind] = by_kind.get(kind, 0) + size

        jobs = dict.fromkeys(JOB_STATES, 0)
        clips = {"done": 0, "leased": 0}
        for job_id, objs in per_job.items():
            if "job.json" not in objs:
                continue
            done = sum(1 for o in objs if o.startswith("clips/") and o.endswith(".uarc"))
            clips["done"] += done
            clips["leased"] += sum(1 for o in objs if o.startswith("lease/") and o != "lease/split")
            if "cancelled.json" in objs:
                state = "cancelled"
            elif "failed.json" in objs:
                state = "failed"
            elif "plan.json" in objs:
                if job_id not in self._plans:
                    plan = Plan.model_validate_json(
                        self.store.get_bytes(f"jobs/{job_id}/plan.json")
                    )
                    self._plans[job_id] = len(plan.clips)
                state = "succeeded" if done >= self._plans[job_id] else "running"
            else:
                state = "queued"
            jobs[state] += 1
            for o in objs:
                if o.startswith("clips/") and o.endswith(".json"):
                    self._observe_clip(f"jobs/{job_id}/{o}")
        live = set(per_job)
        self._plans = {j: n for j, n in self._plans.items() if j in live}
        self._seen = {k for k in self._seen if k.split("/", 2)[1] in live}
        self._jobs, self._clips, self._bytes = jobs, clips, by_kind

    def _observe_clip(self, key: str) -> None:
        """Each clip's metrics enter the histogram once per API process lifetime."""
        if key in self._seen:
            return
        try:
            rec = read_clip_record(self.store, key)
        except Exception:
            return  # the store failed: try again next scan
        if rec is None:
            return  # written a moment later, or gone: try again next scan
        self._seen.add(key)
        if rec.seconds is not None and not rec.recomputed:
            self.clip_seconds.observe(rec.seconds)
        self.clip_bytes.inc(rec.bytes)

    def _queue_depths(self) -> dict[str, int]:
        """Messages waiting per Celery queue; empty when the broker is unreachable (the
        gauge goes absent rather than claiming an empty queue)."""
        from kombu.exceptions import ChannelError

        out: dict[str, int] = {}
        try:
            with self.celery.connection_for_read() as conn:
                conn.ensure_connection(max_retries=1, interval_start=0, timeout=3)
                channel = conn.default_channel
                for q in QUEUES:
                    try:
                        out[q] = int(channel.queue_declare(queue=q, passive=True).message_count)
                    except ChannelError:  # Redis: a queue with no messages has no key
                        out[q] = 0
                        channel = conn.channel()
        except Exception as e:
            log.warning("metrics: broker unreachable for queue depth: %s", e)
            return {}
        return out

    # -- exposition

    def collect(self) -> Iterator[Metric]:
        self.refresh()
        g = GaugeMetricFamily("uarnvc_jobs", "Jobs in the store by state", labels=["state"])
        for state, n in self._jobs.items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily(
            "uarnvc_clips", "Clips committed (done) and leased (training now)", labels=["state"]
        )
        for state, n in self._clips.items():
            g.add_metric([state], n)
        yield g
        g = GaugeMetricFamily(
            "uarnvc_queue_depth", "Celery messages waiting, by queue", labels=["queue"]
        )
        for q, n in self._queues.items():
            g.add_metric([q], n)
        yield g
        g = GaugeMetricFamily(
            "uarnvc_store_bytes",
            "Bytes in the object store under jobs/, by kind",
            labels=["kind"],
        )
        for kind in ("source", "frames", "clips", "state", "meta"):
            g.add_metric([kind], self._bytes.get(kind, 0))
        yield g
        yield GaugeMetricFamily(
            "uarnvc_store_up", "1 if the last store scan succeeded", value=self._store_up
        )
        yield GaugeMetricFamily(
            "uarnvc_metrics_scan_seconds", "Time the last store/broker scan took", self._scan_time
        )
        yield from self.clip_seconds.collect()
        yield from self.clip_bytes.collect()
