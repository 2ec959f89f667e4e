"""Quotas per API key, so one tenant cannot hold the workers or the API.

Jobs (checked at `POST /v1/jobs`):
- `UARNVC_MAX_ACTIVE_JOBS` unfinished jobs per key (queued or running): 429.
- `UARNVC_MAX_QUEUED_JOBS` jobs per key that no worker has split yet: 429. This bounds
  what a key can pile into the broker ahead of others while the workers are busy.
- `UARNVC_MAX_CLIPS_PER_JOB` and `UARNVC_MAX_JOB_COMPUTE`: 422, a job that can never
  fit. The compute of a job is `clips x steps x parameters`: every clip trains one model
  of (at most) the parameter budget for the I-model step count (P-models take
  `P_STEPS_RATIO` = 1 of it, core/codec/options.py), and a training step costs about
  the same for any clip, so this is proportional to the training time on a given device
  (docs/reliability.md gives the rate measured on this machine's CPU).

Streams (per API process, checked when a stream opens): `UARNVC_MAX_STREAMS_PER_KEY`
event and bitstream streams; `UARNVC_MAX_DECODES_PER_KEY` and `UARNVC_MAX_DECODES`
decodes (decoding runs in the API process). Over a limit: 429 with Retry-After.

Unfinished jobs are found through `active/{owner}/{job}` entries written when a job is
accepted; an entry whose job has finished (all chunks, failed, cancelled or deleted) is
deleted the next time its owner is counted, so nothing else has to remember to remove
it. Counts are exact within one API process (a lock per owner around count-and-reserve);
with N API replicas a key may exceed a job quota by up to N-1 in a burst.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

import anyio

from api.problems import Problem
from core.jobs import Keys, Plan, active_key, load_plan
from core.settings import Settings
from core.storage import NotFound, ObjectStore

Phase = Literal["queued", "running", "finished"]
CREATING_SECONDS = 600.0  # an entry whose job.json is not written after this was abandoned
JOBS_RETRY_AFTER = 30  # a job takes minutes: no point asking again sooner
STREAM_RETRY_AFTER = 5


# ------------------------------------------------------------------------------- jobs


def job_compute(clips: int, steps: int, params: int) -> int:
    """The compute measure the budget is expressed in (see the module docstring)."""
    return clips * steps * params


def check_job_size(settings: Settings, header: Any, opts: Any) -> None:
    """422 for a job no quota will ever let run: too many clips, or over the compute
    budget. `header` is core.codec.chain.plan_stream's StreamHeader, `opts` the
    EncodeOptions; both are read through their public attributes only."""
    clips = header.num_clips
    if settings.max_clips_per_job and clips > settings.max_clips_per_job:
        raise Problem(
            422,
            f"{clips} clips exceed the limit of {settings.max_clips_per_job} per job; "
            "use a longer `clip_length` or fewer `frames`",
            code="too-many-clips",
            clips=clips,
            limit=settings.max_clips_per_job,
        )
    # The parameter budget: the `params` option, else what the preset gives this frame
    # size (plan_stream's rule; only on tiny frames may its smallest model be larger).
    pixels = header.width * header.height
    params = opts.params or round(opts.preset_values.params_per_pixel * pixels)
    steps = opts.effective_steps
    compute = job_compute(clips, steps, params)
    if settings.max_job_compute and compute > settings.max_job_compute:
        raise Problem(
            422,
            f"the job needs {compute:.3g} units of compute ({clips} clips x {steps} steps x "
            f"{params} parameters), over the compute budget of "
            f"{settings.max_job_compute:.3g} per job; lower `steps`, `params` or `frames`",
            code="job-too-large",
            compute=compute,
            limit=settings.max_job_compute,
        )


class JobQuotas:
    """Counts a key's unfinished jobs from the store and reserves a slot for a new one."""

    def __init__(self, store: ObjectStore, settings: Settings) -> None:
        self.store, self.settings = store, settings
        self._plans: dict[str, int] = {}  # job id -> clip count (a plan never changes)
        self._locks: dict[str, anyio.Lock] = {}
        self._guard = threading.Lock()

    @property
    def enabled(self) -> bool:
        return bool(self.settings.max_active_jobs or self.settings.max_queued_jobs)

    def _lock(self, owner: str) -> anyio.Lock:
        with self._guard:
            if len(self._locks) > 10_000:  # forget idle owners' locks
                self._locks = {o: lk for o, lk in self._locks.items() if lk.locked()}
            return self._locks.setdefault(owner, anyio.Lock())

    def phase(self, job_id: str, entry_at: float) -> Phase:
        """Where a job is, from one listing of its objects (and its plan, once)."""
        k = Keys(job_id)
        keys = set(self.store.list(k.prefix))
        if k.job not in keys:  # being created, or gone
            return "queued" if time.time() - entry_at < CREATING_SECONDS else "finished"
        if k.cancelled in keys or k.failed in keys:
            return "finished"
        if k.plan not in keys:
            # The split has started the chain (clip 0 trains while it runs ahead): running.
            started = k.header in keys or any(x.startswith(k.prefix + "frames/") for x in keys)
            return "running" if started else "queued"
        n = self._plans.get(job_id)
        if n is None:
            plan: Plan | None = load_plan(self.store, job_id)
            n = self._plans[job_id] = len(plan.clips) if plan else 1
        done = sum(1 for c in range(n) if k.chunk(c) in keys)
        return "finished" if done >= n else "running"

    def count(self, owner: str) -> dict[Phase, int]:
        """The owner's unfinished jobs by phase; entries of finished jobs are deleted."""
        counts: dict[Phase, int] = {"queued": 0, "running": 0}
        prefix = active_key(owner, "")
        for key in self.store.list(prefix):
            job_id = key[len(prefix) :]
            try:
                at = float(json.loads(self.store.get_bytes(key)).get("at", 0))
            except (NotFound, ValueError, AttributeError):
                at = 0.0
            try:
                ph = self.phase(job_id, at)
            except ValueError:  # not a job id: not ours
                ph = "finished"
            if ph == "finished":
                self.store.delete(key)
                self._plans.pop(job_id, None)
            else:
                counts[ph] += 1
        return counts

    def _refuse(self, counts: dict[Phase, int]) -> None:
        s = self.settings
        active = counts["queued"] + counts["running"]
        if s.max_active_jobs and active >= s.max_active_jobs:
            raise Problem(
                429,
                f"this API key has {active} unfinished jobs, the limit is "
                f"{s.max_active_jobs}; wait for one to finish (or delete one)",
                code="too-many-jobs",
                headers={"Retry-After": str(JOBS_RETRY_AFTER)},
                retry_after=JOBS_RETRY_AFTER,
                limit=s.max_active_jobs,
            )
        if s.max_queued_jobs and counts["queued"] >= s.max_queued_jobs:
            n = counts["queued"]
            raise Problem(
                429,
                f"this API key has {n} job{'s' if n != 1 else ''} waiting for a worker, the "
                f"limit is {s.max_queued_jobs}; retry when one has started",
                code="too-many-queued-jobs",
                headers={"Retry-After": str(JOBS_RETRY_AFTER)},
                retry_after=JOBS_RETRY_AFTER,
                limit=s.max_queued_jobs,
            )

    async def precheck(self, owner: str) -> None:
        """Refuse a key already at a limit before its upload is read (a hint: `reserve`
        decides)."""
        if self.enabled:
            self._refuse(await anyio.to_thread.run_sync(self.count, owner))

    async def reserve(self, owner: str, job_id: str) -> None:
        """Count and, if the key is under its limits, record `job_id` as unfinished; 429
        otherwise. Atomic per owner within this process."""
        if not self.enabled:
            await anyio.to_thread.run_sync(self._record, owner, job_id)
            return
        async with self._lock(owner):
            self._refuse(await anyio.to_thread.run_sync(self.count, owner))
            await anyio.to_thread.run_sync(self._record, owner, job_id)

    def _record(self, owner: str, job_id: str) -> None:
        self.store.put_bytes(active_key(owner, job_id), json.dumps({"at": time.time()}).encode())

    def release(self, owner: str, job_id: str) -> None:
        self.store.delete(active_key(owner, job_id))
        self._plans.pop(job_id, None)


# ----------------------------------------------------------------------------- streams


class Slot:
    """One held stream; `release` is idempotent (called from the stream's end and from
    the response's background task, whichever comes first)."""

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._on_release: Callable[[], None] | None = on_release

    def release(self) -> None:
        f, self._on_release = self._on_release, None
        if f is not None:
            f()


class StreamSlots:
    """Open streams per key (and in all) in this process; over a limit: 429."""

    def __init__(self, per_key: int, total: int, what: str, code: str) -> None:
        self.per_key, self.total, self.what, self.code = per_key, total, what, code
        self.held: dict[str, int] = {}
        self._lock = threading.Lock()

    def acquire(self, owner: str) -> Slot:
        with self._lock:
            mine, everyone = self.held.get(owner, 0), sum(self.held.values())
            if self.per_key and mine >= self.per_key:
                detail = f"at most {self.per_key} {self.what} at once per API key"
            elif self.total and everyone >= self.total:
                detail = f"this server runs at most {self.total} {self.what} at once"
            else:
                self.held[owner] = mine + 1
                return Slot(lambda: self._release(owner))
        raise Problem(
            429,
            detail + "; close one or retry later",
            code=self.code,
            headers={"Retry-After": str(STREAM_RETRY_AFTER)},
            retry_after=STREAM_RETRY_AFTER,
        )

    def _release(self, owner: str) -> None:
        with self._lock:
            n = self.held.get(owner, 0) - 1
            if n > 0:
                self.held[owner] = n
            else:
                self.held.pop(owner, None)


class Quotas:
    """Everything above for one app (`app.state.quotas`)."""

    def __init__(self, store: ObjectStore, settings: Settings) -> None:
        self.jobs = JobQuotas(store, settings)
        self.streams = StreamSlots(
            settings.max_streams_per_key, 0, "event and bitstream streams", "too-many-streams"
        )
        self.decodes = StreamSlots(
            settings.max_decodes_per_key, settings.max_decodes, "decodes", "too-many-decodes"
        )
