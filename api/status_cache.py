"""A short-lived cache of job statuses for `GET /v1/jobs/{id}`.

Deriving a status reads the job's listing and every clip's metrics from the store; a
client polling a running job at a few hundred requests a second would make the store
the bottleneck (measured: ~16 req/s next to a training worker on 2 cores). Statuses are
kept for the streaming endpoints' poll interval, the staleness they already accept, per
API process; DELETE drops the entry. The owner is cached with the status so the tenancy
check costs nothing either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from core.jobs import Job, JobStatus

MAX_ENTRIES = 10_000


class StatusCache:
    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, tuple[float, str, JobStatus]] = {}
        self._lock = threading.Lock()

    def get(
        self,
        job_id: str,
        load: Callable[[], tuple[Job | None, JobStatus | None]],
    ) -> tuple[str | None, JobStatus | None]:
        """(owner, status) from the cache, or from `load()` (job, status) when stale."""
        now = time.monotonic()
        with self._lock:
            hit = self._entries.get(job_id)
        if hit and hit[0] > now:
            return hit[1], hit[2]
        job, status = load()
        if job is None or status is None:
            self.drop(job_id)
            return None, None
        with self._lock:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries = {k: v for k, v in self._entries.items() if v[0] > now}
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
            self._entries[job_id] = (now + self.ttl, job.owner, status)
        return job.owner, status

    def drop(self, job_id: str) -> None:
        with self._lock:
            self._entries.pop(job_id, None)
