"""Job statuses kept ready to send, for `GET /v1/jobs/{id}`.

Deriving a status reads the job's listing and every clip's metrics from the store; a
client polling a running job at a few hundred requests a second would make the store
the bottleneck (measured: ~16 req/s next to a training worker on 2 cores). Each status
is kept per API process as the JSON bytes of the answer (encoded once, with orjson), so
a poll costs a dict lookup on the event loop: no thread hop, no store call, no model
validation or serialisation.

An entry is fresh for `UARNVC_POLL_INTERVAL` (the staleness the streaming endpoints
already accept). A poll that finds it stale is still answered from it at once, and
starts one refresh in a worker thread (one per job, however many polls arrive: stale
while revalidate); only an entry older than `MAX_STALE` intervals, or none, makes the
poll wait for the store. DELETE drops the entry. The owner is cached with the status, so
the tenancy check costs nothing either.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import orjson

from core.jobs import Job, JobStatus

MAX_ENTRIES = 10_000
MAX_STALE = 10  # intervals: older than this, a poll waits for a fresh status


@dataclass(frozen=True, slots=True)
class Entry:
    owner: str
    body: bytes  # the JSON answer
    status: JobStatus
    expires: float  # time.monotonic()


Loader = Callable[[], tuple[Job | None, JobStatus | None]]


def encode_status(status: JobStatus) -> bytes:
    return orjson.dumps(status.model_dump(mode="json", by_alias=True))


class StatusCache:
    """Hand-written, not cachetools' TTLCache: that drops an entry when it expires, and
    this one must answer from the expired entry while a single refresh per job runs."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._entries: dict[str, Entry] = {}
        self._loading: dict[str, asyncio.Future[Entry | None]] = {}
        self._tasks: set[asyncio.Task[Entry | None]] = set()

    def peek(self, job_id: str) -> Entry | None:
        """The cached entry, fresh or not (no I/O)."""
        return self._entries.get(job_id)

    async def get(self, job_id: str, load: Loader) -> Entry | None:
        """The entry to answer with: the cached one (refreshed in the background when
        stale), or, when there is none or it is far too old, a fresh one."""
        now = time.monotonic()
        hit = self._entries.get(job_id)
        if hit is not None and hit.expires > now:
            return hit
        if hit is not None and hit.expires + MAX_STALE * self.ttl > now:
            if self._pending(job_id) is None:
                task = asyncio.get_running_loop().create_task(self._refresh(job_id, load))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return hit
        return await self._refresh(job_id, load)

    async def _refresh(self, job_id: str, load: Loader) -> Entry | None:
        """One load per job at a time; concurrent callers share its result."""
        pending = self._pending(job_id)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        self._loading[job_id] = fut
        try:
            entry = await anyio.to_thread.run_sync(self._load, load)
            if entry is None:
                self._entries.pop(job_id, None)
            else:
                self._put(job_id, entry)
            fut.set_result(entry)
            return entry
        except BaseException as e:
            fut.set_exception(e)
            fut.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        finally:
            if self._loading.get(job_id) is fut:
                del self._loading[job_id]

    def _pending(self, job_id: str) -> asyncio.Future[Entry | None] | None:
        """The load in flight for this job on this event loop (a test client may run each
        request on a loop of its own; a load left behind by a finished loop is ignored)."""
        fut = self._loading.get(job_id)
        if fut is None or fut.done() or fut.get_loop() is not asyncio.get_running_loop():
            return None
        return fut

    def _load(self, load: Loader) -> Entry | None:
        job, status = load()
        if job is None or status is None:
            return None
        return Entry(job.owner, encode_status(status), status, time.monotonic() + self.ttl)

    def _put(self, job_id: str, entry: Entry) -> None:
        if len(self._entries) >= MAX_ENTRIES and job_id not in self._entries:
            now = time.monotonic()
            self._entries = {k: v for k, v in self._entries.items() if v.expires > now}
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
        self._entries[job_id] = entry

    def drop(self, job_id: str) -> None:
        self._entries.pop(job_id, None)
